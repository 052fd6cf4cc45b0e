"""SMS text: E.164 numbers, GSM-7 clean-up and segment counting.

Locale formatting (Babel) puts non-breaking and narrow no-break spaces in
amounts (`1 234,56 €` in French) and typographic quotes in text; none of them
are in the GSM 03.38 alphabet, so one of them turns a 160-character GSM-7
message into a 70-character UCS-2 one and can triple the bill. `gsm7_safe`
maps them to their GSM-7 equivalents; `sms_segments` counts what a carrier
will charge.

Errors never echo the phone number: no personal data in errors or logs.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NamedTuple

# GSM 03.38 basic character set (the escape code 0x1B is not a character).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each of these costs two septets (escape + code).
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE = 160
GSM7_MULTI = 153  # a concatenated segment loses 7 septets to its header
UCS2_SINGLE = 70
UCS2_MULTI = 67
# SNS refuses a single SMS `Publish` longer than this (it splits shorter ones
# into segments itself); a longer text is never sent.
MAX_SMS_CHARACTERS = 1600

# Characters locale formatting and word processors produce, with GSM-7 stand-ins.
_REPLACEMENTS: dict[str, str] = {
    # spaces: no-break, narrow no-break, thin, figure, en/em and other fixed widths
    "\u00a0": " ",
    "\u202f": " ",
    "\u2007": " ",
    "\u2009": " ",
    "\u200a": " ",
    "\u2002": " ",
    "\u2003": " ",
    "\u2004": " ",
    "\u2005": " ",
    "\u2006": " ",
    "\u2008": " ",
    "\u205f": " ",
    "\u3000": " ",
    "\t": " ",
    # invisible characters
    "\u200b": "",
    "\u200c": "",
    "\u200d": "",
    "\u2060": "",
    "\ufeff": "",
    "\u00ad": "",
    # quotes and apostrophes (Swiss grouping uses U+2019: 1’234.56)
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u00b4": "'",
    "`": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2039": "'",
    "\u203a": "'",
    # dashes, hyphens and minus
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2015": "-",
    "\u2212": "-",
    # others
    "\u2026": "...",
    "\u2022": "-",
    "\u00b7": ".",
    "\uffe5": "¥",  # fullwidth yen (Japanese locale formatting)
    "\u2028": "\n",
    "\u2029": "\n",
}
_TRANSLATION = str.maketrans(_REPLACEMENTS)

_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)
_SEPARATORS = re.compile(r"[ \-]", re.ASCII)


class InvalidPhoneNumberError(ValueError):
    """A phone number is not in E.164 form. The message never contains the number."""


def validate_e164(number: str) -> str:
    """The number in strict E.164 form (`+` and 7 to 15 digits), or an error.

    Spaces and hyphens between digits are accepted and removed; anything else
    (a missing `+`, a national trunk prefix in parentheses, letters, non-ASCII
    digits) is refused. The error message does not echo the number.
    """
    compact = _SEPARATORS.sub("", number.strip())
    if not _E164.fullmatch(compact):
        raise InvalidPhoneNumberError(
            "phone number is not a valid E.164 number: expected '+', a country code "
            "and 7 to 15 digits in all"
        )
    return compact


def gsm7_safe(text: str) -> str:
    """`text` with locale spaces, typographic quotes and dashes mapped to GSM-7.

    U+00A0 and U+202F (and the other fixed-width spaces) become plain spaces,
    curly quotes straight quotes, dashes a hyphen, the ellipsis three dots.
    Letters are left alone: whether the result is pure GSM-7 is `is_gsm7`.
    """
    return text.translate(_TRANSLATION)


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM-7 basic set or its extension table."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


class SmsEncoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


class SmsSegments(NamedTuple):
    encoding: SmsEncoding
    length: int  # septets for GSM-7 (extension characters count 2), UTF-16 units for UCS-2
    segments: int


def _costs(text: str, encoding: SmsEncoding) -> list[int]:
    if encoding is SmsEncoding.GSM7:
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]  # surrogate pairs


def _pack(costs: list[int], capacity: int) -> int:
    """Segments needed when a character (escape pair, surrogate pair) never splits."""
    segments, used = 1, 0
    for cost in costs:
        if used + cost > capacity:
            segments += 1
            used = 0
        used += cost
    return segments


def sms_segments(text: str) -> SmsSegments:
    """(encoding, length, segments) as a carrier counts them.

    GSM-7 when every character is in the GSM-7 alphabet: 160 septets in one
    segment, 153 per segment beyond that, extension characters (`€`, `[`, ...)
    counting two and never split across segments. Otherwise UCS-2: 70 units in
    one segment, 67 per segment beyond that, a character outside the Basic
    Multilingual Plane counting two. An empty text counts as one segment.
    """
    encoding = SmsEncoding.GSM7 if is_gsm7(text) else SmsEncoding.UCS2
    costs = _costs(text, encoding)
    length = sum(costs)
    single, multi = (
        (GSM7_SINGLE, GSM7_MULTI) if encoding is SmsEncoding.GSM7 else (UCS2_SINGLE, UCS2_MULTI)
    )
    if length <= single:
        return SmsSegments(encoding, length, 1)
    segments = _pack(costs, multi)
    return SmsSegments(encoding, length, segments)


__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "MAX_SMS_CHARACTERS",
    "InvalidPhoneNumberError",
    "SmsEncoding",
    "SmsSegments",
    "gsm7_safe",
    "is_gsm7",
    "sms_segments",
    "validate_e164",
]
