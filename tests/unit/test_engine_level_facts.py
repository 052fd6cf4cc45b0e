"""The engine's level arithmetic, worked out once per policy, reads the levels
as the rules say.

`_target_level` and `_next_level` take the per-policy `_Facts` (the levels'
days in order, how many are pre-due reminders) instead of scanning the levels
on every call. Here they are checked against the rules written out plainly:
the target is the highest dunning level (days > 0) whose days and minimum
amount hold; the next level is the first dunning level after the current one.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunning import engine
from dunning.model import CatchUp, Policy
from tests.builders import level, policy
from tests.unit.strategies import CURRENCIES, PROPERTY_SETTINGS, policies

POLICIES = [
    policy(),  # six dunning levels, no reminders
    policy(
        levels=(
            level("early", -10),
            level("on due", 0),
            level("first", 10),
            level("second", 30, min_amount={"EUR": Decimal("500.00")}),
            level("third", 60),
            level("fourth", 90, min_amount={"EUR": Decimal("50.00"), "USD": Decimal("1.00")}),
        ),
        catch_up=CatchUp.SEQUENTIAL,
        min_gap_days=3,
    ),
    policy(levels=(level("early", -5), level("only", 1, min_amount={"EUR": Decimal("100.00")}))),
    policy(levels=(level("early", -5), level("on due", 0))),  # reminders only
]


def target_by_the_rules(p: Policy, days: int, balance: Decimal, currency: str) -> int:
    reached = [
        number
        for number, lvl in enumerate(p.levels, start=1)
        if 0 < lvl.days <= days
        and (currency not in lvl.min_amount or balance >= lvl.min_amount[currency])
    ]
    return max(reached, default=0)


def next_by_the_rules(p: Policy, current: int) -> int | None:
    later = [n for n, lvl in enumerate(p.levels, start=1) if n > current and lvl.days > 0]
    return min(later, default=None)


@pytest.mark.parametrize("p", POLICIES)
@pytest.mark.parametrize("balance", [Decimal("0.01"), Decimal("75.00"), Decimal("500.00")])
@pytest.mark.parametrize("currency", ["EUR", "USD"])
def test_target_level_follows_the_rules(p: Policy, balance: Decimal, currency: str) -> None:
    facts = engine._facts(p)
    for days in range(-20, 121):
        expected = target_by_the_rules(p, days, balance, currency)
        assert engine._target_level(facts, days, balance, currency) == expected, days


@pytest.mark.parametrize("p", POLICIES)
def test_next_level_follows_the_rules(p: Policy) -> None:
    facts = engine._facts(p)
    for current in range(len(p.levels) + 2):
        assert engine._next_level(facts, current) == next_by_the_rules(p, current), current


@pytest.mark.parametrize("p", POLICIES)
def test_facts_hold_the_levels_days_and_catch_up(p: Policy) -> None:
    facts = engine._facts(p)
    assert facts.level_days == tuple(lvl.days for lvl in p.levels)
    assert [o.days for o in facts.level_offsets] == [lvl.days for lvl in p.levels]
    assert facts.pre_due == len([lvl for lvl in p.levels if lvl.is_pre_due])
    assert all(lvl.is_pre_due for lvl in p.levels[: facts.pre_due])
    assert facts.latest_only is (p.catch_up is CatchUp.LATEST_ONLY)
    assert facts.min_gap.days == p.min_gap_days


@st.composite
def policy_and_currency(draw: st.DrawFn) -> tuple[Policy, str]:
    currency = draw(st.sampled_from(CURRENCIES))
    return draw(policies(currency)), currency


@PROPERTY_SETTINGS
@given(
    pc=policy_and_currency(),
    days=st.integers(-30, 200),
    balance=st.decimals(min_value=0, max_value=10_000, places=2),
    current=st.integers(0, 10),
)
def test_level_arithmetic_follows_the_rules_for_any_policy(
    pc: tuple[Policy, str], days: int, balance: Decimal, current: int
) -> None:
    """Generated policies (1-8 levels, pre-due reminders, minimum amounts in the
    account's currency or another): the same answers as the rules."""
    p, currency = pc
    facts = engine._facts(p)
    assert engine._target_level(facts, days, balance, currency) == target_by_the_rules(
        p, days, balance, currency
    )
    assert engine._next_level(facts, current) == next_by_the_rules(p, current)
