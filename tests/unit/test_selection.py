"""Policy selection: override, then rules by priority (ties by rule id), then default."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from dunning.model import Policy, PolicyRule
from dunning.selection import NoPolicyError, rule_matches, select_policy
from tests.builders import account, policy

POLICIES: dict[str, Policy] = {
    pid: policy(policy_id=pid) for pid in ("pol-a", "pol-b", "pol-c", "pol-default", "pol-vip")
}


def rule(rule_id: str, policy_id: str, **kw: Any) -> PolicyRule:
    return PolicyRule(rule_id=rule_id, policy_id=policy_id, **kw)


@pytest.mark.parametrize(
    ("conditions", "account_kw", "balance", "matches"),
    [
        pytest.param({}, {}, "0", True, id="no-condition-matches-all"),
        # Segment
        pytest.param({"segments": frozenset({"smb", "retail"})}, {"segment": "smb"}, "0", True,
                     id="segment-in"),
        pytest.param({"segments": frozenset({"smb"})}, {"segment": "enterprise"}, "0", False,
                     id="segment-out"),
        # Bill cycle
        pytest.param({"bill_cycles": frozenset({"c15"})}, {"bill_cycle": "c15"}, "0", True,
                     id="bill-cycle-in"),
        pytest.param({"bill_cycles": frozenset({"c15"})}, {"bill_cycle": "c01"}, "0", False,
                     id="bill-cycle-out"),
        pytest.param({"bill_cycles": frozenset({"c15"})}, {}, "0", False,
                     id="bill-cycle-none-on-account"),
        # Tags: all required
        pytest.param({"tags": frozenset({"vip", "b2b"})}, {"tags": frozenset({"vip", "b2b", "x"})},
                     "0", True, id="tags-all-present"),
        pytest.param({"tags": frozenset({"vip", "b2b"})}, {"tags": frozenset({"vip"})}, "0",
                     False, id="tags-one-missing"),
        pytest.param({"tags": frozenset({"vip"})}, {}, "0", False, id="tags-none-on-account"),
        # Currency
        pytest.param({"currencies": frozenset({"EUR", "USD"})}, {"currency": "USD"}, "0", True,
                     id="currency-in"),
        pytest.param({"currencies": frozenset({"EUR"})}, {"currency": "JPY"}, "0", False,
                     id="currency-out"),
        # Balance bounds per currency, inclusive
        pytest.param({"min_balance": {"EUR": Decimal("100.00")}}, {}, "99.99", False,
                     id="below-min"),
        pytest.param({"min_balance": {"EUR": Decimal("100.00")}}, {}, "100.00", True,
                     id="at-min"),
        pytest.param({"max_balance": {"EUR": Decimal("500.00")}}, {}, "500.00", True,
                     id="at-max"),
        pytest.param({"max_balance": {"EUR": Decimal("500.00")}}, {}, "500.01", False,
                     id="above-max"),
        pytest.param({"min_balance": {"USD": Decimal("100.00")}}, {}, "1.00", True,
                     id="bound-in-other-currency-ignored"),
        pytest.param({"min_balance": {"JPY": Decimal("10000")}}, {"currency": "JPY"}, "9999",
                     False, id="jpy-below-min"),
        # Every condition must hold
        pytest.param({"segments": frozenset({"smb"}), "currencies": frozenset({"USD"})},
                     {"segment": "smb", "currency": "EUR"}, "0", False, id="one-condition-fails"),
    ],
)  # fmt: skip
def test_rule_conditions(
    conditions: dict[str, Any], account_kw: dict[str, Any], balance: str, matches: bool
) -> None:
    # Given a rule with some conditions and an account with an overdue balance
    r = rule("r1", "pol-a", **conditions)
    acct = account(**account_kw)
    # When the rule is matched / Then it matches only if every condition it sets holds
    assert rule_matches(r, acct, Decimal(balance)) is matches
    expected = "rule:r1" if matches else "default"
    assert select_policy(acct, Decimal(balance), [r], POLICIES, "pol-default").selected_by == (
        expected
    )


@pytest.mark.parametrize(
    ("rules", "policy_id", "selected_by"),
    [
        pytest.param(
            [rule("r-low", "pol-a", priority=1), rule("r-high", "pol-b", priority=5)],
            "pol-b", "rule:r-high", id="higher-priority-wins",
        ),
        pytest.param(
            [rule("r-high", "pol-b", priority=5), rule("r-low", "pol-a", priority=1)],
            "pol-b", "rule:r-high", id="order-of-input-irrelevant",
        ),
        pytest.param(
            [rule("r-b", "pol-b", priority=3), rule("r-a", "pol-a", priority=3)],
            "pol-a", "rule:r-a", id="tie-smaller-rule-id-wins",
        ),
        pytest.param(
            [rule("r-neg", "pol-a", priority=-1), rule("r-zero", "pol-b")],
            "pol-b", "rule:r-zero", id="negative-priority-loses",
        ),
        pytest.param(
            [
                rule("r-high", "pol-b", priority=9, segments=frozenset({"enterprise"})),
                rule("r-low", "pol-a", priority=1),
            ],
            "pol-a", "rule:r-low", id="non-matching-high-priority-skipped",
        ),
        pytest.param(
            [rule("r-ghost", "pol-missing", priority=9), rule("r-low", "pol-c", priority=1)],
            "pol-c", "rule:r-low", id="rule-to-unknown-policy-skipped",
        ),
        pytest.param([], "pol-default", "default", id="no-rules-default"),
        pytest.param(
            [rule("r-none", "pol-a", currencies=frozenset({"USD"}))],
            "pol-default", "default", id="nothing-matches-default",
        ),
    ],
)  # fmt: skip
def test_priorities_and_default(rules: list[PolicyRule], policy_id: str, selected_by: str) -> None:
    # Given rules with priorities and a default policy
    # When the policy is selected for a standard EUR account
    selection = select_policy(account(), Decimal("50.00"), rules, POLICIES, "pol-default")
    # Then the highest-priority matching rule wins (ties: smaller rule id), else the default
    assert selection.policy.policy_id == policy_id
    assert selection.selected_by == selected_by


@pytest.mark.parametrize(
    ("override", "rules", "policy_id"),
    [
        pytest.param("pol-vip", [rule("r1", "pol-a", priority=100)], "pol-vip",
                     id="override-beats-any-rule"),
        pytest.param("pol-vip", [], "pol-vip", id="override-beats-default"),
    ],
)  # fmt: skip
def test_account_override_wins(override: str, rules: list[PolicyRule], policy_id: str) -> None:
    # Given an account with a policy override
    acct = account(policy_override=override)
    # When selected / Then the override wins and says so
    selection = select_policy(acct, Decimal("50.00"), rules, POLICIES, "pol-default")
    assert (selection.policy.policy_id, selection.selected_by) == (policy_id, "override")


@pytest.mark.parametrize(
    ("account_kw", "rules", "default"),
    [
        pytest.param({}, [], None, id="no-rule-no-default"),
        pytest.param({}, [rule("r1", "pol-a", currencies=frozenset({"USD"}))], None,
                     id="no-match-no-default"),
        pytest.param({}, [], "pol-missing", id="default-does-not-exist"),
        pytest.param({"policy_override": "pol-missing"}, [rule("r1", "pol-a")], "pol-default",
                     id="override-does-not-exist"),
    ],
)  # fmt: skip
def test_no_policy(
    account_kw: dict[str, Any], rules: list[PolicyRule], default: str | None
) -> None:
    # Given no way to find a policy / When selected / Then NoPolicyError
    with pytest.raises(NoPolicyError):
        select_policy(account(**account_kw), Decimal("50.00"), rules, POLICIES, default)


def test_no_policy_error_is_a_lookup_error() -> None:
    # Then callers catching LookupError also catch NoPolicyError
    assert issubclass(NoPolicyError, LookupError)


def test_selection_returns_the_given_policy_object() -> None:
    # Given a rule for pol-b / Then the selection carries that exact (current) policy version
    selection = select_policy(account(), Decimal(0), [rule("r", "pol-b")], POLICIES)
    assert selection.policy is POLICIES["pol-b"]
