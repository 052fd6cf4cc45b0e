"""Rule 13: a case keeps its policy version unless the new one applies to running cases.

Version 1 sends template `first_v1` / `second_v1`, version 2 `first_v2` / `second_v2`,
so each action shows which version produced it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning.engine import PolicyUnavailableError, apply_decision, decide
from dunning.ledger import apply_payment, reverse_payment
from dunning.model import AccountView, CaseStatus, Decision, EventKind, Payment, Policy
from tests.builders import email, invoice, level, policy, view

DUE = date(2026, 1, 2)


def on_day(n: int, hour: int = 12) -> datetime:
    return datetime.combine(DUE + timedelta(days=n), time(hour), UTC)


def version(n: int, **kw: Any) -> Policy:
    return policy(
        version=n,
        levels=(
            level("first", 10, email(f"first_v{n}")),
            level("second", 30, email(f"second_v{n}")),
            level("third", 60, email(f"third_v{n}")),
        ),
        **kw,
    )


V1 = version(1)


def running_on_v1() -> AccountView:
    v = view(invoice("i1", "100.00", DUE))
    v = apply_decision(v, decide(v, V1, None, on_day(10)))
    assert [(c.policy_version, c.level) for c in v.cases] == [(1, 1)]
    return v


def kinds(d: Decision) -> list[EventKind]:
    return [e.kind for e in d.events]


def test_a_new_version_does_not_apply_to_running_cases_by_default() -> None:
    # Given a case running on v1 and v2 published without apply_to_running_cases
    v2 = version(2)
    v = running_on_v1().model_copy(update={"case_policy": V1})
    # When level 2 is reached, the caller supplying v1 as the case's pinned policy
    d = decide(v, v2, None, on_day(30))
    # Then the case runs on v1: v1's action, v1 in the explanation, no migration
    assert [(a.template, a.policy_version) for a in d.actions] == [("second_v1", 1)]
    assert [(e.policy_id, e.policy_version) for e in d.explanations] == [("pol-1", 1)]
    assert [c.policy_version for c in d.cases] == [1]
    assert EventKind.POLICY_MIGRATED not in kinds(d)


@pytest.mark.parametrize(
    "case_policy",
    [
        pytest.param(None, id="not-supplied"),
        pytest.param(version(3), id="wrong-version"),
        pytest.param(version(1).model_copy(update={"policy_id": "pol-other"}), id="wrong-policy"),
    ],
)
def test_missing_pinned_policy_raises(case_policy: Policy | None) -> None:
    # Given a case running on v1, v2 not applying to it, and no (or the wrong) pinned policy
    v = running_on_v1().model_copy(update={"case_policy": case_policy})
    # When the engine decides / Then PolicyUnavailableError names the case and version
    with pytest.raises(PolicyUnavailableError, match=r"C-i1.*v1"):
        decide(v, version(2), None, on_day(30))


def test_a_new_version_applying_to_running_cases_migrates_them() -> None:
    # Given a case running on v1 and v2 published with apply_to_running_cases
    v2 = version(2, apply_to_running_cases=True)
    v = running_on_v1()
    # When the engine decides on day 30
    d = decide(v, v2, None, on_day(30))
    # Then the case moves to v2 (event and reason), and level 2 runs v2's action
    assert [c.policy_version for c in d.cases] == [2]
    assert EventKind.POLICY_MIGRATED in kinds(d)
    assert [(a.template, a.policy_version) for a in d.actions] == [("second_v2", 2)]
    assert [e.policy_version for e in d.explanations] == [2]
    assert "policy_migrated" in [r.code for e in d.explanations for r in e.reasons]
    # And once stored, it is not migrated again
    again = decide(apply_decision(v, d), v2, None, on_day(30))
    assert EventKind.POLICY_MIGRATED not in kinds(again)


@pytest.mark.parametrize("applies", [True, False])
def test_new_cases_use_the_current_version(applies: bool) -> None:
    # Given no running case and v2 current
    v2 = version(2, apply_to_running_cases=applies)
    v = view(invoice("i1", "100.00", DUE))
    # When a case opens / Then it is on v2 and runs v2's actions
    d = decide(v, v2, None, on_day(10))
    assert [c.policy_version for c in d.cases] == [2]
    assert [a.template for a in d.actions] == ["first_v2"]


def test_a_reopened_case_reports_the_version_it_runs_on() -> None:
    # Given a case on v1 that recovered, then v2 published (not for running cases)
    v = running_on_v1()
    payment = Payment(
        payment_id="p1",
        account_id="acc-1",
        currency="EUR",
        amount=Decimal("100.00"),
        received_at=on_day(12, 9),
    )
    v, recorded = apply_payment(v, payment)
    v = apply_decision(v, decide(v, V1, None, on_day(12)))
    assert v.cases[0].status is CaseStatus.RECOVERED
    v2 = version(2)
    # When the payment bounces and the case is reopened (the caller supplies v1 as pinned)
    v, _ = reverse_payment(v, recorded, on_day(14, 9), "bounced")
    v = v.model_copy(update={"case_policy": V1})
    d = decide(v, v2, None, on_day(14))
    assert [c.status for c in d.cases] == [CaseStatus.ACTIVE]
    # Then the case record and the explanation agree on the version in force
    (case,) = d.cases
    assert [e.policy_version for e in d.explanations] == [case.policy_version]
    # And later decisions on the stored case run that same version
    later = decide(apply_decision(v, d), v2, None, on_day(30))
    assert {a.policy_version for a in later.actions} == {case.policy_version}
