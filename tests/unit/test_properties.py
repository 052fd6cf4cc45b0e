"""Properties of the pure engine, checked by Hypothesis on generated accounts.

Each test states one rule of `docs/architecture.md` ("The engine") and
`docs/decisions.md` as a property over generated views, policies, calendars
and instants (`tests/unit/strategies.py`). Many run over a *walk*: the clock
moves forward in random steps, payments, reversals and promises to pay happen,
and after each step the engine decides and its decision is applied, as the
evaluator and the store do.

Run more examples with `DUNNING_HYPOTHESIS_SCALE=10 pytest tests/unit/test_properties.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import assume, event, example, given, note, settings
from hypothesis import strategies as st

from dunning.calendars import is_send_time, next_send_time
from dunning.engine import REINSTATEMENT_LEVEL, apply_decision, decide
from dunning.ledger import reverse_payment
from dunning.model import (
    AccountView,
    Calendar,
    Case,
    CaseStatus,
    Decision,
    Invoice,
    Level,
    Payment,
    Suspension,
    SuspensionKind,
    SuspensionStatus,
)
from tests import builders as b
from tests.unit.strategies import (
    PROPERTY_SETTINGS,
    WALK_SETTINGS,
    Advance,
    Pay,
    Promise,
    Reverse,
    Scenario,
    Step,
    calendars,
    clock_change_instants,
    content,
    examples,
    in_sending_hours,
    local_instant,
    pay,
    promise_to_pay,
    scenarios,
    units,
    walk_steps,
    what_changed,
)

HORIZON = timedelta(days=1000)  # "never" for an account whose next evaluation is None

# ----------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Tick:
    """One evaluation of a walk: the view before, the decision, the view after."""

    at: datetime
    before: AccountView
    decision: Decision
    after: AccountView


def decide_at(s: Scenario, view: AccountView, at: datetime) -> Decision:
    return decide(view, s.policy, s.calendar, at)


def walk(s: Scenario, steps: Iterable[Step]) -> list[Tick]:
    """Evaluate at `s.now`, then after every step (new data re-opens evaluation at once)."""
    view, now = s.view, s.now
    payments: list[Payment] = []
    ticks: list[Tick] = []

    def evaluate() -> AccountView:
        decision = decide_at(s, view, now)
        after = apply_decision(view, decision)
        ticks.append(Tick(now, view, decision, after))
        return after

    view = evaluate()
    for i, step in enumerate(steps):
        match step:
            case Advance(by=by):
                now += by
            case Pay(permille=permille):
                view, payment = pay(view, now, f"pay-{i}", permille)
                if payment is not None:
                    payments.append(payment)
            case Reverse(n=n):
                live = [k for k, p in enumerate(payments) if p.reversed_at is None]
                if live:
                    k = live[n % len(live)]
                    view, payments[k] = reverse_payment(view, payments[k], now, "bounced")
            case Promise(permille=permille, in_days=in_days):
                view = promise_to_pay(view, s.policy, now, f"sus-{i}", permille, in_days)
        view = evaluate()
    return ticks


def open_cases(view: AccountView) -> list[Case]:
    return [c for c in view.cases if c.is_open]


# ------------------------------------------------------- regression examples
# Falsifying examples Hypothesis found, kept as explicit `@example`s so they run
# on every test run whatever the random seed (built with tests/builders.py).

_T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def _scenario(*invoices: Invoice, levels: tuple[Level, ...], now: datetime = _T0) -> Scenario:
    return Scenario(
        view=b.view(*invoices),
        policy=b.policy(levels=levels),
        calendar=b.calendar(),
        now=now,
    )


# A level held back by its minimum amount must not hide the next level's day
# (found on 8cea2ff, fixed in 31fe138: kept against regressions).
HELD_LEVEL_HIDES_THE_NEXT = _scenario(
    b.invoice("inv-1", "500.00", due=date(2026, 1, 2)),
    levels=(
        b.level("big debts", 10, min_amount={"EUR": Decimal("1000.00")}),
        b.level("everyone", 20),
    ),
    now=datetime(2026, 1, 11, 23, 0, tzinfo=UTC),
)
# Pay everything, including an invoice not yet due; it falls due; the payment
# bounces: the reopened case must take in that invoice at once.
REOPENED_CASE_MISSES_AN_INVOICE = _scenario(
    b.invoice("inv-1", "50.00", due=date(2026, 1, 2)),
    b.invoice("inv-2", "50.00", due=date(2026, 1, 20)),
    levels=(b.level("reminder", 10),),
)
REOPEN_STEPS: list[Step] = [Pay(1000), Advance(timedelta(days=10)), Reverse(0)]
# A pre-due reminder marked requires_approval.
REMINDER_NEEDS_APPROVAL = _scenario(
    b.invoice("inv-1", "50.00", due=date(2026, 1, 20)),
    levels=(
        b.level("before due", -5, b.email("friendly", requires_approval=True)),
        b.level("overdue", 10),
    ),
)
# inv-1 is reminded, then paid; inv-2's reminder rewrites the reminded set; the
# payment bounces and inv-1's reminder goes out a second time.
REMINDER_SENT_TWICE = _scenario(
    b.invoice("inv-1", "50.00", due=date(2026, 1, 20)),
    b.invoice("inv-2", "50.00", due=date(2026, 1, 23)),
    levels=(b.level("before due", -5), b.level("overdue", 10)),
)
REMINDER_STEPS: list[Step] = [Pay(500), Advance(timedelta(days=3)), Reverse(0)]
# A promise is broken and its profile escalates one level while the days would
# allow more: deciding again at the same instant climbs again.
ESCALATION_THEN_CLIMB = _scenario(
    b.invoice("inv-1", "50.00", due=date(2026, 1, 2)),
    levels=(b.level("l1", 5), b.level("l2", 10), b.level("l3", 15), b.level("l4", 20)),
    now=datetime(2026, 1, 8, 12, 0, tzinfo=UTC),
)
ESCALATION_STEPS: list[Step] = [Promise(1000, 1), Advance(timedelta(days=12))]


# --------------------------------------------------------------- 1. determinism


@WALK_SETTINGS
@given(s=scenarios(), steps=walk_steps(payments=True, max_size=12))
def test_deciding_twice_on_the_same_inputs_gives_the_same_decision(
    s: Scenario, steps: list[Step]
) -> None:
    """`decide` is a function of its inputs: same view, policy, calendar, instant ->
    same action ids, event ids, cases, next evaluation and explanations, even on
    a deep copy of the view."""
    for tick in walk(s, steps):
        # When the engine decides again on the same inputs (and on a copy of them)
        for again in (
            decide_at(s, tick.before, tick.at),
            decide_at(s, tick.before.model_copy(deep=True), tick.at),
        ):
            # Then it says exactly the same thing
            first = tick.decision
            assert [a.action_id for a in again.actions] == [a.action_id for a in first.actions]
            assert [e.event_id for e in again.events] == [e.event_id for e in first.events]
            assert again.cases == first.cases
            assert again.next_evaluation_at == first.next_evaluation_at
            assert again.explanations == first.explanations
            assert again == first


# ---------------------------------------------------------------- 2. idempotence


@WALK_SETTINGS
@given(s=scenarios(), steps=walk_steps(payments=True, max_size=12))
@example(s=REOPENED_CASE_MISSES_AN_INVOICE, steps=REOPEN_STEPS)
@example(s=ESCALATION_THEN_CLIMB, steps=ESCALATION_STEPS)
def test_deciding_again_on_the_applied_view_changes_nothing(s: Scenario, steps: list[Step]) -> None:
    """Exactly once: after a decision is applied, deciding again at the same instant
    emits no action and no approval, and changes nothing (a fixed point)."""
    for tick in walk(s, steps):
        again = decide_at(s, tick.after, tick.at)
        note(f"first: {what_changed(tick.decision)}")
        assert again.actions == ()
        assert again.approvals == ()
        assert not again.changed, what_changed(again)


# ------------------------------------------ 3. nothing while suspended or held

BLOCKERS = (
    "promise",
    "promise_awaiting_review",
    "fraud_review",
    "dispute",
    "customer_care",
    "awaiting_approval",
    "excluded",
)


def promise_deadline_of(promise: Suspension, grace_days: int, tz: ZoneInfo) -> datetime:
    """The end of the promised date plus grace in the account's zone (architecture 7)."""
    assert promise.promised_date is not None
    return local_instant(promise.promised_date + timedelta(days=grace_days + 1), tz, 0)


@PROPERTY_SETTINGS
@given(s=scenarios(), blocker=st.sampled_from(BLOCKERS), data=st.data())
def test_nothing_is_sent_while_suspended_excluded_or_awaiting_approval(
    s: Scenario, blocker: str, data: st.DataObject
) -> None:
    """A suspended case (active suspension not ended, promise neither due nor kept,
    or awaiting review) and a case awaiting approval send nothing and do not move;
    an excluded account is not touched at all. Reinstatement (level 0) after a
    recovery is the one allowed exception; without payments it cannot happen."""
    # Given a case the engine opened, taken back to level 0 (as if it had been
    # blocked as soon as it opened), so that it has every reason to act
    first = decide_at(s, s.view, s.now)
    opened = [c for c in first.cases if c.is_open]
    assume(opened)
    case = opened[0].model_copy(
        update={
            "status": CaseStatus.ACTIVE,
            "level": 0,
            "entries": {},
            "entered_level_at": None,
            "service_suspended_by": None,
            "approval_id": None,
        }
    )
    opened_view = apply_decision(s.view, first)
    view = opened_view.model_copy(
        update={"cases": tuple(case if c.case_id == case.case_id else c for c in opened_view.cases)}
    )
    account = view.account
    end = s.now + HORIZON

    # ...and something that blocks it
    def suspend(suspension: Suspension) -> AccountView:
        held = case.model_copy(
            update={"status": CaseStatus.SUSPENDED, "suspension_id": suspension.suspension_id}
        )
        cases = tuple(held if c.case_id == case.case_id else c for c in view.cases)
        return view.model_copy(update={"cases": cases, "suspensions": (suspension,)})

    if blocker.startswith("promise"):
        promised = data.draw(st.integers(1, 500_000), label="promised units")
        paid = data.draw(st.integers(0, promised - 1), label="paid units")
        promise = Suspension(
            suspension_id="sus-1",
            account_id=account.account_id,
            case_id=case.case_id,
            kind=SuspensionKind.PROMISE_TO_PAY,
            status=SuspensionStatus.ACTIVE
            if blocker == "promise"
            else SuspensionStatus.AWAITING_REVIEW,
            starts_at=s.now,
            ends_at=s.now + timedelta(days=45),
            currency=account.currency,
            promised_amount=units(account.currency, promised),
            promised_date=s.now.astimezone(s.tz).date()
            + timedelta(days=data.draw(st.integers(0, 20), label="promised in days")),
            paid_amount=units(account.currency, paid),
        )
        if blocker == "promise":
            grace = s.policy.profile(SuspensionKind.PROMISE_TO_PAY).grace_days
            end = promise_deadline_of(promise, grace, s.tz)
        blocked = suspend(promise)
    elif blocker in ("fraud_review", "dispute", "customer_care"):
        ends_at = s.now + timedelta(seconds=data.draw(st.integers(1, 90 * 86_400)))
        blocked = suspend(
            Suspension(
                suspension_id="sus-1",
                account_id=account.account_id,
                case_id=case.case_id,
                kind=SuspensionKind(blocker),
                starts_at=s.now,
                ends_at=ends_at,
            )
        )
        end = ends_at
    elif blocker == "awaiting_approval":
        held = case.model_copy(
            update={"status": CaseStatus.AWAITING_APPROVAL, "approval_id": "appr-1"}
        )
        cases = tuple(held if c.case_id == case.case_id else c for c in view.cases)
        blocked = view.model_copy(update={"cases": cases})
    else:
        blocked = view.model_copy(update={"excluded_by": ("do-not-dunn",)})

    # When the engine decides at any instant before the block ends
    span = int((end - s.now).total_seconds())
    later = s.now + timedelta(seconds=data.draw(st.integers(0, span - 1), label="seconds later"))
    assume(later < end)
    decision = decide_at(s, blocked, later)
    unblocked = decide_at(s, view, later)
    moves = any(c.case_id == case.case_id and c.level > 0 for c in unblocked.cases)
    event(f"{blocker}: unblocked, the case would climb: {moves}")

    # Then the blocked case sends nothing and stays at its level
    if blocker == "excluded":
        assert decision.actions == (), what_changed(decision)
        assert decision.approvals == ()
        assert decision.cases == ()
        return
    mine = [a for a in decision.actions if a.case_id == case.case_id]
    assert [a for a in mine if a.level != REINSTATEMENT_LEVEL] == [], what_changed(decision)
    assert [a for a in decision.approvals if a.case_id == case.case_id] == []
    for changed in decision.cases:
        if changed.case_id == case.case_id:
            assert changed.level == case.level, what_changed(decision)


# ------------------------------------------------------------ 4. the calendar


@WALK_SETTINGS
@given(s=scenarios(), steps=walk_steps(payments=True))
def test_actions_go_out_on_sending_days_and_hours_and_never_before_now(
    s: Scenario, steps: list[Step]
) -> None:
    """Every dunning action waits (`not_before`) for a business day that is not an
    exclusion date, inside the sending hours in the account's zone; reinstatement
    (level 0) goes at once by design. `not_before` is never before `now`."""
    for tick in walk(s, steps):
        for action in tick.decision.actions:
            local = action.not_before.astimezone(s.tz)
            note(f"{action.type.value} level {action.level} not_before {local.isoformat()}")
            assert action.not_before >= tick.at
            if action.level == REINSTATEMENT_LEVEL:
                continue
            assert is_send_time(s.calendar, s.tz, action.not_before)
            assert in_sending_hours(s.calendar, s.tz, action.not_before)


@settings(PROPERTY_SETTINGS, max_examples=examples(1000))  # cheap: no engine involved
@given(calendar=calendars(night=True), zoned=clock_change_instants())
@example(
    calendar=b.calendar(
        business_days=frozenset(range(1, 8)), send_from=time(1, 0), send_until=time(2, 30)
    ),
    zoned=("Europe/Berlin", datetime(2026, 3, 29, 1, 10, tzinfo=UTC)),  # 03:10 CEST
)
def test_a_send_time_is_the_calendar_read_on_the_wall_clock(
    calendar: Calendar, zoned: tuple[str, datetime]
) -> None:
    """`is_send_time` says yes exactly when the local wall clock shows a sending day
    and a time in [send_from, send_until), on the days clocks change too; the next
    send time is never earlier and is itself a send time."""
    name, instant = zoned
    tz = ZoneInfo(name)
    note(f"local {instant.astimezone(tz).isoformat()}")
    assert is_send_time(calendar, tz, instant) == in_sending_hours(calendar, tz, instant)
    nxt = next_send_time(calendar, tz, instant)
    assert nxt >= instant
    assert in_sending_hours(calendar, tz, nxt), nxt.astimezone(tz).isoformat()


# ----------------------------------------------- 5. levels never go down


@WALK_SETTINGS
@given(s=scenarios(), days=st.integers(1, 150))
def test_without_payments_the_level_never_goes_down(s: Scenario, days: int) -> None:
    """With no payment, a case's level never decreases as the clock moves on,
    one day at a time, and an open case stays open."""
    seen: dict[str, Case] = {}
    for tick in walk(s, [Advance(timedelta(days=1))] * days):
        for case in tick.decision.cases:
            before = seen.get(case.case_id)
            if before is not None:
                assert case.level >= before.level, what_changed(tick.decision)
                assert case.is_open or not before.is_open, what_changed(tick.decision)
            seen[case.case_id] = case


# ------------------------------------------------------- 6. paid means recovered


@WALK_SETTINGS
@given(s=scenarios(), steps=walk_steps(payments=True, max_size=15))
def test_paying_everything_recovers_every_open_case(s: Scenario, steps: list[Step]) -> None:
    """Once every invoice is paid (open amounts zero), the next decision recovers
    every open case, and no case is open afterwards."""
    # Given the state a walk left (open cases in most examples: see the statistics)
    last = walk(s, steps)[-1]
    view = last.after
    event(f"open cases before paying everything: {len(open_cases(view))}")
    # When everything is paid
    paid, _ = pay(view, last.at, "pay-all", named=True)
    assert all(
        inv.open_amount == 0 for inv in paid.invoices if inv.currency == view.account.currency
    )
    decision = decide_at(s, paid, last.at)
    # Then every open case is recovered
    after = apply_decision(paid, decision)
    for case in open_cases(view):
        now_case = next(c for c in after.cases if c.case_id == case.case_id)
        assert now_case.status is CaseStatus.RECOVERED, what_changed(decision)
    assert open_cases(after) == [], what_changed(decision)


# ------------------------------------------ 7. the next evaluation is a promise


@WALK_SETTINGS
@given(
    s=scenarios(),
    steps=walk_steps(payments=True, max_size=10),
    fractions=st.lists(st.floats(0, 1, exclude_min=True, exclude_max=True), max_size=3),
)
@example(s=HELD_LEVEL_HIDES_THE_NEXT, steps=[Advance(timedelta(hours=1))], fractions=[])
@example(s=ESCALATION_THEN_CLIMB, steps=ESCALATION_STEPS, fractions=[])
def test_nothing_changes_before_the_next_evaluation(
    s: Scenario, steps: list[Step], fractions: list[float]
) -> None:
    """`next_evaluation_at`, when set, is after `now`; deciding on the applied view
    at any instant strictly before it changes nothing. `None` means only new data
    can change the account: deciding at any later instant changes nothing."""
    for tick in walk(s, steps):
        nxt = tick.decision.next_evaluation_at
        if nxt is not None:
            assert nxt > tick.at
        end = nxt if nxt is not None else tick.at + HORIZON
        span = end - tick.at
        probes = {tick.at + span * f for f in fractions}
        probes |= {tick.at + timedelta(microseconds=1), end - timedelta(microseconds=1)}
        if nxt is None:
            probes.add(end)
        for at in sorted(p for p in probes if tick.at < p and (nxt is None or p < nxt)):
            decision = decide_at(s, tick.after, at)
            assert not decision.changed, (
                f"decided at {tick.at.isoformat()}: next_evaluation_at={nxt}; "
                f"at {at.isoformat()} ({at.astimezone(s.tz).isoformat()} local): "
                + what_changed(decision)
            )


# ------------------------------------------------------ 8. action ids are unique


@WALK_SETTINGS
@given(s=scenarios(), steps=walk_steps(payments=True))
def test_an_action_id_never_names_two_different_actions(s: Scenario, steps: list[Step]) -> None:
    """Across a whole simulated period (clock moves, payments, reversals, promises), one
    action id always names the same action (case, level, entry, index, type)."""
    seen: dict[str, tuple[object, ...]] = {}
    for tick in walk(s, steps):
        for action in tick.decision.actions:
            assert seen.setdefault(action.action_id, content(action)) == content(action)


@WALK_SETTINGS
@given(s=scenarios(), steps=walk_steps(payments=True))
@example(s=REMINDER_SENT_TWICE, steps=REMINDER_STEPS)
def test_an_action_is_emitted_once_across_a_walk(s: Scenario, steps: list[Step]) -> None:
    """Exactly once: no action id is emitted by two decisions of one walk, payments
    and reversals included (a reopened case returns to its level without repeating
    it; a pre-due reminder fires once per invoice and level)."""
    emitted: dict[str, datetime] = {}
    for tick in walk(s, steps):
        for action in tick.decision.actions:
            assert action.action_id not in emitted, (
                f"{content(action)} emitted at {emitted.get(action.action_id)} "
                f"and again at {tick.at}"
            )
            emitted[action.action_id] = tick.at


# ------------------------------------------------------------ 9. approvals hold


@WALK_SETTINGS
@given(s=scenarios(), steps=walk_steps(payments=True))
@example(s=REMINDER_NEEDS_APPROVAL, steps=[Advance(timedelta(hours=1))])
def test_actions_that_require_approval_are_held_not_sent(s: Scenario, steps: list[Step]) -> None:
    """An action marked `requires_approval` is held in a pending approval, never
    emitted for delivery (architecture 8: "any action may require approval")."""
    for tick in walk(s, steps):
        sent = [a for a in tick.decision.actions if a.requires_approval]
        assert sent == [], [content(a) for a in sent]
        for approval in tick.decision.approvals:
            assert all(a.requires_approval for a in approval.actions)


def test_local_instant_finds_the_start_of_a_day_without_midnight() -> None:
    """The strategies' own clock: Santiago skips 00:00 on 2026-09-06."""
    tz = ZoneInfo("America/Santiago")
    start = local_instant(datetime(2026, 9, 6, tzinfo=UTC).date(), tz, 0)
    assert start.astimezone(tz).isoformat() == "2026-09-06T01:00:00-03:00"
    assert (start - timedelta(microseconds=1)).astimezone(tz).day == 5
