"""Money: a Decimal amount in one ISO 4217 currency, never mixed with another.

Amounts carry exactly the currency's minor units (JPY none, EUR two, KWD three);
an amount with more decimals than its currency allows is an error, not a silent
rounding. Adding or comparing two currencies raises `CurrencyMismatchError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator

# ISO 4217 active codes (list one, 2026) with two minor units unless listed below.
_TWO_DECIMALS = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP
BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD
FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD
KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD
NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP
SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED
VES WST XCD XCG YER ZAR ZMW ZWG
"""
_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMALS = "CLF UYW"

MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
    **dict.fromkeys(_FOUR_DECIMALS.split(), 4),
}

_QUANTS: dict[str, Decimal] = {code: Decimal(1).scaleb(-d) for code, d in MINOR_UNITS.items()}


# 15 integer digits: more than any invoice, and far inside Decimal's 28-digit context.
MAX_AMOUNT = Decimal(10) ** 15


class CurrencyMismatchError(ValueError):
    """Two amounts of different currencies met in one operation."""


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of `currency` (0.01 EUR, 1 JPY, 0.001 KWD)."""
    try:
        return _QUANTS[currency]
    except KeyError:
        raise ValueError(f"unknown ISO 4217 currency code {currency!r}") from None


def check_currency(code: str) -> str:
    if code not in MINOR_UNITS:
        raise ValueError(f"unknown ISO 4217 currency code {code!r}")
    return code


def check_amount(amount: Decimal, currency: str) -> Decimal:
    """Reject non-finite amounts and amounts finer than the currency's minor units."""
    if not amount.is_finite():
        raise ValueError("amount must be a finite number")
    if abs(amount) >= MAX_AMOUNT:
        raise ValueError(f"amount must be below {MAX_AMOUNT:,} in absolute value")
    quant = minor_unit(currency)
    if amount != amount.quantize(quant):
        raise ValueError(
            f"{currency} has {MINOR_UNITS[currency]} decimal places; {amount} has more"
        )
    return amount


CurrencyCode = Annotated[str, AfterValidator(check_currency)]


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in one currency. Arithmetic across currencies raises."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        check_currency(self.currency)
        check_amount(self.amount, self.currency)

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str) -> Money:
        return cls(Decimal(amount), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    def _same(self, other: Any) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"cannot combine {self.currency} with {other.currency}")
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.amount + self._same(other).amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.amount - self._same(other).amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        return self.amount < self._same(other).amount

    def __le__(self, other: Money) -> bool:
        return self.amount <= self._same(other).amount

    def __gt__(self, other: Money) -> bool:
        return self.amount > self._same(other).amount

    def __ge__(self, other: Money) -> bool:
        return self.amount >= self._same(other).amount

    def __str__(self) -> str:
        return f"{self.amount:f} {self.currency}"


def total(amounts: list[Money] | tuple[Money, ...], currency: str) -> Money:
    """Sum amounts that must all be in `currency`."""
    result = Money.zero(currency)
    for m in amounts:
        result = result + m
    return result
