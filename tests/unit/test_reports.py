"""Portfolio reports (`dunning.reports`) over hand-built table items.

Items are built here the way the store writes them (`type`, `body` JSON with
defaults left out, outbox records with `action`, `status`, `queued_at`,
`outcome_at`, `reason`), so the report reads exactly what the table holds.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from dunning.model import (
    Action,
    ActionType,
    Allocation,
    Case,
    CaseStatus,
    Channel,
    Invoice,
    InvoiceStatus,
    Mode,
    Payment,
    Suspension,
    SuspensionKind,
    SuspensionStatus,
)
from dunning.reports import (
    ACTION_COLUMNS,
    CASE_COLUMNS,
    CaseCount,
    PortfolioSummary,
    actions_csv,
    cases_csv,
    publish_gauges,
    summarize,
)

AT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
BEFORE = AT - timedelta(days=5)
AFTER = AT + timedelta(hours=1)
ACTION = TypeAdapter(Action)

Item = dict[str, Any]


def _s(text: str) -> dict[str, str]:
    return {"S": text}


def body_item(kind: str, account_id: str, sk: str, model: BaseModel) -> Item:
    return {
        "PK": _s(f"ACCOUNT#{account_id}"),
        "SK": _s(sk),
        "type": _s(kind),
        "body": _s(model.model_dump_json(exclude_defaults=True)),
    }


def case_item(
    case_id: str,
    *invoice_ids: str,
    account_id: str = "acc-1",
    status: CaseStatus = CaseStatus.ACTIVE,
    level: int = 1,
    opened: datetime = BEFORE,
    closed: datetime | None = None,
    **kw: Any,
) -> Item:
    case = Case(
        case_id=case_id,
        account_id=account_id,
        mode=Mode.CUSTOMER,
        invoice_ids=invoice_ids or ("inv-1",),
        policy_id="consumer",
        policy_version=1,
        status=status,
        level=level,
        opened_at=opened,
        entered_level_at=opened,
        closed_at=closed,
        **kw,
    )
    return body_item("case", account_id, f"CASE#{case_id}", case)


def invoice_item(
    invoice_id: str,
    amount: str,
    open_amount: str | None = None,
    *,
    account_id: str = "acc-1",
    currency: str = "EUR",
    status: InvoiceStatus = InvoiceStatus.OPEN,
) -> Item:
    inv = Invoice(
        invoice_id=invoice_id,
        account_id=account_id,
        currency=currency,
        amount=Decimal(amount),
        open_amount=Decimal(open_amount if open_amount is not None else amount),
        issue_date=date(2026, 8, 1),
        due_date=date(2026, 9, 1),
        status=status,
    )
    return body_item("invoice", account_id, f"INVOICE#{invoice_id}", inv)


def payment_item(
    payment_id: str,
    allocations: dict[str, str],
    *,
    account_id: str = "acc-1",
    currency: str = "EUR",
    received: datetime = BEFORE,
    reversed_at: datetime | None = None,
) -> Item:
    total = sum((Decimal(a) for a in allocations.values()), Decimal(0))
    payment = Payment(
        payment_id=payment_id,
        account_id=account_id,
        currency=currency,
        amount=total,
        received_at=received,
        allocations=tuple(
            Allocation(invoice_id=i, amount=Decimal(a)) for i, a in allocations.items()
        ),
        reversed_at=reversed_at,
    )
    return body_item("payment", account_id, f"PAYMENT#{payment_id}", payment)


def promise_item(
    suspension_id: str,
    status: SuspensionStatus,
    resolved: datetime | None,
    kind: SuspensionKind = SuspensionKind.PROMISE_TO_PAY,
) -> Item:
    promise = kind is SuspensionKind.PROMISE_TO_PAY
    s = Suspension(
        suspension_id=suspension_id,
        account_id="acc-1",
        case_id="C-1",
        kind=kind,
        status=status,
        starts_at=BEFORE - timedelta(days=10),
        ends_at=BEFORE,
        currency="EUR" if promise else None,
        promised_amount=Decimal("50.00") if promise else None,
        promised_date=date(2026, 10, 20) if promise else None,
        resolved_at=resolved,
    )
    return body_item("suspension", "acc-1", f"SUSPENSION#{suspension_id}", s)


def action(
    action_id: str,
    kind: ActionType = ActionType.EMAIL,
    *,
    created: datetime = BEFORE,
    not_before: datetime | None = None,
    account_id: str = "acc-1",
    level_name: str = "reminder",
) -> Action:
    channel = {ActionType.EMAIL: Channel.EMAIL, ActionType.SMS: Channel.SMS}.get(
        kind, Channel.WEBHOOK
    )
    return Action(
        action_id=action_id,
        account_id=account_id,
        case_id="C-1",
        type=kind,
        channel=channel,
        level=1,
        level_name=level_name,
        entry=1,
        index=0,
        template="reminder" if channel is not Channel.WEBHOOK else None,
        target="provisioning" if channel is Channel.WEBHOOK else None,
        locale="de",
        not_before=not_before or created,
        created_at=created,
        policy_id="consumer",
        policy_version=1,
        invoice_ids=("inv-1",),
    )


def outbox_item(
    a: Action,
    status: str,
    *,
    queued: datetime | None = None,
    outcome: datetime | None = None,
    reason: str | None = None,
) -> Item:
    item: Item = {
        "PK": _s(f"ACCOUNT#{a.account_id}"),
        "SK": _s(f"OUTBOX#{a.action_id}"),
        "type": _s("outbox"),
        "action": _s(ACTION.dump_json(a).decode()),
        "status": _s(status),
    }
    if queued is not None:
        item["queued_at"] = _s(queued.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    if outcome is not None:
        item["outcome_at"] = _s(outcome.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    if reason is not None:
        item["reason"] = _s(reason)
    return item


# -------------------------------------------------------------------- summary


def test_cases_by_status_and_level_at_an_instant() -> None:
    # Given cases in several states, one opened after `at`, one closed after `at`
    items = [
        case_item("C-a", level=2),
        case_item("C-b", status=CaseStatus.SUSPENDED, level=3),
        case_item("C-c", status=CaseStatus.RECOVERED, level=1, closed=BEFORE + timedelta(days=1)),
        case_item("C-d", level=1, opened=AFTER),
        case_item("C-e", status=CaseStatus.RECOVERED, level=2, closed=AFTER),
        case_item("C-f", status=CaseStatus.WRITTEN_OFF, level=6, closed=BEFORE),
        {"PK": _s("ACCOUNT#acc-1"), "SK": _s("ACCOUNT"), "type": _s("account")},
    ]
    # When summarized at `at`
    summary = summarize(items, AT)
    # Then the case opened after `at` is left out, the one closed after `at` was active
    assert [(c.status, c.level, c.count) for c in summary.cases] == [
        ("active", 2, 2),
        ("recovered", 1, 1),
        ("suspended", 3, 1),
        ("written_off", 6, 1),
    ]
    assert summary.cases_by_status == {
        "active": 2,
        "recovered": 1,
        "suspended": 1,
        "written_off": 1,
    }
    assert summary.open_cases == 3
    assert summary.recovered_cases == 1


def test_outstanding_is_what_open_cases_still_owe_per_currency() -> None:
    # Given open cases in EUR, JPY and KWD, a disputed invoice, a recovered case
    items = [
        case_item("C-eur", "inv-1", "inv-2", "inv-3"),
        invoice_item("inv-1", "100.00", "40.50"),
        invoice_item("inv-2", "20.00", status=InvoiceStatus.DISPUTED),
        invoice_item("inv-3", "1000.00", "0", status=InvoiceStatus.PAID),
        case_item("C-jpy", "j-1", account_id="acc-jp"),
        invoice_item("j-1", "15000", account_id="acc-jp", currency="JPY"),
        case_item("C-kwd", "k-1", account_id="acc-kw", status=CaseStatus.AWAITING_APPROVAL),
        invoice_item("k-1", "3.250", account_id="acc-kw", currency="KWD"),
        case_item("C-old", "inv-9", status=CaseStatus.RECOVERED, closed=BEFORE),
        invoice_item("inv-9", "500.00"),
    ]
    # When summarized
    summary = summarize(items, AT)
    # Then only open invoices of open cases count, as plain decimals per currency
    assert summary.outstanding == {"EUR": "40.50", "JPY": "15000", "KWD": "3.250"}


def test_money_dated_after_at_does_not_count_and_reversed_payments_are_taken_back() -> None:
    # Given an open case on a 300.00 invoice, of which 100.00 is still open now:
    #   p-1 50.00 before `at`, kept; p-2 70.00 before `at`, reversed before `at`;
    #   p-3 30.00 before `at`, reversed after `at`; p-4 200.00 after `at`
    # (the table's open amount now: 300 - 50 - 200 = 50, + nothing for p-2 / p-3
    #  since both are reversed; so 50.00 now)
    items = [
        case_item("C-1", "inv-1", opened=BEFORE - timedelta(days=1)),
        invoice_item("inv-1", "300.00", "50.00"),
        payment_item("p-1", {"inv-1": "50.00"}),
        payment_item("p-2", {"inv-1": "70.00"}, reversed_at=BEFORE + timedelta(days=1)),
        payment_item("p-3", {"inv-1": "30.00"}, reversed_at=AFTER),
        payment_item("p-4", {"inv-1": "200.00"}, received=AFTER),
    ]
    # When summarized at `at`
    summary = summarize(items, AT)
    # Then recovered money is p-1 and p-3 (p-3 was not reversed yet at `at`)
    assert summary.recovered_amount == {"EUR": "80.00"}
    assert summary.recovered_payments == 2
    # ... and what was open at `at` is 300 - 50 - 30 = 220.00
    assert summary.outstanding == {"EUR": "220.00"}
    # ... while at a later instant, p-3 is reversed and p-4 paid
    later = summarize(items, AFTER + timedelta(hours=1))
    assert later.recovered_amount == {"EUR": "250.00"}
    assert later.outstanding == {"EUR": "50.00"}


def test_only_payments_on_dunned_invoices_count_as_recovered_per_currency() -> None:
    # Given payments in EUR and JPY on invoices of cases, before and after the case
    # opened, and one on an invoice that never was in a case
    opened = BEFORE - timedelta(days=2)
    items = [
        case_item("C-1", "inv-1", opened=opened, status=CaseStatus.RECOVERED, closed=BEFORE),
        invoice_item("inv-1", "100.00", "0", status=InvoiceStatus.PAID),
        payment_item("p-early", {"inv-1": "10.00"}, received=opened - timedelta(days=1)),
        payment_item("p-dunned", {"inv-1": "90.00"}, received=opened + timedelta(days=1)),
        invoice_item("inv-free", "40.00", "0", status=InvoiceStatus.PAID),
        payment_item("p-free", {"inv-free": "40.00"}),
        case_item("C-jp", "j-1", account_id="acc-jp", opened=opened),
        invoice_item("j-1", "15000", "5000", account_id="acc-jp", currency="JPY"),
        payment_item("p-jp", {"j-1": "10000"}, account_id="acc-jp", currency="JPY"),
    ]
    # When summarized
    summary = summarize(items, AT)
    # Then money collected while in dunning counts, per currency, with the case
    assert summary.recovered_amount == {"EUR": "90.00", "JPY": "10000"}
    assert summary.recovered_payments == 2
    assert summary.recovered_cases == 1
    assert summary.outstanding == {"JPY": "5000"}


def test_promises_kept_and_broken_up_to_at() -> None:
    # Given promises resolved before and after `at`, and a fraud review that ended
    items = [
        promise_item("s-1", SuspensionStatus.KEPT, BEFORE),
        promise_item("s-2", SuspensionStatus.KEPT, BEFORE),
        promise_item("s-3", SuspensionStatus.BROKEN, BEFORE),
        promise_item("s-4", SuspensionStatus.AWAITING_REVIEW, BEFORE),  # broken, manual
        promise_item("s-5", SuspensionStatus.BROKEN, AFTER),
        promise_item("s-6", SuspensionStatus.KEPT, AFTER),
        promise_item("s-7", SuspensionStatus.ACTIVE, None),
        promise_item("s-8", SuspensionStatus.ENDED, BEFORE, SuspensionKind.FRAUD_REVIEW),
    ]
    # When summarized
    summary = summarize(items, AT)
    # Then two kept and two broken count
    assert (summary.promises_kept, summary.promises_broken) == (2, 2)


def test_actions_per_channel_and_outcome_at_an_instant() -> None:
    # Given outbox records in every state, some dated after `at`
    items = [
        outbox_item(action("a-1"), "delivered", outcome=BEFORE),
        outbox_item(action("a-2"), "failed", outcome=BEFORE, reason="rejected"),
        outbox_item(action("a-3", ActionType.SMS), "skipped", outcome=BEFORE, reason="paid"),
        outbox_item(action("a-4", ActionType.SMS), "queued", queued=BEFORE),
        outbox_item(action("a-5", ActionType.SUSPEND_SERVICE), "pending"),
        # delivered after `at`: it was queued at `at`
        outbox_item(action("a-6"), "delivered", outcome=AFTER),
        # queued after `at`: pending at `at`
        outbox_item(action("a-7", ActionType.SMS), "queued", queued=AFTER),
        # created after `at`: not there yet
        outbox_item(action("a-8", created=AFTER), "delivered", outcome=AFTER),
    ]
    # When summarized
    summary = summarize(items, AT)
    # Then each record counts once, in its state at `at`
    assert [(a.channel, a.outcome, a.count) for a in summary.actions] == [
        ("email", "delivered", 1),
        ("email", "failed", 1),
        ("email", "queued", 1),
        ("sms", "pending", 1),
        ("sms", "queued", 1),
        ("sms", "skipped", 1),
        ("webhook", "pending", 1),
    ]


def test_an_empty_table_summarizes_to_zeros_and_at_must_be_aware() -> None:
    # Given no item, when summarized, then everything is empty
    summary = summarize([], AT)
    assert summary.cases == [] and summary.outstanding == {} and summary.open_cases == 0
    assert json.loads(summary.model_dump_json())["at"] == "2026-11-02T07:00:00Z"
    # ... and a naive instant is refused
    with pytest.raises(ValueError, match="timezone-aware"):
        summarize([], datetime(2026, 11, 2))


# ------------------------------------------------------------------------ CSV

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
PLAIN_DECIMAL = re.compile(r"^\d+(\.\d+)?$")


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_cases_csv_has_a_header_iso_times_and_plain_decimals() -> None:
    # Given cases in EUR and JPY with their invoices, and an account item with contacts
    opened = datetime(2026, 10, 1, 6, 30, 15, 123456, tzinfo=UTC)
    items = [
        case_item("C-b", "inv-2", opened=opened, level=3),
        case_item("C-a", "inv-1", "inv-3", opened=opened),
        invoice_item("inv-1", "1234.50"),
        invoice_item("inv-3", "1000000.00"),
        invoice_item("inv-2", "99.90", "0", status=InvoiceStatus.PAID),
        case_item("C-j", "j-1", account_id="acc-jp", opened=opened),
        invoice_item("j-1", "15000", account_id="acc-jp", currency="JPY"),
        {
            "PK": _s("ACCOUNT#acc-1"),
            "SK": _s("ACCOUNT"),
            "type": _s("account"),
            "view": _s('{"account":{"email":"anna@example.com","phone":"+4915112345678"}}'),
        },
    ]
    # When exported
    text = cases_csv(items)
    rows = rows_of(text)
    # Then the header comes first, one row per case sorted by account and case
    assert text.splitlines()[0] == ",".join(CASE_COLUMNS)
    assert text.endswith("\r\n")
    assert [(r["account_id"], r["case_id"]) for r in rows] == [
        ("acc-1", "C-a"),
        ("acc-1", "C-b"),
        ("acc-jp", "C-j"),
    ]
    # ... times are ISO 8601 UTC, amounts plain decimals in minor units
    assert rows[0]["opened_at"] == "2026-10-01T06:30:15Z"
    assert all(ISO_UTC.match(r["opened_at"]) for r in rows)
    assert [r["open_amount"] for r in rows] == ["1001234.50", "0.00", "15000"]
    assert all(PLAIN_DECIMAL.match(r["open_amount"]) for r in rows)
    assert rows[0]["closed_at"] == "" and rows[0]["invoice_ids"] == "inv-1 inv-3"
    assert rows[0]["currency"] == "EUR" and rows[2]["currency"] == "JPY"
    # ... and no contact detail appears
    assert "@" not in text and "+49" not in text


def test_actions_csv_masks_personal_data_and_neutralizes_formulas() -> None:
    # Given outbox records, one with a provider error naming the address and number
    items = [
        outbox_item(
            action("a-2", created=AT),
            "failed",
            outcome=AT + timedelta(minutes=5),
            reason="Address anna.x@example.com rejected; SMS to +49 151 1234 5678 failed",
        ),
        outbox_item(action("a-1", ActionType.SMS, level_name="=HYPERLINK(1)"), "queued", queued=AT),
    ]
    # When exported
    text = actions_csv(items)
    rows = rows_of(text)
    # Then the header comes first and rows are oldest first
    assert text.splitlines()[0] == ",".join(ACTION_COLUMNS)
    assert [r["action_id"] for r in rows] == ["a-1", "a-2"]
    # ... personal data is masked, a formula is made text
    assert "@" not in text and "+49" not in text and "5678" not in text
    assert rows[1]["reason"] == "Address [redacted] rejected; SMS to [redacted] failed"
    assert rows[0]["level_name"] == "'=HYPERLINK(1)"
    # ... and times are ISO 8601 UTC
    assert rows[1]["outcome_at"] == "2026-11-02T07:05:00Z"
    assert rows[0]["queued_at"] == "2026-11-02T07:00:00Z"
    assert all(ISO_UTC.match(r["created_at"]) and ISO_UTC.match(r["not_before"]) for r in rows)
    assert rows[0]["channel"] == "sms" and rows[0]["status"] == "queued"


def test_csv_of_nothing_is_the_header_alone() -> None:
    assert cases_csv([]) == ",".join(CASE_COLUMNS) + "\r\n"
    assert actions_csv([]) == ",".join(ACTION_COLUMNS) + "\r\n"


# --------------------------------------------------------------------- gauges


def emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_gauges_are_published_as_single_emf_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a summary with open cases, money in two currencies and no promise kept
    summary = PortfolioSummary(
        at=AT,
        cases=[
            CaseCount(status="active", level=2, count=5),
            CaseCount(status="suspended", level=3, count=1),
            CaseCount(status="recovered", level=1, count=9),
        ],
        cases_by_status={"active": 5, "suspended": 1, "recovered": 9},
        open_cases=6,
        outstanding={"EUR": "1234.50", "JPY": "15000"},
        recovered_cases=9,
        recovered_amount={"EUR": "99.99"},
        recovered_payments=9,
        promises_kept=0,
        promises_broken=2,
        actions=[],
    )
    capsys.readouterr()
    # When the gauges are published with a due backlog of 17
    publish_gauges(summary, 17)
    blobs = emf(capsys.readouterr().out)

    def metric(blob: dict[str, Any]) -> str:
        (only,) = blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        return str(only["Name"])

    def value(blob: dict[str, Any]) -> float:
        raw = blob[metric(blob)]
        return float(raw[0] if isinstance(raw, list) else raw)

    got = sorted(
        (
            metric(blob),
            value(blob),
            {d: blob[d] for d in ("status", "level", "currency") if d in blob},
        )
        for blob in blobs
    )
    # Then one metric per value, with its own dimensions; zero is published too
    assert got == [
        ("DueBacklog", 17.0, {}),
        ("OpenCases", 1.0, {"status": "suspended", "level": "3"}),
        ("OpenCases", 5.0, {"status": "active", "level": "2"}),
        ("OutstandingAmount", 1234.5, {"currency": "EUR"}),
        ("OutstandingAmount", 15000.0, {"currency": "JPY"}),
        ("PromisesBroken", 2.0, {}),
        ("PromisesKept", 0.0, {}),
        ("RecoveredAmount", 99.99, {"currency": "EUR"}),
    ]
    assert len(blobs) == 8
    # ... and without a backlog figure there is no DueBacklog
    publish_gauges(summary, None)
    assert "DueBacklog" not in {metric(b) for b in emf(capsys.readouterr().out)}
