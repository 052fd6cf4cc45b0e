"""The dunning engine: a pure, deterministic `decide()`.

`decide(view, policy, calendar, now)` looks at one account at one instant and
says what the collection process must do next. No I/O, no clock, no AWS: the
same inputs give the same `Decision`, with the same action ids, every time.

Rules (docs/architecture.md, "The engine", tells the story):
- days overdue count in the account's time zone, from the oldest unpaid due date
  (customer mode) or the invoice's due date (invoice mode);
- a case opens when the counting overdue balance reaches the policy's threshold
  for the account's currency; disputed, planned, excluded invoices and other
  invoice types do not count; a missed payment-plan installment frees them;
- the level is the highest whose days and minimum amount hold; it never goes
  down while the case runs; catch-up is `latest_only` or `sequential`;
- each level's actions run once per entry into it: ids derive from
  (case, level, entry count, action index);
- actions wait (`not_before`) for the calendar's sending days and hours and for
  the contact caps; days keep counting;
- balance below the exit threshold recovers the case, reinstating service if a
  level had suspended it; a reversal reopens the case at the level it had;
- suspensions stop everything until their end, when their profile resumes,
  escalates or waits for a person; promises to pay are kept or broken;
- actions that require approval are held in a pending approval;
- `next_evaluation_at` is the earliest instant anything can change.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from dunning.calendars import ONE_DAY, local_midnight, next_send_time, zone
from dunning.ids import joined_id, stable_id
from dunning.model import (
    CHANNEL_OF,
    CONTACT_ACTIONS,
    OPEN_CASE_STATUSES,
    AccountView,
    Action,
    ActionSpec,
    ActionType,
    Approval,
    AuditEvent,
    Calendar,
    Case,
    CaseStatus,
    CatchUp,
    Contact,
    ContactCap,
    Decision,
    EventKind,
    Explanation,
    Invoice,
    InvoiceStatus,
    Mode,
    PaymentPlan,
    PlanStatus,
    Policy,
    Reason,
    Suspension,
    SuspensionEnd,
    SuspensionKind,
    SuspensionStatus,
)

ZERO = Decimal(0)
REINSTATEMENT_LEVEL = 0
# Writes (cases, actions, approvals ..., audit events) after which a decision
# takes on no more scopes: one scope adds at most a case, MAX_LEVEL_ACTIONS
# actions, their audit events and a few records (about 30), so a decision and
# its whole audit trail stay inside one 100-write transaction.
WRITE_BUDGET = 60
_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


def _constructor(cls: type[_T]) -> Any:
    """A faster constructor for a frozen, slotted engine output (docs/performance.md).

    A frozen dataclass's `__init__` sets every field through `object.__setattr__`;
    this one calls the slots' own setters. Same parameters, same defaults, an
    equal object, built in about half the time (tests/unit/test_engine_outputs.py
    checks it against the class).
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}  # type: ignore[arg-type]
    if any(f.default_factory is not MISSING for f in fields(cls)):  # type: ignore[arg-type]
        return cls
    params = ", ".join(f"{n}=_d_{n}" if n in defaults else n for n in names)
    body = "".join(f"    _s_{n}(o, {n})\n" for n in names)
    source = f"def build({params}):\n    o = _new(_cls)\n{body}    return o\n"
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update({f"_s_{n}": getattr(cls, n).__set__ for n in names})
    namespace.update({f"_d_{n}": value for n, value in defaults.items()})
    exec(source, namespace)  # noqa: S102 - generated from the dataclass's own fields
    build = namespace["build"]
    build.__qualname__ = build.__name__ = f"new_{cls.__name__}"
    return build


_setattr = object.__setattr__


def _replace(model: _M, update: dict[str, Any]) -> _M:
    """`model.model_copy(update=update)`, in a third of the time.

    The same steps as pydantic's `model_copy` (a shallow copy of the field
    values, `update` applied without validation, its names added to
    `model_fields_set`), minus its generic `copy.copy` calls and checks: the
    engine's models are frozen, with no extra or private attributes (anything
    else goes through `model_copy` itself).
    """
    if (
        model.__pydantic_extra__ is not None
        or model.__pydantic_private__ is not None
        or model.model_config.get("extra") == "allow"
    ):
        return model.model_copy(update=update)
    values = model.__dict__.copy()
    values.update(update)
    fields_set = model.__pydantic_fields_set__.copy()
    fields_set.update(update)
    return _built(type(model), values, fields_set)


def _contact(channel: ActionType, at: datetime) -> Contact:
    """`Contact(channel=channel, at=at)`, without validating it again.

    `_apply_cap` records a contact for every capped message. What it passes
    (a contact action type, an aware instant) validation would return as it
    is, so this takes pydantic's `model_construct` steps with every field
    given, as `_replace` takes `model_copy`'s (`test_engine_replace` checks
    both against pydantic).
    """
    return _built(Contact, {"channel": channel, "at": at}, {"channel", "at"})


def _built(cls: type[_M], values: dict[str, Any], fields_set: set[str]) -> _M:
    """An instance of a model without extra or private attributes, its field
    values set as they are (pydantic's `model_construct` steps)."""
    built = cls.__new__(cls)
    _setattr(built, "__dict__", values)
    _setattr(built, "__pydantic_extra__", None)
    _setattr(built, "__pydantic_fields_set__", fields_set)
    _setattr(built, "__pydantic_private__", None)
    return built


if TYPE_CHECKING:  # the type checker checks every call against the class itself
    _new_action = Action
    _new_approval = Approval
    _new_event = AuditEvent
    _new_explanation = Explanation
    _new_decision = Decision
else:
    _new_action = _constructor(Action)
    _new_approval = _constructor(Approval)
    _new_event = _constructor(AuditEvent)
    _new_explanation = _constructor(Explanation)
    _new_decision = _constructor(Decision)

# Enum members the hot paths read on every decision, bound once: in Python 3.11
# reading a member off its class (`CaseStatus.ACTIVE`) goes through the hook
# `EnumType.__getattr__` installs, about 5 % of the instructions of `decide()`.
_ACTIVE = CaseStatus.ACTIVE
_RECOVERED = CaseStatus.RECOVERED
_SUSPENDED = CaseStatus.SUSPENDED
_AWAITING_APPROVAL = CaseStatus.AWAITING_APPROVAL
_CLOSED_FOR_GOOD = frozenset({CaseStatus.STOPPED, CaseStatus.WRITTEN_OFF})  # invoices stop counting
_INVOICE_OPEN = InvoiceStatus.OPEN
_IN_PAYMENT_PLAN = InvoiceStatus.IN_PAYMENT_PLAN
_CUSTOMER = Mode.CUSTOMER
_INVOICE = Mode.INVOICE
_LEVEL_ENTERED = EventKind.LEVEL_ENTERED
_ACTION_SCHEDULED = EventKind.ACTION_SCHEDULED
_SUSPEND_SERVICE = ActionType.SUSPEND_SERVICE
NOTHING_OVERDUE = Reason("nothing_overdue", "no counting invoice is overdue")
# `member.value` goes through a descriptor; the engine reads these on every action.
_KIND = {kind: kind.value for kind in EventKind}
_TYPE = {kind: kind.value for kind in ActionType}


class PolicyUnavailableError(LookupError):
    """A running case is pinned to a policy version the caller did not supply."""


@dataclass(slots=True)
class _Facts:
    """What `decide()` reads from a policy on every call, worked out once per policy.

    Policies are immutable and long-lived (a worker holds its policy book), so
    these are cached by identity (`_facts`); the cache holds the policy itself,
    so an id is never reused while its entry lives.
    """

    policy: Policy
    first_days: int
    caps: dict[ActionType, ContactCap]
    caps_horizon: timedelta
    # (days, as a timedelta) of the pre-due reminder levels (days <= 0), in order.
    reminder_offsets: tuple[tuple[int, timedelta], ...]
    # Every level's days, and as a timedelta, in order (strictly increasing).
    level_days: tuple[int, ...]
    level_offsets: tuple[timedelta, ...]
    # How many levels are pre-due reminders: they come first, the dunning levels
    # (days > 0) after them.
    pre_due: int
    latest_only: bool  # catch_up is latest_only
    min_gap: timedelta  # min_gap_days
    thresholds: dict[str, tuple[Decimal | None, Decimal]] = field(default_factory=dict)
    idle: dict[tuple[str, str | None], Explanation] = field(default_factory=dict)

    def limits(self, currency: str) -> tuple[Decimal | None, Decimal]:
        """The entry and exit thresholds for `currency`."""
        found = self.thresholds.get(currency)
        if found is None:
            policy = self.policy
            found = self.thresholds[currency] = (
                policy.threshold(currency),
                policy.exit_threshold(currency),
            )
        return found


_FACTS: dict[int, _Facts] = {}
_FACTS_MAX = 4096


def _facts(policy: Policy) -> _Facts:
    found = _FACTS.get(id(policy))
    if found is not None and found.policy is policy:
        return found
    if len(_FACTS) >= _FACTS_MAX:
        _FACTS.clear()
    caps: dict[ActionType, ContactCap] = {cap.channel: cap for cap in policy.contact_caps}
    found = _FACTS[id(policy)] = _Facts(
        policy=policy,
        first_days=policy.levels[0].days,
        caps=caps,
        caps_horizon=timedelta(days=max((c.window_days for c in caps.values()), default=0)),
        reminder_offsets=tuple(
            (level.days, timedelta(days=level.days)) for level in policy.levels if level.days <= 0
        ),
        level_days=tuple(level.days for level in policy.levels),
        level_offsets=tuple(timedelta(days=level.days) for level in policy.levels),
        pre_due=sum(1 for level in policy.levels if level.days <= 0),
        latest_only=policy.catch_up is CatchUp.LATEST_ONLY,
        min_gap=timedelta(days=policy.min_gap_days),
    )
    return found


def case_id_for(mode: Mode, first_invoice_id: str) -> str:
    """Cases are named after the invoice that opened them: deterministic, no counter."""
    return ("C-" if mode is _CUSTOMER else "I-") + first_invoice_id


def promise_deadline(suspension: Suspension, profile_grace_days: int, tz: tzinfo) -> datetime:
    """End of the promised date plus grace, in the account's zone."""
    assert suspension.promised_date is not None
    return local_midnight(suspension.promised_date + timedelta(days=profile_grace_days + 1), tz)


def can_accept_promise(case: Case, policy: Policy) -> tuple[bool, str]:
    """Whether a new promise to pay may be recorded on `case` (broken-promise cap)."""
    if not case.is_open:
        return False, f"case is {case.status.value}"
    cap = policy.profile(SuspensionKind.PROMISE_TO_PAY).max_broken_promises
    if cap is not None and case.broken_promises >= cap:
        return False, f"{case.broken_promises} broken promises reach the cap of {cap}"
    return True, "accepted"


# ------------------------------------------------------------------------ the run


@dataclass(slots=True)
class _Run:
    """Mutable scratch state of one `decide()` call; never escapes it."""

    view: AccountView
    policy: Policy
    calendar: Calendar | None
    now: datetime
    tz: tzinfo
    today: date
    selected_by: str | None
    facts: _Facts
    currency: str
    cases: list[Case] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    suspensions: list[Suspension] = field(default_factory=list)
    plans: list[PaymentPlan] = field(default_factory=list)
    invoices: list[Invoice] = field(default_factory=list)
    events: list[AuditEvent] = field(default_factory=list)
    explanations: list[Explanation] = field(default_factory=list)
    contacts: list[Contact] | None = None
    reminded: set[str] | None = None
    next_at: datetime | None = None
    send_at: datetime | None = None  # the calendar's first sending instant from `now`
    send_iso: str = ""  # send_at.isoformat()
    more: bool = False  # the write budget stopped the decision short (`_over_budget`)

    def facts_for(self, policy: Policy) -> _Facts:
        """The facts of `policy`: the run's own (no lookup) or a pinned version's."""
        return self.facts if policy is self.policy else _facts(policy)

    def wake(self, instant: datetime | None) -> None:
        if (
            instant is not None
            and instant > self.now
            and (self.next_at is None or instant < self.next_at)
        ):
            self.next_at = instant

    def event(
        self, kind: EventKind, case_id: str | None, key: object, data: dict[str, Any]
    ) -> None:
        account_id = self.view.account.account_id
        self.events.append(
            _new_event(
                event_id=joined_id(f"{account_id!s}|{_KIND[kind]}|{case_id!s}|{key!s}"),
                account_id=account_id,
                at=self.now,
                kind=kind,
                case_id=case_id,
                data=data,
            )
        )


def decide(
    view: AccountView,
    policy: Policy,
    calendar: Calendar | None,
    now: datetime,
    *,
    selected_by: str | None = None,
) -> Decision:
    """Decide what the collection process must do for `view` at `now`.

    `policy` is the current version of the policy selected for the account
    (`dunning.selection.select_policy`); a running case pinned to an older
    version uses `view.case_policy`. `calendar` is the policy's calendar.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if now.tzinfo is not UTC:
        now = now.astimezone(UTC)
    account = view.account
    tz = zone(account.timezone)
    facts = _facts(policy)
    run = _Run(
        view, policy, calendar, now, tz, _today(now, tz), selected_by, facts, account.currency
    )
    if view.excluded_by:
        run.explanations.append(
            _explain(
                run,
                policy,
                None,
                ZERO,
                0,
                0,
                0,
                (
                    Reason(
                        "excluded",
                        "account is on exclusion list(s) "
                        + ", ".join(view.excluded_by)
                        + ": dunning does not touch it",
                    ),
                ),
            )
        )
        return _finish(run)

    counting = _counting_invoices(run)
    if policy.mode is _CUSTOMER:
        today = run.today
        overdue = [inv for inv in counting if inv.due_date < today]
        case = _customer_case(view, overdue) if view.cases else None
        if case is None and not overdue and facts.limits(run.currency)[0] is not None:
            run.explanations.append(_idle(run))  # what _decide_scope says, built once
        else:
            _decide_scope(run, overdue, case)
    else:
        by_id = {c.case_id: c for c in view.cases}
        for inv in counting:
            if inv.due_date < run.today:
                if _over_budget(run):
                    break
                _decide_scope(run, [inv], by_id.get(case_id_for(_INVOICE, inv.invoice_id)))
        # Open invoice-mode cases whose invoice no longer counts (paid, disputed...).
        counted = {case_id_for(_INVOICE, inv.invoice_id) for inv in counting}
        for case in view.cases:
            if case.is_open and case.case_id not in counted:
                if _over_budget(run):
                    break
                _decide_scope(run, [], case)
    if counting:
        _pre_due(run, counting)
    if not run.explanations:
        run.explanations.append(_idle(run))
    if run.more:
        run.next_at = now  # the rest of the account, decided again at this same instant
        run.explanations.append(_more_explanation(run))
    return _finish(run)


def _over_budget(run: _Run) -> bool:
    """Whether this decision has written enough to stop taking on more scopes.

    One decision is written in one DynamoDB transaction (at most 100 writes),
    audit events included. A decision stops starting new scopes (invoice-mode
    cases, pre-due reminders) once it holds `WRITE_BUDGET` writes, and says so
    (`Decision.more`): the caller decides the same account again at the same
    instant, which finds the scopes already decided unchanged and takes on the
    next ones.
    """
    if run.more:
        return True
    writes = (
        len(run.cases)
        + len(run.actions)
        + len(run.approvals)
        + len(run.cancelled)
        + len(run.suspensions)
        + len(run.plans)
        + len(run.invoices)
        + len(run.events)
    )
    if writes >= WRITE_BUDGET:
        run.more = True
    return run.more


def _more_explanation(run: _Run) -> Explanation:
    return _explain(
        run,
        run.policy,
        None,
        ZERO,
        0,
        0,
        0,
        (
            Reason(
                "decision_continues",
                f"this decision holds {WRITE_BUDGET}+ writes (one transaction holds 100): "
                "the account's remaining invoices are decided right after, at the same instant",
            ),
        ),
    )


@lru_cache(maxsize=4096)
def _today(now: datetime, tz: tzinfo) -> date:
    """The local date of `now` (a run decides many accounts at one instant)."""
    return now.astimezone(tz).date()


def _idle(run: _Run) -> Explanation:
    """The explanation of an account with nothing overdue: the same for every such
    account of a policy, currency and selection, so it is built once."""
    key = (run.currency, run.selected_by)
    idle = run.facts.idle
    found = idle.get(key)
    if found is None:
        found = idle[key] = _explain(run, run.policy, None, ZERO, 0, 0, 0, (NOTHING_OVERDUE,))
    return found


def _finish(run: _Run) -> Decision:
    return _new_decision(
        run.view.account.account_id,
        run.now,
        tuple(run.cases),
        tuple(run.actions),
        tuple(run.approvals),
        tuple(run.cancelled),
        tuple(run.suspensions),
        tuple(run.plans),
        tuple(run.invoices),
        None if run.contacts is None else tuple(run.contacts),
        None if run.reminded is None else frozenset(run.reminded),
        tuple(run.events),
        run.next_at,
        tuple(run.explanations),
        run.more,
    )


# ----------------------------------------------------------------- what counts


def _counting_invoices(run: _Run) -> list[Invoice]:
    """Invoices whose open amount counts towards dunning, oldest due first."""
    view, policy = run.view, run.policy
    currency = view.account.currency
    types = policy.invoice_types
    closed: set[str] = set()
    for case in view.cases:
        if case.status in _CLOSED_FOR_GOOD:
            closed.update(case.invoice_ids)
    broken_plans = _check_plans(run) if view.plans else set()
    result: list[Invoice] = []
    for stored in view.invoices:
        inv = stored
        if inv.open_amount <= ZERO or inv.excluded or inv.currency != currency:
            continue
        status = inv.status
        if status is _IN_PAYMENT_PLAN:
            if inv.plan_id not in broken_plans:
                continue
            inv = _replace(inv, {"status": InvoiceStatus.OPEN, "plan_id": None})
            run.invoices.append(inv)
        elif status is not _INVOICE_OPEN:
            continue
        if types and inv.type not in types:
            continue
        if closed and inv.invoice_id in closed:
            continue
        result.append(inv)
    if len(result) > 1:
        result.sort(key=_DUE_ORDER)
    return result


_DUE_ORDER = attrgetter("due_date", "invoice_id")


def _check_plans(run: _Run) -> set[str]:
    """Break plans with an installment missed beyond grace; complete paid ones."""
    broken: set[str] = set()
    for plan in run.view.plans:
        if plan.status is not PlanStatus.ACTIVE:
            if plan.status is PlanStatus.BROKEN:
                broken.add(plan.plan_id)
            continue
        grace = timedelta(days=plan.grace_days)
        due_so_far = ZERO
        total = ZERO
        missed: date | None = None
        for inst in plan.installments:
            total += inst.amount
            if inst.due_date + grace < run.today:
                due_so_far += inst.amount
                if plan.paid_amount < due_so_far and missed is None:
                    missed = inst.due_date
            elif plan.paid_amount < total:
                # The next installment that can still be missed.
                run.wake(local_midnight(inst.due_date + grace + ONE_DAY, run.tz))
                break
        if plan.paid_amount >= total:
            run.plans.append(_replace(plan, {"status": PlanStatus.COMPLETED}))
            run.event(EventKind.PLAN_COMPLETED, None, plan.plan_id, {"plan_id": plan.plan_id})
        elif missed is not None:
            broken.add(plan.plan_id)
            run.plans.append(_replace(plan, {"status": PlanStatus.BROKEN}))
            run.event(
                EventKind.PLAN_BROKEN,
                None,
                plan.plan_id,
                {
                    "plan_id": plan.plan_id,
                    "missed_installment": missed.isoformat(),
                    "paid": str(plan.paid_amount),
                    "due": str(due_so_far),
                    "grace_days": plan.grace_days,
                },
            )
    return broken


def _customer_case(view: AccountView, overdue: list[Invoice]) -> Case | None:
    """The open customer case, or a recovered one whose invoices are overdue again."""
    reopenable: Case | None = None
    for case in view.cases:
        if case.mode is not _CUSTOMER:
            continue
        if case.status in OPEN_CASE_STATUSES:
            return case
        if case.status is _RECOVERED and overdue:
            ids = set(case.invoice_ids)
            if any(inv.invoice_id in ids for inv in overdue) and (
                reopenable is None or case.opened_at > reopenable.opened_at
            ):
                reopenable = case
    return reopenable


# ------------------------------------------------------------------- one scope


def _decide_scope(run: _Run, scope: list[Invoice], case: Case | None) -> None:
    view, now = run.view, run.now
    currency = run.currency
    policy = _effective_policy(run, case)
    balance = ZERO
    for inv in scope:
        balance += inv.open_amount
    days = (run.today - scope[0].due_date).days if scope else 0
    threshold, exit_threshold = run.facts_for(policy).limits(currency)

    def explain(level: int, target: int, *reasons: Reason, case_id: str | None = None) -> None:
        run.explanations.append(
            _explain(
                run,
                policy,
                case_id if case_id is not None else (case.case_id if case else None),
                balance,
                days,
                level,
                target,
                reasons,
                threshold=threshold,
                exit_threshold=exit_threshold,
            )
        )

    if threshold is None:
        explain(
            case.level if case else 0,
            0,
            Reason(
                "not_covered",
                f"policy {policy.policy_id} v{policy.version} has no threshold for {currency}: "
                "the account is not covered",
            ),
        )
        return

    if case is None or case.status is _RECOVERED:
        if not scope:
            explain(0, 0, NOTHING_OVERDUE)
            return
        # A new case needs the entry threshold; a recovered case whose invoices
        # are overdue again (a bounced payment) reopens for anything still owed.
        needed = threshold if case is None else exit_threshold
        if balance < needed:
            explain(
                0,
                0,
                Reason(
                    "below_threshold",
                    f"overdue balance {balance} {currency} is below the "
                    f"{'entry' if case is None else 'exit'} threshold {needed} {currency}",
                ),
            )
            return
        if case is None:
            case = Case(
                case_id=case_id_for(policy.mode, scope[0].invoice_id),
                account_id=view.account.account_id,
                mode=policy.mode,
                invoice_ids=tuple(inv.invoice_id for inv in scope),
                policy_id=policy.policy_id,
                policy_version=policy.version,
                opened_at=now,
            )
            run.event(
                EventKind.CASE_OPENED,
                case.case_id,
                "open",
                {
                    "balance": str(balance),
                    "currency": currency,
                    "days_overdue": days,
                    "threshold": str(threshold),
                    "policy_id": policy.policy_id,
                    "policy_version": policy.version,
                    "selected_by": run.selected_by,
                },
            )
            opened = [
                Reason(
                    "case_opened",
                    f"overdue balance {balance} {currency} reached the entry threshold "
                    f"{threshold} {currency} after {days} day(s)",
                )
            ]
        else:
            # The reopened case takes in every counting overdue invoice, as an open
            # case does (an invoice that fell due while it was closed included).
            ids = case.invoice_ids
            joined = tuple(inv.invoice_id for inv in scope if inv.invoice_id not in ids)
            case = _replace(
                case,
                {
                    "status": CaseStatus.ACTIVE,
                    "closed_at": None,
                    "policy_id": policy.policy_id,
                    "policy_version": policy.version,
                    "invoice_ids": ids + joined if joined else ids,
                },
            )
            run.event(
                EventKind.CASE_REOPENED,
                case.case_id,
                ("reopen", case.recoveries),
                {"balance": str(balance), "currency": currency, "level": case.level},
            )
            opened = [
                Reason(
                    "case_reopened",
                    f"invoices of this case are overdue again ({balance} {currency}, e.g. a "
                    f"reversed payment): it returns to level {case.level} without repeating it",
                )
            ]
        _progress(run, policy, case, scope, balance, days, opened, changed=True)
        return

    if not case.is_open:
        explain(case.level, case.level, Reason("closed", f"case is {case.status.value}"))
        return

    # ----- an open case: recovery first, then suspension, approval, levels.
    if balance < exit_threshold:
        _recover(run, policy, case, balance, currency, exit_threshold)
        explain(
            case.level,
            case.level,
            Reason(
                "recovered",
                f"balance {balance} {currency} is below the exit threshold "
                f"{exit_threshold} {currency}",
            ),
        )
        return

    reasons: list[Reason] = []
    changed = False
    original = case
    ids = case.invoice_ids
    new_ids = [inv.invoice_id for inv in scope if inv.invoice_id not in ids]
    if new_ids:
        case = _replace(case, {"invoice_ids": ids + tuple(new_ids)})
        changed = True
        reasons.append(Reason("invoices_joined", f"{len(new_ids)} more overdue invoice(s)"))
    if case.policy_version != policy.version or case.policy_id != policy.policy_id:
        run.event(
            EventKind.POLICY_MIGRATED,
            case.case_id,
            (policy.policy_id, policy.version),
            {
                "from": f"{case.policy_id} v{case.policy_version}",
                "to": f"{policy.policy_id} v{policy.version}",
            },
        )
        reasons.append(
            Reason(
                "policy_migrated",
                f"running case moves from {case.policy_id} v{case.policy_version} to "
                f"v{policy.version}, which applies to running cases",
            )
        )
        case = _replace(
            case,
            {
                "policy_id": policy.policy_id,
                "policy_version": policy.version,
                "level": min(case.level, len(policy.levels)),
            },
        )
        changed = True

    if case.status is _SUSPENDED:
        case, outcome = _end_suspension(run, policy, case, reasons)
        if outcome is _Suspended.WAIT:
            if changed or case is not original:
                run.cases.append(case)
            explain(case.level, case.level, *reasons)
            return
        if outcome is _Suspended.ESCALATE:
            nxt = _next_level(run.facts_for(policy), case.level)
            if nxt is not None:
                case = _enter(run, policy, case, nxt, scope, balance, days, reasons, "escalated")
        escalated = outcome is _Suspended.ESCALATE
        _progress(
            run, policy, case, scope, balance, days, reasons, changed=True, climb=not escalated
        )
        return

    if case.status is _AWAITING_APPROVAL:
        if changed:
            run.cases.append(case)
        reasons.append(
            Reason("awaiting_approval", f"approval {case.approval_id} is pending: nothing is sent")
        )
        explain(case.level, case.level, *reasons)
        return

    _progress(run, policy, case, scope, balance, days, reasons, changed=changed)


def _effective_policy(run: _Run, case: Case | None) -> Policy:
    """A running case keeps its version unless the current one applies to it."""
    policy = run.policy
    if (
        case is None
        or not case.is_open
        or (
            case.policy_id == policy.policy_id
            and (case.policy_version == policy.version or policy.apply_to_running_cases)
        )
    ):
        return policy
    pinned = run.view.case_policy
    if (
        pinned is None
        or pinned.policy_id != case.policy_id
        or pinned.version != case.policy_version
    ):
        raise PolicyUnavailableError(
            f"case {case.case_id} runs on {case.policy_id} v{case.policy_version}; "
            "supply it as view.case_policy"
        )
    return pinned


def _target_level(facts: _Facts, days: int, balance: Decimal, currency: str) -> int:
    """The highest (1-based) dunning level whose days and minimum amount hold."""
    levels = facts.policy.levels
    # Levels are ordered by days: the ones reached are the first `bisect_right`;
    # of those, the dunning levels (after the pre-due ones) are candidates.
    for number in range(bisect_right(facts.level_days, days), facts.pre_due, -1):
        level = levels[number - 1]
        minimum = level.min_amount.get(currency) if level.min_amount else None
        if minimum is None or balance >= minimum:
            return number
    return 0


def _next_level(facts: _Facts, current: int) -> int | None:
    """The next dunning (positive-days) level after `current`, 1-based."""
    index = max(current, facts.pre_due)  # the dunning levels follow the pre-due ones
    return index + 1 if index < len(facts.level_days) else None


def _progress(
    run: _Run,
    policy: Policy,
    case: Case,
    scope: list[Invoice],
    balance: Decimal,
    days: int,
    reasons: list[Reason],
    *,
    changed: bool,
    climb: bool = True,
) -> None:
    """Move an active case up the levels as days and amounts allow."""
    currency = run.view.account.currency
    facts = run.facts_for(policy)
    target = _target_level(facts, days, balance, currency)
    level = case.level
    hold_until: datetime | None = None
    if target > level and facts.latest_only:
        hold_until = _day_hold(run, case)
    if hold_until is not None:
        # Entered a level earlier today (an escalation, or a level before new data
        # raised the balance): the next one waits for the next local day.
        reasons.append(
            Reason(
                "one_level_a_day",
                f"level {target} is reached but the case entered level {level} today: "
                f"it climbs at {hold_until.isoformat()}",
            )
        )
        run.wake(hold_until)
    elif target > level and climb:
        if facts.latest_only:
            # The dunning levels between the case's level and the target.
            skipped = range(max(level, facts.pre_due) + 1, target)
            for i in skipped:
                run.event(
                    EventKind.LEVEL_SKIPPED,
                    case.case_id,
                    (i, case.entries.get(i, 0) + 1, run.now.isoformat()),
                    {"level": i, "name": policy.levels[i - 1].name, "reason": "latest_only"},
                )
            if skipped:
                reasons.append(
                    Reason(
                        "levels_skipped",
                        f"catch-up latest_only: level(s) {', '.join(map(str, skipped))} "
                        f"passed without their actions",
                    )
                )
            case = _enter(run, policy, case, target, scope, balance, days, reasons, "reached")
            changed = True
        else:
            nxt = _next_level(facts, level)
            assert nxt is not None
            gap_until = _gap_until(run, facts, case)
            if gap_until is None or gap_until <= run.now:
                case = _enter(run, policy, case, nxt, scope, balance, days, reasons, "reached")
                changed = True
            else:
                reasons.append(
                    Reason(
                        "gap",
                        f"catch-up sequential: level {nxt} waits for the minimum gap of "
                        f"{policy.min_gap_days} day(s) until {gap_until.isoformat()}",
                    )
                )
                run.wake(gap_until)
    elif target < level:
        reasons.append(
            Reason(
                "level_held",
                f"figures point to level {target} but a case never goes down: stays at {level}",
            )
        )
    if changed:
        run.cases.append(case)
    # When can this case change next? The next level's date (or the gap).
    nxt = _next_level(facts, case.level)
    if case.status is not _ACTIVE:
        pass  # awaiting approval: the approval's decision re-opens evaluation
    elif nxt is not None and scope:
        # The earliest level date still ahead: a level held back by its minimum
        # amount waits for new money data, a later one still comes on its day.
        gap_until = None if facts.latest_only else _gap_until(run, facts, case)
        levels = policy.levels
        offsets = facts.level_offsets
        for i in range(nxt - 1, len(levels)):
            level_at = local_midnight(scope[0].due_date + offsets[i], run.tz)
            if gap_until is not None and gap_until > level_at:
                level_at = gap_until
            if level_at > run.now:
                run.wake(level_at)
                reasons.append(_next_level_reason(i + 1, levels[i].name, level_at))
                break
    elif nxt is None:
        reasons.append(Reason("last_level", "no further level: waiting for payment"))
    if not reasons:
        reasons.append(Reason("no_change", f"level {case.level} holds; nothing new to do"))
    run.explanations.append(
        _explain(run, policy, case.case_id, balance, days, case.level, target, tuple(reasons))
    )


def _day_hold(run: _Run, case: Case) -> datetime | None:
    """The next local midnight when `case` entered its level earlier today, else None.

    A case enters at most one level per local day: under `sequential` the minimum
    gap says so, under `latest_only` this does (docs/decisions.md, 2026-12-03)."""
    entered = case.entered_level_at
    if entered is None or case.level == 0 or entered.astimezone(run.tz).date() != run.today:
        return None
    return local_midnight(run.today + ONE_DAY, run.tz)


@lru_cache(maxsize=16384)
def _next_level_reason(level_no: int, name: str, level_at: datetime) -> Reason:
    """Many cases wait for the same level on the same day: one Reason for all."""
    return Reason("next_level", f"level {level_no} ({name}) is due at {level_at.isoformat()}")


def _gap_until(run: _Run, facts: _Facts, case: Case) -> datetime | None:
    if case.entered_level_at is None or not facts.min_gap or case.level == 0:
        return None
    entered_day = case.entered_level_at.astimezone(run.tz).date()
    return local_midnight(entered_day + facts.min_gap, run.tz)


def _enter(
    run: _Run,
    policy: Policy,
    case: Case,
    level_no: int,
    scope: list[Invoice],
    balance: Decimal,
    days: int,
    reasons: list[Reason],
    why: str,
) -> Case:
    """Enter a level: bump its entry count and schedule its actions."""
    level = policy.levels[level_no - 1]
    entry = case.entries.get(level_no, 0) + 1
    entries = dict(case.entries)
    entries[level_no] = entry
    currency = run.view.account.currency
    run.event(
        _LEVEL_ENTERED,
        case.case_id,
        (level_no, entry),
        {
            "level": level_no,
            "name": level.name,
            "entry": entry,
            "days_overdue": days,
            "level_days": level.days,
            "balance": str(balance),
            "currency": currency,
            "policy_id": policy.policy_id,
            "policy_version": policy.version,
            "why": why,
        },
    )
    # An escalation (a broken promise, a profile) or a collector's move enters a
    # level before its days: say so instead of claiming the days were reached.
    figures = (
        f"{days} day(s) overdue >= {level.days}"
        if days >= level.days
        else f"{days} day(s) overdue, before the level's {level.days}"
    )
    reasons.append(
        Reason(
            "level_entered",
            f"level {level_no} ({level.name}) {why}: {figures}, balance {balance} {currency}",
        )
    )
    held: list[Action] = []
    suspends = case.service_suspended_by
    for index, spec in enumerate(level.actions):
        action = _action(
            run, policy, case.case_id, spec, level_no, level.name, entry, index, scope, reasons
        )
        if spec.requires_approval:
            held.append(action)
        else:
            run.actions.append(action)
            if spec.type is _SUSPEND_SERVICE:
                suspends = level_no
    update: dict[str, Any] = {
        "level": level_no,
        "entries": entries,
        "entered_level_at": run.now,
        "service_suspended_by": suspends,
    }
    if held:
        approval_id = _hold(run, case.case_id, level_no, level.name, entry, held, reasons)
        update["status"] = CaseStatus.AWAITING_APPROVAL
        update["approval_id"] = approval_id
    return _replace(case, update)


def _action(
    run: _Run,
    policy: Policy,
    case_id: str,
    spec: ActionSpec,
    level_no: int,
    level_name: str,
    entry: int,
    index: int,
    scope: list[Invoice],
    reasons: list[Reason],
    *,
    apply_calendar: bool = True,
) -> Action:
    account = run.view.account
    # Case ids are named after invoices, which are unique per account only.
    action_id = joined_id(f"{account.account_id!s}|{case_id!s}|{level_no!s}|{entry!s}|{index!s}")
    not_before = run.now
    if apply_calendar:
        send_at = run.send_at
        if send_at is None:
            send_at, run.send_iso = _send_time(run.calendar, run.tz, run.now)
            run.send_at = send_at
        not_before = send_at
        if spec.type in CONTACT_ACTIONS and not spec.requires_approval:
            not_before = _apply_cap(run, policy, spec.type, not_before)
    # By position, in Action's field order: 18 keywords cost 2 us more per action.
    action = _new_action(
        action_id,
        account.account_id,
        case_id,
        spec.type,
        CHANNEL_OF[spec.type],
        level_no,
        level_name,
        entry,
        index,
        spec.template,
        spec.target,
        account.locale or policy.default_locale,  # locale
        not_before,
        run.now,  # created_at
        policy.policy_id,
        policy.version,
        tuple(inv.invoice_id for inv in scope),
        spec.requires_approval,
    )
    iso = run.send_iso if not_before is run.send_at else not_before.isoformat()
    data: dict[str, Any] = {
        "action_id": action_id,
        "type": _TYPE[spec.type],
        "level": level_no,
        "not_before": iso,
    }
    if not_before > run.now:
        # The outbox releases it at `not_before` (the worker's outbox sweep) and
        # delivery re-checks it then: nothing here changes at that instant, so
        # the account is not woken for it.
        data["deferred"] = True
        reasons.append(_deferred_reason(_TYPE[spec.type], iso))
    run.event(_ACTION_SCHEDULED, case_id, action_id, data)
    return action


@lru_cache(maxsize=4096)
def _deferred_reason(action_type: str, not_before: str) -> Reason:
    """Many actions of a run wait for the same sending instant: one Reason for all."""
    return Reason(
        "deferred",
        f"{action_type} waits until {not_before} (calendar: sending days and hours, contact caps)",
    )


# (id(calendar), zone, instant) -> (calendar, next_send_time, its isoformat()).
_SEND_TIMES: dict[tuple[int, tzinfo, datetime], tuple[Calendar | None, datetime, str]] = {}
_SEND_TIMES_MAX = 4096


def _send_time(calendar: Calendar | None, tz: tzinfo, now: datetime) -> tuple[datetime, str]:
    """`next_send_time(calendar, tz, now)` and its `isoformat()`, remembered: a run
    decides many accounts of a few calendars and zones at one instant. Cached by
    identity, as `_facts`: the entry holds the calendar, so its id is not reused."""
    key = (id(calendar), tz, now)
    found = _SEND_TIMES.get(key)
    if found is None or found[0] is not calendar:
        if len(_SEND_TIMES) >= _SEND_TIMES_MAX:
            _SEND_TIMES.clear()
        at = next_send_time(calendar, tz, now)
        found = _SEND_TIMES[key] = (calendar, at, at.isoformat())
    at, iso = found[1], found[2]
    # Inside the window the answer is `now` itself: return the caller's object
    # (an equal key may differ in `fold`).
    return (now, iso) if at == now else (at, iso)


def _apply_cap(run: _Run, policy: Policy, channel: ActionType, at: datetime) -> datetime:
    """Defer a contact past the rolling-window cap; never drop it."""
    facts = run.facts_for(policy)
    cap = facts.caps.get(channel)
    if cap is None:
        return at
    if run.contacts is None:
        horizon = run.now - facts.caps_horizon
        run.contacts = [c for c in run.view.contacts if c.at > horizon]
    window = timedelta(days=cap.window_days)
    same = sorted(c.at for c in run.contacts if c.channel is channel)
    candidate = at
    if same and same[-1] > candidate:
        candidate = same[-1]  # never reorder contacts of one channel
    if len(same) >= cap.max_messages:
        candidate = max(candidate, same[-cap.max_messages] + window)
    if candidate != at:
        candidate = next_send_time(run.calendar, run.tz, candidate)
    run.contacts.append(_contact(channel, candidate))
    return candidate


def _recover(
    run: _Run,
    policy: Policy,
    case: Case,
    balance: Decimal,
    currency: str,
    exit_threshold: Decimal,
) -> None:
    recoveries = case.recoveries + 1
    update: dict[str, Any] = {
        "status": CaseStatus.RECOVERED,
        "closed_at": run.now,
        "recoveries": recoveries,
        "approval_id": None,
        "suspension_id": None,
        "service_suspended_by": None,
    }
    if case.approval_id is not None:
        run.cancelled.append(case.approval_id)
        run.event(
            EventKind.APPROVAL_CANCELLED,
            case.case_id,
            case.approval_id,
            {"approval_id": case.approval_id, "reason": "recovered"},
        )
    suspension = _active_suspension(run.view, case)
    if suspension is not None:
        kept = (
            suspension.kind is SuspensionKind.PROMISE_TO_PAY
            and suspension.promised_amount is not None
            and suspension.paid_amount >= suspension.promised_amount
        )
        run.suspensions.append(
            _replace(
                suspension,
                {
                    "status": SuspensionStatus.KEPT if kept else SuspensionStatus.ENDED,
                    "resolved_at": run.now,
                },
            )
        )
        if kept:
            run.event(
                EventKind.PROMISE_KEPT,
                case.case_id,
                suspension.suspension_id,
                {"suspension_id": suspension.suspension_id, "paid": str(suspension.paid_amount)},
            )
    run.event(
        EventKind.CASE_RECOVERED,
        case.case_id,
        ("recovered", recoveries),
        {
            "balance": str(balance),
            "currency": currency,
            "exit_threshold": str(exit_threshold),
            "level": case.level,
        },
    )
    suspended_by = case.service_suspended_by
    if suspended_by is not None:
        level = policy.levels[suspended_by - 1] if suspended_by <= len(policy.levels) else None
        if level is not None and level.skip_reinstatement:
            pass
        else:
            held: list[Action] = []
            for index, spec in enumerate(policy.reinstatement_actions):
                action = _action(
                    run,
                    policy,
                    case.case_id,
                    spec,
                    REINSTATEMENT_LEVEL,
                    "reinstatement",
                    recoveries,
                    index,
                    [],
                    [],
                    apply_calendar=False,  # restoring service never waits (decisions.md)
                )
                (held if spec.requires_approval else run.actions).append(action)
            if held:
                # The case is recovered, not waiting: the approval alone holds them.
                _hold(run, case.case_id, REINSTATEMENT_LEVEL, "reinstatement", recoveries, held, [])
    run.cases.append(_replace(case, update))


def _active_suspension(view: AccountView, case: Case) -> Suspension | None:
    if case.suspension_id is None:
        return None
    for s in view.suspensions:
        if s.suspension_id == case.suspension_id:
            return s
    return None


class _Suspended(Enum):
    WAIT = "wait"
    RESUME = "resume"
    ESCALATE = "escalate"


def _end_suspension(
    run: _Run, policy: Policy, case: Case, reasons: list[Reason]
) -> tuple[Case, _Suspended]:
    """Check a suspended case: still waiting, resuming, or escalating."""
    suspension = _active_suspension(run.view, case)
    if suspension is None:
        reasons.append(Reason("suspension_missing", "suspension record not found: resuming"))
        resumed = _replace(case, {"status": CaseStatus.ACTIVE, "suspension_id": None})
        return resumed, _Suspended.RESUME
    if suspension.status is SuspensionStatus.AWAITING_REVIEW:
        reasons.append(
            Reason("awaiting_review", f"{suspension.kind.value} ended: waiting for a person")
        )
        return case, _Suspended.WAIT
    profile = policy.profile(suspension.kind)
    now = run.now
    if suspension.kind is SuspensionKind.PROMISE_TO_PAY:
        assert suspension.promised_amount is not None
        deadline = promise_deadline(suspension, profile.grace_days, run.tz)
        if suspension.paid_amount >= suspension.promised_amount:
            run.suspensions.append(
                _replace(suspension, {"status": SuspensionStatus.KEPT, "resolved_at": now})
            )
            run.event(
                EventKind.PROMISE_KEPT,
                case.case_id,
                suspension.suspension_id,
                {
                    "suspension_id": suspension.suspension_id,
                    "promised": str(suspension.promised_amount),
                    "paid": str(suspension.paid_amount),
                },
            )
            reasons.append(
                Reason(
                    "promise_kept",
                    f"promise kept: {suspension.paid_amount} paid of "
                    f"{suspension.promised_amount} promised; dunning resumes at level {case.level}",
                )
            )
            resumed = _replace(case, {"status": CaseStatus.ACTIVE, "suspension_id": None})
            return resumed, _Suspended.RESUME
        if now < deadline:
            run.wake(deadline)
            reasons.append(
                Reason(
                    "promise_pending",
                    f"promise to pay {suspension.promised_amount} by "
                    f"{suspension.promised_date} (+{profile.grace_days} grace day(s)); "
                    f"{suspension.paid_amount} paid so far; nothing is sent until "
                    f"{deadline.isoformat()}",
                )
            )
            return case, _Suspended.WAIT
        broken = case.broken_promises + 1
        run.suspensions.append(
            _replace(
                suspension,
                {
                    "status": SuspensionStatus.AWAITING_REVIEW
                    if profile.on_end is SuspensionEnd.MANUAL
                    else SuspensionStatus.BROKEN,
                    "resolved_at": now,
                },
            )
        )
        run.event(
            EventKind.PROMISE_BROKEN,
            case.case_id,
            suspension.suspension_id,
            {
                "suspension_id": suspension.suspension_id,
                "promised": str(suspension.promised_amount),
                "paid": str(suspension.paid_amount),
                "deadline": deadline.isoformat(),
                "broken_promises": broken,
            },
        )
        reasons.append(
            Reason(
                "promise_broken",
                f"promise broken: {suspension.paid_amount} paid of "
                f"{suspension.promised_amount} by {deadline.isoformat()} "
                f"(broken promises: {broken})",
            )
        )
        case = _replace(case, {"broken_promises": broken})
    else:
        if now < suspension.ends_at:
            run.wake(suspension.ends_at)
            reasons.append(
                Reason(
                    "suspended",
                    f"{suspension.kind.value} suspension until {suspension.ends_at.isoformat()}"
                    ": nothing is sent",
                )
            )
            return case, _Suspended.WAIT
        if profile.on_end is not SuspensionEnd.MANUAL:
            run.suspensions.append(
                _replace(suspension, {"status": SuspensionStatus.ENDED, "resolved_at": now})
            )
        run.event(
            EventKind.SUSPENSION_ENDED,
            case.case_id,
            suspension.suspension_id,
            {
                "suspension_id": suspension.suspension_id,
                "kind": suspension.kind.value,
                "on_end": profile.on_end.value,
            },
        )
    if profile.on_end is SuspensionEnd.MANUAL:
        if suspension.kind is not SuspensionKind.PROMISE_TO_PAY:
            run.suspensions.append(
                _replace(
                    suspension, {"status": SuspensionStatus.AWAITING_REVIEW, "resolved_at": now}
                )
            )
        reasons.append(
            Reason("awaiting_review", f"{suspension.kind.value} ended: a person decides next")
        )
        return case, _Suspended.WAIT
    reasons.append(
        Reason(
            "suspension_ended",
            f"{suspension.kind.value} ended: profile says {profile.on_end.value}",
        )
    )
    resumed = _replace(case, {"status": CaseStatus.ACTIVE, "suspension_id": None})
    escalate = profile.on_end is SuspensionEnd.ESCALATE
    return resumed, _Suspended.ESCALATE if escalate else _Suspended.RESUME


# ------------------------------------------------------------ pre-due reminders


def _pre_due(run: _Run, counting: list[Invoice]) -> None:
    """Reminders before (or on) the due date: per invoice, once, never a case."""
    policy = run.policy
    levels = policy.levels
    today, tz = run.today, run.tz
    wake = run.wake
    if run.facts.first_days > 0:
        # No reminders: the only thing that can happen is an invoice falling due.
        for inv in counting:
            if inv.due_date >= today:
                wake(local_midnight(inv.due_date + ONE_DAY, tz))
                break
        return
    reminded = run.view.reminded
    offsets = run.facts.reminder_offsets
    for inv in counting:
        due = inv.due_date
        if due < today:
            continue
        wake(local_midnight(due + ONE_DAY, tz))
        days = (today - due).days  # <= 0
        reached = 0
        for i, (level_days, offset) in enumerate(offsets):
            if level_days <= days:
                reached = i + 1
            else:
                wake(local_midnight(due + offset, tz))
                break
        if reached == 0:
            continue
        key = f"{inv.invoice_id}/{reached}"
        if key in reminded or (run.reminded is not None and key in run.reminded):
            continue
        if reminded and any(
            f"{inv.invoice_id}/{j}" in reminded for j in range(reached + 1, len(levels) + 1)
        ):
            continue
        if _over_budget(run):
            break
        if run.reminded is None:
            run.reminded = _live_reminders(run, reminded)
        run.reminded.add(key)
        level = levels[reached - 1]
        reasons: list[Reason] = []
        scope_id = "R-" + inv.invoice_id  # reminders open no case
        held: list[Action] = []
        for index, spec in enumerate(level.actions):
            action = _action(
                run, policy, scope_id, spec, reached, level.name, 1, index, [inv], reasons
            )
            (held if spec.requires_approval else run.actions).append(action)
        if held:
            _hold(run, scope_id, reached, level.name, 1, held, reasons)
        run.event(
            EventKind.REMINDER_SCHEDULED,
            None,
            key,
            {"invoice_id": inv.invoice_id, "level": reached, "name": level.name},
        )
        reasons.insert(
            0,
            Reason(
                "pre_due_reminder",
                f"invoice {inv.invoice_id} is due {inv.due_date.isoformat()}: reminder "
                f"{level.name!r} ({level.days} day(s))",
            ),
        )
        run.explanations.append(
            _explain(run, policy, None, inv.open_amount, days, reached, reached, tuple(reasons))
        )


def _live_reminders(run: _Run, reminded: frozenset[str]) -> set[str]:
    """The reminder keys still worth keeping: an invoice past its due date is never
    reminded again, so its keys go. The keys of an invoice missing from the view
    stay: a paid invoice leaves the view and comes back if the payment bounces."""
    overdue = {inv.invoice_id for inv in run.view.invoices if inv.due_date < run.today}
    if not overdue:
        return set(reminded)
    return {k for k in reminded if k.split("/", 1)[0] not in overdue}


def _hold(
    run: _Run,
    scope_id: str,
    level_no: int,
    level_name: str,
    entry: int,
    held: list[Action],
    reasons: list[Reason],
) -> str:
    """Hold actions that require approval in one pending approval; returns its id."""
    approval_id = stable_id(run.view.account.account_id, scope_id, "approval", level_no, entry)
    run.approvals.append(
        _new_approval(
            approval_id=approval_id,
            account_id=run.view.account.account_id,
            case_id=scope_id,
            level=level_no,
            level_name=level_name,
            actions=tuple(held),
            created_at=run.now,
        )
    )
    run.event(
        EventKind.APPROVAL_REQUESTED,
        scope_id,
        approval_id,
        {
            "approval_id": approval_id,
            "level": level_no,
            "actions": [_TYPE[a.type] for a in held],
        },
    )
    reasons.append(
        Reason(
            "approval_required",
            f"{len(held)} action(s) of level {level_no} wait for approval {approval_id}",
        )
    )
    return approval_id


def _explain(
    run: _Run,
    policy: Policy,
    case_id: str | None,
    balance: Decimal,
    days: int,
    level: int,
    target: int,
    reasons: tuple[Reason, ...],
    *,
    threshold: Decimal | None = None,
    exit_threshold: Decimal | None = None,
) -> Explanation:
    currency = run.currency
    if exit_threshold is None:
        limits = run.facts_for(policy).limits(currency)
        threshold, exit_threshold = limits
    return _new_explanation(
        case_id,
        policy.policy_id,
        policy.version,
        run.selected_by,
        policy.mode,
        currency,
        balance,
        days,
        threshold,
        exit_threshold,
        level,
        target,
        reasons,
    )


# --------------------------------------------------------------------- applying


def move_case(
    view: AccountView,
    policy: Policy,
    calendar: Calendar | None,
    now: datetime,
    *,
    case_id: str,
    level: int,
    reason: str,
    actor: str,
) -> Decision:
    """A person escalates a case to a higher level now.

    The level is entered as the engine enters one (its entry count bumped, its
    actions scheduled by the calendar and the contact caps, or held for
    approval), with an audit event naming who moved it and why. A case never
    goes down, so a level at or below the case's is refused, as are pre-due
    levels and cases that are not active. `policy` is the version the case
    runs on. The account is evaluated again at the next run.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    account = view.account
    tz = zone(account.timezone)
    run = _Run(
        view, policy, calendar, now, tz, _today(now, tz), None, _facts(policy), account.currency
    )
    case = next((c for c in view.cases if c.case_id == case_id), None)
    if case is None:
        raise LookupError(f"case {case_id} does not exist")
    if case.status is not CaseStatus.ACTIVE:
        raise ValueError(f"case {case_id} is {case.status.value}, not active")
    if not 1 <= level <= len(policy.levels) or policy.levels[level - 1].is_pre_due:
        raise ValueError(f"level {level} is not a dunning level of policy {policy.policy_id}")
    if level <= case.level:
        raise ValueError(f"case {case_id} is at level {case.level}: a case never goes down")
    ids = set(case.invoice_ids)
    scope = [i for i in view.invoices if i.invoice_id in ids and i.open_amount > 0]
    balance = sum((i.open_amount for i in scope), ZERO)
    oldest = min((i.due_date for i in scope), default=run.today)
    days = max(0, (run.today - oldest).days)
    reasons: list[Reason] = [
        Reason("case_moved", f"moved from level {case.level} to level {level} by {actor}: {reason}")
    ]
    moved = _enter(run, policy, case, level, scope, balance, days, reasons, "moved by a person")
    run.cases.append(moved)
    run.events.insert(
        0,
        AuditEvent(
            event_id=stable_id(
                account.account_id, "case_moved", case_id, level, moved.entries[level]
            ),
            account_id=account.account_id,
            at=now,
            kind=EventKind.CASE_MOVED,
            case_id=case_id,
            data={"from_level": case.level, "to_level": level, "reason": reason},
            actor=actor,
        ),
    )
    run.explanations.append(
        _explain(run, policy, case_id, balance, days, level, level, tuple(reasons))
    )
    run.next_at = now + timedelta(microseconds=1)
    return _finish(run)


def apply_decision(view: AccountView, decision: Decision) -> AccountView:
    """The view after `decision` is stored (what the store does, in memory)."""
    update: dict[str, Any] = {}
    if decision.cases:
        changed = {c.case_id: c for c in decision.cases}
        kept = [changed.pop(c.case_id, c) for c in view.cases]
        update["cases"] = (*kept, *changed.values())
    if decision.suspensions:
        changed_s = {s.suspension_id: s for s in decision.suspensions}
        update["suspensions"] = tuple(changed_s.get(s.suspension_id, s) for s in view.suspensions)
    if decision.plans:
        changed_p = {p.plan_id: p for p in decision.plans}
        update["plans"] = tuple(changed_p.get(p.plan_id, p) for p in view.plans)
    if decision.invoices:
        changed_i = {i.invoice_id: i for i in decision.invoices}
        update["invoices"] = tuple(changed_i.get(i.invoice_id, i) for i in view.invoices)
    if decision.contacts is not None:
        update["contacts"] = decision.contacts
    if decision.reminded is not None:
        update["reminded"] = decision.reminded
    return _replace(view, update) if update else view
