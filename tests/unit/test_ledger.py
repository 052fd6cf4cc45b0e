"""The ledger: payments allocate oldest first, reversals undo exactly what was paid."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning.engine import apply_decision, decide
from dunning.ledger import LedgerError, allocate, apply_payment, reverse_payment
from dunning.model import (
    AccountView,
    CaseStatus,
    EventKind,
    Installment,
    InvoiceStatus,
    Payment,
    PaymentPlan,
    Suspension,
    SuspensionKind,
    SuspensionStatus,
)
from dunning.money import CurrencyMismatchError
from tests.builders import invoice, level, policy, view

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def payment(amount: str, **kw: Any) -> Payment:
    base: dict[str, Any] = {
        "payment_id": "pay-1",
        "account_id": "acc-1",
        "currency": "EUR",
        "amount": Decimal(amount),
        "received_at": AT,
    }
    base.update(kw)
    return Payment(**base)


def three_invoices() -> AccountView:
    # Given three open invoices, listed out of due-date order on purpose
    return view(
        invoice("inv-b", "50.00", date(2026, 2, 1)),
        invoice("inv-c", "70.00", date(2026, 2, 15)),
        invoice("inv-z", "30.00", date(2026, 1, 10)),
    )


def open_amounts(v: AccountView) -> dict[str, tuple[str, InvoiceStatus]]:
    return {i.invoice_id: (str(i.open_amount), i.status) for i in v.invoices}


OPEN, PAID = InvoiceStatus.OPEN, InvoiceStatus.PAID


@pytest.mark.parametrize(
    ("amount", "named", "expected_alloc", "expected_open"),
    [
        pytest.param(
            "30.00", (), [("inv-z", "30.00")],
            {"inv-z": ("0.00", PAID), "inv-b": ("50.00", OPEN), "inv-c": ("70.00", OPEN)},
            id="pays-the-oldest-exactly",
        ),
        pytest.param(
            "45.00", (), [("inv-z", "30.00"), ("inv-b", "15.00")],
            {"inv-z": ("0.00", PAID), "inv-b": ("35.00", OPEN), "inv-c": ("70.00", OPEN)},
            id="oldest-first-then-partial",
        ),
        pytest.param(
            "10.00", (), [("inv-z", "10.00")],
            {"inv-z": ("20.00", OPEN), "inv-b": ("50.00", OPEN), "inv-c": ("70.00", OPEN)},
            id="partial-stays-open",
        ),
        pytest.param(
            "60.00", ("inv-c",), [("inv-c", "60.00")],
            {"inv-z": ("30.00", OPEN), "inv-b": ("50.00", OPEN), "inv-c": ("10.00", OPEN)},
            id="named-invoice-first",
        ),
        pytest.param(
            "80.00", ("inv-c",), [("inv-c", "70.00"), ("inv-z", "10.00")],
            {"inv-z": ("20.00", OPEN), "inv-b": ("50.00", OPEN), "inv-c": ("0.00", PAID)},
            id="named-then-oldest",
        ),
        pytest.param(
            "200.00", (), [("inv-z", "30.00"), ("inv-b", "50.00"), ("inv-c", "70.00")],
            {"inv-z": ("0.00", PAID), "inv-b": ("0.00", PAID), "inv-c": ("0.00", PAID)},
            id="overpayment-leaves-credit",
        ),
    ],
)  # fmt: skip
def test_payment_allocation(
    amount: str,
    named: tuple[str, ...],
    expected_alloc: list[tuple[str, str]],
    expected_open: dict[str, tuple[str, InvoiceStatus]],
) -> None:
    # Given three open invoices (inv-z oldest due, then inv-b, then inv-c)
    before = three_invoices()
    # When a payment is applied, optionally naming invoices
    after, recorded = apply_payment(before, payment(amount, invoice_ids=named))
    # Then it pays the named invoices first, then the oldest due; fully paid ones are paid
    assert [(a.invoice_id, str(a.amount)) for a in recorded.allocations] == expected_alloc
    assert open_amounts(after) == expected_open
    # And never allocates more than it received
    assert sum(a.amount for a in recorded.allocations) <= Decimal(amount)


@pytest.mark.parametrize(
    ("status", "named", "expected_alloc"),
    [
        pytest.param(InvoiceStatus.DISPUTED, (), [("inv-b", "50.00")], id="disputed-skipped"),
        pytest.param(
            InvoiceStatus.DISPUTED, ("inv-z",), [("inv-z", "30.00"), ("inv-b", "20.00")],
            id="disputed-paid-when-named",
        ),
        pytest.param(InvoiceStatus.WRITTEN_OFF, ("inv-z",), [("inv-b", "50.00")],
                     id="written-off-never-paid"),
        pytest.param(InvoiceStatus.PAID, (), [("inv-b", "50.00")], id="paid-never-paid"),
    ],
)  # fmt: skip
def test_allocation_respects_invoice_status(
    status: InvoiceStatus, named: tuple[str, ...], expected_alloc: list[tuple[str, str]]
) -> None:
    # Given the oldest invoice inv-z in some status, and inv-b open
    invs = (
        invoice("inv-z", "30.00", date(2026, 1, 10), status=status),
        invoice("inv-b", "50.00", date(2026, 2, 1)),
    )
    # When 50.00 is allocated
    allocations = allocate(payment("50.00", invoice_ids=named), invs, ())
    # Then only open invoices are paid unasked; disputed ones only when named
    assert [(a.invoice_id, str(a.amount)) for a in allocations] == expected_alloc


def test_other_currency_invoices_are_never_paid() -> None:
    # Given a USD invoice older than an EUR one on an EUR account
    invs = (
        invoice("inv-usd", "30.00", date(2026, 1, 1), currency="USD"),
        invoice("inv-eur", "30.00", date(2026, 2, 1)),
    )
    # When 30.00 EUR is allocated / Then it pays the EUR invoice only
    assert [a.invoice_id for a in allocate(payment("30.00"), invs, ())] == ["inv-eur"]


def test_a_payment_in_another_currency_raises() -> None:
    # Given an EUR account / When a USD payment is applied / Then CurrencyMismatchError
    with pytest.raises(CurrencyMismatchError):
        apply_payment(three_invoices(), payment("10.00", currency="USD"))


def _plan_view(paid: str = "0") -> AccountView:
    plan = PaymentPlan(
        plan_id="plan-1",
        account_id="acc-1",
        currency="EUR",
        invoice_ids=("inv-c", "inv-b"),
        installments=(
            Installment(due_date=date(2026, 3, 10), amount=Decimal("60.00")),
            Installment(due_date=date(2026, 4, 10), amount=Decimal("60.00")),
        ),
        paid_amount=Decimal(paid),
        created_at=AT - timedelta(days=5),
    )
    return view(
        invoice("inv-z", "30.00", date(2026, 1, 10)),
        invoice("inv-b", "50.00", date(2026, 2, 1), status=InvoiceStatus.IN_PAYMENT_PLAN,
                plan_id="plan-1"),
        invoice("inv-c", "70.00", date(2026, 2, 15), status=InvoiceStatus.IN_PAYMENT_PLAN,
                plan_id="plan-1"),
        plans=(plan,),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("amount", "expected_alloc", "plan_paid"),
    [
        pytest.param("60.00", [("inv-b", "50.00"), ("inv-c", "10.00")], "60.00",
                     id="plan-invoices-oldest-first"),
        pytest.param("130.00", [("inv-b", "50.00"), ("inv-c", "70.00"), ("inv-z", "10.00")],
                     "130.00", id="excess-goes-to-open-invoices"),
    ],
)  # fmt: skip
def test_plan_payment(amount: str, expected_alloc: list[tuple[str, str]], plan_paid: str) -> None:
    # Given a plan over inv-b and inv-c (inv-z is outside the plan and older)
    before = _plan_view()
    # When a payment for the plan is applied
    after, recorded = apply_payment(before, payment(amount, plan_id="plan-1"))
    # Then the plan's invoices are paid first, oldest due first, and the plan counts the payment
    assert [(a.invoice_id, str(a.amount)) for a in recorded.allocations] == expected_alloc
    assert after.plans[0].paid_amount == Decimal(plan_paid)


def test_plan_invoice_stays_in_plan_when_paid() -> None:
    # Given a plan invoice fully paid by a plan payment
    after, _ = apply_payment(_plan_view(), payment("50.00", plan_id="plan-1"))
    inv_b = next(i for i in after.invoices if i.invoice_id == "inv-b")
    # Then its open amount is zero (its status stays with the plan)
    assert inv_b.open_amount == Decimal("0.00")


def test_payment_for_an_unknown_plan_raises() -> None:
    # Given a payment naming a plan that does not exist / When applied / Then LedgerError
    with pytest.raises(LedgerError, match="plan-x"):
        apply_payment(_plan_view(), payment("10.00", plan_id="plan-x"))


@pytest.mark.parametrize(
    ("amount", "named"),
    [
        pytest.param("45.00", (), id="partial-across-two"),
        pytest.param("200.00", (), id="everything-and-credit"),
        pytest.param("60.00", ("inv-c",), id="named"),
    ],
)
def test_reversal_restores_exactly_what_was_paid(amount: str, named: tuple[str, ...]) -> None:
    # Given a payment applied to three invoices
    before = three_invoices()
    paid_view, recorded = apply_payment(before, payment(amount, invoice_ids=named))
    # When it bounces
    reversed_view, reversed_payment = reverse_payment(paid_view, recorded, AT, "bounced cheque")
    # Then every invoice is back to its open amount and open status
    assert open_amounts(reversed_view) == open_amounts(before)
    assert reversed_payment.reversed_at == AT
    assert reversed_payment.reversal_reason == "bounced cheque"


def test_reversal_of_a_plan_payment_lowers_the_plan_paid_amount() -> None:
    # Given a plan with 60.00 paid and a second plan payment of 60.00
    # When that payment is reversed / Then the plan is back to 60.00 paid
    paid_view, recorded = apply_payment(_plan_view("60.00"), payment("60.00", plan_id="plan-1"))
    assert paid_view.plans[0].paid_amount == Decimal("120.00")
    back, _ = reverse_payment(paid_view, recorded, AT, "chargeback")
    assert back.plans[0].paid_amount == Decimal("60.00")


def test_a_payment_cannot_be_reversed_twice() -> None:
    # Given a reversed payment / When reversed again / Then LedgerError (no double reopen)
    paid_view, recorded = apply_payment(three_invoices(), payment("10.00"))
    once, reversed_payment = reverse_payment(paid_view, recorded, AT, "bounced")
    with pytest.raises(LedgerError, match="already reversed"):
        reverse_payment(once, reversed_payment, AT, "bounced")


def _promise(starts_at: datetime, status: SuspensionStatus = SuspensionStatus.ACTIVE) -> Suspension:
    return Suspension(
        suspension_id="ptp-1",
        account_id="acc-1",
        case_id="C-inv-z",
        kind=SuspensionKind.PROMISE_TO_PAY,
        status=status,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(days=14),
        currency="EUR",
        promised_amount=Decimal("80.00"),
        promised_date=date(2026, 3, 10),
    )


@pytest.mark.parametrize(
    ("starts_at", "status", "counted"),
    [
        pytest.param(AT - timedelta(days=1), SuspensionStatus.ACTIVE, True, id="since-start"),
        pytest.param(AT, SuspensionStatus.ACTIVE, True, id="at-start"),
        pytest.param(AT + timedelta(seconds=1), SuspensionStatus.ACTIVE, False, id="before-start"),
        pytest.param(AT - timedelta(days=1), SuspensionStatus.KEPT, False, id="promise-resolved"),
    ],
)
def test_payments_count_towards_an_active_promise_since_its_start(
    starts_at: datetime, status: SuspensionStatus, counted: bool
) -> None:
    # Given a promise to pay
    before = three_invoices().model_copy(update={"suspensions": (_promise(starts_at, status),)})
    # When a 45.00 payment received at AT is applied
    after, recorded = apply_payment(before, payment("45.00"))
    # Then it counts towards the promise only if the promise is active and started by then
    assert after.suspensions[0].paid_amount == (Decimal("45.00") if counted else Decimal(0))
    # And its reversal takes it back out
    back, _ = reverse_payment(after, recorded, AT + timedelta(days=2), "bounced")
    assert back.suspensions[0].paid_amount == Decimal(0)


def test_a_bounced_payment_reopens_the_recovered_case_through_the_engine() -> None:
    # Given a case at level 1 on one invoice (due 2026-01-10), recovered after a full payment
    p = policy(levels=(level("first", 10), level("second", 30)))
    v = view(invoice("inv-z", "30.00", date(2026, 1, 10)))
    day15 = datetime(2026, 1, 25, 9, tzinfo=UTC)
    v = apply_decision(v, decide(v, p, None, day15))
    paid_view, recorded = apply_payment(v, payment("30.00", received_at=day15))
    recovered = decide(paid_view, p, None, day15 + timedelta(hours=1))
    assert [c.status for c in recovered.cases] == [CaseStatus.RECOVERED]
    v = apply_decision(paid_view, recovered)
    # When the payment bounces (reverse_payment) and the engine decides again
    bounced, _ = reverse_payment(v, recorded, day15 + timedelta(days=1), "bounced cheque")
    d = decide(bounced, p, None, day15 + timedelta(days=1))
    # Then the case is reopened at level 1 without repeating level 1's actions
    assert [(c.status, c.level, c.entries) for c in d.cases] == [(CaseStatus.ACTIVE, 1, {1: 1})]
    assert EventKind.CASE_REOPENED in {e.kind for e in d.events}
    assert d.actions == ()
