"""Payments and reversals: how money changes invoices, plans and promises.

Pure functions, shared by the store (inside its transactions) and by the
simulations and tests, so that every path allocates money the same way:
- a payment for a plan pays the plan's invoices, oldest due first, and counts
  towards the plan's installments;
- otherwise it pays the invoices it names, then the oldest due open ones;
  what is left is unallocated credit on the payment;
- every payment received during an active promise to pay counts towards it;
- a reversal (bounced cheque) undoes exactly the payment's allocations.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from dunning.model import (
    AccountView,
    Allocation,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentPlan,
    Suspension,
    SuspensionKind,
    SuspensionStatus,
)
from dunning.money import CurrencyMismatchError

ZERO = Decimal(0)
PAYABLE = frozenset({InvoiceStatus.OPEN, InvoiceStatus.DISPUTED, InvoiceStatus.IN_PAYMENT_PLAN})


class LedgerError(ValueError):
    """A payment or reversal that cannot be applied (already reversed, unknown...)."""


def allocate(
    payment: Payment, invoices: tuple[Invoice, ...], plans: tuple[PaymentPlan, ...]
) -> tuple[Allocation, ...]:
    """Which invoices `payment` pays, and how much of each."""
    open_by_id = {
        inv.invoice_id: inv
        for inv in invoices
        if inv.status in PAYABLE and inv.open_amount > ZERO and inv.currency == payment.currency
    }
    if payment.plan_id is not None:
        plan = next((p for p in plans if p.plan_id == payment.plan_id), None)
        if plan is None:
            raise LedgerError(f"payment plan {payment.plan_id!r} does not exist")
        first = [open_by_id[i] for i in plan.invoice_ids if i in open_by_id]
    else:
        first = [open_by_id[i] for i in payment.invoice_ids if i in open_by_id]
    named = {inv.invoice_id for inv in first}
    oldest = _oldest_due_open(invoices, payment.currency)
    rest = [inv for inv in oldest if inv.invoice_id not in named]
    if payment.plan_id is None:
        first.sort(key=lambda inv: payment.invoice_ids.index(inv.invoice_id))
    else:
        first.sort(key=lambda inv: (inv.due_date, inv.invoice_id))
    remaining = payment.amount
    allocations: list[Allocation] = []
    for inv in (*first, *rest):
        if remaining <= ZERO:
            break
        paid = min(remaining, inv.open_amount)
        allocations.append(Allocation(invoice_id=inv.invoice_id, amount=paid))
        remaining -= paid
    return tuple(allocations)


def _oldest_due_open(invoices: tuple[Invoice, ...], currency: str) -> list[Invoice]:
    """The open invoices with something left to pay in `currency`, oldest due first:
    where money no invoice was named for goes."""
    return sorted(
        (
            inv
            for inv in invoices
            if inv.status is InvoiceStatus.OPEN
            and inv.open_amount > ZERO
            and inv.currency == currency
        ),
        key=lambda inv: (inv.due_date, inv.invoice_id),
    )


def spend_credit(
    view: AccountView, credit: list[tuple[str, Decimal]]
) -> tuple[
    AccountView,
    list[tuple[str, Decimal]],
    dict[str, list[Allocation]],
    dict[str, dict[str, str]],
]:
    """Spend the account's credit (what payments left unallocated) on its open
    invoices, oldest due first; each payment's remainder, oldest payment first.
    Returns the new view, the credit left, the allocations each payment gains,
    and per invoice what paid it (payment id -> amount)."""
    open_ = _oldest_due_open(view.invoices, view.account.currency)
    owed = {i.invoice_id: i.open_amount for i in open_}
    left: list[tuple[str, Decimal]] = []
    spent: dict[str, list[Allocation]] = {}
    paid_by: dict[str, dict[str, str]] = {}
    for payment_id, amount in credit:
        remaining = amount
        for inv in open_:
            take = min(remaining, owed[inv.invoice_id])
            if take <= 0:
                continue
            owed[inv.invoice_id] -= take
            remaining -= take
            spent.setdefault(payment_id, []).append(
                Allocation(invoice_id=inv.invoice_id, amount=take)
            )
            paid_by.setdefault(inv.invoice_id, {})[payment_id] = f"{take:f}"
        if remaining > 0:
            left.append((payment_id, remaining))
    if not spent:
        return view, credit, {}, {}
    invoices = tuple(
        _pay(i, i.open_amount - owed[i.invoice_id]) if i.invoice_id in paid_by else i
        for i in view.invoices
    )
    return view.model_copy(update={"invoices": invoices}), left, spent, paid_by


def _promise_counts(suspension: Suspension, at: datetime) -> bool:
    return (
        suspension.kind is SuspensionKind.PROMISE_TO_PAY
        and suspension.status is SuspensionStatus.ACTIVE
        and suspension.starts_at <= at
    )


def apply_payment(view: AccountView, payment: Payment) -> tuple[AccountView, Payment]:
    """Record `payment`: returns the new view and the payment with its allocations."""
    if payment.currency != view.account.currency:
        raise CurrencyMismatchError(
            f"payment in {payment.currency} for an account in {view.account.currency}"
        )
    allocations = allocate(payment, view.invoices, view.plans)
    by_invoice = {a.invoice_id: a.amount for a in allocations}
    invoices = tuple(
        _pay(inv, by_invoice[inv.invoice_id]) if inv.invoice_id in by_invoice else inv
        for inv in view.invoices
    )
    plans = tuple(
        p.model_copy(update={"paid_amount": p.paid_amount + payment.amount})
        if p.plan_id == payment.plan_id
        else p
        for p in view.plans
    )
    suspensions = tuple(
        s.model_copy(update={"paid_amount": s.paid_amount + payment.amount})
        if _promise_counts(s, payment.received_at)
        else s
        for s in view.suspensions
    )
    recorded = payment.model_copy(update={"allocations": allocations})
    new_view = view.model_copy(
        update={"invoices": invoices, "plans": plans, "suspensions": suspensions}
    )
    return new_view, recorded


def _pay(inv: Invoice, amount: Decimal) -> Invoice:
    left = inv.open_amount - amount
    status = InvoiceStatus.PAID if left == ZERO and inv.status is InvoiceStatus.OPEN else inv.status
    return inv.model_copy(update={"open_amount": left, "status": status})


def reverse_payment(
    view: AccountView, payment: Payment, at: datetime, reason: str
) -> tuple[AccountView, Payment]:
    """Undo `payment` (bounced cheque): reopens exactly what it paid."""
    if payment.reversed_at is not None:
        raise LedgerError(f"payment {payment.payment_id} is already reversed")
    by_invoice = {a.invoice_id: a.amount for a in payment.allocations}
    invoices = tuple(
        _reopen(inv, by_invoice[inv.invoice_id]) if inv.invoice_id in by_invoice else inv
        for inv in view.invoices
    )
    plans = tuple(
        p.model_copy(update={"paid_amount": max(ZERO, p.paid_amount - payment.amount)})
        if p.plan_id == payment.plan_id
        else p
        for p in view.plans
    )
    suspensions = tuple(
        s.model_copy(update={"paid_amount": max(ZERO, s.paid_amount - payment.amount)})
        if _promise_counts(s, payment.received_at)
        else s
        for s in view.suspensions
    )
    reversed_payment = payment.model_copy(update={"reversed_at": at, "reversal_reason": reason})
    new_view = view.model_copy(
        update={"invoices": invoices, "plans": plans, "suspensions": suspensions}
    )
    return new_view, reversed_payment


def _reopen(inv: Invoice, amount: Decimal) -> Invoice:
    status = InvoiceStatus.OPEN if inv.status is InvoiceStatus.PAID else inv.status
    return inv.model_copy(
        update={"open_amount": min(inv.amount, inv.open_amount + amount), "status": status}
    )
