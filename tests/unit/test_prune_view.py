"""What the account item keeps of a view (`prune_view`): the invoices still owed
(or disputed), the open cases, and the latest closed ones. The store writes
every decision through it; most decisions drop nothing, and then the view is
written as it is, without a copy."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from dunning.model import (
    OPEN_CASE_STATUSES,
    AccountView,
    CaseStatus,
    Installment,
    InvoiceStatus,
    Mode,
    PaymentPlan,
    PlanStatus,
    Suspension,
    SuspensionKind,
    SuspensionStatus,
)
from dunning.store.dynamo import CLOSED_CASES_KEPT, prune_view
from tests.builders import account, case, invoice, policy

START = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def views(draw: st.DrawFn) -> AccountView:
    invoices = []
    for n in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(list(InvoiceStatus)))
        open_amount = draw(st.sampled_from(["0.00", "40.00", "100.00"]))
        invoices.append(
            invoice(f"inv-{n}", "100.00", status=kind, open_amount=Decimal(open_amount))
        )
    cases = []
    for n in range(draw(st.integers(0, 7))):
        status = draw(st.sampled_from(list(CaseStatus)))
        opened = START + timedelta(days=draw(st.integers(0, 40)))
        closed = (
            None
            if status in OPEN_CASE_STATUSES or draw(st.booleans())
            else opened + timedelta(days=draw(st.integers(0, 40)))
        )
        cases.append(
            case(
                case_id=f"C-{n}",
                mode=Mode.INVOICE,
                invoice_ids=(f"inv-{n}",),
                status=status,
                opened_at=opened,
                closed_at=closed,
            )
        )
    suspensions = [
        Suspension(
            suspension_id=f"S-{n}",
            account_id="acc-1",
            case_id="C-0",
            kind=SuspensionKind.DISPUTE,
            status=draw(st.sampled_from(list(SuspensionStatus))),
            starts_at=START,
            ends_at=START + timedelta(days=14),
        )
        for n in range(draw(st.integers(0, 3)))
    ]
    plans = [
        PaymentPlan(
            plan_id=f"plan-{n}",
            account_id="acc-1",
            currency="EUR",
            invoice_ids=("inv-0",),
            installments=(Installment(due_date=date(2026, 2, 1), amount=Decimal("50.00")),),
            status=draw(st.sampled_from(list(PlanStatus))),
            created_at=START,
        )
        for n in range(draw(st.integers(0, 2)))
    ]
    return AccountView(
        account=account(),
        invoices=tuple(invoices),
        cases=tuple(cases),
        suspensions=tuple(suspensions),
        plans=tuple(plans),
        case_policy=policy() if draw(st.booleans()) else None,
    )


def owed(status: InvoiceStatus, open_amount: Decimal) -> bool:
    if status is InvoiceStatus.DISPUTED:
        return True
    return status not in (InvoiceStatus.PAID, InvoiceStatus.WRITTEN_OFF) and open_amount > 0


@given(views())
def test_the_account_item_keeps_what_is_owed_open_cases_and_the_latest_closed(
    view: AccountView,
) -> None:
    pruned = prune_view(view)

    assert pruned.invoices == tuple(i for i in view.invoices if owed(i.status, i.open_amount))
    open_cases = [c for c in view.cases if c.status in OPEN_CASE_STATUSES]
    closed = sorted(
        (c for c in view.cases if c.status not in OPEN_CASE_STATUSES),
        key=lambda c: (c.closed_at or c.opened_at, c.case_id),
    )
    assert pruned.cases == (*open_cases, *closed[-CLOSED_CASES_KEPT:])
    assert pruned.suspensions == tuple(
        s
        for s in view.suspensions
        if s.status in (SuspensionStatus.ACTIVE, SuspensionStatus.AWAITING_REVIEW)
    )
    assert pruned.plans == tuple(p for p in view.plans if p.status is not PlanStatus.COMPLETED)
    assert pruned.case_policy is None  # a pinned version is read per run, never stored
    assert pruned.account == view.account


@given(views())
def test_a_view_with_nothing_to_drop_is_written_as_it_is(view: AccountView) -> None:
    once = prune_view(view)

    assert prune_view(once) is once
