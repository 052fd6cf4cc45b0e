"""A stateful test: one account lives through invoices, time, payments, reversals,
promises to pay and evaluations, in any order Hypothesis chooses.

The machine keeps the account's view as the store would: every decision is
applied, and a promise is recorded only on an active case that
`can_accept_promise` allows, as a collector would. Next to it, a small model of
what must hold: which action ids went out, the highest level each case reached,
whether the case was blocked (suspended or awaiting approval) and until when
the engine promised that nothing would change. Each evaluation checks the
engine against that model.

What is truly invariant, whatever happened before (payments and reversals
included):
- no action id is ever emitted twice, and none requires approval;
- a case's level never goes down (a recovered case keeps its level, a reopened
  one returns to it);
- at most one customer case is open; its balance is the sum of the counting
  overdue invoices, and they all belong to it;
- an open case is recovered exactly when it is evaluated with a balance below
  the exit threshold; with no open case, a recovered case whose invoices are
  overdue again reopens at the exit threshold, and otherwise a new case opens
  exactly when the overdue balance reaches the entry threshold;
- a blocked case sends nothing (reinstatement after a recovery aside);
- actions respect the calendar and never go out before `now`;
- deciding twice gives the same decision; deciding again on the applied view
  changes nothing; with no new data, nothing changes before
  `next_evaluation_at`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from dunning.calendars import is_send_time
from dunning.engine import REINSTATEMENT_LEVEL, apply_decision, can_accept_promise, decide
from dunning.ledger import reverse_payment
from dunning.model import (
    Account,
    AccountView,
    Calendar,
    Case,
    CaseStatus,
    Decision,
    Invoice,
    InvoiceStatus,
    Mode,
    Payment,
    Policy,
    SuspensionKind,
    SuspensionStatus,
)
from tests.unit.strategies import (
    STATEFUL_SETTINGS,
    Advance,
    accounts,
    advances,
    calendars,
    content,
    days_2026_2028,
    in_sending_hours,
    instants_around,
    invoices,
    local_instant,
    pay,
    policies,
    promise_to_pay,
    what_changed,
)

ZERO = Decimal(0)


class DunningMachine(RuleBasedStateMachine):
    """One customer-mode account, driven by the rules below."""

    view: AccountView
    policy: Policy
    calendar: Calendar
    now: datetime

    def __init__(self) -> None:
        super().__init__()
        self.payments: list[Payment] = []
        self.emitted: dict[str, tuple[object, ...]] = {}  # action id -> what it does
        self.levels: dict[str, int] = {}  # case id -> highest level seen
        self.serial = 0
        # The last evaluation's promise: nothing changes before `quiet_until`
        # (None: nothing ever) unless new data arrives. Unset after new data.
        self.quiet_since: datetime | None = None
        self.quiet_until: datetime | None = None

    # ------------------------------------------------------------------ model

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.view.account.timezone)

    @property
    def currency(self) -> str:
        return self.view.account.currency

    def next_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial:03d}"

    def counts(self, inv: Invoice) -> bool:
        types = self.policy.invoice_types
        return (
            inv.status is InvoiceStatus.OPEN
            and inv.open_amount > ZERO
            and inv.currency == self.currency
            and (not types or inv.type in types)
        )

    def overdue(self) -> list[Invoice]:
        today = self.now.astimezone(self.tz).date()
        return [inv for inv in self.view.invoices if self.counts(inv) and inv.due_date < today]

    def balance(self) -> Decimal:
        return sum((inv.open_amount for inv in self.overdue()), ZERO)

    def open_case(self) -> Case | None:
        found = [c for c in self.view.cases if c.is_open]
        assert len(found) <= 1, f"more than one open customer case: {found}"
        return found[0] if found else None

    def blocked(self, case: Case | None) -> bool:
        """Whether `case` must send nothing at `now` (suspended, awaiting approval)."""
        if case is None:
            return False
        if case.status is CaseStatus.AWAITING_APPROVAL:
            return True
        if case.status is not CaseStatus.SUSPENDED:
            return False
        suspension = next(
            (s for s in self.view.suspensions if s.suspension_id == case.suspension_id), None
        )
        if suspension is None:
            return False
        if suspension.status is SuspensionStatus.AWAITING_REVIEW:
            return True
        assert suspension.kind is SuspensionKind.PROMISE_TO_PAY
        assert suspension.promised_amount is not None
        assert suspension.promised_date is not None
        if suspension.paid_amount >= suspension.promised_amount:
            return False  # kept: dunning resumes
        grace = self.policy.profile(SuspensionKind.PROMISE_TO_PAY).grace_days
        deadline = local_instant(suspension.promised_date + timedelta(days=grace + 1), self.tz, 0)
        return self.now < deadline

    def new_data(self) -> None:
        self.quiet_since = self.quiet_until = None

    def decide(self, view: AccountView) -> Decision:
        return decide(view, self.policy, self.calendar, self.now)

    # ------------------------------------------------------------------ rules

    @initialize(account=accounts(), data=st.data())
    def start(self, account: Account, data: st.DataObject) -> None:
        self.view = AccountView(account=account)
        self.policy = data.draw(policies(self.currency, modes=(Mode.CUSTOMER,)), label="policy")
        self.calendar = data.draw(calendars(), label="calendar")
        start = data.draw(days_2026_2028(), label="first day")
        self.now = data.draw(instants_around(start, self.tz, before=0, after=0), label="now")

    @rule(data=st.data())
    def add_invoice(self, data: st.DataObject) -> None:
        today = self.now.astimezone(self.tz).date()
        due = st.integers(-40, 40).map(lambda d: today + timedelta(days=d))
        inv = data.draw(
            invoices(self.currency, self.next_id("inv"), due, statuses=False, foreign=False),
            label="invoice",
        )
        self.view = self.view.model_copy(update={"invoices": (*self.view.invoices, inv)})
        self.new_data()

    @rule(step=advances())
    def advance(self, step: Advance) -> None:
        self.now += step.by

    @precondition(lambda self: self.quiet_until is not None)
    @rule(offset=st.sampled_from((-1, 0, 1)))
    def advance_to_next_evaluation(self, offset: int) -> None:
        assert self.quiet_until is not None
        self.now = max(self.now, self.quiet_until + timedelta(microseconds=offset))

    @precondition(lambda self: any(self.counts(inv) for inv in self.view.invoices))
    @rule(permille=st.one_of(st.just(1000), st.integers(1, 1000)))
    def pay(self, permille: int) -> None:
        self.view, payment = pay(self.view, self.now, self.next_id("pay"), permille)
        assert payment is not None
        self.payments.append(payment)
        self.new_data()

    @precondition(lambda self: any(p.reversed_at is None for p in self.payments))
    @rule(n=st.integers(0, 20))
    def reverse(self, n: int) -> None:
        live = [k for k, p in enumerate(self.payments) if p.reversed_at is None]
        k = live[n % len(live)]
        self.view, self.payments[k] = reverse_payment(
            self.view, self.payments[k], self.now, "bounced"
        )
        self.new_data()

    def can_promise(self) -> bool:
        case = self.open_case()
        return (
            case is not None
            and case.status is CaseStatus.ACTIVE
            and can_accept_promise(case, self.policy)[0]
        )

    @precondition(can_promise)
    @rule(permille=st.integers(1, 1000), in_days=st.integers(0, 20))
    def promise(self, permille: int, in_days: int) -> None:
        # A collector records a promise on the running case (as the API would).
        sid = self.next_id("sus")
        self.view = promise_to_pay(self.view, self.policy, self.now, sid, permille, in_days)
        self.new_data()

    @rule()
    def evaluate(self) -> None:
        self.check_and_apply()

    @rule(step=advances())
    def advance_and_evaluate(self, step: Advance) -> None:
        self.now += step.by
        self.check_and_apply()

    # ------------------------------------------------------------- the checks

    def check_and_apply(self) -> None:
        before = self.view
        case_before = self.open_case()
        blocked = self.blocked(case_before)
        overdue = self.overdue()
        balance = self.balance()
        entry = self.policy.threshold(self.currency)
        exit_threshold = self.policy.exit_threshold(self.currency)
        assert entry is not None

        decision = self.decide(before)
        note(f"{self.now.isoformat()} balance {balance}: {what_changed(decision)}")

        # Deterministic: deciding twice says the same thing.
        assert self.decide(before) == decision

        # With no new data, nothing changes before the promised next evaluation.
        if self.quiet_since is not None and (
            self.quiet_until is None or self.now < self.quiet_until
        ):
            assert not decision.changed, (
                f"evaluated at {self.quiet_since.isoformat()} with next_evaluation_at="
                f"{self.quiet_until}; at {self.now.isoformat()}: " + what_changed(decision)
            )
        if decision.next_evaluation_at is not None:
            assert decision.next_evaluation_at > self.now

        for action in decision.actions:
            # Exactly once, and what needs approval is held.
            assert action.action_id not in self.emitted, (
                f"{content(action)} emitted again; first as {self.emitted.get(action.action_id)}"
            )
            self.emitted[action.action_id] = content(action)
            assert not action.requires_approval, content(action)
            # The calendar.
            assert action.not_before >= self.now
            if action.level != REINSTATEMENT_LEVEL:
                assert is_send_time(self.calendar, self.tz, action.not_before)
                assert in_sending_hours(self.calendar, self.tz, action.not_before)
        # A blocked case sends nothing and asks for nothing, except the
        # reinstatement its recovery brings (sent, or held for approval).
        if blocked and case_before is not None:
            recovers = balance < exit_threshold
            for level in [a.level for a in decision.actions if a.case_id == case_before.case_id] + [
                a.level for a in decision.approvals if a.case_id == case_before.case_id
            ]:
                assert level == REINSTATEMENT_LEVEL and recovers, what_changed(decision)

        self.view = after = apply_decision(before, decision)

        # Idempotent: deciding again on the applied view changes nothing.
        again = self.decide(after)
        assert not again.changed, what_changed(again)

        # Recovered iff evaluated below the exit threshold. With no open case, a
        # recovered case whose invoices are overdue again reopens at the exit
        # threshold, otherwise a new case opens at the entry one (decisions.md).
        case_after = self.open_case()
        if case_before is not None:
            now_case = next(c for c in after.cases if c.case_id == case_before.case_id)
            assert (now_case.status is CaseStatus.RECOVERED) == (balance < exit_threshold), (
                f"balance {balance}, exit {exit_threshold}: {what_changed(decision)}"
            )
        else:
            overdue_ids = {inv.invoice_id for inv in overdue}
            reopens = any(
                c.status is CaseStatus.RECOVERED and overdue_ids & set(c.invoice_ids)
                for c in before.cases
            )
            needed = exit_threshold if reopens else entry
            assert (case_after is not None) == (bool(overdue) and balance >= needed), (
                f"balance {balance}, {'exit' if reopens else 'entry'} threshold {needed}: "
                + what_changed(decision)
            )

        # The open case holds every counting overdue invoice, and its balance is theirs.
        if case_after is not None:
            assert {inv.invoice_id for inv in overdue} <= set(case_after.invoice_ids)
            explained = [x for x in decision.explanations if x.case_id == case_after.case_id]
            assert explained, what_changed(decision)
            assert all(x.balance == balance for x in explained), (balance, explained)

        self.quiet_since = self.now
        self.quiet_until = decision.next_evaluation_at

    @invariant()
    def levels_never_go_down(self) -> None:
        for case in self.view.cases:
            assert case.level >= self.levels.get(case.case_id, 0), (
                f"case {case.case_id} went from level {self.levels[case.case_id]} to {case.level}"
            )
            self.levels[case.case_id] = case.level

    @invariant()
    def at_most_one_open_case(self) -> None:
        self.open_case()


DunningMachine.TestCase.settings = STATEFUL_SETTINGS
TestDunningMachine = DunningMachine.TestCase
