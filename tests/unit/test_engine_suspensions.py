"""Rule 11: suspensions, their end (resume, escalate, manual) and promises to pay.

Berlin account, one invoice due 2026-01-02; the case enters level 1 on day 10
(Jan 12) and is suspended on day 11. Level 2 is due on day 30:
2026-02-01 00:00 CET = 2026-01-31 23:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning.engine import apply_decision, can_accept_promise, decide
from dunning.ledger import apply_payment
from dunning.model import (
    AccountView,
    Case,
    CaseStatus,
    Decision,
    EventKind,
    InvoiceStatus,
    Payment,
    Policy,
    Suspension,
    SuspensionEnd,
    SuspensionKind,
    SuspensionProfile,
    SuspensionStatus,
)
from tests.builders import invoice, level, policy, view

DUE = date(2026, 1, 2)
SECOND = timedelta(seconds=1)
LEVEL_2_AT = datetime(2026, 1, 31, 23, tzinfo=UTC)


def on_day(n: int, hour: int = 12) -> datetime:
    return datetime.combine(DUE + timedelta(days=n), time(hour), UTC)


def codes(d: Decision) -> list[str]:
    return [r.code for e in d.explanations for r in e.reasons]


def kinds(d: Decision) -> list[EventKind]:
    return [e.kind for e in d.events]


def suspended_view(
    p: Policy, kind: SuspensionKind, amount: str = "300.00", **kw: Any
) -> AccountView:
    """A case at level 1 (entered day 10), suspended from day 11 until `ends_at` (day 20)."""
    v = view(invoice("i1", amount, DUE))
    v = apply_decision(v, decide(v, p, None, on_day(10)))
    data: dict[str, Any] = {
        "suspension_id": "s-1",
        "account_id": "acc-1",
        "case_id": "C-i1",
        "kind": kind,
        "starts_at": on_day(11),
        "ends_at": on_day(20),
    }
    data.update(kw)
    s = Suspension(**data)
    case = v.cases[0].model_copy(update={"status": CaseStatus.SUSPENDED, "suspension_id": "s-1"})
    return v.model_copy(update={"cases": (case,), "suspensions": (s,)})


def with_profile(kind: SuspensionKind, on_end: SuspensionEnd, **kw: Any) -> Policy:
    profile = SuspensionProfile(kind=kind, on_end=on_end, **kw)
    return policy(suspension_profiles={kind: profile})


def the_case(v: AccountView, d: Decision) -> Case:
    return apply_decision(v, d).cases[0]


@pytest.mark.parametrize(
    "kind",
    [SuspensionKind.DISPUTE, SuspensionKind.CUSTOMER_CARE, SuspensionKind.FRAUD_REVIEW],
)
def test_nothing_is_sent_while_suspended(kind: SuspensionKind) -> None:
    # Given a case suspended from day 11 to day 60 (levels 2-5 fall inside)
    p = policy()
    v = suspended_view(p, kind, ends_at=on_day(60))
    # When the engine runs every day until the last second before the end
    for day in range(11, 60):
        d = decide(v, p, None, on_day(day))
        # Then nothing is sent, the case stays at level 1, and it asks to come back at the end
        assert d.actions == ()
        assert d.approvals == ()
        assert d.next_evaluation_at == on_day(60)
        assert "suspended" in codes(d)
        v = apply_decision(v, d)
    last = decide(v, p, None, on_day(60) - SECOND)
    assert last.actions == ()
    assert v.cases[0].level == 1
    assert v.cases[0].status is CaseStatus.SUSPENDED


END_CASES = [
    # kind, profile end (None: the policy's default profile), case status, level, actions,
    # suspension status, next evaluation
    pytest.param(SuspensionKind.DISPUTE, None, CaseStatus.ACTIVE, 1, [],
                 SuspensionStatus.ENDED, LEVEL_2_AT, id="dispute-default-resumes"),
    pytest.param(SuspensionKind.CUSTOMER_CARE, None, CaseStatus.ACTIVE, 1, [],
                 SuspensionStatus.ENDED, LEVEL_2_AT, id="customer-care-default-resumes"),
    pytest.param(SuspensionKind.FRAUD_REVIEW, None, CaseStatus.SUSPENDED, 1, [],
                 SuspensionStatus.AWAITING_REVIEW, None, id="fraud-default-waits-for-person"),
    pytest.param(SuspensionKind.DISPUTE, SuspensionEnd.ESCALATE, CaseStatus.ACTIVE, 2, [2],
                 SuspensionStatus.ENDED, datetime(2026, 2, 10, 23, tzinfo=UTC),
                 id="escalate-enters-next-level"),
    pytest.param(SuspensionKind.CUSTOMER_CARE, SuspensionEnd.MANUAL, CaseStatus.SUSPENDED, 1, [],
                 SuspensionStatus.AWAITING_REVIEW, None, id="manual-waits"),
    pytest.param(SuspensionKind.FRAUD_REVIEW, SuspensionEnd.RESUME, CaseStatus.ACTIVE, 1, [],
                 SuspensionStatus.ENDED, LEVEL_2_AT, id="fraud-set-to-resume"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "on_end", "status", "level_no", "action_levels", "s_status", "next_at"), END_CASES
)
def test_at_its_end_the_profile_decides(
    kind: SuspensionKind,
    on_end: SuspensionEnd | None,
    status: CaseStatus,
    level_no: int,
    action_levels: list[int],
    s_status: SuspensionStatus,
    next_at: datetime | None,
) -> None:
    # Given a case at level 1 suspended until day 20 (before level 2's day 30)
    p = policy() if on_end is None else with_profile(kind, on_end)
    v = suspended_view(p, kind)
    # When the engine decides one second before the end / Then it still waits
    early = decide(v, p, None, on_day(20) - SECOND)
    assert (early.actions, early.suspensions) == ((), ())
    assert early.next_evaluation_at == on_day(20)
    # When it decides at the end
    d = decide(v, p, None, on_day(20))
    # Then the case resumes at the same level, escalates one level, or waits for a person
    case = the_case(v, d)
    assert (case.status, case.level) == (status, level_no)
    assert [a.level for a in d.actions if a.index == 0] == action_levels
    assert [(s.suspension_id, s.status) for s in d.suspensions] == [("s-1", s_status)]
    assert d.next_evaluation_at == next_at
    if status is CaseStatus.ACTIVE:
        assert case.suspension_id is None
        assert "suspension_ended" in codes(d)
    else:
        assert "awaiting_review" in codes(d)
    # And deciding again on the stored result changes nothing
    again = decide(apply_decision(v, d), p, None, on_day(20))
    assert (again.actions, again.cases, again.suspensions) == ((), (), ())


def test_awaiting_review_stays_put_even_when_levels_fall_due() -> None:
    # Given a fraud review that ended and waits for a person
    p = policy()
    v = suspended_view(p, SuspensionKind.FRAUD_REVIEW)
    v = apply_decision(v, decide(v, p, None, on_day(20)))
    # When the engine runs on days when levels 2 to 6 would fall due
    for day in (30, 40, 45, 60, 90):
        d = decide(v, p, None, on_day(day))
        # Then nothing is sent and nothing asks for an evaluation
        assert (d.actions, d.cases) == ((), ())
        assert d.next_evaluation_at is None


# ------------------------------------------------------------------- promises to pay

# Promise: 100.00 of 300.00 by day 15 (Sat 2026-01-17). The default promise profile has
# 2 grace days: broken from 2026-01-20 00:00 CET = 2026-01-19 23:00 UTC.
DEADLINE = datetime(2026, 1, 19, 23, tzinfo=UTC)
PROMISE: dict[str, Any] = {
    "currency": "EUR",
    "promised_amount": Decimal("100.00"),
    "promised_date": date(2026, 1, 17),
    "ends_at": on_day(25),
}


def promise_view(p: Policy, payments: list[tuple[str, datetime]]) -> AccountView:
    v = suspended_view(p, SuspensionKind.PROMISE_TO_PAY, **PROMISE)
    for n, (amount, at) in enumerate(payments):
        pay = Payment(
            payment_id=f"p{n}",
            account_id="acc-1",
            currency="EUR",
            amount=Decimal(amount),
            received_at=at,
        )
        v, _ = apply_payment(v, pay)
    return v


PROMISE_CASES = [
    # payments (amount, received), now, expected outcome
    pytest.param([("100.00", on_day(14))], on_day(14, 13), "kept", id="paid-in-full"),
    pytest.param([("60.00", on_day(12)), ("40.00", on_day(15))], on_day(15, 13), "kept",
                 id="paid-in-two-parts"),
    pytest.param([("150.00", on_day(14))], on_day(14, 13), "kept", id="paid-more"),
    pytest.param([("100.00", DEADLINE - SECOND)], DEADLINE, "kept", id="paid-in-grace-period"),
    pytest.param([("100.00", on_day(10, 13))], on_day(14), "pending",
                 id="payment-before-promise-does-not-count"),
    pytest.param([("99.99", on_day(14))], DEADLINE - SECOND, "pending", id="short-one-cent-waits"),
    pytest.param([("99.99", on_day(14))], DEADLINE, "broken", id="short-one-cent-broken"),
    pytest.param([], DEADLINE, "broken", id="nothing-paid-broken"),
]  # fmt: skip


@pytest.mark.parametrize(("payments", "now", "outcome"), PROMISE_CASES)
def test_promise_to_pay_is_kept_pending_or_broken(
    payments: list[tuple[str, datetime]], now: datetime, outcome: str
) -> None:
    # Given a promise of 100.00 by Jan 17 (+2 grace days), payments counted by the ledger
    p = policy()
    v = promise_view(p, payments)
    # When the engine decides at `now`
    d = decide(v, p, None, now)
    case = the_case(v, d)
    if outcome == "kept":
        # Then a kept promise resumes the case at its level, with nothing sent
        assert EventKind.PROMISE_KEPT in kinds(d)
        assert [s.status for s in d.suspensions] == [SuspensionStatus.KEPT]
        assert (case.status, case.level, case.broken_promises) == (CaseStatus.ACTIVE, 1, 0)
        assert d.actions == ()
        assert "promise_kept" in codes(d)
    elif outcome == "pending":
        # Then a pending promise sends nothing and wakes at its deadline
        assert (d.actions, d.suspensions) == ((), ())
        assert case.status is CaseStatus.SUSPENDED
        assert d.next_evaluation_at == DEADLINE
        assert "promise_pending" in codes(d)
    else:
        # Then a broken promise is recorded, counted, and (default profile) escalates one level
        assert EventKind.PROMISE_BROKEN in kinds(d)
        assert [s.status for s in d.suspensions] == [SuspensionStatus.BROKEN]
        assert (case.status, case.level, case.broken_promises) == (CaseStatus.ACTIVE, 2, 1)
        assert [a.level for a in d.actions] == [2]
        assert "promise_broken" in codes(d)


@pytest.mark.parametrize(
    ("grace", "deadline"),
    [
        # Promised date Sat 2026-01-17; grace g: broken from local midnight of Jan 17 + g + 1.
        pytest.param(0, datetime(2026, 1, 17, 23, tzinfo=UTC), id="grace-0"),
        pytest.param(1, datetime(2026, 1, 18, 23, tzinfo=UTC), id="grace-1"),
        pytest.param(5, datetime(2026, 1, 22, 23, tzinfo=UTC), id="grace-5"),
    ],
)
def test_promise_deadline_is_local_midnight_after_date_plus_grace(
    grace: int, deadline: datetime
) -> None:
    # Given a promise profile with `grace` days, and nothing paid
    p = with_profile(SuspensionKind.PROMISE_TO_PAY, SuspensionEnd.ESCALATE, grace_days=grace)
    v = promise_view(p, [])
    # When decided one second before the deadline / Then pending, waking at the deadline
    before = decide(v, p, None, deadline - SECOND)
    assert before.next_evaluation_at == deadline
    assert EventKind.PROMISE_BROKEN not in kinds(before)
    # When decided at the deadline / Then broken
    assert EventKind.PROMISE_BROKEN in kinds(decide(v, p, None, deadline))


@pytest.mark.parametrize(
    ("on_end", "status", "level_no", "s_status"),
    [
        pytest.param(SuspensionEnd.ESCALATE, CaseStatus.ACTIVE, 2, SuspensionStatus.BROKEN,
                     id="escalate"),
        pytest.param(SuspensionEnd.RESUME, CaseStatus.ACTIVE, 1, SuspensionStatus.BROKEN,
                     id="resume"),
        pytest.param(SuspensionEnd.MANUAL, CaseStatus.SUSPENDED, 1,
                     SuspensionStatus.AWAITING_REVIEW, id="manual"),
    ],
)  # fmt: skip
def test_broken_promise_follows_the_profile(
    on_end: SuspensionEnd, status: CaseStatus, level_no: int, s_status: SuspensionStatus
) -> None:
    # Given a promise profile ending with `on_end`, and a promise not paid
    p = with_profile(SuspensionKind.PROMISE_TO_PAY, on_end, grace_days=2)
    v = promise_view(p, [])
    # When the deadline passes
    d = decide(v, p, None, DEADLINE)
    # Then the promise is broken and counted, and the profile decides what follows
    case = the_case(v, d)
    assert (case.status, case.level, case.broken_promises) == (status, level_no, 1)
    assert [s.status for s in d.suspensions] == [s_status]
    assert EventKind.PROMISE_BROKEN in kinds(d)
    # And it is broken only once
    again = decide(apply_decision(v, d), p, None, DEADLINE + timedelta(hours=1))
    assert EventKind.PROMISE_BROKEN not in kinds(again)


def _case(status: CaseStatus = CaseStatus.ACTIVE, broken: int = 0) -> Case:
    return Case(
        case_id="C-i1",
        account_id="acc-1",
        mode=policy().mode,
        invoice_ids=("i1",),
        policy_id="pol-1",
        policy_version=1,
        status=status,
        level=1,
        opened_at=on_day(1),
        broken_promises=broken,
    )


@pytest.mark.parametrize(
    ("case", "cap", "accepted"),
    [
        pytest.param(_case(broken=0), 2, True, id="none-broken"),
        pytest.param(_case(broken=1), 2, True, id="one-below-cap"),
        pytest.param(_case(broken=2), 2, False, id="at-cap"),
        pytest.param(_case(broken=5), 2, False, id="above-cap"),
        pytest.param(_case(broken=0), 0, False, id="cap-zero-never"),
        pytest.param(_case(broken=50), None, True, id="no-cap"),
        pytest.param(_case(CaseStatus.SUSPENDED, 1), 2, True, id="suspended-case"),
        pytest.param(_case(CaseStatus.RECOVERED), 2, False, id="closed-case"),
    ],
)
def test_can_accept_promise_refuses_after_max_broken_promises(
    case: Case, cap: int | None, accepted: bool
) -> None:
    # Given a promise profile with max_broken_promises = cap
    p = with_profile(SuspensionKind.PROMISE_TO_PAY, SuspensionEnd.ESCALATE, max_broken_promises=cap)
    # When a new promise is offered / Then it is accepted only below the cap on an open case
    ok, why = can_accept_promise(case, p)
    assert ok is accepted
    assert why


def test_default_profile_caps_promises_at_two() -> None:
    # Given the default promise profile (max 2 broken promises)
    assert can_accept_promise(_case(broken=1), policy())[0] is True
    assert can_accept_promise(_case(broken=2), policy())[0] is False


def test_paying_everything_during_a_promise_recovers_and_keeps_the_promise() -> None:
    # Given a promise of 100.00 on a 100.00 balance
    p = policy()
    v = suspended_view(p, SuspensionKind.PROMISE_TO_PAY, amount="100.00", **PROMISE)
    pay = Payment(
        payment_id="p1",
        account_id="acc-1",
        currency="EUR",
        amount=Decimal("100.00"),
        received_at=on_day(14),
    )
    v, _ = apply_payment(v, pay)
    # When the engine decides
    d = decide(v, p, None, on_day(14, 13))
    # Then the case recovers and the promise is recorded as kept
    assert [c.status for c in d.cases] == [CaseStatus.RECOVERED]
    assert [s.status for s in d.suspensions] == [SuspensionStatus.KEPT]
    assert EventKind.PROMISE_KEPT in kinds(d)


def test_a_promise_is_not_kept_when_the_balance_leaves_scope_unpaid() -> None:
    # Given a promise of 100.00 (nothing paid) on a case whose invoice then gets disputed
    p = policy()
    v = suspended_view(p, SuspensionKind.PROMISE_TO_PAY, amount="100.00", **PROMISE)
    disputed = v.invoices[0].model_copy(update={"status": InvoiceStatus.DISPUTED})
    v = v.model_copy(update={"invoices": (disputed,)})
    # When the engine decides (the counting balance is now zero: the case closes)
    d = decide(v, p, None, on_day(14))
    assert [c.status for c in d.cases] == [CaseStatus.RECOVERED]
    # Then the promise is not recorded as kept: nothing was paid (paid 0 of 100.00 promised)
    assert EventKind.PROMISE_KEPT not in kinds(d)
    assert SuspensionStatus.KEPT not in [s.status for s in d.suspensions]


def test_escalation_climbs_one_level_and_the_next_waits_for_the_next_local_day() -> None:
    # Given levels at 5, 10, 15 and 20 days (latest_only), a case at level 1, and a
    # promise that breaks on day 18 (the default promise profile escalates)
    levels = tuple(level(f"l{n}", days) for n, days in enumerate((5, 10, 15, 20), start=1))
    p = policy(levels=levels)
    v = view(invoice("i1", "50.00", DUE))
    v = apply_decision(v, decide(v, p, None, on_day(6)))
    case = v.cases[0].model_copy(update={"status": CaseStatus.SUSPENDED, "suspension_id": "s-1"})
    promise = Suspension(
        suspension_id="s-1",
        account_id="acc-1",
        case_id="C-i1",
        kind=SuspensionKind.PROMISE_TO_PAY,
        starts_at=on_day(6),
        ends_at=on_day(40),
        currency="EUR",
        promised_amount=Decimal("50.00"),
        promised_date=DUE + timedelta(days=15),
    )
    v = v.model_copy(update={"cases": (case,), "suspensions": (promise,)})
    # When the promise is broken on day 18 (levels 2 and 3 are due)
    d = decide(v, p, None, on_day(18))
    # Then the case escalates to level 2 only, and comes back at the next local midnight
    assert [a.level for a in d.actions] == [2]
    assert [c.level for c in d.cases] == [2]
    midnight = datetime(2026, 1, 20, 23, tzinfo=UTC)  # Jan 21 00:00 CET
    assert d.next_evaluation_at == midnight
    v = apply_decision(v, d)
    # And nothing changes before it, however often the engine decides
    for at in (on_day(18), on_day(18, 20), midnight - SECOND):
        again = decide(v, p, None, at)
        assert not again.changed
        assert "one_level_a_day" in codes(again)
        assert again.next_evaluation_at == midnight
    # And at midnight it continues normally: latest_only reaches level 3 (day 19 >= 15)
    d = decide(v, p, None, midnight)
    assert [a.level for a in d.actions] == [3]
