"""Portfolio reports: a summary at an instant, CSV exports, CloudWatch gauges.

`summarize(items, at)` reads raw table items (as `dunning.store.scan.scan_items`
yields them: case, invoice, payment, suspension and outbox items; others are
ignored) and tells, as of `at`:
- cases by status and level;
- the outstanding amount per currency: what the open invoices of open cases
  still owe (disputed invoices left out);
- recovered cases, and the money collected on dunned invoices per currency:
  allocations of payments received at or before `at`, while or after the
  invoice was in a case, unless the payment was reversed at or before `at`;
- promises to pay kept and broken (resolved at or before `at`);
- actions per channel and outcome (pending, queued, delivered, failed, skipped).

Nothing dated after `at` counts. The table holds the current state, so for an
`at` in the past money is rebuilt exactly from the payments (received and
reversed times), while a case closed after `at` counts as `active` at its
current level (its level then may have been lower) and an action whose outcome
came after `at` counts as `queued` (or `pending` before its `not_before`).

`cases_csv(items)` and `actions_csv(items)` export the current state: a header
row, ISO 8601 UTC times (`2026-11-02T07:00:00Z`), plain decimals in the
currency's minor units (`1234.50`, `15000`), no e-mail address or phone number.

`publish_gauges(summary, due_backlog)` emits one EMF metric per value:
`OpenCases` (status, level), `OutstandingAmount` and `RecoveredAmount`
(currency), `PromisesKept`, `PromisesBroken`, `DueBacklog`.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aws_lambda_powertools import single_metric
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, TypeAdapter

from dunning.model import (
    OPEN_CASE_STATUSES,
    Action,
    Case,
    CaseStatus,
    Invoice,
    InvoiceStatus,
    Payment,
    Suspension,
    SuspensionKind,
    SuspensionStatus,
)
from dunning.money import minor_unit
from dunning.store.dynamo import OUTCOMES, SENDING, DynamoStore
from dunning.store.scan import count_due, scan_items

REPORT_TYPES = ("case", "invoice", "payment", "suspension", "outbox")
ZERO = Decimal(0)
_ACTION = TypeAdapter(Action)
_OPEN_STATUS_VALUES = frozenset(s.value for s in OPEN_CASE_STATUSES)
# Personal data never leaves in an export: e-mail addresses and phone numbers
# that a provider's error message may carry are masked.
_EMAIL = re.compile(r"[^\s@<>\"',;:]+@[^\s@<>\"',;:]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+[1-9][\d\s().-]{5,}\d")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ------------------------------------------------------------------------ output


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CaseCount(_Out):
    status: str
    level: int
    count: int


class ActionCount(_Out):
    channel: str
    outcome: str  # pending, queued, delivered, failed, skipped
    count: int


class PortfolioSummary(_Out):
    at: datetime
    cases: list[CaseCount]  # by status and level
    cases_by_status: dict[str, int]
    open_cases: int
    outstanding: dict[str, str]  # per currency, plain decimals
    recovered_cases: int
    recovered_amount: dict[str, str]  # per currency, plain decimals
    recovered_payments: int  # payments that paid dunned invoices
    promises_kept: int
    promises_broken: int
    actions: list[ActionCount]  # by channel and outcome


# ----------------------------------------------------------------------- parsing


def _attr(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if isinstance(value, Mapping):
        text = value.get("S")
        return text if isinstance(text, str) else None
    return None


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class _Outbox:
    action: Action
    status: str
    queued_at: datetime | None
    outcome_at: datetime | None
    reason: str | None


@dataclass(slots=True)
class _Items:
    cases: list[Case] = field(default_factory=list)
    invoices: dict[tuple[str, str], Invoice] = field(default_factory=dict)
    payments: list[Payment] = field(default_factory=list)
    suspensions: list[Suspension] = field(default_factory=list)
    outbox: list[_Outbox] = field(default_factory=list)


def _parse(items: Iterable[Mapping[str, Any]]) -> _Items:
    out = _Items()
    for item in items:
        kind = _attr(item, "type")
        if kind == "outbox":
            body = _attr(item, "action")
            if body is not None:
                out.outbox.append(
                    _Outbox(
                        action=_ACTION.validate_json(body),
                        status=_attr(item, "status") or "pending",
                        queued_at=_when(_attr(item, "queued_at")),
                        outcome_at=_when(_attr(item, "outcome_at")),
                        reason=_attr(item, "reason"),
                    )
                )
            continue
        body = _attr(item, "body")
        if body is None:
            continue
        if kind == "case":
            out.cases.append(Case.model_validate_json(body))
        elif kind == "invoice":
            inv = Invoice.model_validate_json(body)
            out.invoices[(inv.account_id, inv.invoice_id)] = inv
        elif kind == "payment":
            out.payments.append(Payment.model_validate_json(body))
        elif kind == "suspension":
            out.suspensions.append(Suspension.model_validate_json(body))
    return out


# ----------------------------------------------------------------------- summary


def _plain(amount: Decimal, currency: str) -> str:
    """A plain decimal in the currency's minor units: `1234.50`, `15000`, `3.250`."""
    try:
        quantum = minor_unit(currency)
    except ValueError:
        return format(amount, "f")  # unknown code: as it is
    return format(amount.quantize(quantum), "f")


def _status_at(case: Case, at: datetime) -> str:
    if case.closed_at is not None and case.closed_at > at:
        return CaseStatus.ACTIVE.value  # it was still open at `at`
    return case.status.value


def _effective(payment: Payment, at: datetime) -> bool:
    """Did `payment` count at `at`: received by then and not reversed by then."""
    return payment.received_at <= at and (payment.reversed_at is None or payment.reversed_at > at)


def _open_at(invoice: Invoice, payments: list[Payment], at: datetime) -> Decimal:
    """What `invoice` still owed at `at`: its open amount now, with the payments that
    count now but not then added back and those that counted then but not now
    (reversed since) taken off again."""
    amount = invoice.open_amount
    for payment in payments:
        now_counts = payment.reversed_at is None
        then_counts = _effective(payment, at)
        if now_counts == then_counts:
            continue
        for allocation in payment.allocations:
            if allocation.invoice_id != invoice.invoice_id:
                continue
            amount += allocation.amount if now_counts else -allocation.amount
    return min(max(amount, ZERO), invoice.amount)


def summarize(items: Iterable[Mapping[str, Any]], at: datetime) -> PortfolioSummary:
    """The portfolio at `at`, from raw table items (see the module's docstring)."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    at = at.astimezone(UTC)
    parsed = _parse(items)
    by_account: dict[str, list[Payment]] = {}
    for payment in parsed.payments:
        by_account.setdefault(payment.account_id, []).append(payment)

    by_level: Counter[tuple[str, int]] = Counter()
    by_status: Counter[str] = Counter()
    recovered_cases = 0
    outstanding: dict[str, Decimal] = {}
    counted: set[tuple[str, str]] = set()
    dunned_since: dict[tuple[str, str], datetime] = {}  # invoice -> first case opened
    for case in parsed.cases:
        if case.opened_at > at:
            continue
        for invoice_id in case.invoice_ids:
            key = (case.account_id, invoice_id)
            if key not in dunned_since or case.opened_at < dunned_since[key]:
                dunned_since[key] = case.opened_at
        status = _status_at(case, at)
        by_level[(status, case.level)] += 1
        by_status[status] += 1
        if status == CaseStatus.RECOVERED.value:
            recovered_cases += 1
        if status not in _OPEN_STATUS_VALUES:
            continue
        for invoice_id in case.invoice_ids:
            key = (case.account_id, invoice_id)
            invoice = parsed.invoices.get(key)
            if key in counted or invoice is None or invoice.status is InvoiceStatus.DISPUTED:
                continue
            counted.add(key)
            owed = _open_at(invoice, by_account.get(case.account_id, []), at)
            outstanding[invoice.currency] = outstanding.get(invoice.currency, ZERO) + owed

    recovered: dict[str, Decimal] = {}
    recovered_payments = 0
    for payment in parsed.payments:
        if not _effective(payment, at):
            continue
        collected = ZERO
        for allocation in payment.allocations:
            since = dunned_since.get((payment.account_id, allocation.invoice_id))
            if since is not None and since <= payment.received_at:
                collected += allocation.amount
        if collected > ZERO:
            recovered_payments += 1
            recovered[payment.currency] = recovered.get(payment.currency, ZERO) + collected

    kept = broken = 0
    for s in parsed.suspensions:
        if s.kind is not SuspensionKind.PROMISE_TO_PAY or s.resolved_at is None:
            continue
        if s.resolved_at > at:
            continue
        if s.status is SuspensionStatus.KEPT:
            kept += 1
        elif s.status in (SuspensionStatus.BROKEN, SuspensionStatus.AWAITING_REVIEW):
            broken += 1  # a broken promise whose profile asks a person is awaiting review

    actions: Counter[tuple[str, str]] = Counter()
    for record in parsed.outbox:
        outcome = _outcome_at(record, at)
        if outcome is not None:
            actions[(record.action.channel.value, outcome)] += 1

    return PortfolioSummary(
        at=at,
        cases=[CaseCount(status=s, level=lv, count=n) for (s, lv), n in sorted(by_level.items())],
        cases_by_status=dict(sorted(by_status.items())),
        open_cases=sum(n for s, n in by_status.items() if s in _OPEN_STATUS_VALUES),
        outstanding={c: _plain(a, c) for c, a in sorted(outstanding.items())},
        recovered_cases=recovered_cases,
        recovered_amount={c: _plain(a, c) for c, a in sorted(recovered.items())},
        recovered_payments=recovered_payments,
        promises_kept=kept,
        promises_broken=broken,
        actions=[
            ActionCount(channel=c, outcome=o, count=n) for (c, o), n in sorted(actions.items())
        ],
    )


def _outcome_at(record: _Outbox, at: datetime) -> str | None:
    """The state of an outbox record at `at`; None when the action did not exist yet."""
    action = record.action
    if action.created_at > at:
        return None
    if record.status in OUTCOMES:
        if record.outcome_at is not None and record.outcome_at <= at:
            return record.status
        return "queued" if action.not_before <= at else "pending"
    if record.status in ("queued", SENDING):  # claimed by a channel function: in flight
        if record.queued_at is None or record.queued_at <= at:
            return "queued"
        return "pending"
    return "pending"


def summarize_store(
    store: DynamoStore, at: datetime, *, total_segments: int = 4
) -> PortfolioSummary:
    """`summarize` over a parallel scan of the report's item types."""
    return summarize(scan_items(store, types=REPORT_TYPES, total_segments=total_segments), at)


# --------------------------------------------------------------------------- CSV


def _iso(instant: datetime | None) -> str:
    if instant is None:
        return ""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe_text(text: str | None) -> str:
    """Free text for a spreadsheet: personal data masked, no formula."""
    if not text:
        return ""
    text = _PHONE.sub("[redacted]", _EMAIL.sub("[redacted]", text))
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def _csv(header: list[str], rows: Iterable[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


CASE_COLUMNS = [
    "account_id",
    "case_id",
    "mode",
    "policy_id",
    "policy_version",
    "status",
    "level",
    "opened_at",
    "entered_level_at",
    "closed_at",
    "currency",
    "open_amount",
    "invoice_count",
    "invoice_ids",
    "recoveries",
    "broken_promises",
]


def cases_csv(items: Iterable[Mapping[str, Any]]) -> str:
    """Every case item as a CSV row (RFC 4180, CRLF); amounts from its invoice items."""
    parsed = _parse(items)
    rows = []
    for case in sorted(parsed.cases, key=lambda c: (c.account_id, c.case_id)):
        invoices = [
            inv
            for i in case.invoice_ids
            if (inv := parsed.invoices.get((case.account_id, i))) is not None
        ]
        currency = invoices[0].currency if invoices else ""
        owed = sum(
            (
                inv.open_amount
                for inv in invoices
                if inv.status not in (InvoiceStatus.PAID, InvoiceStatus.WRITTEN_OFF)
            ),
            ZERO,
        )
        rows.append(
            [
                case.account_id,
                case.case_id,
                case.mode.value,
                case.policy_id,
                str(case.policy_version),
                case.status.value,
                str(case.level),
                _iso(case.opened_at),
                _iso(case.entered_level_at),
                _iso(case.closed_at),
                currency,
                _plain(owed, currency) if currency else "",
                str(len(case.invoice_ids)),
                " ".join(case.invoice_ids),
                str(case.recoveries),
                str(case.broken_promises),
            ]
        )
    return _csv(CASE_COLUMNS, rows)


ACTION_COLUMNS = [
    "action_id",
    "account_id",
    "case_id",
    "type",
    "channel",
    "level",
    "level_name",
    "entry",
    "template",
    "target",
    "policy_id",
    "policy_version",
    "created_at",
    "not_before",
    "status",
    "queued_at",
    "outcome_at",
    "reason",
    "invoice_ids",
]


def actions_csv(items: Iterable[Mapping[str, Any]]) -> str:
    """Every outbox record (one per action) as a CSV row, oldest first."""
    parsed = _parse(items)
    records = sorted(
        parsed.outbox,
        key=lambda r: (r.action.created_at, r.action.account_id, r.action.action_id),
    )
    rows = [
        [
            r.action.action_id,
            r.action.account_id,
            r.action.case_id,
            r.action.type.value,
            r.action.channel.value,
            str(r.action.level),
            _safe_text(r.action.level_name),
            str(r.action.entry),
            r.action.template or "",
            r.action.target or "",
            r.action.policy_id,
            str(r.action.policy_version),
            _iso(r.action.created_at),
            _iso(r.action.not_before),
            r.status,
            _iso(r.queued_at),
            _iso(r.outcome_at),
            _safe_text(r.reason),
            " ".join(r.action.invoice_ids),
        ]
        for r in records
    ]
    return _csv(ACTION_COLUMNS, rows)


# ------------------------------------------------------------------------ gauges


def _gauge(name: str, value: float, unit: MetricUnit, **dimensions: str) -> None:
    """One EMF metric with its own dimensions; zero is a value, published too."""
    with single_metric(name=name, unit=unit, value=value) as metric:
        for key, dim in dimensions.items():
            metric.add_dimension(name=key, value=dim)


def publish_gauges(summary: PortfolioSummary, due_backlog: int | None = None) -> None:
    """Publish the summary as CloudWatch gauges (EMF on stdout), one metric each."""
    for row in summary.cases:
        if row.status in _OPEN_STATUS_VALUES:
            _gauge(
                "OpenCases", row.count, MetricUnit.Count, status=row.status, level=str(row.level)
            )
    for currency, amount in summary.outstanding.items():
        _gauge("OutstandingAmount", float(Decimal(amount)), MetricUnit.NoUnit, currency=currency)
    for currency, amount in summary.recovered_amount.items():
        _gauge("RecoveredAmount", float(Decimal(amount)), MetricUnit.NoUnit, currency=currency)
    _gauge("PromisesKept", summary.promises_kept, MetricUnit.Count)
    _gauge("PromisesBroken", summary.promises_broken, MetricUnit.Count)
    if due_backlog is not None:
        _gauge("DueBacklog", due_backlog, MetricUnit.Count)


def report(store: DynamoStore, at: datetime, *, total_segments: int = 4) -> PortfolioSummary:
    """What the scheduled reporter does: summarize the table, publish the gauges
    with the due backlog, return the summary."""
    summary = summarize_store(store, at, total_segments=total_segments)
    publish_gauges(summary, count_due(store, at))
    return summary


__all__ = [
    "ACTION_COLUMNS",
    "CASE_COLUMNS",
    "REPORT_TYPES",
    "ActionCount",
    "CaseCount",
    "PortfolioSummary",
    "actions_csv",
    "cases_csv",
    "publish_gauges",
    "report",
    "summarize",
    "summarize_store",
]
