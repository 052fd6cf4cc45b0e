"""Rule 1: days overdue count in the account's zone; day N starts at local midnight.

Every expected instant below is written by hand in UTC from the local midnight of
due date + N days and the zone's offset on that day (see the comment on each row),
so a level that moved by an hour across a DST change, or by a day across a leap
day, fails the test.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from dunning.engine import apply_decision, decide
from dunning.model import CaseStatus, EventKind, Mode
from tests.builders import account, invoice, level, policy, utc, view

SECOND = timedelta(seconds=1)


LEVEL_INSTANTS = [
    # zone, due date, level days, local midnight of due+days in UTC (offset that day)
    pytest.param("Europe/Berlin", date(2026, 1, 5), 10, utc(2026, 1, 14, 23),
                 id="berlin-winter-CET"),
    pytest.param("Europe/Berlin", date(2026, 3, 19), 10, utc(2026, 3, 28, 23),
                 id="berlin-on-spring-forward-day-CET"),
    pytest.param("Europe/Berlin", date(2026, 3, 20), 10, utc(2026, 3, 29, 22),
                 id="berlin-day-after-spring-forward-CEST"),
    pytest.param("Europe/Berlin", date(2026, 3, 1), 30, utc(2026, 3, 30, 22),
                 id="berlin-due-in-CET-level-in-CEST"),
    pytest.param("Europe/Berlin", date(2026, 10, 15), 10, utc(2026, 10, 24, 22),
                 id="berlin-on-fall-back-day-CEST"),
    pytest.param("Europe/Berlin", date(2026, 10, 16), 10, utc(2026, 10, 25, 23),
                 id="berlin-day-after-fall-back-CET"),
    pytest.param("Europe/Berlin", date(2026, 9, 1), 60, utc(2026, 10, 30, 23),
                 id="berlin-due-in-CEST-level-in-CET"),
    pytest.param("America/New_York", date(2026, 2, 26), 10, utc(2026, 3, 8, 5),
                 id="ny-on-spring-forward-day-EST"),
    pytest.param("America/New_York", date(2026, 2, 27), 10, utc(2026, 3, 9, 4),
                 id="ny-day-after-spring-forward-EDT"),
    pytest.param("America/New_York", date(2026, 10, 22), 10, utc(2026, 11, 1, 4),
                 id="ny-on-fall-back-day-EDT"),
    pytest.param("America/New_York", date(2026, 10, 23), 10, utc(2026, 11, 2, 5),
                 id="ny-day-after-fall-back-EST"),
    pytest.param("Australia/Sydney", date(2026, 3, 26), 10, utc(2026, 4, 4, 13),
                 id="sydney-on-dst-end-day-AEDT"),
    pytest.param("Australia/Sydney", date(2026, 3, 27), 10, utc(2026, 4, 5, 14),
                 id="sydney-day-after-dst-end-AEST"),
    pytest.param("Australia/Sydney", date(2026, 9, 24), 10, utc(2026, 10, 3, 14),
                 id="sydney-on-dst-start-day-AEST"),
    pytest.param("Australia/Sydney", date(2026, 9, 25), 10, utc(2026, 10, 4, 13),
                 id="sydney-day-after-dst-start-AEDT"),
    pytest.param("Europe/Berlin", date(2028, 2, 19), 10, utc(2028, 2, 28, 23),
                 id="leap-day-2028-02-29"),
    pytest.param("Europe/Berlin", date(2028, 2, 20), 10, utc(2028, 2, 29, 23),
                 id="day-after-leap-day-2028-03-01"),
    pytest.param("Europe/Berlin", date(2028, 1, 30), 30, utc(2028, 2, 28, 23),
                 id="thirty-days-land-on-leap-day"),
    pytest.param("America/New_York", date(2028, 2, 28), 10, utc(2028, 3, 9, 5),
                 id="ny-across-leap-day-EST"),
    # America/Santiago skips 2026-09-06 00:00-01:00: the day starts at 01:00 -03.
    pytest.param("America/Santiago", date(2026, 8, 27), 10, utc(2026, 9, 6, 4),
                 id="santiago-midnight-in-dst-gap"),
    pytest.param("Asia/Kolkata", date(2026, 1, 5), 10, utc(2026, 1, 14, 18, 30),
                 id="kolkata-half-hour-offset"),
    pytest.param("Asia/Tokyo", date(2026, 1, 5), 10, utc(2026, 1, 14, 15), id="tokyo-ahead"),
    pytest.param("America/Los_Angeles", date(2026, 1, 5), 10, utc(2026, 1, 15, 8),
                 id="los-angeles-behind"),
    pytest.param("UTC", date(2026, 1, 5), 10, utc(2026, 1, 15), id="utc"),
]  # fmt: skip


@pytest.mark.parametrize(("tz", "due", "days", "expected"), LEVEL_INSTANTS)
@pytest.mark.parametrize("mode", [Mode.CUSTOMER, Mode.INVOICE])
def test_level_fires_at_local_midnight_of_due_plus_days(
    tz: str, due: date, days: int, expected: datetime, mode: Mode
) -> None:
    # Given an account in `tz` with one 100.00 EUR invoice due `due`, and a first level at `days`
    p = policy(mode=mode, levels=(level("first", days), level("second", days + 20)))
    v = view(invoice("inv-1", "100.00", due), account=account(timezone=tz))
    # When the engine decides one second before the level's local midnight
    before = decide(v, p, None, expected - SECOND)
    # Then a case is open (overdue), no level is entered, and it asks to come back exactly then
    assert [c.status for c in before.cases] == [CaseStatus.ACTIVE]
    assert [c.level for c in before.cases] == [0]
    assert before.actions == ()
    assert before.next_evaluation_at == expected
    assert [e.days_overdue for e in before.explanations] == [days - 1]
    # When it decides again at exactly that instant
    v = apply_decision(v, before)
    at = decide(v, p, None, expected)
    # Then the first level is entered, with its action, on day `days`
    assert [(c.level, c.entered_level_at) for c in at.cases] == [(1, expected)]
    assert [(a.level, a.not_before) for a in at.actions] == [(1, expected)]
    assert [e.days_overdue for e in at.explanations] == [days]


@pytest.mark.parametrize(("tz", "due", "days", "expected"), LEVEL_INSTANTS)
def test_case_opens_at_local_midnight_after_the_due_date(
    tz: str, due: date, days: int, expected: datetime
) -> None:
    # Given an invoice due `due` in `tz`, due on that whole local day
    p = policy(levels=(level("first", days),))
    v = view(invoice("inv-1", "100.00", due), account=account(timezone=tz))
    # When the engine decides on the due date (one level-length before the level instant,
    # which is the due date's local midnight shifted by `days` local days)
    last_second_of_due_day = _local_midnight_after(due, tz) - SECOND
    on_due = decide(v, p, None, last_second_of_due_day)
    # Then nothing is overdue yet, and the engine asks to come back when it is
    assert on_due.cases == ()
    assert on_due.next_evaluation_at == last_second_of_due_day + SECOND
    # And at that instant the invoice is one day overdue and the case opens
    first_day = decide(v, p, None, last_second_of_due_day + SECOND)
    assert [c.status for c in first_day.cases] == [CaseStatus.ACTIVE]
    assert [e.days_overdue for e in first_day.explanations] == [1]


def _local_midnight_after(due: date, tz: str) -> datetime:
    """Start of due+1 in `tz`: a wall-clock midnight, converted with zoneinfo's fold=0.

    This only feeds the 'opens the next day' test; the level instants are hand-written.
    """
    nxt = due + timedelta(days=1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)


@pytest.mark.parametrize(
    ("instant", "days"),
    [
        # Berlin, invoice due 2026-01-05: day 1 starts 2026-01-05 23:00 UTC (Jan 6 00:00 CET).
        pytest.param(utc(2026, 1, 5, 22, 59, 59), 0, id="23:59:59-on-due-date"),
        pytest.param(utc(2026, 1, 5, 23), 1, id="00:00-next-day"),
        pytest.param(utc(2026, 1, 6, 22, 59, 59), 1, id="23:59:59-day-1"),
        pytest.param(utc(2026, 1, 6, 23), 2, id="00:00-day-2"),
    ],
)
def test_days_overdue_change_at_local_not_utc_midnight(instant: datetime, days: int) -> None:
    # Given an invoice due 2026-01-05 on a Berlin account, levels from 10 days on
    v = view(invoice("inv-1", "100.00", date(2026, 1, 5)))
    # When decided around Berlin midnight (UTC midnight is an hour later)
    d = decide(v, policy(), None, instant)
    # Then days overdue follow the Berlin calendar date
    assert [e.days_overdue for e in d.explanations if e.case_id] == ([days] if days else [])


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(utc(2026, 1, 14, 23), id="utc"),
        pytest.param(datetime(2026, 1, 15, 0, tzinfo=ZoneInfo("Europe/Berlin")), id="berlin"),
        pytest.param(
            datetime(2026, 1, 14, 18, tzinfo=timezone(timedelta(hours=-5))), id="fixed-offset"
        ),
    ],
)
def test_now_in_any_zone_is_the_same_instant(now: datetime) -> None:
    # Given a Berlin invoice due 2026-01-05, level at 10 days (2026-01-14 23:00 UTC)
    v = view(invoice("inv-1", "100.00", date(2026, 1, 5)))
    # When `now` is given in any zone for that same instant
    d = decide(v, policy(), None, now)
    # Then the level fires and the decision is stamped in UTC
    assert [a.level for a in d.actions] == [1]
    assert d.at == utc(2026, 1, 14, 23)
    assert d.at.utcoffset() == timedelta(0)


def test_naive_now_is_refused() -> None:
    # Given a naive datetime / When deciding / Then ValueError (no implicit zone)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(view(invoice()), policy(), None, datetime(2026, 1, 15))


@pytest.mark.parametrize(
    ("instant", "levels_by_invoice"),
    [
        # Invoice mode: inv-old due Jan 2 (level at Jan 12), inv-new due Jan 9 (level at Jan 19).
        pytest.param(utc(2026, 1, 11, 23), {"I-inv-old": 1}, id="old-invoice-reaches-level"),
        pytest.param(
            utc(2026, 1, 18, 22, 59, 59), {"I-inv-old": 1}, id="new-invoice-one-second-short"
        ),
        pytest.param(utc(2026, 1, 18, 23), {"I-inv-old": 1, "I-inv-new": 1}, id="both-reached"),
    ],
)
def test_invoice_mode_counts_from_each_invoice_due_date(
    instant: datetime, levels_by_invoice: dict[str, int]
) -> None:
    # Given two invoices a week apart in invoice mode (one case per invoice), level at 10 days
    p = policy(mode=Mode.INVOICE, levels=(level("first", 10), level("second", 30)))
    v = view(
        invoice("inv-old", "100.00", date(2026, 1, 2)),
        invoice("inv-new", "100.00", date(2026, 1, 9)),
    )
    # When decided at `instant` (Berlin local midnights in UTC)
    d = decide(v, p, None, instant)
    # Then each case's level follows its own invoice's due date
    reached = {c.case_id: c.level for c in d.cases if c.level}
    assert reached == levels_by_invoice
    assert {a.case_id for a in d.actions} == set(levels_by_invoice)


@pytest.mark.parametrize(
    ("instant", "level_no"),
    [
        # Customer mode: inv-old due Jan 2 sets the clock; its level 1 begins Jan 12 00:00 CET.
        pytest.param(utc(2026, 1, 11, 22, 59, 59), 0, id="one-second-before"),
        pytest.param(utc(2026, 1, 11, 23), 1, id="at-local-midnight"),
    ],
)
def test_customer_mode_counts_from_the_oldest_unpaid_due_date(
    instant: datetime, level_no: int
) -> None:
    # Given two invoices in customer mode: inv-new (due Jan 9) listed before inv-old (due Jan 2)
    p = policy(levels=(level("first", 10), level("second", 30)))
    v = view(
        invoice("inv-new", "100.00", date(2026, 1, 9)),
        invoice("inv-old", "100.00", date(2026, 1, 2)),
    )
    # When decided around the level instant of the oldest invoice
    d = decide(v, p, None, instant)
    # Then one case, named after the oldest invoice, at the level counted from Jan 2
    assert [(c.case_id, c.level) for c in d.cases] == [("C-inv-old", level_no)]
    assert [e.days_overdue for e in d.explanations] == [10 if level_no else 9]


@pytest.mark.parametrize(("tz", "due", "days", "expected"), LEVEL_INSTANTS[:8])
def test_evaluating_every_hour_fires_the_level_once_at_the_first_hour_of_its_day(
    tz: str, due: date, days: int, expected: datetime
) -> None:
    # Given an account evaluated every hour (applying each decision) from a day before the level
    p = policy(levels=(level("first", days), level("second", days + 20)))
    v = view(invoice("inv-1", "100.00", due), account=account(timezone=tz))
    start = expected - timedelta(hours=30)
    fired: list[datetime] = []
    entered: list[datetime] = []
    for hour in range(60):
        now = start + timedelta(hours=hour)
        d = decide(v, p, None, now)
        fired += [now for _ in d.actions]
        entered += [now for e in d.events if e.kind is EventKind.LEVEL_ENTERED]
        v = apply_decision(v, d)
    # Then the level's action fires once, at the first evaluation at or after its local midnight
    # (start is a whole hour before a whole- or half-hour midnight, so that is the midnight
    # itself or within the hour after it)
    assert len(fired) == 1
    assert expected <= fired[0] < expected + timedelta(hours=1)
    assert entered == fired
