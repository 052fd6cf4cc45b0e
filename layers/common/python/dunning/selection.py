"""Policy selection: which policy dunns an account.

An explicit override on the account wins. Otherwise the matching rule with the
highest priority wins (ties: the smaller rule id, so the choice is stable).
A rule matches when every condition it sets holds: segment, bill cycle, all of
its tags, currency, and the overdue balance within its per-currency bounds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from dunning.model import Account, Policy, PolicyRule


@dataclass(frozen=True, slots=True)
class Selection:
    policy: Policy
    selected_by: str  # "override", "rule:<id>" or "default"


class NoPolicyError(LookupError):
    """No rule matches the account and no default policy is configured."""


def rule_matches(rule: PolicyRule, account: Account, balance: Decimal) -> bool:
    if rule.segments and account.segment not in rule.segments:
        return False
    if rule.bill_cycles and account.bill_cycle not in rule.bill_cycles:
        return False
    if rule.tags and not rule.tags <= account.tags:
        return False
    if rule.currencies and account.currency not in rule.currencies:
        return False
    low = rule.min_balance.get(account.currency)
    if low is not None and balance < low:
        return False
    high = rule.max_balance.get(account.currency)
    return high is None or balance <= high


def select_policy(
    account: Account,
    balance: Decimal,
    rules: Iterable[PolicyRule],
    policies: Mapping[str, Policy],
    default_policy_id: str | None = None,
) -> Selection:
    """Choose the policy (current version) for `account` with `balance` overdue."""
    if account.policy_override is not None:
        policy = policies.get(account.policy_override)
        if policy is None:
            raise NoPolicyError(f"override policy {account.policy_override!r} does not exist")
        return Selection(policy, "override")
    ranked = sorted(rules, key=lambda r: (-r.priority, r.rule_id))
    for rule in ranked:
        if rule.policy_id in policies and rule_matches(rule, account, balance):
            return Selection(policies[rule.policy_id], f"rule:{rule.rule_id}")
    if default_policy_id is not None and default_policy_id in policies:
        return Selection(policies[default_policy_id], "default")
    raise NoPolicyError(f"no policy rule matches account {account.account_id}")
