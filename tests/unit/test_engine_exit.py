"""Rules 9 and 10: exit with hysteresis, reinstatement, and reopening after a reversal.

Berlin account, invoices due 2026-01-02; `on_day(n)` is 12:00 UTC on due+n.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning.engine import apply_decision, decide
from dunning.ledger import apply_payment, reverse_payment
from dunning.model import (
    AccountView,
    ActionSpec,
    ActionType,
    CaseStatus,
    Decision,
    EventKind,
    InvoiceStatus,
    Mode,
    Payment,
    Policy,
)
from tests.builders import account, email, invoice, level, policy, view

DUE = date(2026, 1, 2)


def on_day(n: int, hour: int = 12) -> datetime:
    return datetime.combine(DUE + timedelta(days=n), time(hour), UTC)


def codes(d: Decision) -> list[str]:
    return [r.code for e in d.explanations for r in e.reasons]


def kinds(d: Decision) -> list[EventKind]:
    return [e.kind for e in d.events]


def payment(amount: str, at: datetime, currency: str = "EUR", pid: str = "p1") -> Payment:
    return Payment(
        payment_id=pid,
        account_id="acc-1",
        currency=currency,
        amount=Decimal(amount),
        received_at=at,
    )


def run_to(v: AccountView, p: Policy, days: int) -> AccountView:
    return apply_decision(v, decide(v, p, None, on_day(days)))


EXIT_CASES = [
    # currency, amount, policy overrides, amount paid, recovered?
    pytest.param("EUR", "100.00", {}, "100.00", True, id="EUR-all-paid"),
    pytest.param("EUR", "100.00", {}, "99.99", False, id="EUR-one-cent-left-stays"),
    pytest.param("EUR", "100.00", {}, "95.00", False, id="EUR-below-entry-stays-open"),
    pytest.param("EUR", "100.00", {"exit_thresholds": {"EUR": Decimal("5.00")}}, "95.01", True,
                 id="EUR-exit-5-balance-4.99"),
    pytest.param("EUR", "100.00", {"exit_thresholds": {"EUR": Decimal("5.00")}}, "95.00", False,
                 id="EUR-exit-5-balance-5.00-stays"),
    pytest.param("EUR", "100.00", {"exit_thresholds": {"EUR": Decimal("10.00")}}, "90.01", True,
                 id="EUR-exit-equals-entry"),
    pytest.param("JPY", "5000", {}, "5000", True, id="JPY-all-paid"),
    pytest.param("JPY", "5000", {}, "4999", False, id="JPY-one-yen-left-stays"),
    pytest.param("KWD", "100.000", {"thresholds": {"KWD": Decimal("10.000")}}, "99.999", False,
                 id="KWD-one-fils-left-stays"),
    pytest.param("KWD", "100.000", {"thresholds": {"KWD": Decimal("10.000")}}, "100.000", True,
                 id="KWD-all-paid"),
]  # fmt: skip


@pytest.mark.parametrize(("currency", "amount", "policy_kw", "paid", "recovered"), EXIT_CASES)
def test_case_recovers_below_the_exit_threshold(
    currency: str, amount: str, policy_kw: dict[str, Any], paid: str, recovered: bool
) -> None:
    # Given a case at level 1 (entry threshold 10.00 EUR / 1000 JPY / 10.000 KWD)
    p = policy(levels=(level("first", 10), level("second", 30)), **policy_kw)
    v = view(invoice("i1", amount, DUE, currency=currency), account=account(currency=currency))
    v = run_to(v, p, 10)
    # When the customer pays `paid` and the engine decides
    v, _ = apply_payment(v, payment(paid, on_day(12, 9), currency))
    d = decide(v, p, None, on_day(12))
    # Then the case recovers iff the balance is below the exit threshold (default: minor unit)
    after = apply_decision(v, d).cases[0]
    if recovered:
        assert (after.status, after.closed_at, after.recoveries) == (
            CaseStatus.RECOVERED,
            on_day(12),
            1,
        )
        assert EventKind.CASE_RECOVERED in kinds(d)
        assert "recovered" in codes(d)
        assert d.next_evaluation_at is None
    else:
        assert after.status is CaseStatus.ACTIVE
        assert EventKind.CASE_RECOVERED not in kinds(d)
    assert d.actions == ()


def test_hysteresis_between_exit_and_entry() -> None:
    # Given entry 10.00 and exit 5.00, a case at level 1 with 100.00 overdue
    p = policy(
        levels=(level("first", 10), level("second", 30)),
        exit_thresholds={"EUR": Decimal("5.00")},
    )
    v = run_to(view(invoice("i1", "100.00", DUE)), p, 10)
    # When the balance falls to 7.00 (below entry, above exit)
    v, _ = apply_payment(v, payment("93.00", on_day(12, 9)))
    v = run_to(v, p, 12)
    # Then the case stays open and still escalates on day 30
    d = decide(v, p, None, on_day(30))
    assert [(c.status, c.level) for c in d.cases] == [(CaseStatus.ACTIVE, 2)]
    assert [a.level for a in d.actions] == [2]


REINSTATEMENT_CASES = [
    # level actions, level kwargs, policy kwargs, expected reinstatement (type, target)
    pytest.param((ActionSpec(type=ActionType.SUSPEND_SERVICE, target="provisioning"),), {}, {},
                 [(ActionType.RESTORE_SERVICE, "provisioning")], id="default-restore-service"),
    pytest.param((ActionSpec(type=ActionType.SUSPEND_SERVICE, target="provisioning"),),
                 {"skip_reinstatement": True}, {}, [], id="level-skips-reinstatement"),
    pytest.param((email("warning"),), {}, {}, [], id="service-never-suspended"),
    pytest.param((ActionSpec(type=ActionType.SUSPEND_SERVICE, target="provisioning"),), {},
                 {"reinstatement_actions": (
                     ActionSpec(type=ActionType.RESTORE_SERVICE, target="prov-2"),
                     email("welcome_back"),
                 )},
                 [(ActionType.RESTORE_SERVICE, "prov-2"), (ActionType.EMAIL, None)],
                 id="custom-reinstatement-actions"),
    pytest.param((ActionSpec(type=ActionType.SUSPEND_SERVICE, target="provisioning",
                             requires_approval=True),), {}, {}, [],
                 id="suspension-never-approved-nothing-to-restore"),
]  # fmt: skip


@pytest.mark.parametrize(("actions", "level_kw", "policy_kw", "expected"), REINSTATEMENT_CASES)
def test_reinstatement_on_recovery(
    actions: tuple[ActionSpec, ...],
    level_kw: dict[str, Any],
    policy_kw: dict[str, Any],
    expected: list[tuple[ActionType, str | None]],
) -> None:
    # Given a case whose level 2 (day 30) has `actions`, reached and stored
    p = policy(
        levels=(level("first", 10), level("cut", 30, *actions, **level_kw), level("last", 60)),
        **policy_kw,
    )
    v = run_to(run_to(view(invoice("i1", "100.00", DUE)), p, 10), p, 30)
    # When everything is paid
    v, _ = apply_payment(v, payment("100.00", on_day(33, 9)))
    d = decide(v, p, None, on_day(33))
    # Then the case recovers, and the reinstatement actions run (level 0, at once) only if
    # a level suspended the service and did not say to skip reinstatement
    assert [c.status for c in d.cases] == [CaseStatus.RECOVERED]
    assert [(a.type, a.target) for a in d.actions] == expected
    assert all(a.level == 0 and a.not_before == on_day(33) for a in d.actions)
    assert d.cases[0].service_suspended_by is None


# ------------------------------------------------------------------------- reversal


def _recovered_at_level(level_days: int) -> tuple[AccountView, Policy, Payment]:
    p = policy()
    v = run_to(view(invoice("i1", "100.00", DUE)), p, level_days)
    v, recorded = apply_payment(v, payment("100.00", on_day(level_days, 13)))
    v = apply_decision(v, decide(v, p, None, on_day(level_days, 14)))
    assert v.cases[0].status is CaseStatus.RECOVERED
    return v, p, recorded


@pytest.mark.parametrize(
    ("level_days", "bounce_day", "level_no", "entries"),
    [
        pytest.param(10, 11, 1, {1: 1}, id="level-1-bounce-next-day"),
        pytest.param(30, 35, 2, {2: 1}, id="level-2-bounce-5-days-later"),
        pytest.param(45, 46, 4, {4: 1}, id="level-4-suspension"),
        pytest.param(90, 120, 6, {6: 1}, id="last-level"),
    ],
)
def test_bounced_payment_reopens_the_case_at_its_level_without_repeating_it(
    level_days: int, bounce_day: int, level_no: int, entries: dict[int, int]
) -> None:
    # Given a case that reached `level_no` and recovered when the invoice was paid
    v, p, recorded = _recovered_at_level(level_days)
    # When the payment bounces and the engine decides (no new level day reached)
    v, _ = reverse_payment(v, recorded, on_day(bounce_day, 9), "bounced cheque")
    assert v.invoices[0].status is InvoiceStatus.OPEN
    d = decide(v, p, None, on_day(bounce_day))
    # Then the same case is reopened at its level, entry count unchanged, with no action
    assert [(c.case_id, c.status, c.level, c.entries) for c in d.cases] == [
        ("C-i1", CaseStatus.ACTIVE, level_no, entries)
    ]
    assert d.cases[0].closed_at is None
    assert EventKind.CASE_REOPENED in kinds(d)
    assert EventKind.CASE_OPENED not in kinds(d)
    assert EventKind.LEVEL_ENTERED not in kinds(d)
    assert d.actions == ()
    assert "case_reopened" in codes(d)


def test_reopened_case_then_escalates_normally() -> None:
    # Given a case recovered at level 1 and reopened by a bounce on day 11
    v, p, recorded = _recovered_at_level(10)
    v, _ = reverse_payment(v, recorded, on_day(11, 9), "bounced")
    d = decide(v, p, None, on_day(11))
    # Then it asks to come back on day 30 (2026-02-01 00:00 CET = 2026-01-31 23:00 UTC)
    assert d.next_evaluation_at == datetime(2026, 1, 31, 23, tzinfo=UTC)
    v = apply_decision(v, d)
    # And on day 30 it enters level 2 (first entry), not level 1 again
    d = decide(v, p, None, on_day(30))
    assert [a.level for a in d.actions] == [2]
    assert [c.entries for c in d.cases] == [{1: 1, 2: 1}]


def test_a_level_that_suspended_service_reinstates_again_after_reopen_and_recovery() -> None:
    # Given a case recovered at level 4 (service restored), reopened by a bounce
    v, p, recorded = _recovered_at_level(45)
    v, _ = reverse_payment(v, recorded, on_day(46, 9), "bounced")
    v = apply_decision(v, decide(v, p, None, on_day(46)))
    # When it is paid again
    v, _ = apply_payment(v, payment("100.00", on_day(47, 9), pid="p2"))
    d = decide(v, p, None, on_day(47))
    # Then it recovers; the service was restored on the first recovery, and the reopen did not
    # suspend it again (no level-4 actions ran), so there is nothing to restore
    assert [c.status for c in d.cases] == [CaseStatus.RECOVERED]
    assert d.actions == ()


def test_partial_reversal_below_entry_threshold_still_reopens() -> None:
    # Given a case at level 1 recovered by two payments of 95.00 and 5.00
    p = policy(levels=(level("first", 10), level("second", 30)))
    v = run_to(view(invoice("i1", "100.00", DUE)), p, 10)
    v, _ = apply_payment(v, payment("95.00", on_day(11, 8)))
    v, small = apply_payment(v, payment("5.00", on_day(11, 9), pid="p2"))
    v = apply_decision(v, decide(v, p, None, on_day(11)))
    assert v.cases[0].status is CaseStatus.RECOVERED
    # When the 5.00 payment bounces (5.00 open again: above exit, below entry 10.00)
    v, _ = reverse_payment(v, small, on_day(12, 9), "bounced")
    d = decide(v, p, None, on_day(12))
    # Then the invoice is overdue again and the recovered case is reopened at level 1
    assert [(c.status, c.level) for c in d.cases] == [(CaseStatus.ACTIVE, 1)]
    assert d.actions == ()


def test_invoice_mode_recovers_only_the_paid_invoices_case() -> None:
    # Given two invoice-mode cases at level 1
    p = policy(mode=Mode.INVOICE, levels=(level("first", 10), level("second", 30)))
    v = run_to(view(invoice("i1", "100.00", DUE), invoice("i2", "80.00", DUE)), p, 10)
    assert sorted(c.case_id for c in v.cases) == ["I-i1", "I-i2"]
    # When i2 is paid
    v, _ = apply_payment(v, Payment(
        payment_id="p1", account_id="acc-1", currency="EUR", amount=Decimal("80.00"),
        received_at=on_day(12, 9), invoice_ids=("i2",),
    ))  # fmt: skip
    d = decide(v, p, None, on_day(12))
    # Then only I-i2 recovers; I-i1 is untouched
    assert [(c.case_id, c.status) for c in d.cases] == [("I-i2", CaseStatus.RECOVERED)]
    assert d.actions == ()


def test_a_lifted_dispute_reopens_the_case_at_its_level() -> None:
    # Given a case at level 1 whose only invoice is then disputed: the case closes as recovered
    p = policy(levels=(level("first", 10), level("second", 30)))
    v = run_to(view(invoice("i1", "100.00", DUE)), p, 10)
    disputed = v.invoices[0].model_copy(update={"status": InvoiceStatus.DISPUTED})
    v = v.model_copy(update={"invoices": (disputed,)})
    d = decide(v, p, None, on_day(12))
    assert [c.status for c in d.cases] == [CaseStatus.RECOVERED]
    assert d.actions == ()
    v = apply_decision(v, d)
    # When the dispute is lifted (the invoice is open again)
    lifted = v.invoices[0].model_copy(update={"status": InvoiceStatus.OPEN})
    v = v.model_copy(update={"invoices": (lifted,)})
    d = decide(v, p, None, on_day(15))
    # Then the same case reopens at level 1 without repeating it
    assert [(c.case_id, c.status, c.level, c.entries) for c in d.cases] == [
        ("C-i1", CaseStatus.ACTIVE, 1, {1: 1})
    ]
    assert EventKind.CASE_REOPENED in kinds(d)
    assert d.actions == ()


def test_a_reopened_case_takes_in_an_invoice_that_fell_due_while_it_was_closed() -> None:
    # Given i1 (due Jan 2) at level 1, and i2 (due Jan 20) not yet due; both paid on day 13
    p = policy(levels=(level("first", 10), level("second", 30)))
    v = run_to(view(invoice("i1", "50.00", DUE), invoice("i2", "50.00", date(2026, 1, 20))), p, 13)
    v, recorded = apply_payment(v, payment("100.00", on_day(13, 13)))
    v = apply_decision(v, decide(v, p, None, on_day(13, 14)))
    assert [(c.status, c.invoice_ids) for c in v.cases] == [(CaseStatus.RECOVERED, ("i1",))]
    # When the payment bounces on day 23, when i2 is overdue too
    v, _ = reverse_payment(v, recorded, on_day(23, 9), "bounced")
    d = decide(v, p, None, on_day(23))
    # Then the case reopens with both invoices, and deciding again changes nothing
    assert [(c.status, c.level, c.invoice_ids) for c in d.cases] == [
        (CaseStatus.ACTIVE, 1, ("i1", "i2"))
    ]
    again = decide(apply_decision(v, d), p, None, on_day(23))
    assert not again.changed


def test_reinstatement_that_requires_approval_is_held_in_an_approval() -> None:
    # Given a policy whose reinstatement needs approval, and a case at level 4 (suspension)
    restore = ActionSpec(type=ActionType.RESTORE_SERVICE, target="provisioning")
    p = policy(reinstatement_actions=(restore.model_copy(update={"requires_approval": True}),))
    v = run_to(view(invoice("i1", "100.00", DUE)), p, 45)
    v, _ = apply_payment(v, payment("100.00", on_day(46, 9)))
    # When the customer pays everything
    d = decide(v, p, None, on_day(46))
    # Then the case recovers and the reinstatement waits in a pending approval, not sent
    assert d.actions == ()
    (approval,) = d.approvals
    assert approval.case_id == "C-i1"
    assert [(a.type, a.level, a.requires_approval) for a in approval.actions] == [
        (ActionType.RESTORE_SERVICE, 0, True)
    ]
    assert [(c.status, c.approval_id) for c in d.cases] == [(CaseStatus.RECOVERED, None)]
    # And deciding again on the stored result holds nothing new
    assert not decide(apply_decision(v, d), p, None, on_day(46)).changed
