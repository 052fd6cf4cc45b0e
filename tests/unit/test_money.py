"""Money: one ISO 4217 currency, exactly its minor units, never mixed."""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from dunning.money import (
    MINOR_UNITS,
    CurrencyMismatchError,
    Money,
    check_amount,
    check_currency,
    minor_unit,
    total,
)


@pytest.mark.parametrize(
    ("currency", "decimals", "smallest"),
    [
        pytest.param("JPY", 0, Decimal("1"), id="JPY-0-decimals"),
        pytest.param("KRW", 0, Decimal("1"), id="KRW-0-decimals"),
        pytest.param("EUR", 2, Decimal("0.01"), id="EUR-2-decimals"),
        pytest.param("USD", 2, Decimal("0.01"), id="USD-2-decimals"),
        pytest.param("KWD", 3, Decimal("0.001"), id="KWD-3-decimals"),
        pytest.param("BHD", 3, Decimal("0.001"), id="BHD-3-decimals"),
        pytest.param("CLF", 4, Decimal("0.0001"), id="CLF-4-decimals"),
    ],
)
def test_minor_units_follow_iso_4217(currency: str, decimals: int, smallest: Decimal) -> None:
    # Given an ISO 4217 currency
    # When its minor units are looked up
    # Then they are the ISO figure and the smallest amount is 10^-decimals
    assert MINOR_UNITS[currency] == decimals
    assert minor_unit(currency) == smallest
    assert minor_unit(currency).as_tuple().exponent == -decimals


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        pytest.param("1500", "JPY", id="JPY-whole-yen"),
        pytest.param("0", "JPY", id="JPY-zero"),
        pytest.param("12.34", "EUR", id="EUR-cents"),
        pytest.param("12.30", "EUR", id="EUR-trailing-zero"),
        pytest.param("12", "EUR", id="EUR-whole"),
        pytest.param("1.500", "EUR", id="EUR-extra-zero-is-same-value"),
        pytest.param("1.234", "KWD", id="KWD-fils"),
        pytest.param("0.001", "KWD", id="KWD-one-fils"),
        pytest.param("-5.25", "USD", id="USD-negative-allowed-in-money"),
    ],
)
def test_amounts_within_minor_units_are_accepted(amount: str, currency: str) -> None:
    # Given an amount with no more decimals than the currency allows
    # When Money is built
    money = Money.of(amount, currency)
    # Then it keeps the exact value and currency
    assert money.amount == Decimal(amount)
    assert money.currency == currency


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        pytest.param("1.5", "JPY", id="JPY-has-no-decimals"),
        pytest.param("0.1", "KRW", id="KRW-has-no-decimals"),
        pytest.param("12.345", "EUR", id="EUR-three-decimals"),
        pytest.param("0.001", "USD", id="USD-tenth-of-cent"),
        pytest.param("1.2345", "KWD", id="KWD-four-decimals"),
        pytest.param("0.0001", "BHD", id="BHD-four-decimals"),
    ],
)
def test_amounts_finer_than_the_currency_raise(amount: str, currency: str) -> None:
    # Given an amount with more decimals than the currency's minor units
    # When Money is built
    # Then it is an error (never a silent rounding), naming the currency
    with pytest.raises(ValueError, match=currency):
        Money.of(amount, currency)


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(Decimal("NaN"), id="nan"),
        pytest.param(Decimal("Infinity"), id="inf"),
        pytest.param(Decimal("-Infinity"), id="minus-inf"),
    ],
)
def test_non_finite_amounts_raise(amount: Decimal) -> None:
    # Given a non-finite Decimal / When Money is built / Then it raises
    with pytest.raises(ValueError, match="finite"):
        Money(amount, "EUR")


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("XXX", id="unknown-XXX"),
        pytest.param("EURO", id="four-letters"),
        pytest.param("eur", id="lower-case"),
        pytest.param("", id="empty"),
        pytest.param("DEM", id="withdrawn-DEM"),
    ],
)
def test_unknown_currency_codes_raise(code: str) -> None:
    # Given a code that is not an active ISO 4217 code
    # When it is used for Money, checked or asked for its minor unit
    # Then each raises a ValueError naming the code
    with pytest.raises(ValueError, match="unknown ISO 4217"):
        Money.of("1", code)
    with pytest.raises(ValueError, match="unknown ISO 4217"):
        check_currency(code)
    with pytest.raises(ValueError, match="unknown ISO 4217"):
        minor_unit(code)


def test_check_amount_returns_the_amount_unchanged() -> None:
    # Given a valid amount / When checked / Then it comes back as is (no rounding)
    amount = Decimal("10.50")
    assert check_amount(amount, "EUR") is amount


@pytest.mark.parametrize(
    ("a", "b", "op", "expected"),
    [
        pytest.param(("10.25", "EUR"), ("0.75", "EUR"), operator.add, ("11.00", "EUR"), id="add"),
        pytest.param(("10.25", "EUR"), ("0.75", "EUR"), operator.sub, ("9.50", "EUR"), id="sub"),
        pytest.param(("100", "JPY"), ("1", "JPY"), operator.add, ("101", "JPY"), id="add-JPY"),
        pytest.param(("1.001", "KWD"), ("0.009", "KWD"), operator.add, ("1.010", "KWD"), id="KWD"),
        pytest.param(("1.00", "USD"), ("2.00", "USD"), operator.sub, ("-1.00", "USD"), id="neg"),
    ],
)
def test_arithmetic_in_one_currency(
    a: tuple[str, str],
    b: tuple[str, str],
    op: Callable[[Money, Money], Money],
    expected: tuple[str, str],
) -> None:
    # Given two amounts of the same currency
    # When added or subtracted
    result = op(Money.of(*a), Money.of(*b))
    # Then the result is exact and in that currency
    assert result == Money.of(*expected)


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        pytest.param(("9.99", "EUR"), ("10.00", "EUR"), id="EUR-cent-below"),
        pytest.param(("999", "JPY"), ("1000", "JPY"), id="JPY-yen-below"),
        pytest.param(("0.009", "KWD"), ("0.010", "KWD"), id="KWD-fils-below"),
    ],
)
def test_comparisons_in_one_currency(smaller: tuple[str, str], larger: tuple[str, str]) -> None:
    # Given two amounts of one currency, one a minor unit below the other
    low, high = Money.of(*smaller), Money.of(*larger)
    # When compared / Then ordering is by amount
    assert low < high
    assert low <= high
    assert high > low
    assert high >= low
    assert not high < low
    assert low <= low  # noqa: PLR0124 - reflexive comparison is the point
    assert -high < -low


@pytest.mark.parametrize(
    "op",
    [
        pytest.param(operator.add, id="add"),
        pytest.param(operator.sub, id="sub"),
        pytest.param(operator.lt, id="lt"),
        pytest.param(operator.le, id="le"),
        pytest.param(operator.gt, id="gt"),
        pytest.param(operator.ge, id="ge"),
    ],
)
@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(("1.00", "EUR"), ("1.00", "USD"), id="EUR-USD"),
        pytest.param(("100", "JPY"), ("1.00", "EUR"), id="JPY-EUR"),
        pytest.param(("1.000", "KWD"), ("1.000", "BHD"), id="KWD-BHD"),
    ],
)
def test_mixing_currencies_raises(
    a: tuple[str, str], b: tuple[str, str], op: Callable[[Any, Any], Any]
) -> None:
    # Given two amounts of different currencies
    # When combined or compared
    # Then CurrencyMismatchError names both currencies
    with pytest.raises(CurrencyMismatchError, match=f"{a[1]}.*{b[1]}"):
        op(Money.of(*a), Money.of(*b))


def test_currency_mismatch_is_a_value_error() -> None:
    # Then callers catching ValueError also catch mismatches
    assert issubclass(CurrencyMismatchError, ValueError)


@pytest.mark.parametrize(
    "other",
    [pytest.param(1, id="int"), pytest.param(Decimal("1.00"), id="decimal")],
)
def test_money_does_not_combine_with_bare_numbers(other: object) -> None:
    # Given Money and a bare number / When added / Then TypeError (no implicit currency)
    with pytest.raises(TypeError):
        Money.of("1.00", "EUR") + other  # type: ignore[operator]


@pytest.mark.parametrize(
    ("amounts", "currency", "expected"),
    [
        pytest.param([], "EUR", "0", id="empty-is-zero"),
        pytest.param(["0.10", "0.20"], "EUR", "0.30", id="decimal-exact"),
        pytest.param(["1", "2", "3"], "JPY", "6", id="JPY"),
        pytest.param(["0.001", "0.002"], "KWD", "0.003", id="KWD"),
    ],
)
def test_total(amounts: list[str], currency: str, expected: str) -> None:
    # Given amounts in one currency / When totalled / Then the exact sum in that currency
    result = total([Money.of(a, currency) for a in amounts], currency)
    assert result == Money.of(expected, currency)


def test_total_rejects_a_foreign_amount() -> None:
    # Given a list with one amount in another currency / When totalled / Then it raises
    with pytest.raises(CurrencyMismatchError):
        total([Money.of("1.00", "EUR"), Money.of("1.00", "USD")], "EUR")


@pytest.mark.parametrize(
    ("money", "text"),
    [
        pytest.param(Money.of("12.30", "EUR"), "12.30 EUR", id="EUR"),
        pytest.param(Money.of("1500", "JPY"), "1500 JPY", id="JPY"),
        pytest.param(Money(Decimal("1E+3"), "JPY"), "1000 JPY", id="JPY-exponent-form"),
    ],
)
def test_str(money: Money, text: str) -> None:
    # Given Money / When printed / Then amount in plain notation and currency code
    assert str(money) == text


def test_money_is_immutable() -> None:
    # Given Money / When a field is assigned / Then it refuses
    money = Money.of("1.00", "EUR")
    with pytest.raises(AttributeError):
        money.amount = Decimal(2)  # type: ignore[misc]
