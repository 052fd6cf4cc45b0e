"""Rules 4 and 8: which level, reminders before the due date, catch-up, partial payments.

Berlin account (CET +01:00 until 2026-03-29, CEST +02:00 after). Unless said,
the invoice is 100.00 EUR due 2026-01-02; `on_day(n)` is 12:00 UTC on due+n,
which is the same calendar day in Berlin.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning.engine import apply_decision, decide
from dunning.ledger import apply_payment, reverse_payment
from dunning.model import (
    AccountView,
    ActionType,
    CaseStatus,
    CatchUp,
    Decision,
    EventKind,
    Payment,
    Policy,
)
from tests.builders import account, email, invoice, level, policy, utc, view

DUE = date(2026, 1, 2)


def on_day(n: int, due: date = DUE) -> datetime:
    return datetime.combine(due + timedelta(days=n), time(12), UTC)


def codes(d: Decision) -> list[str]:
    return [r.code for e in d.explanations for r in e.reasons]


def events(d: Decision, kind: EventKind) -> list[dict[str, Any]]:
    return [e.data for e in d.events if e.kind is kind]


def pay(v: AccountView, amount: str, at: datetime, pid: str = "pay-1") -> AccountView:
    payment = Payment(
        payment_id=pid, account_id="acc-1", currency="EUR", amount=Decimal(amount), received_at=at
    )
    return apply_payment(v, payment)[0]


MIN_AMOUNT_POLICY = policy(
    levels=(
        level("first", 10),
        level("second", 30, min_amount={"EUR": Decimal("500.00")}),
        level("third", 60),
    )
)


@pytest.mark.parametrize(
    ("days", "balance", "currency", "target", "skipped"),
    [
        pytest.param(9, "100.00", "EUR", 0, [], id="day-9-no-level-yet"),
        pytest.param(10, "100.00", "EUR", 1, [], id="day-10-first"),
        pytest.param(29, "600.00", "EUR", 1, [], id="day-29-still-first"),
        pytest.param(30, "100.00", "EUR", 1, [], id="day-30-below-min-amount"),
        pytest.param(30, "499.99", "EUR", 1, [], id="day-30-one-cent-below-min"),
        pytest.param(30, "500.00", "EUR", 2, [1], id="day-30-at-min-amount"),
        pytest.param(59, "100.00", "EUR", 1, [], id="day-59-first"),
        pytest.param(60, "100.00", "EUR", 3, [1, 2], id="day-60-third-despite-min"),
        pytest.param(60, "900.00", "EUR", 3, [1, 2], id="day-60-third"),
        pytest.param(30, "20000", "JPY", 2, [1], id="min-amount-in-EUR-only-binds-EUR"),
    ],
)
def test_target_is_the_highest_level_whose_days_and_min_amount_hold(
    days: int, balance: str, currency: str, target: int, skipped: list[int]
) -> None:
    # Given levels at 10, 30 (only from 500.00 EUR) and 60 days, and a fresh account
    v = view(invoice("i1", balance, DUE, currency=currency), account=account(currency=currency))
    # When the engine decides `days` after the due date (latest_only catch-up)
    d = decide(v, MIN_AMOUNT_POLICY, None, on_day(days))
    # Then the case jumps to the highest level whose conditions hold, running only its actions
    (case,) = d.cases
    assert case.level == target
    assert [e.target_level for e in d.explanations] == [target]
    assert [a.level for a in d.actions] == ([target] if target else [])
    assert [e["level"] for e in events(d, EventKind.LEVEL_SKIPPED)] == skipped
    assert case.entries == ({target: 1} if target else {})


def test_latest_only_jumps_and_runs_only_the_reached_levels_actions() -> None:
    # Given the Gotransverse table and an account found 45 days overdue
    v = view(invoice("i1", "100.00", DUE))
    # When the engine decides for the first time
    d = decide(v, policy(), None, on_day(45))
    # Then it enters level 4 (suspension) and runs only its two actions, in order
    assert [(c.level, c.service_suspended_by) for c in d.cases] == [(4, 4)]
    assert [(a.level, a.index, a.type) for a in d.actions] == [
        (4, 0, ActionType.SUSPEND_SERVICE),
        (4, 1, ActionType.EMAIL),
    ]
    # And levels 1-3 are recorded as skipped, with their names
    assert [(e["level"], e["name"]) for e in events(d, EventKind.LEVEL_SKIPPED)] == [
        (1, "reminder"),
        (2, "important notice"),
        (3, "avoid suspension"),
    ]
    assert "levels_skipped" in codes(d)


SEQUENTIAL_TIMELINES = [
    # Fresh at day 45 (2026-02-16 12:00 UTC); levels 10/30/40/45/60/90 days from 2026-01-02.
    pytest.param(1, [
        (on_day(45), 1),
        (utc(2026, 2, 16, 23), 2),  # Feb 17 00:00 CET: entered day + 1
        (utc(2026, 2, 17, 23), 3),
        (utc(2026, 2, 18, 23), 4),
        (utc(2026, 3, 2, 23), 5),  # day 60 = Mar 3 00:00 CET
        (utc(2026, 4, 1, 22), 6),  # day 90 = Apr 2 00:00 CEST
    ], id="gap-1-day"),
    pytest.param(3, [
        (on_day(45), 1),
        (utc(2026, 2, 18, 23), 2),  # Feb 19 00:00 CET: entered day (Feb 16) + 3
        (utc(2026, 2, 21, 23), 3),
        (utc(2026, 2, 24, 23), 4),
        (utc(2026, 3, 2, 23), 5),  # day 60 comes after the gap (Feb 28)
        (utc(2026, 4, 1, 22), 6),
    ], id="gap-3-days"),
    pytest.param(20, [
        (on_day(45), 1),
        (utc(2026, 3, 7, 23), 2),  # Mar 8 00:00 CET
        (utc(2026, 3, 27, 23), 3),  # Mar 28 00:00 CET, the day before the DST change
        (utc(2026, 4, 16, 22), 4),  # Apr 17 00:00 CEST
        (utc(2026, 5, 6, 22), 5),  # May 7
        (utc(2026, 5, 26, 22), 6),  # May 27
    ], id="gap-20-days-across-dst"),
]  # fmt: skip


@pytest.mark.parametrize(("gap", "expected"), SEQUENTIAL_TIMELINES)
def test_sequential_climbs_one_level_per_evaluation_with_the_minimum_gap(
    gap: int, expected: list[tuple[datetime, int]]
) -> None:
    # Given sequential catch-up with a minimum gap, and an account found 45 days overdue
    p = policy(catch_up=CatchUp.SEQUENTIAL, min_gap_days=gap)
    v = view(invoice("i1", "100.00", DUE))
    now: datetime | None = on_day(45)
    entered: list[tuple[datetime, int]] = []
    # When the engine is run at each next_evaluation_at, and twice at each instant
    while now is not None and len(entered) < 10:
        d = decide(v, p, None, now)
        entered += [(now, a.level) for a in d.actions if a.index == 0]
        v = apply_decision(v, d)
        again = decide(v, p, None, now)
        assert again.actions == ()  # one level per evaluation instant, never two
        now = d.next_evaluation_at
    # Then each level is entered once, one at a time, at the gap's end or the level's date
    assert entered == expected
    assert v.cases[0].entries == dict.fromkeys(range(1, 7), 1)


def test_sequential_waits_with_a_gap_reason() -> None:
    # Given a sequential case that entered level 1 at day 45
    p = policy(catch_up=CatchUp.SEQUENTIAL, min_gap_days=2)
    v = view(invoice("i1", "100.00", DUE))
    v = apply_decision(v, decide(v, p, None, on_day(45)))
    # When decided later the same day / Then nothing, and the reason says it waits for the gap
    d = decide(v, p, None, on_day(45) + timedelta(hours=8))
    assert d.actions == ()
    assert "gap" in codes(d)
    assert d.next_evaluation_at == utc(2026, 2, 17, 23)  # Feb 18 00:00 CET


# ------------------------------------------------------------------ pre-due reminders

REMINDER_POLICY = policy(
    levels=(
        level("before", -5, email("before_due")),
        level("on due", 0, email("due_today")),
        level("first", 10),
        level("second", 30),
    )
)
# Invoice due Tuesday 2026-02-10; Berlin midnights are 23:00 UTC the day before.
R_DUE = date(2026, 2, 10)
R_INSTANTS = [
    utc(2026, 2, 4, 22, 59, 59),  # day -6, last second
    utc(2026, 2, 4, 23),  # day -5 starts
    utc(2026, 2, 7, 12),  # day -3
    utc(2026, 2, 9, 22, 59, 59),  # day -1, last second
    utc(2026, 2, 9, 23),  # day 0 starts (due date)
    utc(2026, 2, 10, 12),  # day 0
    utc(2026, 2, 10, 23),  # day 1 starts: overdue
    utc(2026, 2, 19, 22, 59, 59),  # day 9
    utc(2026, 2, 19, 23),  # day 10: first dunning level
]


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        pytest.param(0, [(R_INSTANTS[1], 1, "R-i1"), (R_INSTANTS[4], 2, "R-i1"),
                         (R_INSTANTS[8], 3, "C-i1")], id="seen-early-both-reminders"),
        pytest.param(2, [(R_INSTANTS[2], 1, "R-i1"), (R_INSTANTS[4], 2, "R-i1"),
                         (R_INSTANTS[8], 3, "C-i1")], id="seen-at-day-minus-3"),
        pytest.param(4, [(R_INSTANTS[4], 2, "R-i1"), (R_INSTANTS[8], 3, "C-i1")],
                     id="seen-on-due-date-only-latest-reminder"),
        pytest.param(5, [(R_INSTANTS[5], 2, "R-i1"), (R_INSTANTS[8], 3, "C-i1")],
                     id="seen-midday-on-due-date"),
        pytest.param(6, [(R_INSTANTS[8], 3, "C-i1")], id="seen-overdue-no-reminder"),
    ],
)  # fmt: skip
def test_pre_due_reminders_fire_once_per_invoice_and_stop_once_overdue(
    first: int, expected: list[tuple[datetime, int, str]]
) -> None:
    # Given reminders at -5 and 0 days, dunning levels at 10 and 30, an invoice due Feb 10
    v = view(invoice("i1", "100.00", R_DUE))
    fired: list[tuple[datetime, int, str]] = []
    # When the engine runs at each instant from `first` on, applying each decision
    for now in R_INSTANTS[first:]:
        d = decide(v, REMINDER_POLICY, None, now)
        fired += [(now, a.level, a.case_id) for a in d.actions]
        if any(a.case_id.startswith("R-") for a in d.actions):
            # Then a reminder never opens a case
            assert d.cases == ()
            assert "pre_due_reminder" in codes(d)
        v = apply_decision(v, d)
    # Then each reminder fires at most once, reminders skipped are not sent late, and
    # the first dunning level fires at day 10 under the case
    assert fired == expected


def test_reminder_state_is_per_invoice() -> None:
    # Given two invoices due on different days
    v = view(invoice("i1", "100.00", R_DUE), invoice("i2", "100.00", R_DUE + timedelta(days=2)))
    # When decided at day -5 of i2 (day -3 of i1)
    d = decide(v, REMINDER_POLICY, None, utc(2026, 2, 6, 23))
    # Then each invoice gets its own -5 reminder, under its own R- id
    assert sorted((a.case_id, a.level) for a in d.actions) == [("R-i1", 1), ("R-i2", 1)]
    assert d.reminded == frozenset({"i1/1", "i2/1"})


def test_reminder_next_evaluation_is_the_next_reminder_day() -> None:
    # Given an invoice due Feb 10 reminded at day -5
    v = view(invoice("i1", "100.00", R_DUE))
    v = apply_decision(v, decide(v, REMINDER_POLICY, None, R_INSTANTS[1]))
    # When decided at day -3 / Then come back at the due date's local midnight (day-0 reminder)
    assert decide(v, REMINDER_POLICY, None, R_INSTANTS[2]).next_evaluation_at == R_INSTANTS[4]


# ------------------------------------------------------------------ partial payments


def test_partial_payments_never_skip_or_repeat_a_level() -> None:
    # Given a 100.00 invoice, levels at 10 and 30 days
    p = policy(levels=(level("first", 10), level("second", 30)))
    v = view(invoice("i1", "100.00", DUE))
    fired: list[tuple[int, int]] = []
    # When the customer pays 3.00 every day from day 5 to day 34 (balance stays >= 10.00)
    for day in range(1, 40):
        if 5 <= day <= 34:
            v = pay(v, "3.00", on_day(day) - timedelta(hours=1), pid=f"pay-{day}")
        d = decide(v, p, None, on_day(day))
        fired += [(day, a.level) for a in d.actions]
        v = apply_decision(v, d)
    # Then level 1 fires once on day 10 and level 2 once on day 30
    assert fired == [(10, 1), (30, 2)]
    assert v.cases[0].entries == {1: 1, 2: 1}
    assert v.invoices[0].open_amount == Decimal("10.00")


def _two_invoice_case_at_level_2() -> tuple[AccountView, Policy]:
    # inv-a due Jan 2 and inv-b due Jan 20; at day 30 (Feb 1) the case reaches level 2.
    p = policy(levels=(level("first", 10), level("second", 30), level("third", 60)))
    v = view(invoice("inv-a", "100.00", DUE), invoice("inv-b", "100.00", date(2026, 1, 20)))
    v = apply_decision(v, decide(v, p, None, on_day(30)))
    assert [(c.level, c.entries) for c in v.cases] == [(2, {2: 1})]
    return v, p


def test_paying_the_oldest_invoice_holds_the_level() -> None:
    # Given a case at level 2 counted from inv-a (due Jan 2), inv-b due Jan 20 still open
    v, p = _two_invoice_case_at_level_2()
    # When inv-a is paid in full and the engine decides on Feb 2
    v = pay(v, "100.00", on_day(31) - timedelta(hours=2))
    d = decide(v, p, None, on_day(31))
    # Then days now count from Jan 20 (13 days: figures point to level 1),
    # but the case stays at level 2 with reason level_held and nothing is sent
    (expl,) = d.explanations
    assert (expl.days_overdue, expl.level, expl.target_level) == (13, 2, 1)
    assert expl.balance == Decimal("100.00")
    assert "level_held" in codes(d)
    assert d.actions == ()
    assert all(c.level == 2 for c in d.cases)
    # And the next level is counted from the new oldest due date: Jan 20 + 60 = Mar 21 (CET)
    assert d.next_evaluation_at == utc(2026, 3, 20, 23)


@pytest.mark.parametrize(
    ("paid", "status", "level_no", "reason"),
    [
        pytest.param("150.00", CaseStatus.ACTIVE, 2, "level_held", id="below-min-amount-held"),
        pytest.param("195.00", CaseStatus.ACTIVE, 2, "level_held", id="below-entry-stays-open"),
        pytest.param("199.99", CaseStatus.ACTIVE, 2, "level_held", id="one-cent-left-stays"),
        pytest.param("200.00", CaseStatus.RECOVERED, 2, "recovered", id="all-paid-recovers"),
    ],
)
def test_partial_payment_never_lowers_the_level(
    paid: str, status: CaseStatus, level_no: int, reason: str
) -> None:
    # Given a case at level 2 (min 150.00) on two invoices totalling 200.00, days 31
    p = policy(
        levels=(
            level("first", 10),
            level("second", 30, min_amount={"EUR": Decimal("150.00")}),
            level("third", 60),
        )
    )
    v = view(invoice("inv-a", "100.00", DUE), invoice("inv-b", "100.00", DUE))
    v = apply_decision(v, decide(v, p, None, on_day(30)))
    # When `paid` is paid and the engine decides
    v = pay(v, paid, on_day(31) - timedelta(hours=1))
    d = decide(v, p, None, on_day(31))
    # Then the case keeps its level (or recovers when nothing is left), without any action
    case = apply_decision(v, d).cases[0]
    assert (case.status, case.level) == (status, level_no)
    assert reason in codes(d)
    assert d.actions == ()


def test_a_reminder_is_not_sent_again_when_a_bounced_payment_reopens_its_invoice() -> None:
    # Given i1 (due Feb 10) reminded at day -5, then paid
    v = view(invoice("i1", "100.00", R_DUE), invoice("i2", "100.00", R_DUE + timedelta(days=3)))
    v = apply_decision(v, decide(v, REMINDER_POLICY, None, R_INSTANTS[1]))
    payment = Payment(
        payment_id="p1",
        account_id="acc-1",
        currency="EUR",
        amount=Decimal("100.00"),
        received_at=utc(2026, 2, 5, 9),
        invoice_ids=("i1",),
    )
    v, recorded = apply_payment(v, payment)
    # When i2's own -5 reminder goes out (Feb 8), and the payment then bounces
    d = decide(v, REMINDER_POLICY, None, utc(2026, 2, 8, 12))
    assert [(a.case_id, a.level) for a in d.actions] == [("R-i2", 1)]
    assert d.reminded == frozenset({"i1/1", "i2/1"})
    v = apply_decision(v, d)
    v, _ = reverse_payment(v, recorded, utc(2026, 2, 8, 13), "bounced")
    # Then i1's -5 reminder is not sent a second time
    assert decide(v, REMINDER_POLICY, None, utc(2026, 2, 8, 14)).actions == ()
