"""SMS text: E.164 numbers, GSM-7 clean-up, segment counting at the boundaries."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from babel.numbers import format_currency
from hypothesis import given
from hypothesis import strategies as st

from dunning.channels.sms import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    InvalidPhoneNumberError,
    SmsEncoding,
    gsm7_safe,
    is_gsm7,
    sms_segments,
    validate_e164,
)

GSM = SmsEncoding.GSM7
UCS = SmsEncoding.UCS2

# ------------------------------------------------------------------------------ E.164


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("+4915112345678", "+4915112345678"),
        ("+49 151 1234 5678", "+4915112345678"),
        ("+1-415-555-0100", "+14155550100"),
        ("  +33612345678 ", "+33612345678"),
        ("+1234567", "+1234567"),  # 7 digits, the shortest accepted
        ("+123456789012345", "+123456789012345"),  # 15 digits, the E.164 maximum
    ],
)
def test_valid_numbers_are_normalised(raw: str, normalised: str) -> None:
    assert validate_e164(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "+",
        "015112345678",  # national form, no country code
        "004915112345678",  # international prefix instead of +
        "+0491511234567",  # country codes never start with 0
        "+49 (0) 151 12345678",  # trunk prefix in parentheses
        "+123456",  # too short
        "+1234567890123456",  # 16 digits
        "+49151abc45678",
        "+49\u0661\u0662\u0663\u0664\u0665\u0666\u0667",  # Arabic-Indic digits
        "+4915\n112345678",  # a newline inside
        "+49.151.12345678",
        "tel:+4915112345678",
    ],
)
def test_invalid_numbers_are_refused_without_echoing_them(raw: str) -> None:
    # Given an invalid number
    # When it is validated
    # Then the error names the rule and contains none of the number's digits
    with pytest.raises(InvalidPhoneNumberError) as refused:
        validate_e164(raw)
    message = str(refused.value)
    assert "E.164" in message
    digits = "".join(ch for ch in raw if ch.isdigit())
    if len(digits) >= 4:
        assert digits[:4] not in message.replace("E.164", "")
        assert raw.strip() not in message


# ---------------------------------------------------------------------------- GSM-7


def test_locale_spaces_quotes_and_dashes_become_gsm7() -> None:
    text = "1\u202f234,56\u00a0€ \u2013 l\u2019échéance \u201cbientôt\u201d\u2026"
    cleaned = gsm7_safe(text)
    assert cleaned == '1 234,56 € - l\'échéance "bientôt"...'
    assert "\u00a0" not in cleaned
    assert "\u202f" not in cleaned


@pytest.mark.parametrize(
    ("amount", "currency", "locale"),
    [
        (Decimal("1234.56"), "EUR", "fr"),
        (Decimal("1234.56"), "EUR", "de"),
        (Decimal("1234.56"), "CHF", "de_CH"),
        (Decimal("1235"), "JPY", "ja"),
        (Decimal("1234.567"), "KWD", "en"),
    ],
)
def test_babel_amounts_are_pure_gsm7_once_cleaned(
    amount: Decimal, currency: str, locale: str
) -> None:
    formatted = format_currency(amount, currency, locale=locale)
    assert is_gsm7(gsm7_safe(formatted))


def test_letters_outside_gsm7_are_reported() -> None:
    assert is_gsm7("Grüße, ÄÖÜ ß, é è à ù, 5 € [x]")
    assert not is_gsm7("ç")  # only the capital is in the basic set
    assert not is_gsm7("bientôt")
    assert not is_gsm7("日本")
    assert not is_gsm7("\u00a0")


@given(st.text())
def test_cleaned_text_never_contains_locale_spaces(text: str) -> None:
    cleaned = gsm7_safe(text)
    assert "\u00a0" not in cleaned
    assert "\u202f" not in cleaned
    assert gsm7_safe(cleaned) == cleaned  # idempotent


MAPPED = "\u00a0\u202f\u2009\u2018\u2019\u201c\u201d\u201e\u2013\u2014\u2026\u2212"


@given(st.text(alphabet=st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENSION) + list(MAPPED))))
def test_gsm7_text_with_typography_becomes_pure_gsm7(text: str) -> None:
    assert is_gsm7(gsm7_safe(text))


# ------------------------------------------------------------------------- segments


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (GSM, 0, 1)),
        ("a", (GSM, 1, 1)),
        ("a" * 160, (GSM, 160, 1)),
        ("a" * 161, (GSM, 161, 2)),
        ("a" * 306, (GSM, 306, 2)),
        ("a" * 307, (GSM, 307, 3)),
        ("a" * 459, (GSM, 459, 3)),
        ("a" * 460, (GSM, 460, 4)),
        ("€" * 80, (GSM, 160, 1)),  # extension characters count two
        ("€" * 81, (GSM, 162, 2)),
        ("a" * 159 + "€", (GSM, 161, 2)),
        # an escape pair never straddles two segments: 152 + [€] + 152 needs three
        ("a" * 152 + "€" + "a" * 152, (GSM, 306, 3)),
        ("a" * 151 + "€" + "a" * 153, (GSM, 306, 2)),
        ("ж" * 70, (UCS, 70, 1)),
        ("ж" * 71, (UCS, 71, 2)),
        ("ж" * 134, (UCS, 134, 2)),
        ("ж" * 135, (UCS, 135, 3)),
        ("a" * 69 + "ç", (UCS, 70, 1)),  # one non-GSM letter switches the whole text
        ("😀" * 35, (UCS, 70, 1)),  # outside the BMP: a surrogate pair, two units
        ("😀" * 36, (UCS, 72, 2)),
        # a surrogate pair never straddles two segments: 66 + [😀] + 66 needs three
        ("ж" * 66 + "😀" + "ж" * 66, (UCS, 134, 3)),
    ],
    ids=lambda v: repr(v)[:40] if isinstance(v, str) else None,
)
def test_segment_counts_at_the_boundaries(
    text: str, expected: tuple[SmsEncoding, int, int]
) -> None:
    assert tuple(sms_segments(text)) == expected


def test_a_non_breaking_space_would_switch_to_ucs2() -> None:
    raw = "Rappel : 1\u202f234,56\u00a0€ " + "a" * 100
    assert sms_segments(raw).encoding is UCS
    assert sms_segments(gsm7_safe(raw)).encoding is GSM


@given(st.text(alphabet=st.sampled_from(sorted(GSM7_BASIC)), max_size=1000))
def test_basic_gsm7_segments_follow_the_formula(text: str) -> None:
    encoding, length, segments = sms_segments(text)
    assert encoding is GSM
    assert length == len(text)
    assert segments == (1 if length <= 160 else math.ceil(length / 153))


@given(st.text(max_size=600), st.text(min_size=1, max_size=5))
def test_appending_never_reduces_segments(text: str, more: str) -> None:
    before = sms_segments(text)
    after = sms_segments(text + more)
    if before.encoding is after.encoding:
        assert after.segments >= before.segments
        assert after.length > before.length
    single = 160 if after.encoding is GSM else 70
    multi = 153 if after.encoding is GSM else 67
    assert after.segments >= (1 if after.length <= single else math.ceil(after.length / multi))
