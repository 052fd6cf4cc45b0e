"""Rules 14 and 15: explanations as data, and the earliest instant anything can change.

Berlin account (CET +01:00 until 2026-03-29); invoices due 2026-01-02 unless said;
`on_day(n)` is 12:00 UTC on due+n. Hand-written level instants: day 30 is
2026-02-01 00:00 CET = 2026-01-31 23:00 UTC, day 60 is 2026-03-03 00:00 CET =
2026-03-02 23:00 UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

from dunning.engine import apply_decision, decide, move_case
from dunning.ledger import apply_payment
from dunning.model import (
    AccountView,
    ActionSpec,
    ActionType,
    Calendar,
    CaseStatus,
    Decision,
    Payment,
    Policy,
    Suspension,
    SuspensionKind,
)
from tests.builders import account, calendar, invoice, level, policy, view

DUE = date(2026, 1, 2)
DAY_30 = datetime(2026, 1, 31, 23, tzinfo=UTC)
DAY_60 = datetime(2026, 3, 2, 23, tzinfo=UTC)

Scenario = tuple[AccountView, Policy, Calendar | None, datetime]


def on_day(n: int, hour: int = 12) -> datetime:
    return datetime.combine(DUE + timedelta(days=n), time(hour), UTC)


def codes(d: Decision) -> set[str]:
    return {r.code for e in d.explanations for r in e.reasons}


def simple() -> Policy:
    return policy(levels=(level("first", 10), level("second", 30), level("third", 60)))


def stored(v: AccountView, p: Policy, *days: int) -> AccountView:
    for n in days:
        v = apply_decision(v, decide(v, p, None, on_day(n)))
    return v


def pay(v: AccountView, amount: str, at: datetime) -> AccountView:
    payment = Payment(
        payment_id="p1", account_id="acc-1", currency="EUR", amount=Decimal(amount), received_at=at
    )
    return apply_payment(v, payment)[0]


# ----------------------------------------------------------------------- scenarios


def opened_at_level_1() -> Scenario:
    return view(invoice("i1", "100.00", DUE)), simple(), None, on_day(10)


def jumped_to_level_2() -> Scenario:
    return view(invoice("i1", "100.00", DUE)), simple(), None, on_day(35)


def between_levels() -> Scenario:
    p = simple()
    return stored(view(invoice("i1", "100.00", DUE)), p, 10), p, None, on_day(20)


def below_threshold() -> Scenario:
    return view(invoice("i1", "9.99", DUE)), simple(), None, on_day(10)


def not_covered() -> Scenario:
    v = view(invoice("i1", "100.00", DUE, currency="GBP"), account=account(currency="GBP"))
    return v, simple(), None, on_day(10)


def excluded() -> Scenario:
    return view(invoice("i1", "100.00", DUE), excluded_by=("vip",)), simple(), None, on_day(10)


def deferred_to_monday() -> Scenario:
    # Day 8 is Saturday 2026-01-10: the level's email waits for Monday 08:00 CET.
    p = policy(levels=(level("first", 8), level("second", 30)))
    return view(invoice("i1", "100.00", DUE)), p, calendar(), on_day(8)


def recovered() -> Scenario:
    p = simple()
    v = stored(view(invoice("i1", "100.00", DUE)), p, 10)
    return pay(v, "100.00", on_day(12, 9)), p, None, on_day(12)


def level_held() -> Scenario:
    p = simple()
    v = view(invoice("i-old", "100.00", DUE), invoice("i-new", "100.00", date(2026, 1, 25)))
    v = stored(v, p, 30)
    return pay(v, "100.00", on_day(31, 9)), p, None, on_day(31)


def last_level() -> Scenario:
    p = simple()
    return stored(view(invoice("i1", "100.00", DUE)), p, 60), p, None, on_day(70)


def awaiting_approval() -> Scenario:
    agency = ActionSpec(type=ActionType.COLLECTION_AGENCY, target="agency", requires_approval=True)
    p = policy(levels=(level("first", 10), level("agency", 30, agency), level("last", 60)))
    return stored(view(invoice("i1", "100.00", DUE)), p, 10, 30), p, None, on_day(31)


def _suspend(v: AccountView, s: Suspension) -> AccountView:
    case = v.cases[0].model_copy(
        update={"status": CaseStatus.SUSPENDED, "suspension_id": s.suspension_id}
    )
    return v.model_copy(update={"cases": (case,), "suspensions": (s,)})


def suspended() -> Scenario:
    p = simple()
    v = stored(view(invoice("i1", "100.00", DUE)), p, 10)
    s = Suspension(
        suspension_id="s1",
        account_id="acc-1",
        case_id="C-i1",
        kind=SuspensionKind.DISPUTE,
        starts_at=on_day(11),
        ends_at=on_day(40, 7),
    )
    return _suspend(v, s), p, None, on_day(12)


def promise_pending() -> Scenario:
    p = simple()
    v = stored(view(invoice("i1", "100.00", DUE)), p, 10)
    s = Suspension(
        suspension_id="s1",
        account_id="acc-1",
        case_id="C-i1",
        kind=SuspensionKind.PROMISE_TO_PAY,
        starts_at=on_day(11),
        ends_at=on_day(40),
        currency="EUR",
        promised_amount=Decimal("50.00"),
        promised_date=date(2026, 1, 20),
    )
    return _suspend(v, s), p, None, on_day(12)


def not_yet_due() -> Scenario:
    return view(invoice("i1", "100.00", date(2026, 1, 20))), simple(), None, on_day(10)


def new_invoice_falls_due_before_next_level() -> Scenario:
    p = simple()
    v = stored(view(invoice("i1", "100.00", DUE)), p, 10)
    later = invoice("i2", "50.00", date(2026, 1, 20))
    return v.model_copy(update={"invoices": (*v.invoices, later)}), p, None, on_day(12)


def next_level_blocked_by_min_amount() -> Scenario:
    p = policy(
        levels=(
            level("first", 10),
            level("big", 30, min_amount={"EUR": Decimal("500.00")}),
            level("third", 60),
        )
    )
    return stored(view(invoice("i1", "100.00", DUE)), p, 10, 30), p, None, on_day(35)


# ------------------------------------------------------------------ explanations

EXPLANATION_CASES = [
    # scenario, case id, balance, days, threshold, level, target, reason codes (subset)
    pytest.param(opened_at_level_1, "C-i1", "100.00", 10, "10.00", 1, 1,
                 {"case_opened", "level_entered", "next_level"}, id="opened"),
    pytest.param(jumped_to_level_2, "C-i1", "100.00", 35, "10.00", 2, 2,
                 {"case_opened", "level_entered", "levels_skipped"}, id="latest-only-jump"),
    pytest.param(between_levels, "C-i1", "100.00", 20, "10.00", 1, 1, {"next_level"},
                 id="between-levels"),
    pytest.param(below_threshold, None, "9.99", 10, "10.00", 0, 0, {"below_threshold"},
                 id="below-threshold"),
    pytest.param(not_covered, None, "100.00", 10, None, 0, 0, {"not_covered"},
                 id="not-covered"),
    pytest.param(excluded, None, "0", 0, "10.00", 0, 0, {"excluded"}, id="excluded"),
    pytest.param(deferred_to_monday, "C-i1", "100.00", 8, "10.00", 1, 1,
                 {"level_entered", "deferred"}, id="deferred"),
    pytest.param(recovered, "C-i1", "0.00", 0, "10.00", 1, 1, {"recovered"}, id="recovered"),
    pytest.param(level_held, "C-i-old", "100.00", 8, "10.00", 2, 0, {"level_held"},
                 id="level-held"),
    pytest.param(last_level, "C-i1", "100.00", 70, "10.00", 3, 3, {"last_level"},
                 id="last-level"),
    pytest.param(awaiting_approval, "C-i1", "100.00", 31, "10.00", 2, 2, {"awaiting_approval"},
                 id="awaiting-approval"),
    pytest.param(suspended, "C-i1", "100.00", 12, "10.00", 1, 1, {"suspended"},
                 id="suspended"),
    pytest.param(promise_pending, "C-i1", "100.00", 12, "10.00", 1, 1, {"promise_pending"},
                 id="promise-pending"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("scenario", "case_id", "balance", "days", "threshold", "level_no", "target", "reasons"),
    EXPLANATION_CASES,
)
def test_every_decision_explains_itself_as_data(
    scenario: Callable[[], Scenario],
    case_id: str | None,
    balance: str,
    days: int,
    threshold: str | None,
    level_no: int,
    target: int,
    reasons: set[str],
) -> None:
    # Given a scenario and a selection made by a rule
    v, p, cal, now = scenario()
    # When the engine decides
    d = decide(v, p, cal, now, selected_by="rule:r-standard")
    # Then one explanation gives policy, version, selection, figures, level, target and reasons
    (e,) = d.explanations
    assert (e.policy_id, e.policy_version, e.selected_by, e.mode) == (
        "pol-1",
        1,
        "rule:r-standard",
        p.mode,
    )
    assert e.case_id == case_id
    assert e.currency == v.account.currency
    assert (e.balance, e.days_overdue) == (Decimal(balance), days)
    assert e.threshold == (None if threshold is None else Decimal(threshold))
    assert (e.level, e.target_level) == (level_no, target)
    assert reasons <= {r.code for r in e.reasons}, [r.code for r in e.reasons]
    # And every reason has a stable code and a sentence for people
    assert all(r.code and r.message for r in e.reasons)


def test_exit_threshold_is_explained() -> None:
    # Given a policy with an exit threshold of 5.00 / When a case recovers / Then it is explained
    v, p, cal, now = recovered()
    p = policy(levels=p.levels, exit_thresholds={"EUR": Decimal("5.00")})
    (e,) = decide(v, p, cal, now).explanations
    assert e.exit_threshold == Decimal("5.00")


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(not_yet_due, id="invoice-not-yet-due"),
        pytest.param(lambda: (view(), simple(), None, on_day(10)), id="no-invoices"),
    ],
)
def test_a_decision_with_nothing_to_do_still_carries_an_explanation(
    scenario: Callable[[], Scenario],
) -> None:
    # Given an account with nothing overdue
    v, p, cal, now = scenario()
    # When the engine decides
    d = decide(v, p, cal, now, selected_by="default")
    # Then the decision still explains itself (policy, version, selection, reasons)
    assert d.explanations, "every decision carries explanations"
    for e in d.explanations:
        assert (e.policy_id, e.policy_version, e.selected_by) == ("pol-1", 1, "default")
        assert e.reasons


# ------------------------------------------------------------- next evaluation time

NEXT_CASES = [
    # scenario, expected next evaluation (hand-written UTC)
    pytest.param(opened_at_level_1, DAY_30, id="next-level-date"),
    pytest.param(between_levels, DAY_30, id="between-levels-next-level-date"),
    pytest.param(below_threshold, None, id="below-threshold-none"),
    pytest.param(not_covered, None, id="not-covered-none"),
    pytest.param(excluded, None, id="excluded-none"),
    # The email waits for Monday 08:00 CET in the outbox; the account itself
    # next changes on the second level's day.
    pytest.param(deferred_to_monday, DAY_30, id="deferred-action-leaves-it-to-the-outbox"),
    pytest.param(recovered, None, id="recovered-none"),
    pytest.param(last_level, None, id="last-level-none"),
    pytest.param(awaiting_approval, None, id="awaiting-approval-none"),
    pytest.param(suspended, on_day(40, 7), id="suspension-end"),
    # Promise of Jan 20 + 2 grace days: 2026-01-23 00:00 CET.
    pytest.param(promise_pending, datetime(2026, 1, 22, 23, tzinfo=UTC), id="promise-deadline"),
    # Not yet due: overdue from 2026-01-21 00:00 CET.
    pytest.param(not_yet_due, datetime(2026, 1, 20, 23, tzinfo=UTC), id="invoice-falls-due"),
    pytest.param(new_invoice_falls_due_before_next_level, datetime(2026, 1, 20, 23, tzinfo=UTC),
                 id="second-invoice-falls-due-first"),
    # Level 2 will not fire (min amount), level 3 will on day 60.
    pytest.param(next_level_blocked_by_min_amount, DAY_60, id="level-after-a-blocked-level"),
]  # fmt: skip


@pytest.mark.parametrize(("scenario", "expected"), NEXT_CASES)
def test_next_evaluation_is_the_earliest_instant_anything_can_change(
    scenario: Callable[[], Scenario], expected: datetime | None
) -> None:
    # Given a scenario
    v, p, cal, now = scenario()
    # When the engine decides
    d = decide(v, p, cal, now)
    # Then it asks to come back at the earliest instant the decision could change
    assert d.next_evaluation_at == expected
    if expected is not None:
        assert expected > now
        # And nothing changes if the engine is asked again just before that instant
        v2 = apply_decision(v, d)
        assert not decide(v2, p, cal, expected - timedelta(seconds=1)).changed


def test_a_level_entered_before_its_days_does_not_claim_them() -> None:
    # Given a case at level 1 (10 days) on day 12, moved by a collector to level 3 (40 days)
    v, p, _, now = suspended_free_case()
    moved = move_case(v, p, None, now, case_id="C-i1", level=3, reason="test", actor="ann")
    (entered,) = [r for e in moved.explanations for r in e.reasons if r.code == "level_entered"]
    # Then the explanation gives the days without claiming the level's threshold was reached
    assert "12 day(s) overdue, before the level's 40" in entered.message
    assert ">=" not in entered.message
    # ... while a level reached by its days says so
    later = decide(apply_decision(v, moved), p, None, on_day(61))
    (reached,) = [r for e in later.explanations for r in e.reasons if r.code == "level_entered"]
    assert "day(s) overdue >= 60" in reached.message


def suspended_free_case() -> Scenario:
    """A case at level 1 on day 12 (Gotransverse levels: 10, 30, 40, 45, 60, 90)."""
    p = policy()
    v = apply_decision(
        view(invoice("i1", "100.00", DUE)),
        decide(view(invoice("i1", "100.00", DUE)), p, None, on_day(11)),
    )
    return v, p, None, on_day(12)
