"""Rule 12: actions that require approval are held; the case waits; recovery cancels.

Berlin account, one 100.00 invoice due 2026-01-02; `on_day(n)` is 12:00 UTC on due+n.
Level 2 (day 30) sends a final notice and hands over to the agency after approval.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

from dunning.engine import apply_decision, decide
from dunning.ledger import apply_payment
from dunning.model import (
    AccountView,
    ActionSpec,
    ActionType,
    ApprovalStatus,
    CaseStatus,
    Decision,
    EventKind,
    Payment,
    Policy,
)
from tests.builders import email, invoice, level, policy, view

DUE = date(2026, 1, 2)
AGENCY = ActionSpec(type=ActionType.COLLECTION_AGENCY, target="agency", requires_approval=True)


def on_day(n: int, hour: int = 12) -> datetime:
    return datetime.combine(DUE + timedelta(days=n), time(hour), UTC)


def codes(d: Decision) -> list[str]:
    return [r.code for e in d.explanations for r in e.reasons]


def approval_policy(*level_2_actions: ActionSpec) -> Policy:
    actions = level_2_actions or (email("final_notice"), AGENCY)
    return policy(levels=(level("first", 10), level("handover", 30, *actions), level("last", 60)))


def at_level_1(p: Policy) -> AccountView:
    v = view(invoice("i1", "100.00", DUE))
    return apply_decision(v, decide(v, p, None, on_day(10)))


@pytest.mark.parametrize(
    ("actions", "sent", "held"),
    [
        pytest.param((email("final_notice"), AGENCY), [ActionType.EMAIL],
                     [ActionType.COLLECTION_AGENCY], id="email-goes-agency-held"),
        pytest.param((AGENCY,), [], [ActionType.COLLECTION_AGENCY], id="only-held"),
        pytest.param((AGENCY, email("final_notice"),
                      ActionSpec(type=ActionType.CALL, requires_approval=True)),
                     [ActionType.EMAIL], [ActionType.COLLECTION_AGENCY, ActionType.CALL],
                     id="two-held-one-sent"),
    ],
)  # fmt: skip
def test_actions_requiring_approval_are_held_in_an_approval(
    actions: tuple[ActionSpec, ...], sent: list[ActionType], held: list[ActionType]
) -> None:
    # Given level 2 with some actions that require approval, and a case at level 1
    p = approval_policy(*actions)
    v = at_level_1(p)
    # When level 2 is reached on day 30
    d = decide(v, p, None, on_day(30))
    # Then actions without approval go, the others wait in one pending approval
    assert [a.type for a in d.actions] == sent
    (approval,) = d.approvals
    assert [a.type for a in approval.actions] == held
    assert all(a.requires_approval for a in approval.actions)
    assert (approval.case_id, approval.level, approval.status) == (
        "C-i1",
        2,
        ApprovalStatus.PENDING,
    )
    # And the case waits for it, at level 2
    (case,) = d.cases
    assert (case.status, case.level, case.approval_id) == (
        CaseStatus.AWAITING_APPROVAL,
        2,
        approval.approval_id,
    )
    assert EventKind.APPROVAL_REQUESTED in {e.kind for e in d.events}
    assert "approval_required" in codes(d)
    # And the held actions keep their place (index) in the level
    indexes = sorted(a.index for a in (*d.actions, *approval.actions))
    assert indexes == list(range(len(actions)))
    # And nothing but new data (the approval's decision) can change the case
    assert d.next_evaluation_at is None


@pytest.mark.parametrize("day", [31, 59, 60, 90, 200])
def test_nothing_more_is_sent_while_awaiting_approval(day: int) -> None:
    # Given a case awaiting approval at level 2
    p = approval_policy()
    v = at_level_1(p)
    v = apply_decision(v, decide(v, p, None, on_day(30)))
    # When the engine decides later, even past level 3's day
    d = decide(v, p, None, on_day(day))
    # Then nothing is sent, no new approval, and the case does not move
    assert (d.actions, d.approvals, d.cases) == ((), (), ())
    assert "awaiting_approval" in codes(d)
    assert d.next_evaluation_at is None


def test_recovery_cancels_the_pending_approval() -> None:
    # Given a case awaiting approval at level 2
    p = approval_policy()
    v = at_level_1(p)
    first = decide(v, p, None, on_day(30))
    approval_id = first.approvals[0].approval_id
    v = apply_decision(v, first)
    # When the customer pays everything
    payment = Payment(
        payment_id="p1",
        account_id="acc-1",
        currency="EUR",
        amount=Decimal("100.00"),
        received_at=on_day(33, 9),
    )
    v, _ = apply_payment(v, payment)
    d = decide(v, p, None, on_day(33))
    # Then the case recovers and the approval is cancelled
    assert [(c.status, c.approval_id) for c in d.cases] == [(CaseStatus.RECOVERED, None)]
    assert d.cancelled_approvals == (approval_id,)
    cancelled = [e.data for e in d.events if e.kind is EventKind.APPROVAL_CANCELLED]
    assert [e["approval_id"] for e in cancelled] == [approval_id]
    assert d.actions == ()


def test_a_pre_due_reminder_that_requires_approval_is_held_once() -> None:
    # Given a reminder 5 days before the due date that requires approval
    due = date(2026, 1, 20)
    p = policy(levels=(level("before", -5, email("before_due", requires_approval=True)),
                       level("first", 10)))  # fmt: skip
    v = view(invoice("i1", "50.00", due))
    # When decided on day -5
    d = decide(v, p, None, datetime(2026, 1, 15, 12, tzinfo=UTC))
    # Then nothing is sent: the reminder waits in a pending approval named after its scope
    assert d.actions == ()
    (approval,) = d.approvals
    assert (approval.case_id, approval.level, approval.status) == (
        "R-i1",
        1,
        ApprovalStatus.PENDING,
    )
    assert [a.requires_approval for a in approval.actions] == [True]
    assert d.cases == ()
    assert "approval_required" in codes(d)
    # And deciding again on the stored result holds nothing new
    again = decide(apply_decision(v, d), p, None, datetime(2026, 1, 16, 12, tzinfo=UTC))
    assert (again.actions, again.approvals) == ((), ())
