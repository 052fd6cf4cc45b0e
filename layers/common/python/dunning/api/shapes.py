"""Domain objects into response contracts (one place for each shape)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from dunning.api.contracts import (
    AccountResponse,
    AllocationResponse,
    ApprovalResponse,
    CaseResponse,
    ExplanationResponse,
    InstallmentRequest,
    InvoiceResponse,
    OverdueSummary,
    PaymentResponse,
    PlannedAction,
    PlanResponse,
    ReasonResponse,
    SuspensionResponse,
    TaskResponse,
    TimelineEntry,
    money,
)
from dunning.model import (
    Action,
    Approval,
    AuditEvent,
    Case,
    Explanation,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentPlan,
    Suspension,
)
from dunning.store import StoredView
from dunning.store.schema import due_time


def invoice(inv: Invoice) -> InvoiceResponse:
    return InvoiceResponse(
        invoice_id=inv.invoice_id,
        type=inv.type,
        currency=inv.currency,
        amount=money(inv.amount),
        open_amount=money(inv.open_amount),
        issue_date=inv.issue_date,
        due_date=inv.due_date,
        status=inv.status.value,
        plan_id=inv.plan_id,
    )


def case(c: Case) -> CaseResponse:
    return CaseResponse(
        case_id=c.case_id,
        account_id=c.account_id,
        mode=c.mode.value,
        status=c.status.value,
        level=c.level,
        invoice_ids=list(c.invoice_ids),
        policy_id=c.policy_id,
        policy_version=c.policy_version,
        opened_at=c.opened_at,
        closed_at=c.closed_at,
        entered_level_at=c.entered_level_at,
        broken_promises=c.broken_promises,
        suspension_id=c.suspension_id,
        approval_id=c.approval_id,
        stop_reason=c.stop_reason,
    )


def suspension(s: Suspension) -> SuspensionResponse:
    return SuspensionResponse(
        suspension_id=s.suspension_id,
        account_id=s.account_id,
        case_id=s.case_id,
        kind=s.kind,
        status=s.status.value,
        starts_at=s.starts_at,
        ends_at=s.ends_at,
        reason=s.reason,
        promised_amount=money(s.promised_amount) if s.promised_amount is not None else None,
        promised_date=s.promised_date,
        currency=s.currency,
    )


def plan(p: PaymentPlan) -> PlanResponse:
    return PlanResponse(
        plan_id=p.plan_id,
        account_id=p.account_id,
        currency=p.currency,
        invoice_ids=list(p.invoice_ids),
        installments=[
            InstallmentRequest(due_date=i.due_date, amount=money(i.amount)) for i in p.installments
        ],
        grace_days=p.grace_days,
        status=p.status.value,
    )


def payment(p: Payment) -> PaymentResponse:
    return PaymentResponse(
        payment_id=p.payment_id,
        account_id=p.account_id,
        currency=p.currency,
        amount=money(p.amount),
        received_at=p.received_at,
        allocations=[
            AllocationResponse(invoice_id=a.invoice_id, amount=money(a.amount))
            for a in p.allocations
        ],
        unallocated=money(
            p.amount * 0  # in the currency's places, like the amounts next to it
            if p.reversed_at is not None
            else p.amount - sum((a.amount for a in p.allocations), Decimal(0))
        ),
        reversed_at=p.reversed_at,
        reversal_reason=p.reversal_reason,
    )


def summary(stored: StoredView, at: datetime, credit: Decimal) -> OverdueSummary:
    view = stored.view
    currency = view.account.currency
    today = at.astimezone(ZoneInfo(view.account.timezone)).date()
    open_ = [
        i
        for i in view.invoices
        if i.status is InvoiceStatus.OPEN and i.open_amount > 0 and i.currency == currency
    ]
    overdue = [i for i in open_ if i.due_date < today]
    return OverdueSummary(
        currency=currency,
        open_amount=money(sum((i.open_amount for i in open_), Decimal(0))),
        overdue_amount=money(sum((i.open_amount for i in overdue), Decimal(0))),
        open_invoices=len(open_),
        overdue_invoices=len(overdue),
        oldest_due_date=min((i.due_date for i in overdue), default=None),
        credit=money(credit),
    )


def account(stored: StoredView, at: datetime, credit: Decimal) -> AccountResponse:
    view = stored.view
    acct = view.account
    return AccountResponse(
        account_id=acct.account_id,
        name=acct.name,
        segment=acct.segment,
        currency=acct.currency,
        locale=acct.locale,
        timezone=acct.timezone,
        bill_cycle=acct.bill_cycle,
        tags=sorted(acct.tags),
        policy_override=acct.policy_override,
        service_status=acct.service_status.value,
        excluded_by=list(view.excluded_by),
        version=stored.version,
        summary=summary(stored, at, credit),
        invoices=[invoice(i) for i in view.invoices],
        cases=[case(c) for c in view.cases],
        suspensions=[suspension(s) for s in view.suspensions],
        plans=[plan(p) for p in view.plans],
        next_evaluation_at=due_time(stored.due_at),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def timeline_entry(e: AuditEvent) -> TimelineEntry:
    return TimelineEntry(
        at=e.at, kind=e.kind.value, case_id=e.case_id, actor=e.actor, data=_plain(e.data)
    )


def explanation(x: Explanation) -> ExplanationResponse:
    return ExplanationResponse(
        case_id=x.case_id,
        policy_id=x.policy_id,
        policy_version=x.policy_version,
        selected_by=x.selected_by,
        mode=x.mode.value,
        currency=x.currency,
        balance=money(x.balance),
        days_overdue=x.days_overdue,
        threshold=money(x.threshold) if x.threshold is not None else None,
        exit_threshold=money(x.exit_threshold),
        level=x.level,
        target_level=x.target_level,
        reasons=[ReasonResponse(code=r.code, message=r.message) for r in x.reasons],
    )


def planned(a: Action) -> PlannedAction:
    return PlannedAction(
        action_id=a.action_id,
        case_id=a.case_id,
        type=a.type.value,
        channel=a.channel.value,
        level=a.level,
        level_name=a.level_name,
        template=a.template,
        target=a.target,
        not_before=a.not_before,
        requires_approval=a.requires_approval,
    )


def approval(a: Approval) -> ApprovalResponse:
    return ApprovalResponse(
        approval_id=a.approval_id,
        account_id=a.account_id,
        case_id=a.case_id,
        level=a.level,
        level_name=a.level_name,
        status=a.status.value,
        actions=[x.type.value for x in a.actions],
        created_at=a.created_at,
    )


def task(item: dict[str, Any], action: Action) -> TaskResponse:
    return TaskResponse(
        task_id=action.action_id,
        account_id=action.account_id,
        case_id=action.case_id,
        level=action.level,
        level_name=action.level_name,
        status=item.get("status", {}).get("S", "open"),
        created_at=action.created_at,
    )


def entries(events: Iterable[AuditEvent]) -> list[TimelineEntry]:
    return [timeline_entry(e) for e in events]
