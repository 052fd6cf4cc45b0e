"""Local time arithmetic: local dates, DST-safe local midnights, sending windows.

Expected instants are written by hand in UTC from the local wall time and the
zone's offset on that day (comment on each row), never computed with zoneinfo.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest

from dunning.calendars import (
    is_send_time,
    is_sending_day,
    local_date,
    local_midnight,
    next_send_time,
    zone,
)
from tests.builders import calendar, utc


@pytest.mark.parametrize(
    ("tz", "day", "expected"),
    [
        # Europe/Berlin: CET +01:00, CEST +02:00; 2026 changes on Mar 29 and Oct 25.
        pytest.param("Europe/Berlin", date(2026, 1, 15), utc(2026, 1, 14, 23), id="berlin-winter"),
        pytest.param("Europe/Berlin", date(2026, 7, 15), utc(2026, 7, 14, 22), id="berlin-summer"),
        pytest.param("Europe/Berlin", date(2026, 3, 29), utc(2026, 3, 28, 23), id="berlin-spring"),
        pytest.param("Europe/Berlin", date(2026, 3, 30), utc(2026, 3, 29, 22), id="berlin-after"),
        pytest.param("Europe/Berlin", date(2026, 10, 25), utc(2026, 10, 24, 22), id="berlin-fall"),
        pytest.param(
            "Europe/Berlin", date(2026, 10, 26), utc(2026, 10, 25, 23), id="berlin-after-f"
        ),
        # America/New_York: EST -05:00, EDT -04:00; 2026 changes on Mar 8 and Nov 1.
        pytest.param("America/New_York", date(2026, 3, 8), utc(2026, 3, 8, 5), id="ny-spring"),
        pytest.param(
            "America/New_York", date(2026, 3, 9), utc(2026, 3, 9, 4), id="ny-after-spring"
        ),
        pytest.param("America/New_York", date(2026, 11, 1), utc(2026, 11, 1, 4), id="ny-fall"),
        pytest.param(
            "America/New_York", date(2026, 11, 2), utc(2026, 11, 2, 5), id="ny-after-fall"
        ),
        # Australia/Sydney: AEDT +11 until Apr 5 2026 03:00, AEST +10, AEDT again from Oct 4.
        pytest.param("Australia/Sydney", date(2026, 4, 5), utc(2026, 4, 4, 13), id="syd-end-dst"),
        pytest.param("Australia/Sydney", date(2026, 4, 6), utc(2026, 4, 5, 14), id="syd-after-end"),
        pytest.param("Australia/Sydney", date(2026, 10, 4), utc(2026, 10, 3, 14), id="syd-start"),
        pytest.param(
            "Australia/Sydney", date(2026, 10, 5), utc(2026, 10, 4, 13), id="syd-after-st"
        ),
        # Leap day, and zones with a DST change at midnight itself.
        pytest.param("Europe/Berlin", date(2028, 2, 29), utc(2028, 2, 28, 23), id="leap-day"),
        pytest.param("Europe/Berlin", date(2028, 3, 1), utc(2028, 2, 29, 23), id="after-leap-day"),
        # America/Santiago: 2026-09-06 00:00 -04 does not exist, the day starts 01:00 -03.
        pytest.param("America/Santiago", date(2026, 9, 6), utc(2026, 9, 6, 4), id="midnight-gap"),
        # America/Havana: 2026-11-01 00:00 happens twice (-04 then -05): the first one.
        pytest.param("America/Havana", date(2026, 11, 1), utc(2026, 11, 1, 4), id="midnight-twice"),
        # America/Havana: 2026-03-08 00:00 -05 does not exist, the day starts 01:00 -04.
        pytest.param("America/Havana", date(2026, 3, 8), utc(2026, 3, 8, 5), id="havana-gap"),
        pytest.param("Asia/Kolkata", date(2026, 1, 1), utc(2025, 12, 31, 18, 30), id="half-hour"),
        pytest.param("UTC", date(2026, 1, 1), utc(2026, 1, 1), id="utc"),
    ],
)
def test_local_midnight_is_the_utc_start_of_the_local_day(
    tz: str, day: date, expected: datetime
) -> None:
    # Given a local calendar day in an IANA zone
    # When its start is asked for
    start = local_midnight(day, zone(tz))
    # Then it is that day's first instant in UTC, and one microsecond earlier is the day before
    assert start == expected
    assert start.utcoffset() == timedelta(0)
    assert local_date(start, zone(tz)) == day
    assert local_date(start - timedelta(microseconds=1), zone(tz)) == day - timedelta(days=1)


@pytest.mark.parametrize(
    ("instant", "tz", "expected"),
    [
        pytest.param(utc(2026, 1, 14, 22, 59, 59), "Europe/Berlin", date(2026, 1, 14), id="before"),
        pytest.param(utc(2026, 1, 14, 23), "Europe/Berlin", date(2026, 1, 15), id="at-midnight"),
        pytest.param(utc(2026, 1, 15, 3), "America/New_York", date(2026, 1, 14), id="ny-behind"),
        pytest.param(utc(2026, 1, 15, 13), "Australia/Sydney", date(2026, 1, 16), id="syd-ahead"),
    ],
)
def test_local_date(instant: datetime, tz: str, expected: date) -> None:
    # Given a UTC instant / When read in the zone / Then the local calendar date
    assert local_date(instant, zone(tz)) == expected


# Thursday 2026-12-24 to Tuesday 2026-12-29; Berlin is on CET (+01:00) throughout.
XMAS = frozenset({date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 26)})


@pytest.mark.parametrize(
    ("instant", "cal_kw", "expected"),
    [
        # Wed 2026-12-23 in Berlin.
        pytest.param(utc(2026, 12, 23, 6), {}, utc(2026, 12, 23, 7), id="before-0800-waits"),
        pytest.param(utc(2026, 12, 23, 7), {}, utc(2026, 12, 23, 7), id="at-0800-goes"),
        pytest.param(utc(2026, 12, 23, 12), {}, utc(2026, 12, 23, 12), id="midday-goes"),
        pytest.param(
            utc(2026, 12, 23, 18, 59, 59), {}, utc(2026, 12, 23, 18, 59, 59), id="1959-goes"
        ),
        pytest.param(utc(2026, 12, 23, 19), {}, utc(2026, 12, 28, 7), id="at-2000-next-day"),
        # Without exclusions Thursday 24th is a sending day.
        pytest.param(
            utc(2026, 12, 23, 19),
            {"exclusion_dates": frozenset()},
            utc(2026, 12, 24, 7),
            id="no-exclusions-thursday",
        ),
        # Saturday and Sunday are not business days by default.
        pytest.param(utc(2027, 1, 2, 10), {}, utc(2027, 1, 4, 7), id="saturday-to-monday"),
        pytest.param(
            utc(2027, 1, 2, 10),
            {"business_days": frozenset({1, 2, 3, 4, 5, 6})},
            utc(2027, 1, 2, 10),
            id="saturday-business",
        ),
        pytest.param(
            utc(2026, 12, 23, 6),
            {"send_from": time(9, 30), "send_until": time(17)},
            utc(2026, 12, 23, 8, 30),
            id="custom-window",
        ),
        pytest.param(
            utc(2026, 12, 23, 16),
            {"send_from": time(9, 30), "send_until": time(17)},
            utc(2026, 12, 28, 8, 30),
            id="custom-window-closed",
        ),
    ],
)
def test_next_send_time_in_berlin(
    instant: datetime, cal_kw: dict[str, object], expected: datetime
) -> None:
    # Given a calendar (Mon-Fri 08:00-20:00 unless set) and the Christmas exclusions
    kw: dict[str, object] = {"exclusion_dates": XMAS}
    kw.update(cal_kw)
    cal = calendar(**kw)
    # When the first sending instant at or after `instant` is asked for
    result = next_send_time(cal, zone("Europe/Berlin"), instant)
    # Then it is the instant itself inside the window, else the next window opening
    assert result == expected
    assert is_send_time(cal, zone("Europe/Berlin"), result)


@pytest.mark.parametrize(
    ("tz", "instant", "expected"),
    [
        # Sunday 2026-03-29 Berlin springs forward; Monday 08:00 is CEST (+02:00).
        pytest.param(
            "Europe/Berlin", utc(2026, 3, 28, 23), utc(2026, 3, 30, 6), id="berlin-spring"
        ),
        # Sunday 2026-10-25 Berlin falls back; Monday 08:00 is CET (+01:00).
        pytest.param(
            "Europe/Berlin", utc(2026, 10, 24, 22), utc(2026, 10, 26, 7), id="berlin-fall"
        ),
        # Sunday 2026-03-08 New York springs forward; Monday 08:00 EDT is 12:00 UTC.
        pytest.param("America/New_York", utc(2026, 3, 8, 5), utc(2026, 3, 9, 12), id="ny-spring"),
        # Sunday 2026-11-01 New York falls back; Monday 08:00 EST is 13:00 UTC.
        pytest.param("America/New_York", utc(2026, 11, 1, 4), utc(2026, 11, 2, 13), id="ny-fall"),
        # Sunday 2026-04-05 Sydney leaves DST; Monday 08:00 AEST (+10) is Sunday 22:00 UTC.
        pytest.param("Australia/Sydney", utc(2026, 4, 4, 13), utc(2026, 4, 5, 22), id="syd-end"),
        # Sunday 2026-10-04 Sydney enters DST; Monday 08:00 AEDT (+11) is Sunday 21:00 UTC.
        pytest.param(
            "Australia/Sydney", utc(2026, 10, 3, 14), utc(2026, 10, 4, 21), id="syd-start"
        ),
    ],
)
def test_next_send_time_across_dst(tz: str, instant: datetime, expected: datetime) -> None:
    # Given Sunday local midnight on a DST change day (not a business day)
    # When the next sending instant is asked for
    # Then it is Monday 08:00 local, with Monday's offset
    assert next_send_time(calendar(), zone(tz), instant) == expected


def test_send_window_inside_a_dst_gap_moves_forward() -> None:
    # Given a window opening at 02:30, on the Sunday Berlin skips 02:00-03:00 (all days send)
    cal = calendar(business_days=frozenset(range(1, 8)), send_from=time(2, 30))
    # When asked at that day's midnight (2026-03-29 00:00 CET = 2026-03-28 23:00 UTC)
    result = next_send_time(cal, zone("Europe/Berlin"), utc(2026, 3, 28, 23))
    # Then the window opens at the first existing instant after the gap, when the wall clock
    # jumps from 02:00 to 03:00 CEST (already past 02:30): 03:00 CEST = 01:00 UTC
    assert result == utc(2026, 3, 29, 1)
    assert is_send_time(cal, zone("Europe/Berlin"), utc(2026, 3, 29, 1, 10))  # 03:10 CEST


def test_send_window_closing_inside_a_dst_gap_closes_at_the_jump() -> None:
    # Given a window 01:00-02:30 on the Sunday Berlin skips 02:00-03:00 (all days send)
    cal = calendar(
        business_days=frozenset(range(1, 8)), send_from=time(1, 0), send_until=time(2, 30)
    )
    berlin = zone("Europe/Berlin")
    # Then 01:59:59 CET sends, and the jump to 03:00 CEST (past 02:30) closes the window
    assert is_send_time(cal, berlin, utc(2026, 3, 29, 0, 59, 59))
    assert not is_send_time(cal, berlin, utc(2026, 3, 29, 1))
    assert next_send_time(cal, berlin, utc(2026, 3, 29, 1)) == utc(2026, 3, 29, 23)  # Mon 01:00


def test_send_window_opens_twice_when_the_clocks_go_back_over_it() -> None:
    # Given a window 01:00-02:30 on the Sunday Berlin goes back from 03:00 CEST to 02:00 CET
    cal = calendar(
        business_days=frozenset(range(1, 8)), send_from=time(1, 0), send_until=time(2, 30)
    )
    berlin = zone("Europe/Berlin")
    # When asked at 02:40 CEST (00:40 UTC), after the first window closed
    # Then it opens again when the wall clock goes back to 02:00 CET (01:00 UTC)
    assert next_send_time(cal, berlin, utc(2026, 10, 25, 0, 40)) == utc(2026, 10, 25, 1)
    # And closes at the second 02:30 (02:30 CET = 01:30 UTC), until Monday 01:00 CET
    assert is_send_time(cal, berlin, utc(2026, 10, 25, 1, 29))
    assert next_send_time(cal, berlin, utc(2026, 10, 25, 1, 30)) == utc(2026, 10, 26, 0)


def test_send_window_opening_twice_when_the_clocks_go_back() -> None:
    # Given a window from 02:30 on the Sunday Berlin goes back from 03:00 CEST to 02:00 CET
    cal = calendar(business_days=frozenset(range(1, 8)), send_from=time(2, 30))
    berlin = zone("Europe/Berlin")
    # When asked just after the jump back (02:10 CET = 01:10 UTC: the wall clock is before 02:30)
    # Then the window opens again at the second 02:30 (CET = 01:30 UTC)
    assert not is_send_time(cal, berlin, utc(2026, 10, 25, 1, 10))
    assert next_send_time(cal, berlin, utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 25, 1, 30)


def test_no_calendar_means_at_once() -> None:
    # Given no calendar / When asked / Then actions go at the instant itself
    instant = utc(2027, 1, 2, 3)  # Saturday night
    assert next_send_time(None, zone("Europe/Berlin"), instant) == instant


@pytest.mark.parametrize(
    ("day", "sending"),
    [
        pytest.param(date(2026, 12, 23), True, id="wednesday"),
        pytest.param(date(2026, 12, 24), False, id="excluded-thursday"),
        pytest.param(date(2026, 12, 26), False, id="saturday-excluded"),
        pytest.param(date(2026, 12, 27), False, id="sunday"),
        pytest.param(date(2026, 12, 28), True, id="monday"),
    ],
)
def test_is_sending_day(day: date, sending: bool) -> None:
    # Given Mon-Fri without the Christmas days / Then sending days are exactly those
    assert is_sending_day(calendar(exclusion_dates=XMAS), day) is sending


def test_a_calendar_without_any_sending_day_within_a_year_raises() -> None:
    # Given only Mondays as business days and every Monday of the year excluded
    mondays = frozenset(date(2026, 1, 5) + timedelta(weeks=w) for w in range(60))
    cal = calendar(business_days=frozenset({1}), exclusion_dates=mondays)
    # When the next sending time is asked for / Then it raises rather than loop forever
    with pytest.raises(ValueError, match="no sending day"):
        next_send_time(cal, zone("Europe/Berlin"), utc(2026, 1, 1))
