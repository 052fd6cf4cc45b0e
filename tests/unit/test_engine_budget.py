"""One decision fits one DynamoDB transaction: the engine's write budget.

An account with many invoices (invoice mode opens one case per invoice; pre-due
reminders fire per invoice) would need more than the 100 writes one transaction
holds. The engine stops taking on scopes at `WRITE_BUDGET` writes and says so
(`Decision.more`); deciding again at the same instant takes on the rest. These
tests prove the passes together do exactly what one unbounded decision would:
every invoice gets its case and actions once, none twice, none lost.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.engine import WRITE_BUDGET, apply_decision, decide
from dunning.model import (
    MAX_LEVEL_ACTIONS,
    AccountView,
    ActionSpec,
    ActionType,
    Decision,
    Mode,
    Policy,
)
from tests.builders import email, invoice, level, policy, view

NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
TODAY = date(2026, 6, 1)
TRANSACTION = 100


def _writes(decision: Decision) -> int:
    """The transaction items the store writes for a decision: the account item and
    one per record and audit event (dunning.store.dynamo.DynamoStore.decision_items)."""
    return 1 + (
        len(decision.cases)
        + len(decision.actions)
        + len(decision.approvals)
        + len(decision.cancelled_approvals)
        + len(decision.suspensions)
        + len(decision.plans)
        + len(decision.invoices)
        + len(decision.events)
    )


def _passes(start: AccountView, pol: Policy, now: datetime) -> list[Decision]:
    """Decide at `now` until the engine has nothing more to take on."""
    decisions: list[Decision] = []
    current = start
    while True:
        decision = decide(current, pol, None, now)
        decisions.append(decision)
        current = apply_decision(current, decision)
        if not decision.more:
            return decisions
        assert len(decisions) < 200, "the passes do not converge"


def _actions_per_level(n: int) -> tuple[ActionSpec, ...]:
    return tuple(email(f"t{i}") for i in range(n))


def test_a_level_holds_at_most_max_level_actions() -> None:
    too_many = _actions_per_level(MAX_LEVEL_ACTIONS + 1)
    with pytest.raises(ValueError, match="actions"):
        level("crowded", 10, *too_many)


def test_many_overdue_invoices_are_decided_in_passes_that_each_fit_a_transaction() -> None:
    # Given an invoice-mode account with 130 invoices 12 days overdue, 3 actions a level
    invoices = [invoice(f"inv-{i:03}", due=TODAY - timedelta(days=12)) for i in range(130)]
    pol = policy(
        mode=Mode.INVOICE,
        levels=(level("reminder", 10, *_actions_per_level(3)), level("notice", 30)),
    )
    start = view(*invoices)
    # When it is decided at one instant until nothing more is left
    decisions = _passes(start, pol, NOW)
    # Then several passes were needed, each inside one transaction
    assert len(decisions) > 1
    assert all(_writes(d) <= TRANSACTION for d in decisions)
    assert all(d.more for d in decisions[:-1]) and not decisions[-1].more
    # and each stopped pass says why and asks to be decided again now
    for d in decisions[:-1]:
        assert d.next_evaluation_at == NOW
        assert any(r.code == "decision_continues" for e in d.explanations for r in e.reasons)
    # and together they opened every case once and sent every action once
    cases = [c.case_id for d in decisions for c in d.cases]
    assert len(cases) == len(set(cases)) == 130
    actions = [a.action_id for d in decisions for a in d.actions]
    assert len(actions) == len(set(actions)) == 130 * 3
    # exactly the actions each invoice gets when decided alone
    alone = {a.action_id for inv in invoices for a in decide(view(inv), pol, None, NOW).actions}
    assert set(actions) == alone
    # and the last pass leaves the account asleep until something can happen
    assert decisions[-1].next_evaluation_at is not None
    assert decisions[-1].next_evaluation_at > NOW


def test_many_pre_due_reminders_are_sent_in_passes() -> None:
    # Given 150 invoices due in 3 days and a reminder 5 days before the due date
    invoices = [invoice(f"inv-{i:03}", due=TODAY + timedelta(days=3)) for i in range(150)]
    pol = policy(levels=(level("heads-up", -5), level("reminder", 10)))
    decisions = _passes(view(*invoices), pol, NOW)
    assert len(decisions) > 1
    assert all(_writes(d) <= TRANSACTION for d in decisions)
    actions = [a.action_id for d in decisions for a in d.actions]
    assert len(actions) == len(set(actions)) == 150


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=160),
    per_level=st.integers(min_value=1, max_value=MAX_LEVEL_ACTIONS),
    days=st.sampled_from([11, 35, 70]),
    mode=st.sampled_from([Mode.INVOICE, Mode.CUSTOMER]),
)
def test_every_pass_fits_one_transaction(n: int, per_level: int, days: int, mode: Mode) -> None:
    invoices = [invoice(f"inv-{i:03}", due=TODAY - timedelta(days=days)) for i in range(n)]
    actions = (
        *_actions_per_level(per_level - 1),
        ActionSpec(type=ActionType.WEBHOOK, target="crm"),
    )
    pol = policy(
        mode=mode,
        levels=(level("reminder", 10, *actions), level("notice", 30, *actions)),
    )
    decisions = _passes(view(*invoices), pol, NOW)
    assert all(_writes(d) <= TRANSACTION for d in decisions)
    assert all(_writes(d) - 1 < WRITE_BUDGET + 5 + 2 * MAX_LEVEL_ACTIONS for d in decisions)
    actions_sent = [a.action_id for d in decisions for a in d.actions]
    assert len(actions_sent) == len(set(actions_sent))
    expected_cases = n if mode is Mode.INVOICE else 1
    assert len({c.case_id for d in decisions for c in d.cases}) == expected_cases
