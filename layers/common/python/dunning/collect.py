"""What collectors do to an account, as pure changes of its view.

Each function takes the current `AccountView` (and the policy the account runs
on) and returns a `Mutation`: the new view and the audit events that tell who
did what and why. It raises `CollectorError` to refuse (a case that is not
open, a promise beyond the profile's limits, too many broken promises). The
store writes a mutation in one transaction (`DynamoStore.mutate`); nothing
here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from dunning.calendars import zone
from dunning.engine import can_accept_promise, promise_deadline
from dunning.engine import move_case as engine_move_case
from dunning.ids import stable_id
from dunning.model import (
    AccountView,
    AuditEvent,
    Calendar,
    Case,
    CaseStatus,
    Decision,
    EventKind,
    ExclusionList,
    Installment,
    InvoiceStatus,
    PaymentPlan,
    Policy,
    Suspension,
    SuspensionKind,
    SuspensionStatus,
)
from dunning.money import check_amount
from dunning.store.dynamo import Mutation, StoredView


class CollectorError(ValueError):
    """A collector's request that the account's state refuses (HTTP 409),
    or that breaks a limit of the policy (HTTP 422 when `field` is set)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _case(view: AccountView, case_id: str) -> Case:
    case = next((c for c in view.cases if c.case_id == case_id), None)
    if case is None:
        raise LookupError(f"case {case_id} does not exist")
    return case


def _replace_case(view: AccountView, case: Case) -> tuple[Case, ...]:
    return tuple(case if c.case_id == case.case_id else c for c in view.cases)


def _event(
    view: AccountView,
    kind: EventKind,
    case_id: str | None,
    now: datetime,
    actor: str,
    key: str,
    data: dict[str, Any],
) -> AuditEvent:
    account_id = view.account.account_id
    return AuditEvent(
        event_id=stable_id(account_id, kind.value, key),
        account_id=account_id,
        at=now,
        kind=kind,
        case_id=case_id,
        data=data,
        actor=actor,
    )


def _suspend(
    view: AccountView,
    case: Case,
    suspension: Suspension,
    now: datetime,
    actor: str,
) -> Mutation:
    if case.status is not CaseStatus.ACTIVE:
        raise CollectorError(f"case {case.case_id} is {case.status.value}, not active")
    suspended = case.model_copy(
        update={"status": CaseStatus.SUSPENDED, "suspension_id": suspension.suspension_id}
    )
    new = view.model_copy(
        update={
            "cases": _replace_case(view, suspended),
            "suspensions": (*view.suspensions, suspension),
        }
    )
    data: dict[str, Any] = {
        "suspension_id": suspension.suspension_id,
        "kind": suspension.kind.value,
        "ends_at": suspension.ends_at.isoformat(),
        "reason": suspension.reason,
    }
    if suspension.promised_amount is not None:
        data["promised_amount"] = f"{suspension.promised_amount:f}"
        data["currency"] = suspension.currency
        data["promised_date"] = str(suspension.promised_date)
    event = _event(
        view, EventKind.CASE_SUSPENDED, case.case_id, now, actor, suspension.suspension_id, data
    )
    return Mutation(new, (event,), result=suspension)


def promise_to_pay(
    view: AccountView,
    policy: Policy,
    *,
    case_id: str,
    suspension_id: str,
    amount: Decimal,
    promised_date: date,
    now: datetime,
    actor: str,
    reason: str = "",
) -> Mutation:
    """The customer promises `amount` by `promised_date`: the case pauses until
    the date plus the profile's grace days, then the engine checks the promise."""
    case = _case(view, case_id)
    ok, why = can_accept_promise(case, policy)
    if not ok:
        raise CollectorError(f"no new promise accepted on case {case_id}: {why}")
    currency = view.account.currency
    try:
        check_amount(amount, currency)
    except ValueError as err:
        raise CollectorError(str(err), field="amount") from None
    if amount <= 0:
        raise CollectorError("a promised amount must be positive", field="amount")
    profile = policy.profile(SuspensionKind.PROMISE_TO_PAY)
    tz = zone(view.account.timezone)
    today = now.astimezone(tz).date()
    if promised_date < today:
        raise CollectorError("the promised date is in the past", field="promised_date")
    if promised_date > today + timedelta(days=profile.max_days):
        raise CollectorError(
            f"the promised date is more than {profile.max_days} days ahead "
            "(the policy's promise-to-pay profile)",
            field="promised_date",
        )
    draft = Suspension(
        suspension_id=suspension_id,
        account_id=view.account.account_id,
        case_id=case_id,
        kind=SuspensionKind.PROMISE_TO_PAY,
        starts_at=now,
        ends_at=now + timedelta(days=1),
        reason=reason,
        currency=currency,
        promised_amount=amount,
        promised_date=promised_date,
    )
    suspension = draft.model_copy(
        update={"ends_at": promise_deadline(draft, profile.grace_days, tz)}
    )
    return _suspend(view, case, suspension, now, actor)


def suspend(
    view: AccountView,
    policy: Policy,
    *,
    case_id: str,
    suspension_id: str,
    kind: SuspensionKind,
    reason: str,
    days: int | None,
    now: datetime,
    actor: str,
) -> Mutation:
    """Pause a case for a fraud review, a dispute or customer care."""
    if kind is SuspensionKind.PROMISE_TO_PAY:
        raise CollectorError("a promise to pay has its own route", field="kind")
    profile = policy.profile(kind)
    length = profile.default_days if days is None else days
    if not 1 <= length <= profile.max_days:
        raise CollectorError(
            f"a {kind.value} suspension lasts 1 to {profile.max_days} days", field="days"
        )
    suspension = Suspension(
        suspension_id=suspension_id,
        account_id=view.account.account_id,
        case_id=case_id,
        kind=kind,
        starts_at=now,
        ends_at=now + timedelta(days=length),
        reason=reason,
    )
    return _suspend(view, _case(view, case_id), suspension, now, actor)


def lift_suspension(
    view: AccountView, *, suspension_id: str, reason: str, now: datetime, actor: str
) -> Mutation:
    """A person ends a suspension before its time (or after a manual-review end)."""
    suspension = next((s for s in view.suspensions if s.suspension_id == suspension_id), None)
    if suspension is None:
        raise LookupError(f"no active suspension {suspension_id}")
    lifted = suspension.model_copy(update={"status": SuspensionStatus.LIFTED, "resolved_at": now})
    cases = view.cases
    case = next((c for c in view.cases if c.suspension_id == suspension_id), None)
    if case is not None:
        resumed = case.model_copy(update={"status": CaseStatus.ACTIVE, "suspension_id": None})
        cases = _replace_case(view, resumed)
    new = view.model_copy(
        update={
            "cases": cases,
            "suspensions": tuple(
                lifted if s.suspension_id == suspension_id else s for s in view.suspensions
            ),
        }
    )
    event = _event(
        view,
        EventKind.SUSPENSION_LIFTED,
        suspension.case_id,
        now,
        actor,
        suspension_id,
        {"suspension_id": suspension_id, "kind": suspension.kind.value, "reason": reason},
    )
    return Mutation(new, (event,), result=lifted)


def stop_case(
    view: AccountView, *, case_id: str, reason: str, now: datetime, actor: str
) -> Mutation:
    """Stop dunning a case for good (its invoices no longer count)."""
    case = _case(view, case_id)
    if not case.is_open:
        raise CollectorError(f"case {case_id} is {case.status.value}")
    stopped = case.model_copy(
        update={
            "status": CaseStatus.STOPPED,
            "closed_at": now,
            "stop_reason": reason,
            "suspension_id": None,
            "approval_id": None,
        }
    )
    event = _event(
        view,
        EventKind.CASE_STOPPED,
        case_id,
        now,
        actor,
        f"{case_id}/{case.level}/{case.recoveries}",
        {"reason": reason, "level": case.level},
    )
    new = view.model_copy(update={"cases": _replace_case(view, stopped)})
    return Mutation(new, (event,), result=stopped)


def create_plan(
    view: AccountView,
    *,
    plan_id: str,
    invoice_ids: Iterable[str],
    installments: Iterable[Installment],
    grace_days: int,
    now: datetime,
    actor: str,
) -> Mutation:
    """Put open invoices into a payment plan: they leave the dunning scope until
    the plan is completed or an installment is missed past its grace days."""
    if any(p.plan_id == plan_id for p in view.plans):
        raise CollectorError(f"payment plan {plan_id} exists", field="plan_id")
    wanted = list(dict.fromkeys(invoice_ids))
    by_id = {i.invoice_id: i for i in view.invoices}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise CollectorError(f"no open invoice {missing[0]}", field="invoice_ids")
    chosen = [by_id[i] for i in wanted]
    bad = [i.invoice_id for i in chosen if i.status is not InvoiceStatus.OPEN or i.plan_id]
    if bad:
        raise CollectorError(f"invoice {bad[0]} is not open or is in a plan", field="invoice_ids")
    currency = view.account.currency
    if any(i.currency != currency for i in chosen):
        raise CollectorError("a plan's invoices share the account's currency", field="invoice_ids")
    steps = tuple(installments)
    total = sum((i.open_amount for i in chosen), Decimal(0))
    planned = sum((s.amount for s in steps), Decimal(0))
    if planned != total:
        raise CollectorError(
            f"installments add up to {planned}, the invoices' open amount is {total}",
            field="installments",
        )
    if steps and steps[0].due_date < now.astimezone(zone(view.account.timezone)).date():
        raise CollectorError("the first installment is in the past", field="installments")
    try:
        plan = PaymentPlan(
            plan_id=plan_id,
            account_id=view.account.account_id,
            currency=currency,
            invoice_ids=tuple(wanted),
            installments=steps,
            grace_days=grace_days,
            created_at=now,
        )
    except ValueError as err:
        raise CollectorError(str(err), field="installments") from None
    ids = set(wanted)
    invoices = tuple(
        i.model_copy(update={"status": InvoiceStatus.IN_PAYMENT_PLAN, "plan_id": plan_id})
        if i.invoice_id in ids
        else i
        for i in view.invoices
    )
    new = view.model_copy(update={"invoices": invoices, "plans": (*view.plans, plan)})
    event = _event(
        view,
        EventKind.PLAN_CREATED,
        None,
        now,
        actor,
        plan_id,
        {
            "plan_id": plan_id,
            "invoice_ids": wanted,
            "installments": [
                {"due_date": str(s.due_date), "amount": f"{s.amount:f}"} for s in steps
            ],
            "total": f"{total:f}",
        },
    )
    return Mutation(new, (event,), result=plan)


def move_case(
    stored: StoredView,
    policy: Policy,
    calendar: Calendar | None,
    *,
    case_id: str,
    level: int,
    reason: str,
    now: datetime,
    actor: str,
) -> Decision:
    """Escalate a case to a higher level now (the engine enters the level and
    schedules its actions); refusals are the collector's mistakes."""
    try:
        return engine_move_case(
            stored.view,
            policy,
            calendar,
            now,
            case_id=case_id,
            level=level,
            reason=reason,
            actor=actor,
        )
    except LookupError:
        raise
    except ValueError as err:
        field = "level" if "level" in str(err) else None
        raise CollectorError(str(err), field=field) from None


def apply_exclusions(
    view: AccountView,
    lists: Iterable[ExclusionList],
    *,
    now: datetime,
    actor: str,
    cause: str | None = None,
) -> Mutation:
    """Bring the account's view in line with every stored exclusion list.

    The lists are the truth: the account is excluded by the lists that name it,
    an invoice by any list that names `<account_id>/<invoice_id>`. The same
    function runs when a list is saved (for the accounts it names) and when the
    billing system creates or changes an account or its invoices, so the order
    of those calls does not matter. `cause` says what triggered it (the list
    saved), for the audit event written when something changed.
    """
    account_id = view.account.account_id
    prefix = f"{account_id}/"
    ordered = sorted(lists, key=lambda x: x.list_id)
    excluded_by = tuple(x.list_id for x in ordered if account_id in x.account_ids)
    wanted = {
        ref.removeprefix(prefix) for x in ordered for ref in x.invoice_ids if ref.startswith(prefix)
    }
    invoices = tuple(
        i
        if i.excluded == (i.invoice_id in wanted)
        else i.model_copy(update={"excluded": i.invoice_id in wanted})
        for i in view.invoices
    )
    new = view.model_copy(update={"excluded_by": excluded_by, "invoices": invoices})
    if new == view:
        return Mutation(view, (), reevaluate=False, result=False)
    excluded_invoices = sorted(i.invoice_id for i in invoices if i.excluded)
    before_invoices = sorted(i.invoice_id for i in view.invoices if i.excluded)
    data: dict[str, Any] = {
        "excluded_by": list(excluded_by),
        "excluded_invoices": excluded_invoices,
        "before": {"excluded_by": list(view.excluded_by), "excluded_invoices": before_invoices},
    }
    if cause is not None:
        data["list_id"] = cause
    key = f"{now.isoformat()}/{','.join(excluded_by)}/{','.join(excluded_invoices)}"
    event = _event(view, EventKind.EXCLUSION_CHANGED, None, now, actor, key, data)
    return Mutation(new, (event,), reevaluate=True, result=True)
