"""Local time arithmetic: days overdue, local midnights, send windows.

Every function takes and returns aware datetimes in UTC; local dates and times
are computed in the account's IANA zone. Comparisons are always made in UTC:
Python compares two datetimes of the same zone by wall time, which is wrong
across a DST change.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from dunning.model import Calendar

ONE_DAY = timedelta(days=1)
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
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    instant = local.astimezone(UTC)
    # A wall time inside a DST gap does not exist; round trip and move forward.
    if instant.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        later = datetime(day.year, day.month, day.day, hour, minute, fold=1, tzinfo=tz)
        instant = max(instant, later.astimezone(UTC))
    return instant


def is_sending_day(calendar: Calendar, day: date) -> bool:
    return day.isoweekday() in calendar.business_days and day not in calendar.exclusion_dates


def next_send_time(calendar: Calendar | None, tz: tzinfo, instant: datetime) -> datetime:
    """The first instant at or after `instant` when the calendar lets actions go out."""
    if calendar is None:
        return instant
    day = instant.astimezone(tz).date()
    send_from, send_until = calendar.send_from, calendar.send_until
    for _ in range(MAX_SEARCH_DAYS):
        if day.isoweekday() in calendar.business_days and day not in calendar.exclusion_dates:
            start = _local_instant(day, send_from.hour, send_from.minute, tz)
            if instant < start:
                return start
            end = _local_instant(day, send_until.hour, send_until.minute, tz)
            if instant < end:
                return instant
        day += ONE_DAY
    raise ValueError(f"calendar {calendar.calendar_id!r} has no sending day within a year")


def is_send_time(calendar: Calendar, tz: tzinfo, instant: datetime) -> bool:
    """True when an action may go out at `instant` (used by checks and tests)."""
    return next_send_time(calendar, tz, instant) == instant
