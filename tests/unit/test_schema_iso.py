"""`iso` keeps its answers per instant; the text must stay the one `strftime` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from dunning.store.schema import iso, parse_iso
from tests.unit.strategies import PROPERTY_SETTINGS

zones = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
instants = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
)


@PROPERTY_SETTINGS
@given(instants, zones, zones)
def test_one_instant_has_one_text_in_every_zone(
    instant: datetime, a: timezone, b: timezone
) -> None:
    expected = instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso(instant.astimezone(a)) == expected
    assert iso(instant.astimezone(b)) == expected  # equal key, maybe kept from `a`
    assert parse_iso(iso(instant)) == instant
