"""Rule 5: exactly once. Same inputs, same decision; applied decisions are not repeated.

Action ids derive from (account, case, level, entry count, action index) only: a retried
batch, a later re-run or a replay produces the same ids, and no two different
actions share one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

from dunning.engine import apply_decision, decide
from dunning.ledger import apply_payment, reverse_payment
from dunning.model import (
    AccountView,
    ActionSpec,
    ActionType,
    Calendar,
    CaseStatus,
    CatchUp,
    Contact,
    ContactCap,
    Installment,
    InvoiceStatus,
    Mode,
    Payment,
    PaymentPlan,
    Policy,
    Suspension,
    SuspensionKind,
)
from tests.builders import account, calendar, email, invoice, level, policy, view

DUE = date(2026, 1, 2)
Scenario = tuple[AccountView, Policy, Calendar | None, datetime]


def on_day(n: int, hour: int = 12) -> datetime:
    return datetime.combine(DUE + timedelta(days=n), time(hour), UTC)


def at_level(p: Policy, days: int) -> AccountView:
    """A 100.00 account run by the engine up to day `days`."""
    v = view(invoice("i1", "100.00", DUE))
    return apply_decision(v, decide(v, p, None, on_day(days)))


def fresh_latest_only() -> Scenario:
    return view(invoice("i1", "100.00", DUE)), policy(), None, on_day(45)


def sequential() -> Scenario:
    return (
        view(invoice("i1", "100.00", DUE)),
        policy(catch_up=CatchUp.SEQUENTIAL, min_gap_days=1),
        None,
        on_day(45),
    )


def reminder() -> Scenario:
    p = policy(levels=(level("soon", -3, email("soon")), level("first", 10)))
    return view(invoice("i1", "100.00", DUE)), p, None, on_day(-2)


def invoice_mode() -> Scenario:
    v = view(invoice("i1", "100.00", DUE), invoice("i2", "50.00", DUE + timedelta(days=5)))
    return v, policy(mode=Mode.INVOICE), None, on_day(45)


def calendar_deferred() -> Scenario:
    # Day 10 is Monday 2026-01-12; make it an excluded date: actions wait for Tuesday.
    cal = calendar(exclusion_dates=frozenset({date(2026, 1, 12)}))
    return view(invoice("i1", "100.00", DUE)), policy(), cal, on_day(10, 0)


def contact_capped() -> Scenario:
    p = policy(contact_caps=(ContactCap(channel=ActionType.EMAIL, max_messages=1, window_days=7),))
    contacts = (Contact(channel=ActionType.EMAIL, at=on_day(8)),)
    return view(invoice("i1", "100.00", DUE), contacts=contacts), p, None, on_day(10)


def recovery_with_reinstatement() -> Scenario:
    p = policy()
    v = at_level(p, 45)  # level 4 suspended the service
    paid, _ = apply_payment(
        v,
        Payment(
            payment_id="p1",
            account_id="acc-1",
            currency="EUR",
            amount=Decimal("100.00"),
            received_at=on_day(46, 9),
        ),
    )
    return paid, p, None, on_day(46)


def approval() -> Scenario:
    agency = ActionSpec(type=ActionType.COLLECTION_AGENCY, target="agency", requires_approval=True)
    p = policy(levels=(level("first", 10), level("agency", 30, email("last"), agency)))
    return at_level(p, 10), p, None, on_day(30)


def broken_plan() -> Scenario:
    plan = PaymentPlan(
        plan_id="plan-1",
        account_id="acc-1",
        currency="EUR",
        invoice_ids=("i1",),
        installments=(Installment(due_date=date(2026, 1, 20), amount=Decimal("100.00")),),
        grace_days=2,
        created_at=on_day(3),
    )
    v = view(
        invoice("i1", "100.00", DUE, status=InvoiceStatus.IN_PAYMENT_PLAN, plan_id="plan-1"),
        plans=(plan,),
    )
    return v, policy(), None, on_day(30)


def _suspended(kind: SuspensionKind, ends: datetime, **kw: object) -> AccountView:
    p = policy()
    v = at_level(p, 10)
    s = Suspension(
        suspension_id="s1",
        account_id="acc-1",
        case_id="C-i1",
        kind=kind,
        starts_at=on_day(11),
        ends_at=ends,
        **kw,  # type: ignore[arg-type]
    )
    case = v.cases[0].model_copy(update={"status": CaseStatus.SUSPENDED, "suspension_id": "s1"})
    return v.model_copy(update={"cases": (case,), "suspensions": (s,)})


def suspension_escalates() -> Scenario:
    p = policy()
    escalate = p.profile(SuspensionKind.PROMISE_TO_PAY)  # default profile escalates
    assert escalate.on_end.value == "escalate"
    v = _suspended(
        SuspensionKind.PROMISE_TO_PAY,
        on_day(30),
        currency="EUR",
        promised_amount=Decimal("100.00"),
        promised_date=DUE + timedelta(days=15),
    )
    return v, p, None, on_day(25)


SCENARIOS: list[Callable[[], Scenario]] = [
    fresh_latest_only,
    sequential,
    reminder,
    invoice_mode,
    calendar_deferred,
    contact_capped,
    recovery_with_reinstatement,
    approval,
    broken_plan,
    suspension_escalates,
]
IDS = [s.__name__ for s in SCENARIOS]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_deciding_twice_on_the_same_view_gives_the_same_decision(
    scenario: Callable[[], Scenario],
) -> None:
    # Given a view, policy, calendar and instant
    v, p, cal, now = scenario()
    # When the engine decides twice
    first, second = decide(v, p, cal, now), decide(v, p, cal, now)
    # Then both decisions are equal, down to action, approval and event ids
    assert first.actions, "every scenario schedules something"
    assert first == second
    # And ids are unique within the decision
    action_ids = [a.action_id for a in first.actions] + [
        a.action_id for ap in first.approvals for a in ap.actions
    ]
    assert len(action_ids) == len(set(action_ids))
    event_ids = [e.event_id for e in first.events]
    assert len(event_ids) == len(set(event_ids))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_after_applying_a_decision_deciding_again_sends_nothing(
    scenario: Callable[[], Scenario],
) -> None:
    # Given a decision that scheduled actions
    v, p, cal, now = scenario()
    first = decide(v, p, cal, now)
    assert first.actions or first.approvals
    # When it is applied and the engine decides again at the same instant
    again = decide(apply_decision(v, first), p, cal, now)
    # Then nothing is sent and nothing changes
    assert again.actions == ()
    assert again.approvals == ()
    assert not again.changed, again


@pytest.mark.parametrize(
    "later",
    [
        pytest.param(timedelta(seconds=1), id="a-second-later"),
        pytest.param(timedelta(hours=9), id="hours-later-same-day"),
        pytest.param(timedelta(days=3), id="days-later"),
    ],
)
def test_action_ids_do_not_depend_on_the_evaluation_time(later: timedelta) -> None:
    # Given the same account decided (before anything is stored) at two instants of level 4
    v, p, _, now = fresh_latest_only()
    first, retried = decide(v, p, None, now), decide(v, p, None, now + later)
    # Then the level's actions carry the same ids: a late retry is recognised as the same action
    assert [a.action_id for a in first.actions] == [a.action_id for a in retried.actions]


def test_action_ids_differ_by_case_level_entry_and_index() -> None:
    # Given two invoices in invoice mode (two cases) climbing all six levels one by one
    v = view(invoice("i1", "100.00", DUE), invoice("i2", "100.00", DUE))
    p = policy(mode=Mode.INVOICE, catch_up=CatchUp.SEQUENTIAL, min_gap_days=1)
    ids: dict[tuple[str, int, int, int], str] = {}
    now: datetime | None = on_day(100)
    # When the engine runs at each next evaluation, applying each decision
    while now is not None:
        d = decide(v, p, None, now)
        for a in d.actions:
            key = (a.case_id, a.level, a.entry, a.index)
            assert ids.setdefault(key, a.action_id) == a.action_id
        v = apply_decision(v, d)
        now = d.next_evaluation_at
    # Then there are 7 actions per case (level 4 has two), and no two share an id
    assert {k[0] for k in ids} == {"I-i1", "I-i2"}
    assert len(ids) == 2 * 7
    assert len(set(ids.values())) == len(ids)


@pytest.mark.parametrize("mode", [Mode.INVOICE, Mode.CUSTOMER])
def test_two_accounts_with_the_same_invoice_ids_share_no_action_or_approval_id(
    mode: Mode,
) -> None:
    # Given two accounts whose billing system numbers invoices per account (both "inv-1"),
    # on a level whose actions need approval and one that does not
    p = policy(
        mode=mode,
        levels=(
            level(
                "first",
                10,
                email("r"),
                ActionSpec(type=ActionType.SMS, template="s", requires_approval=True),
            ),
        ),
    )
    decisions = [
        decide(
            view(invoice("inv-1", "100.00", DUE, account_id=a), account=account(account_id=a)),
            p,
            None,
            on_day(12),
        )
        for a in ("acc-a", "acc-b")
    ]
    # Then their action and approval ids differ (delivery dedupes on the action id)
    first, second = ({a.action_id for a in d.actions} for d in decisions)
    assert first and second and not first & second
    held_a, held_b = ({ap.approval_id for ap in d.approvals} for d in decisions)
    assert held_a and held_b and not held_a & held_b


def test_a_reopened_case_reuses_no_action_id() -> None:
    # Given a case that reached level 1 and recovered after a payment
    p = policy(levels=(level("first", 10), level("second", 30)))
    fresh = view(invoice("i1", "100.00", DUE))
    level_1 = decide(fresh, p, None, on_day(10))
    v = apply_decision(fresh, level_1)
    payment = Payment(
        payment_id="p1",
        account_id="acc-1",
        currency="EUR",
        amount=Decimal("100.00"),
        received_at=on_day(12),
    )
    paid, recorded = apply_payment(v, payment)
    v = apply_decision(paid, decide(paid, p, None, on_day(12)))
    # When the payment bounces and the engine decides once level 2's day has come
    bounced, _ = reverse_payment(v, recorded, on_day(14), "bounced")
    d = decide(bounced, p, None, on_day(30))
    # Then the reopened case enters level 2 only, with ids never used before
    assert [a.level for a in d.actions] == [2]
    assert not {a.action_id for a in level_1.actions} & {a.action_id for a in d.actions}


def test_a_second_entry_into_a_level_gets_new_action_ids() -> None:
    # Given the ids level 2 gets on its first entry
    p = policy(levels=(level("first", 10), level("second", 30)))
    first = decide(at_level(p, 10), p, None, on_day(30))
    assert [a.entry for a in first.actions] == [1]
    # And a case put back to level 1 by a person after level 2 had been entered once
    v = at_level(p, 10)
    back = v.cases[0].model_copy(update={"level": 1, "entries": {1: 1, 2: 1}})
    v = v.model_copy(update={"cases": (back,)})
    # When level 2 is entered again
    second = decide(v, p, None, on_day(30))
    # Then it is entry 2, with ids of its own (the first entry's actions are not replaced)
    assert [(a.level, a.entry) for a in second.actions] == [(2, 2)]
    assert [c.entries for c in second.cases] == [{1: 1, 2: 2}]
    assert {a.action_id for a in first.actions}.isdisjoint(a.action_id for a in second.actions)
