"""Local time arithmetic: days overdue, local midnights, send windows.

Every function takes and returns aware datetimes in UTC; local dates and times
are computed in the account's IANA zone. Comparisons are always made in UTC:
Python compares two datetimes of the same zone by wall time, which is wrong
across a DST change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from dunning.model import Calendar

ONE_DAY = timedelta(days=1)
ONE_SECOND = timedelta(seconds=1)
MAX_SEARCH_DAYS = 400  # a valid calendar has a business day every week


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_date(instant: datetime, tz: tzinfo) -> date:
    return instant.astimezone(tz).date()


def local_midnight(day: date, tz: tzinfo) -> datetime:
    """The UTC instant at which `day` starts in `tz` (DST gaps resolved forward)."""
    return _local_instant(day, 0, 0, tz)


# A portfolio shares a few hundred due dates, level offsets and zones: the same
# local instants come up again and again, so they are computed once.
@lru_cache(maxsize=131072)
def _local_instant(day: date, hour: int, minute: int, tz: tzinfo) -> datetime:
    """The first instant at which the wall clock in `tz` shows `day` at `hour:minute`
    or later: the wall time itself, its first occurrence when clocks go back, and
    the end of the gap (the instant the clocks jump) when they skip it."""
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    wall = local.replace(tzinfo=None)
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # Inside a gap: fold=0 reads the wall time with the offset before the change
    # (an instant after the jump), fold=1 with the offset after it (an instant
    # before the jump). The jump is between them, at a whole second.
    before = local.replace(fold=1).astimezone(UTC)
    return _first_instant(before, instant, lambda x: x.astimezone(tz).replace(tzinfo=None) >= wall)


def _first_instant(lo: datetime, hi: datetime, reached: Callable[[datetime], bool]) -> datetime:
    """The first whole second in (lo, hi] at which `reached` holds (false at lo, true at hi)."""
    low, high = int(lo.timestamp()), int(hi.timestamp())  # both whole seconds here
    while high - low > 1:
        mid = (low + high) // 2
        if reached(datetime.fromtimestamp(mid, UTC)):
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)


@lru_cache(maxsize=65536)
def _openings(day: date, hour: int, minute: int, tz: tzinfo) -> tuple[datetime, ...]:
    """Every instant of local `day` at which a window opening at `hour:minute` may
    open, in order: when the wall clock reaches that time (twice if the clocks go
    back over it) and when the clocks change that day (a jump back into the window,
    or forward over its opening)."""
    found = {_local_instant(day, hour, minute, tz)}
    local = datetime(day.year, day.month, day.day, hour, minute, fold=1, tzinfo=tz)
    second = local.astimezone(UTC)
    if second.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        found.add(second)
    start = _local_instant(day, 0, 0, tz)
    end = _local_instant(day + ONE_DAY, 0, 0, tz) - ONE_SECOND
    offset = end.astimezone(tz).utcoffset()
    if start.astimezone(tz).utcoffset() != offset:
        found.add(_first_instant(start, end, lambda x: x.astimezone(tz).utcoffset() == offset))
    return tuple(sorted(found))


def is_sending_day(calendar: Calendar, day: date) -> bool:
    return day.isoweekday() in calendar.business_days and day not in calendar.exclusion_dates


def _in_window(calendar: Calendar, local: datetime) -> bool:
    """The calendar rule read on the local wall clock `local`."""
    return (
        calendar.send_from <= local.time() < calendar.send_until
        and local.isoweekday() in calendar.business_days
        and local.date() not in calendar.exclusion_dates
    )


def next_send_time(calendar: Calendar | None, tz: tzinfo, instant: datetime) -> datetime:
    """The first instant at or after `instant` when the calendar lets actions go out:
    a business day that is not an exclusion date, with the wall clock in
    [send_from, send_until). On the days clocks change, the window is read on the
    wall clock too: it opens at the end of a gap that swallows `send_from`, and
    may open twice when the clocks go back."""
    if calendar is None:
        return instant
    local = instant.astimezone(tz)
    if _in_window(calendar, local):
        return instant
    day = local.date()
    send_from = calendar.send_from
    for _ in range(MAX_SEARCH_DAYS):
        if day.isoweekday() in calendar.business_days and day not in calendar.exclusion_dates:
            for opening in _openings(day, send_from.hour, send_from.minute, tz):
                if opening > instant and _in_window(calendar, opening.astimezone(tz)):
                    return opening
        day += ONE_DAY
    raise ValueError(f"calendar {calendar.calendar_id!r} has no sending day within a year")


def is_send_time(calendar: Calendar, tz: tzinfo, instant: datetime) -> bool:
    """True when an action may go out at `instant` (used by checks and tests)."""
    return next_send_time(calendar, tz, instant) == instant
