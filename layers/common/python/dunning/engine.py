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

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import Enum
from typing import Any

from dunning.calendars import ONE_DAY, local_midnight, next_send_time, zone
from dunning.ids import stable_id
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


class PolicyUnavailableError(LookupError):
    """A running case is pinned to a policy version the caller did not supply."""


def case_id_for(mode: Mode, first_invoice_id: str) -> str:
    """Cases are named after the invoice that opened them: deterministic, no counter."""
    return ("C-" if mode is Mode.CUSTOMER else "I-") + first_invoice_id


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
            AuditEvent(
                event_id=stable_id(account_id, kind.value, case_id, key),
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
    now = now.astimezone(UTC)
    account = view.account
    tz = zone(account.timezone)
    run = _Run(
        view=view,
        policy=policy,
        calendar=calendar,
        now=now,
        tz=tz,
        today=now.astimezone(tz).date(),
        selected_by=selected_by,
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
    if policy.mode is Mode.CUSTOMER:
        overdue = [inv for inv in counting if inv.due_date < run.today]
        _decide_scope(run, overdue, _customer_case(view, overdue))
    else:
        by_id = {c.case_id: c for c in view.cases}
        for inv in counting:
            if inv.due_date < run.today:
                _decide_scope(run, [inv], by_id.get(case_id_for(Mode.INVOICE, inv.invoice_id)))
        # Open invoice-mode cases whose invoice no longer counts (paid, disputed...).
        counted = {case_id_for(Mode.INVOICE, inv.invoice_id) for inv in counting}
        for case in view.cases:
            if case.is_open and case.case_id not in counted:
                _decide_scope(run, [], case)
    _pre_due(run, counting)
    if not run.explanations:
        run.explanations.append(
            _explain(
                run,
                policy,
                None,
                ZERO,
                0,
                0,
                0,
                (Reason("nothing_overdue", "no counting invoice is overdue"),),
            )
        )
    return _finish(run)


def _finish(run: _Run) -> Decision:
    return Decision(
        account_id=run.view.account.account_id,
        at=run.now,
        cases=tuple(run.cases),
        actions=tuple(run.actions),
        approvals=tuple(run.approvals),
        cancelled_approvals=tuple(run.cancelled),
        suspensions=tuple(run.suspensions),
        plans=tuple(run.plans),
        invoices=tuple(run.invoices),
        contacts=None if run.contacts is None else tuple(run.contacts),
        reminded=None if run.reminded is None else frozenset(run.reminded),
        events=tuple(run.events),
        next_evaluation_at=run.next_at,
        explanations=tuple(run.explanations),
    )


# ----------------------------------------------------------------- what counts


def _counting_invoices(run: _Run) -> list[Invoice]:
    """Invoices whose open amount counts towards dunning, oldest due first."""
    view, policy = run.view, run.policy
    currency = view.account.currency
    types = policy.invoice_types
    closed: set[str] = set()
    for case in view.cases:
        if case.status is CaseStatus.STOPPED or case.status is CaseStatus.WRITTEN_OFF:
            closed.update(case.invoice_ids)
    broken_plans = _check_plans(run) if view.plans else set()
    result: list[Invoice] = []
    for stored in view.invoices:
        inv = stored
        if inv.open_amount <= ZERO or inv.excluded or inv.currency != currency:
            continue
        status = inv.status
        if status is InvoiceStatus.IN_PAYMENT_PLAN:
            if inv.plan_id not in broken_plans:
                continue
            inv = inv.model_copy(update={"status": InvoiceStatus.OPEN, "plan_id": None})
            run.invoices.append(inv)
        elif status is not InvoiceStatus.OPEN:
            continue
        if types and inv.type not in types:
            continue
        if closed and inv.invoice_id in closed:
            continue
        result.append(inv)
    if len(result) > 1:
        result.sort(key=lambda i: (i.due_date, i.invoice_id))
    return result


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
            run.plans.append(plan.model_copy(update={"status": PlanStatus.COMPLETED}))
            run.event(EventKind.PLAN_COMPLETED, None, plan.plan_id, {"plan_id": plan.plan_id})
        elif missed is not None:
            broken.add(plan.plan_id)
            run.plans.append(plan.model_copy(update={"status": PlanStatus.BROKEN}))
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
        if case.mode is not Mode.CUSTOMER:
            continue
        if case.status in OPEN_CASE_STATUSES:
            return case
        if case.status is CaseStatus.RECOVERED and overdue:
            ids = set(case.invoice_ids)
            if any(inv.invoice_id in ids for inv in overdue) and (
                reopenable is None or case.opened_at > reopenable.opened_at
            ):
                reopenable = case
    return reopenable


# ------------------------------------------------------------------- one scope


def _decide_scope(run: _Run, scope: list[Invoice], case: Case | None) -> None:
    view, now = run.view, run.now
    currency = view.account.currency
    policy = _effective_policy(run, case)
    balance = ZERO
    for inv in scope:
        balance += inv.open_amount
    days = (run.today - scope[0].due_date).days if scope else 0
    threshold = policy.threshold(currency)
    exit_threshold = policy.exit_threshold(currency)

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

    if case is None or case.status is CaseStatus.RECOVERED:
        if not scope:
            explain(0, 0, Reason("nothing_overdue", "no counting invoice is overdue"))
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
            case = case.model_copy(
                update={
                    "status": CaseStatus.ACTIVE,
                    "closed_at": None,
                    "policy_id": policy.policy_id,
                    "policy_version": policy.version,
                }
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
        case = case.model_copy(update={"invoice_ids": ids + tuple(new_ids)})
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
        case = case.model_copy(
            update={
                "policy_id": policy.policy_id,
                "policy_version": policy.version,
                "level": min(case.level, len(policy.levels)),
            }
        )
        changed = True

    if case.status is CaseStatus.SUSPENDED:
        case, outcome = _end_suspension(run, policy, case, reasons)
        if outcome is _Suspended.WAIT:
            if changed or case is not original:
                run.cases.append(case)
            explain(case.level, case.level, *reasons)
            return
        if outcome is _Suspended.ESCALATE:
            nxt = _next_level(policy, case.level)
            if nxt is not None:
                case = _enter(run, policy, case, nxt, scope, balance, days, reasons, "escalated")
        escalated = outcome is _Suspended.ESCALATE
        _progress(
            run, policy, case, scope, balance, days, reasons, changed=True, climb=not escalated
        )
        return

    if case.status is CaseStatus.AWAITING_APPROVAL:
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


def _target_level(policy: Policy, days: int, balance: Decimal, currency: str) -> int:
    """The highest (1-based) dunning level whose days and minimum amount hold."""
    levels = policy.levels
    for i in range(len(levels) - 1, -1, -1):
        level = levels[i]
        if level.days <= 0:
            return 0  # levels are ordered: the rest are pre-due reminders
        if level.days > days:
            continue
        minimum = level.min_amount.get(currency) if level.min_amount else None
        if minimum is None or balance >= minimum:
            return i + 1
    return 0


def _next_level(policy: Policy, current: int) -> int | None:
    """The next dunning (positive-days) level after `current`, 1-based."""
    levels = policy.levels
    for i in range(current, len(levels)):
        if levels[i].days > 0:
            return i + 1
    return None


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
    target = _target_level(policy, days, balance, currency)
    level = case.level
    if target > level and climb:
        if policy.catch_up is CatchUp.LATEST_ONLY:
            skipped = [i for i in range(level + 1, target) if policy.levels[i - 1].days > 0]
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
            nxt = _next_level(policy, level)
            assert nxt is not None
            gap_until = _gap_until(run, policy, case)
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
    nxt = _next_level(policy, case.level)
    if case.status is not CaseStatus.ACTIVE:
        pass  # awaiting approval: the approval's decision re-opens evaluation
    elif nxt is not None and scope:
        # The earliest level date still ahead: a level held back by its minimum
        # amount waits for new money data, a later one still comes on its day.
        gap_until = _gap_until(run, policy, case) if policy.catch_up is CatchUp.SEQUENTIAL else None
        levels = policy.levels
        for i in range(nxt - 1, len(levels)):
            level_at = local_midnight(scope[0].due_date + timedelta(days=levels[i].days), run.tz)
            if gap_until is not None and gap_until > level_at:
                level_at = gap_until
            if level_at > run.now:
                run.wake(level_at)
                reasons.append(
                    Reason(
                        "next_level",
                        f"level {i + 1} ({levels[i].name}) is due at {level_at.isoformat()}",
                    )
                )
                break
    elif nxt is None:
        reasons.append(Reason("last_level", "no further level: waiting for payment"))
    if not reasons:
        reasons.append(Reason("no_change", f"level {case.level} holds; nothing new to do"))
    run.explanations.append(
        _explain(run, policy, case.case_id, balance, days, case.level, target, tuple(reasons))
    )


def _gap_until(run: _Run, policy: Policy, case: Case) -> datetime | None:
    if case.entered_level_at is None or policy.min_gap_days == 0 or case.level == 0:
        return None
    entered_day = case.entered_level_at.astimezone(run.tz).date()
    return local_midnight(entered_day + timedelta(days=policy.min_gap_days), run.tz)


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
        EventKind.LEVEL_ENTERED,
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
    reasons.append(
        Reason(
            "level_entered",
            f"level {level_no} ({level.name}) {why}: {days} day(s) overdue >= {level.days}, "
            f"balance {balance} {currency}",
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
            if spec.type is ActionType.SUSPEND_SERVICE:
                suspends = level_no
    update: dict[str, Any] = {
        "level": level_no,
        "entries": entries,
        "entered_level_at": run.now,
        "service_suspended_by": suspends,
    }
    if held:
        approval_id = stable_id(case.case_id, "approval", level_no, entry)
        run.approvals.append(
            Approval(
                approval_id=approval_id,
                account_id=case.account_id,
                case_id=case.case_id,
                level=level_no,
                level_name=level.name,
                actions=tuple(held),
                created_at=run.now,
            )
        )
        run.event(
            EventKind.APPROVAL_REQUESTED,
            case.case_id,
            approval_id,
            {
                "approval_id": approval_id,
                "level": level_no,
                "actions": [a.type.value for a in held],
            },
        )
        reasons.append(
            Reason(
                "approval_required",
                f"{len(held)} action(s) of level {level_no} wait for approval {approval_id}",
            )
        )
        update["status"] = CaseStatus.AWAITING_APPROVAL
        update["approval_id"] = approval_id
    return case.model_copy(update=update)


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
    action_id = stable_id(case_id, level_no, entry, index)
    not_before = run.now
    if apply_calendar:
        not_before = next_send_time(run.calendar, run.tz, run.now)
        if spec.type in CONTACT_ACTIONS and not spec.requires_approval:
            not_before = _apply_cap(run, policy, spec.type, not_before)
    action = Action(
        action_id=action_id,
        account_id=account.account_id,
        case_id=case_id,
        type=spec.type,
        channel=CHANNEL_OF[spec.type],
        level=level_no,
        level_name=level_name,
        entry=entry,
        index=index,
        template=spec.template,
        target=spec.target,
        locale=account.locale or policy.default_locale,
        not_before=not_before,
        created_at=run.now,
        policy_id=policy.policy_id,
        policy_version=policy.version,
        invoice_ids=tuple(inv.invoice_id for inv in scope),
        requires_approval=spec.requires_approval,
    )
    data: dict[str, Any] = {
        "action_id": action_id,
        "type": spec.type.value,
        "level": level_no,
        "not_before": not_before.isoformat(),
    }
    if not_before > run.now:
        data["deferred"] = True
        reasons.append(
            Reason(
                "deferred",
                f"{spec.type.value} waits until {not_before.isoformat()} "
                "(calendar: sending days and hours, contact caps)",
            )
        )
        if not spec.requires_approval:
            run.wake(not_before)
    run.event(EventKind.ACTION_SCHEDULED, case_id, action_id, data)
    return action


def _apply_cap(run: _Run, policy: Policy, channel: ActionType, at: datetime) -> datetime:
    """Defer a contact past the rolling-window cap; never drop it."""
    cap = None
    for c in policy.contact_caps:
        if c.channel is channel:
            cap = c
            break
    if cap is None:
        return at
    if run.contacts is None:
        horizon = run.now - timedelta(days=max(c.window_days for c in policy.contact_caps))
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
    run.contacts.append(Contact(channel=channel, at=candidate))
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
            suspension.model_copy(
                update={
                    "status": SuspensionStatus.KEPT if kept else SuspensionStatus.ENDED,
                    "resolved_at": run.now,
                }
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
                run.actions.append(action)
    run.cases.append(case.model_copy(update=update))


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
        resumed = case.model_copy(update={"status": CaseStatus.ACTIVE, "suspension_id": None})
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
                suspension.model_copy(update={"status": SuspensionStatus.KEPT, "resolved_at": now})
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
            resumed = case.model_copy(update={"status": CaseStatus.ACTIVE, "suspension_id": None})
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
            suspension.model_copy(
                update={
                    "status": SuspensionStatus.AWAITING_REVIEW
                    if profile.on_end is SuspensionEnd.MANUAL
                    else SuspensionStatus.BROKEN,
                    "resolved_at": now,
                }
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
        case = case.model_copy(update={"broken_promises": broken})
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
                suspension.model_copy(update={"status": SuspensionStatus.ENDED, "resolved_at": now})
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
                suspension.model_copy(
                    update={"status": SuspensionStatus.AWAITING_REVIEW, "resolved_at": now}
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
    resumed = case.model_copy(update={"status": CaseStatus.ACTIVE, "suspension_id": None})
    escalate = profile.on_end is SuspensionEnd.ESCALATE
    return resumed, _Suspended.ESCALATE if escalate else _Suspended.RESUME


# ------------------------------------------------------------ pre-due reminders


def _pre_due(run: _Run, counting: list[Invoice]) -> None:
    """Reminders before (or on) the due date: per invoice, once, never a case."""
    policy = run.policy
    levels = policy.levels
    if levels[0].days > 0:
        # No reminders: the only thing that can happen is an invoice falling due.
        for inv in counting:
            if inv.due_date >= run.today:
                run.wake(local_midnight(inv.due_date + ONE_DAY, run.tz))
                break
        return
    reminded = run.view.reminded
    for inv in counting:
        if inv.due_date < run.today:
            continue
        run.wake(local_midnight(inv.due_date + ONE_DAY, run.tz))
        days = (run.today - inv.due_date).days  # <= 0
        reached = 0
        for i, level in enumerate(levels):
            if level.days > 0:
                break
            if level.days <= days:
                reached = i + 1
            else:
                run.wake(local_midnight(inv.due_date + timedelta(days=level.days), run.tz))
                break
        if reached == 0:
            continue
        key = f"{inv.invoice_id}/{reached}"
        if key in reminded or (run.reminded is not None and key in run.reminded):
            continue
        if any(f"{inv.invoice_id}/{j}" in reminded for j in range(reached + 1, len(levels) + 1)):
            continue
        if run.reminded is None:
            run.reminded = {
                k for k in reminded if k.split("/", 1)[0] in {i.invoice_id for i in counting}
            }
        run.reminded.add(key)
        level = levels[reached - 1]
        reasons: list[Reason] = []
        for index, spec in enumerate(level.actions):
            run.actions.append(
                _action(
                    run,
                    policy,
                    "R-" + inv.invoice_id,  # reminders open no case
                    spec,
                    reached,
                    level.name,
                    1,
                    index,
                    [inv],
                    reasons,
                )
            )
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
    currency = run.view.account.currency
    return Explanation(
        case_id=case_id,
        policy_id=policy.policy_id,
        policy_version=policy.version,
        selected_by=run.selected_by,
        mode=policy.mode,
        currency=currency,
        balance=balance,
        days_overdue=days,
        threshold=threshold if threshold is not None else policy.threshold(currency),
        exit_threshold=exit_threshold
        if exit_threshold is not None
        else policy.exit_threshold(currency),
        level=level,
        target_level=target,
        reasons=reasons,
    )


# --------------------------------------------------------------------- applying


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
    return view.model_copy(update=update) if update else view
