"""Rule 2: what counts towards the entry threshold, and when a case opens.

Berlin account (CET, +01:00 in winter). Invoices are due 2026-01-02 unless said;
the evaluation instant NOW is 2026-01-20 12:00 UTC, 18 days overdue (levels from
10 days, so an opened case also enters level 1).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning.engine import apply_decision, decide
from dunning.model import (
    AccountView,
    CaseStatus,
    Decision,
    EventKind,
    Installment,
    Invoice,
    InvoiceStatus,
    PaymentPlan,
    PlanStatus,
)
from tests.builders import account, invoice, policy, utc, view

NOW = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def codes(d: Decision) -> list[str]:
    return [r.code for e in d.explanations for r in e.reasons]


def inv(invoice_id: str, amount: str, **kw: Any) -> Invoice:
    return invoice(invoice_id, amount, kw.pop("due", date(2026, 1, 2)), **kw)


ENTRY_CASES = [
    # invoices, account overrides, policy overrides, opens?, counted balance, reason code
    pytest.param([inv("i1", "10.00")], {}, {}, True, "10.00", "case_opened",
                 id="exactly-threshold-opens"),
    pytest.param([inv("i1", "9.99")], {}, {}, False, "9.99", "below_threshold",
                 id="one-cent-below-threshold"),
    pytest.param([inv("i1", "5.00"), inv("i2", "5.00")], {}, {}, True, "10.00", "case_opened",
                 id="invoices-add-up"),
    pytest.param([inv("i1", "100.00", open_amount=Decimal("9.99"))], {}, {}, False, "9.99",
                 "below_threshold", id="open-amount-counts-not-amount"),
    pytest.param([inv("i1", "5.00"), inv("i2", "50.00", due=date(2026, 1, 20))], {}, {}, False,
                 "5.00", "below_threshold", id="due-today-is-not-overdue"),
    pytest.param([inv("i1", "1000", currency="JPY")], {"currency": "JPY"}, {}, True, "1000",
                 "case_opened", id="JPY-threshold-1000"),
    pytest.param([inv("i1", "999", currency="JPY")], {"currency": "JPY"}, {}, False, "999",
                 "below_threshold", id="JPY-999-below"),
    pytest.param([inv("i1", "100.00", currency="GBP")], {"currency": "GBP"}, {}, False, "100.00",
                 "not_covered", id="GBP-has-no-threshold"),
    pytest.param([inv("i1", "100.00", currency="KWD")], {"currency": "KWD"},
                 {"thresholds": {"KWD": Decimal("99.999")}}, True, "100.000", "case_opened",
                 id="KWD-threshold"),
    pytest.param([inv("i1", "100.00", currency="USD"), inv("i2", "5.00")], {}, {}, False, "5.00",
                 "below_threshold", id="other-currency-invoice-ignored"),
    pytest.param([inv("i1", "50.00", type="deposit"), inv("i2", "5.00")], {},
                 {"invoice_types": frozenset({"standard"})}, False, "5.00", "below_threshold",
                 id="other-invoice-type-ignored"),
    pytest.param([inv("i1", "50.00", type="deposit")], {},
                 {"invoice_types": frozenset({"standard", "deposit"})}, True, "50.00",
                 "case_opened", id="listed-invoice-type-counts"),
    pytest.param([inv("i1", "50.00", type="deposit")], {}, {}, True, "50.00", "case_opened",
                 id="no-types-means-all"),
    pytest.param([inv("i1", "50.00", status=InvoiceStatus.DISPUTED), inv("i2", "5.00")], {}, {},
                 False, "5.00", "below_threshold", id="disputed-ignored"),
    pytest.param([inv("i1", "50.00", excluded=True), inv("i2", "5.00")], {}, {}, False, "5.00",
                 "below_threshold", id="excluded-invoice-ignored"),
    pytest.param([inv("i1", "50.00", status=InvoiceStatus.WRITTEN_OFF), inv("i2", "5.00")], {},
                 {}, False, "5.00", "below_threshold", id="written-off-ignored"),
    pytest.param([inv("i1", "50.00", status=InvoiceStatus.PAID, open_amount=Decimal(0)),
                  inv("i2", "5.00")], {}, {}, False, "5.00", "below_threshold",
                 id="paid-ignored"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("invoices", "account_kw", "policy_kw", "opens", "balance", "code"), ENTRY_CASES
)
def test_entry_threshold_on_what_counts(
    invoices: list[Invoice],
    account_kw: dict[str, Any],
    policy_kw: dict[str, Any],
    opens: bool,
    balance: str,
    code: str,
) -> None:
    # Given an account with these invoices under a policy (EUR 10.00, USD 10.00, JPY 1000)
    v = view(*invoices, account=account(**account_kw))
    # When the engine decides, 18 days after the due date
    d = decide(v, policy(**policy_kw), None, NOW)
    # Then a case opens iff the counting overdue balance reaches the currency's threshold
    opened = [c for c in d.cases if c.status is CaseStatus.ACTIVE]
    assert bool(opened) is opens
    # And the explanation gives the counted balance and why
    assert [e.balance for e in d.explanations] == [Decimal(balance)]
    assert code in codes(d)
    if not opens:
        assert d.actions == ()
        assert EventKind.CASE_OPENED not in {e.kind for e in d.events}


def test_opened_case_names_the_oldest_overdue_invoice_and_lists_what_counts() -> None:
    # Given three overdue invoices, one disputed, listed out of order
    v = view(
        inv("i-late", "20.00", due=date(2026, 1, 8)),
        inv("i-disputed", "20.00", due=date(2025, 12, 20), status=InvoiceStatus.DISPUTED),
        inv("i-early", "20.00", due=date(2026, 1, 2)),
    )
    # When the engine decides
    d = decide(v, policy(), None, NOW)
    # Then the case is C-<oldest counting invoice> over the counting invoices, oldest first
    (case,) = d.cases
    assert case.case_id == "C-i-early"
    assert case.invoice_ids == ("i-early", "i-late")
    assert (case.status, case.opened_at, case.policy_id, case.policy_version) == (
        CaseStatus.ACTIVE,
        NOW,
        "pol-1",
        1,
    )
    assert [e.kind for e in d.events if e.kind is EventKind.CASE_OPENED] == [EventKind.CASE_OPENED]


@pytest.mark.parametrize(
    "excluded_by",
    [pytest.param(("vip",), id="one-list"), pytest.param(("vip", "legal"), id="two-lists")],
)
def test_excluded_account_gets_no_case_and_no_action(excluded_by: tuple[str, ...]) -> None:
    # Given an account far overdue, named on exclusion lists
    v = view(inv("i1", "5000.00", due=date(2025, 6, 1)), excluded_by=excluded_by)
    # When the engine decides
    d = decide(v, policy(), None, NOW)
    # Then nothing happens, and the explanation says `excluded`, naming the lists
    assert (d.cases, d.actions, d.events) == ((), (), ())
    assert codes(d) == ["excluded"]
    assert all(name in d.explanations[0].reasons[0].message for name in excluded_by)
    assert d.next_evaluation_at is None


def test_not_covered_names_the_currency_and_opens_nothing_later() -> None:
    # Given a GBP account with a large overdue balance and no GBP threshold
    v = view(inv("i1", "900.00", currency="GBP"), account=account(currency="GBP"))
    # When decided on several days
    for day in range(0, 100, 10):
        d = decide(v, policy(), None, NOW + timedelta(days=day))
        # Then there is never a case or an action, and the reason names GBP
        assert (d.cases, d.actions) == ((), ())
        assert codes(d) == ["not_covered"]
        assert "GBP" in d.explanations[0].reasons[0].message
        assert d.explanations[0].threshold is None


# ------------------------------------------------------------------- payment plans

PLAN_START = datetime(2026, 1, 3, 9, tzinfo=UTC)


def plan_view(paid: str, grace: int, status: PlanStatus = PlanStatus.ACTIVE) -> AccountView:
    # One 100.00 invoice due 2026-01-02 in a plan of two installments (Feb 1, Mar 1).
    plan = PaymentPlan(
        plan_id="plan-1",
        account_id="acc-1",
        currency="EUR",
        invoice_ids=("i1",),
        installments=(
            Installment(due_date=date(2026, 2, 1), amount=Decimal("50.00")),
            Installment(due_date=date(2026, 3, 1), amount=Decimal("50.00")),
        ),
        grace_days=grace,
        paid_amount=Decimal(paid),
        status=status,
        created_at=PLAN_START,
    )
    return view(
        inv("i1", "100.00", status=InvoiceStatus.IN_PAYMENT_PLAN, plan_id="plan-1"),
        plans=(plan,),
    )


PLAN_CASES = [
    # paid, grace, now, broken?, next evaluation
    # Grace 0: installment due Feb 1 is missed from Feb 2 00:00 CET = Feb 1 23:00 UTC.
    pytest.param("0", 0, utc(2026, 2, 1, 22, 59, 59), False, utc(2026, 2, 1, 23),
                 id="grace-0-last-second-of-due-day"),
    pytest.param("0", 0, utc(2026, 2, 1, 23), True, None, id="grace-0-next-local-midnight"),
    # Grace 3: missed from Feb 5 00:00 CET = Feb 4 23:00 UTC.
    pytest.param("0", 3, utc(2026, 2, 4, 22, 59, 59), False, utc(2026, 2, 4, 23),
                 id="grace-3-last-second"),
    pytest.param("0", 3, utc(2026, 2, 4, 23), True, None, id="grace-3-broken"),
    pytest.param("49.99", 3, utc(2026, 2, 4, 23), True, None, id="one-cent-short-broken"),
    # First installment paid: the next deadline is Mar 1 + 3 days -> Mar 5 00:00 CET.
    pytest.param("50.00", 3, utc(2026, 2, 4, 23), False, utc(2026, 3, 4, 23),
                 id="installment-paid-holds"),
    pytest.param("50.00", 3, utc(2026, 3, 4, 23), True, None, id="second-installment-missed"),
]  # fmt: skip


@pytest.mark.parametrize(("paid", "grace", "now", "broken", "next_at"), PLAN_CASES)
def test_missed_installment_breaks_the_plan_and_frees_its_invoices(
    paid: str, grace: int, now: datetime, broken: bool, next_at: datetime | None
) -> None:
    # Given a 100.00 invoice in an active plan (installments Feb 1 and Mar 1), `paid` so far
    v = plan_view(paid, grace)
    # When the engine decides at `now`
    d = decide(v, policy(), None, now)
    if not broken:
        # Then while the plan holds, its invoice does not count: no case, no plan change
        assert (d.cases, d.plans, d.invoices, d.actions) == ((), (), (), ())
        assert d.next_evaluation_at == next_at
        return
    # Then the plan is broken, its invoice is open again and counts: a case opens
    assert [(p.plan_id, p.status) for p in d.plans] == [("plan-1", PlanStatus.BROKEN)]
    assert [(i.invoice_id, i.status, i.plan_id) for i in d.invoices] == [
        ("i1", InvoiceStatus.OPEN, None)
    ]
    assert [(c.case_id, c.status) for c in d.cases] == [("C-i1", CaseStatus.ACTIVE)]
    assert EventKind.PLAN_BROKEN in {e.kind for e in d.events}
    # And once stored, deciding again neither breaks it again nor opens a second case
    again = decide(apply_decision(v, d), policy(), None, now)
    assert (again.plans, again.invoices, again.cases, again.actions) == ((), (), (), ())


def test_plan_paid_in_full_completes_and_opens_nothing() -> None:
    # Given a plan whose installments are all paid
    v = plan_view("100.00", 3)
    # When decided after the last installment
    d = decide(v, policy(), None, utc(2026, 3, 10))
    # Then the plan is completed and no case opens
    assert [p.status for p in d.plans] == [PlanStatus.COMPLETED]
    assert d.cases == ()


def test_a_plan_stored_as_broken_frees_its_invoices() -> None:
    # Given a plan already broken whose invoice is still marked in_payment_plan
    v = plan_view("0", 3, status=PlanStatus.BROKEN)
    # When the engine decides / Then the invoice counts and a case opens
    d = decide(v, policy(), None, NOW)
    assert [c.status for c in d.cases] == [CaseStatus.ACTIVE]


@pytest.mark.parametrize("status", [CaseStatus.WRITTEN_OFF, CaseStatus.STOPPED])
def test_invoices_of_a_written_off_or_stopped_case_do_not_count(status: CaseStatus) -> None:
    # Given a case that was written off (or stopped) over i-old, and a new overdue invoice
    v = view(inv("i-old", "500.00", due=date(2025, 10, 1)), inv("i-new", "50.00"))
    v = apply_decision(v, decide(v, policy(), None, datetime(2025, 10, 20, tzinfo=UTC)))
    closed = v.cases[0].model_copy(update={"status": status, "closed_at": NOW - SECOND})
    assert closed.invoice_ids == ("i-old",)
    v = v.model_copy(update={"cases": (closed,)})
    # When the engine decides
    d = decide(v, policy(), None, NOW)
    # Then i-old no longer counts: a new case opens over i-new alone
    assert [(c.case_id, c.invoice_ids, c.status) for c in d.cases] == [
        ("C-i-new", ("i-new",), CaseStatus.ACTIVE)
    ]
    assert [e.balance for e in d.explanations] == [Decimal("50.00")]
