"""Reports over a small moto portfolio after real runs (`dunning.reports`,
`dunning.store.scan`).

The portfolio is seeded, evaluated by the real evaluator for a few days, and
touched the way people and the billing system touch it: a payment in full, a
payment that bounces, a promise to pay that is broken, delivery outcomes.
The summary and the exports are then checked against what the store itself
says (account views, case and outbox items).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning.model import (
    OPEN_CASE_STATUSES,
    AccountView,
    Case,
    InvoiceStatus,
    Payment,
    Suspension,
    SuspensionKind,
)
from dunning.queues import ACTION
from dunning.reports import (
    REPORT_TYPES,
    actions_csv,
    cases_csv,
    report,
    summarize,
    summarize_store,
)
from dunning.store import StoredView
from dunning.store.scan import ViewFilter, count_due, iter_views, policy_of, scan_items
from dunning.store.schema import PARKED, due_time
from tests.integration.conftest import Env
from tests.integration.helpers import AS_OF, drain_actions, run_scheduled, scan_table, seed_standard

ACCOUNTS = 40


def _owed(view: AccountView, case: Case) -> Decimal:
    """What the invoices of `case` still owe."""
    ids = set(case.invoice_ids)
    return sum((inv.open_amount for inv in view.invoices if inv.invoice_id in ids), Decimal(0))


def _open_case(stored: StoredView) -> Case | None:
    return next((c for c in stored.view.cases if c.status in OPEN_CASE_STATUSES), None)


@dataclass
class Portfolio:
    env: Env
    at: datetime  # after everything
    paid_at: datetime
    paid: dict[str, Decimal]  # currency -> the payment in full that stays
    outcomes: Counter[tuple[str, str]]  # (channel, outcome) recorded


@pytest.fixture
def portfolio(env: Env) -> Portfolio:
    seed_standard(env, ACCOUNTS, due_fraction=0.5)
    run_scheduled(env, AS_OF)
    drain_actions(env)
    in_dunning = [
        s
        for s in iter_views(env.store, ViewFilter(currencies=frozenset({"EUR"})))
        if _open_case(s) is not None and s.view.account.segment == "consumer"
    ]
    assert len(in_dunning) >= 3
    payer, bouncer, promiser = in_dunning[:3]
    now = AS_OF + timedelta(hours=2)
    # A payment in full, and one that bounces the next day
    paid: dict[str, Decimal] = {}
    for stored, pid in ((payer, "pay-1"), (bouncer, "pay-2")):
        account, dunned = stored.view.account, _open_case(stored)
        assert dunned is not None
        paid[pid] = _owed(stored.view, dunned)
        env.store.record_payment(
            Payment(
                payment_id=pid,
                account_id=account.account_id,
                currency=account.currency,
                amount=paid[pid],
                received_at=now,
                invoice_ids=dunned.invoice_ids,
            ),
            now,
            "billing",
        )
    # A promise to pay by tomorrow, never kept
    case = _open_case(promiser)
    assert case is not None
    env.store.suspend_case(
        Suspension(
            suspension_id="ptp-1",
            account_id=promiser.view.account.account_id,
            case_id=case.case_id,
            kind=SuspensionKind.PROMISE_TO_PAY,
            starts_at=now,
            ends_at=now + timedelta(days=10),
            currency="EUR",
            promised_amount=Decimal("10.00"),
            promised_date=(now + timedelta(days=1)).date(),
        ),
        now,
        "collector",
        None,
    )
    run_scheduled(env, AS_OF + timedelta(days=1))
    env.store.reverse_payment(
        bouncer.view.account.account_id,
        "pay-2",
        "cheque bounced",
        AS_OF + timedelta(days=1, hours=3),
        "billing",
    )
    for day in range(2, 8):
        run_scheduled(env, AS_OF + timedelta(days=day))
    drain_actions(env)
    # Delivery outcomes for some queued actions, one with an address in its reason
    queued = [
        ACTION.validate_json(it["action"]["S"])
        for it in scan_items(env.store, types=("outbox",))
        if it["status"]["S"] == "queued"
    ]
    assert len(queued) >= 4
    at = AS_OF + timedelta(days=8)
    outcomes = [
        (queued[0], "delivered", "sent", "msg-1"),
        (queued[1], "delivered", "sent", "msg-2"),
        (queued[2], "failed", "address someone@example.com rejected", None),
        (queued[3], "skipped", "recovered", None),
    ]
    env.store.record_outcomes(outcomes, at - timedelta(hours=1))
    return Portfolio(
        env=env,
        at=at,
        paid_at=now,
        paid={"EUR": paid["pay-1"]},
        outcomes=Counter((a.channel.value, o) for a, o, _, _ in outcomes),
    )


def test_the_summary_agrees_with_the_store(portfolio: Portfolio) -> None:
    env, at = portfolio.env, portfolio.at
    # Given the portfolio after a week of runs, payments, a reversal and a promise
    views = list(iter_views(env.store))
    items = list(scan_items(env.store, types=REPORT_TYPES, total_segments=3))
    # When it is summarized at the end
    summary = summarize(items, at)
    # Then the open cases by status and level are those of the account views
    open_statuses = {s.value for s in OPEN_CASE_STATUSES}
    from_views = Counter(
        (c.status.value, c.level) for s in views for c in s.view.cases if c.is_open
    )
    in_summary = {(c.status, c.level): c.count for c in summary.cases if c.status in open_statuses}
    assert in_summary == dict(from_views)
    assert summary.open_cases == sum(from_views.values()) > 0
    # ... what open cases owe per currency is what the views' open cases owe
    owed: dict[str, Decimal] = {}
    for s in views:
        for c in s.view.cases:
            if c.is_open:
                ids = set(c.invoice_ids)
                for inv in s.view.invoices:
                    if inv.invoice_id in ids and inv.status is not InvoiceStatus.DISPUTED:
                        owed[inv.currency] = owed.get(inv.currency, Decimal(0)) + inv.open_amount
    assert {c: Decimal(a) for c, a in summary.outstanding.items() if Decimal(a)} == {
        c: a for c, a in owed.items() if a
    }
    assert set(summary.outstanding) >= {"EUR", "JPY"}
    # ... the payment in full is recovered money; the bounced one is not
    assert summary.recovered_amount == {"EUR": f"{portfolio.paid['EUR']:.2f}"}
    assert summary.recovered_payments == 1
    assert summary.recovered_cases >= 1
    # ... the promise was broken
    assert (summary.promises_kept, summary.promises_broken) == (0, 1)
    # ... and every outbox record counts once, with the outcomes recorded
    outbox = [it for it in items if it["type"]["S"] == "outbox"]
    assert sum(a.count for a in summary.actions) == len(outbox)
    recorded = Counter(
        {(a.channel, a.outcome): a.count for a in summary.actions if a.outcome != "queued"}
    )
    assert {k: n for k, n in recorded.items() if k[1] != "pending"} == dict(portfolio.outcomes)


def test_a_summary_in_the_past_ignores_what_came_later(portfolio: Portfolio) -> None:
    # Given the same portfolio, when summarized just before the payments
    env = portfolio.env
    before = summarize(
        scan_items(env.store, types=REPORT_TYPES), portfolio.paid_at - timedelta(minutes=1)
    )
    after_payment = summarize(
        scan_items(env.store, types=REPORT_TYPES), portfolio.paid_at + timedelta(hours=1)
    )
    # Then no money was recovered yet, and no promise or outcome had happened
    assert before.recovered_amount == {}
    assert (before.promises_kept, before.promises_broken) == (0, 0)
    assert {a.outcome for a in before.actions} <= {"pending", "queued"}
    # ... an hour after the payments both counted (the bounce came the next day)
    assert Decimal(after_payment.recovered_amount["EUR"]) > portfolio.paid["EUR"]
    assert after_payment.recovered_payments == 2


def test_the_exports_have_one_row_per_item_and_no_personal_data(portfolio: Portfolio) -> None:
    # Given every item of the table, account items with e-mails and phones included
    everything = list(scan_items(portfolio.env.store, total_segments=2))
    assert any("@" in json.dumps(it) for it in everything)
    # When cases and actions are exported
    cases_text, actions_text = cases_csv(everything), actions_csv(everything)
    case_rows = list(csv.DictReader(io.StringIO(cases_text)))
    action_rows = list(csv.DictReader(io.StringIO(actions_text)))
    # Then there is one row per case item and per outbox record
    types = Counter(it["type"]["S"] for it in everything)
    assert len(case_rows) == types["case"] > 0
    assert len(action_rows) == types["outbox"] > 0
    # ... with no e-mail address and no phone number
    for text in (cases_text, actions_text):
        assert "@" not in text
        assert "+4915" not in text
    assert "[redacted]" in actions_text
    # ... and amounts as plain decimals (JPY without decimals)
    jpy = [r for r in case_rows if r["currency"] == "JPY"]
    assert jpy and all("." not in r["open_amount"] for r in jpy)
    eur = [r for r in case_rows if r["currency"] == "EUR"]
    assert eur and all(len(r["open_amount"].split(".")[1]) == 2 for r in eur)


def test_a_parallel_scan_reads_every_item_once(portfolio: Portfolio) -> None:
    env = portfolio.env
    keys = sorted((it["PK"]["S"], it["SK"]["S"]) for it in scan_table(env))
    # When the table is scanned in 4 parallel segments, in pages of 25
    parallel = [
        (it["PK"]["S"], it["SK"]["S"])
        for it in scan_items(env.store, total_segments=4, page_size=25)
    ]
    # Then every item comes once
    assert sorted(parallel) == keys
    # ... and segment by segment, separately, too
    by_segment = [
        (it["PK"]["S"], it["SK"]["S"])
        for segment in range(3)
        for it in scan_items(env.store, total_segments=3, segment=segment)
    ]
    assert sorted(by_segment) == keys
    # ... a type filter keeps only those types
    cases = list(scan_items(env.store, types=("case", "suspension"), total_segments=2))
    assert {it["type"]["S"] for it in cases} == {"case", "suspension"}
    # ... and stopping early stops the workers without an error
    first = next(iter(scan_items(env.store, total_segments=4, page_size=5)))
    assert "PK" in first
    with pytest.raises(ValueError, match="segment"):
        list(scan_items(env.store, total_segments=2, segment=2))


def test_views_are_read_and_filtered(portfolio: Portfolio) -> None:
    env = portfolio.env
    book = env.store.load_policy_book()
    every = {s.view.account.account_id: s for s in iter_views(env.store, total_segments=2)}
    assert len(every) == ACCOUNTS
    # When filtered by currency, segment, policy and account ids
    jpy = list(iter_views(env.store, ViewFilter(currencies=frozenset({"JPY"}))))
    vip = list(iter_views(env.store, ViewFilter(segments=frozenset({"vip"}))))
    enterprise = list(
        iter_views(env.store, ViewFilter(policy_ids=frozenset({"enterprise"})), book=book)
    )
    named = list(
        iter_views(env.store, ViewFilter(account_ids=frozenset({"acc-000001", "acc-000007"})))
    )
    # Then each keeps exactly the accounts that match
    assert {s.view.account.currency for s in jpy} == {"JPY"}
    assert len(jpy) == sum(1 for s in every.values() if s.view.account.currency == "JPY")
    assert {s.view.account.segment for s in vip} == {"vip"}
    assert {s.view.account.account_id for s in enterprise} == {
        a for a, s in every.items() if policy_of(s, book) == "enterprise"
    }
    assert {s.view.account.account_id for s in enterprise} == {
        s.view.account.account_id for s in vip
    }
    assert [s.view.account.account_id for s in named] == ["acc-000001", "acc-000007"]
    assert named[0] == every["acc-000001"]


def test_the_reporter_publishes_gauges_with_the_due_backlog(
    portfolio: Portfolio, capsys: pytest.CaptureFixture[str]
) -> None:
    env, at = portfolio.env, portfolio.at
    # Scheduled: in the due index with a time of its own (a parked account has none)
    due = [s for s in iter_views(env.store) if due_time(s.due_at) is not None]
    assert any(s.due_at == PARKED for s in iter_views(env.store))
    expected_backlog = sum(
        1 for s in due if s.due_at is not None and s.due_at <= at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    )
    assert count_due(env.store, at) == expected_backlog
    assert count_due(env.store, at + timedelta(days=400)) == len(due)
    capsys.readouterr()
    # When the reporter runs
    summary = report(env.store, at, total_segments=2)
    out = capsys.readouterr().out
    # Then it returns the summary and publishes the fixed metric names
    assert summary == summarize_store(env.store, at)
    blobs: list[dict[str, Any]] = [
        json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')
    ]
    names = Counter(b["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] for b in blobs)
    assert set(names) == {
        "OpenCases",
        "OutstandingAmount",
        "RecoveredAmount",
        "PromisesKept",
        "PromisesBroken",
        "DueBacklog",
    }
    backlog = next(b for b in blobs if "DueBacklog" in b)
    assert backlog["DueBacklog"] in (expected_backlog, [expected_backlog])
