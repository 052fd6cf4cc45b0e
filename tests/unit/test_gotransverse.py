"""The Gotransverse tier table, run day by day in a real zone with a holiday calendar.

Levels (builders.gotransverse_levels): 10 reminder (email), 30 important notice
(email), 40 avoid suspension (SMS), 45 suspension (suspend_service + email),
60 collection agency, 90 write-off. The engine runs at every local midnight, at
several times of each day and at every `next_evaluation_at` it asks for, and each
decision is applied before the next one. Expected instants are hand-written UTC.

Scenario "new-york": invoice due Friday 2026-12-04, America/New_York (EST, -05:00,
all along: DST starts 2027-03-14). US federal holidays are exclusion dates.
Day 30 is a Sunday, day 45 is Martin Luther King Jr. Day (Monday 2027-01-18).

Scenario "new-york-mlk": invoice due Friday 2027-01-15, America/New_York, the
Friday before Martin Luther King Jr. Day (Monday 2027-01-18): the holiday is a
non-business day but days keep counting through it (day 10 is Monday 2027-01-25).
Day 30 is Sunday 2027-02-14 and the next day is Washington's Birthday, so the
level's email waits two days, for Tuesday 08:00 EST. DST starts on Sunday
2027-03-14: levels 5 and 6 begin at 00:00 EDT (-04:00, 04:00 UTC) and send at
08:00 EDT (12:00 UTC).

Scenario "berlin-easter": invoice due Friday 2027-02-12, Europe/Berlin. Day 45 is
Easter Monday 2027-03-29, the day after Berlin moves to CEST (+02:00): the level
begins at 00:00 CEST and its actions wait for Tuesday 08:00 CEST. Day 30 is a Sunday.
"""

from __future__ import annotations

import heapq
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from dunning.calendars import is_send_time
from dunning.engine import apply_decision, decide
from dunning.model import ActionType, CaseStatus, EventKind
from tests.builders import account, calendar, invoice, policy, utc, view

E, S = ActionType.EMAIL, ActionType.SMS
SUSPEND, AGENCY, WRITE_OFF = (
    ActionType.SUSPEND_SERVICE,
    ActionType.COLLECTION_AGENCY,
    ActionType.WRITE_OFF,
)


US_HOLIDAYS_2026_2027 = frozenset(
    {
        date(2026, 11, 26),  # Thanksgiving
        date(2026, 12, 25),  # Christmas Day
        date(2027, 1, 1),  # New Year's Day
        date(2027, 1, 18),  # Martin Luther King Jr. Day
        date(2027, 2, 15),  # Washington's Birthday
        date(2027, 5, 31),  # Memorial Day
    }
)
BERLIN_HOLIDAYS_2027 = frozenset(
    {
        date(2027, 1, 1),  # Neujahr
        date(2027, 3, 8),  # Internationaler Frauentag (Berlin)
        date(2027, 3, 26),  # Karfreitag
        date(2027, 3, 29),  # Ostermontag
        date(2027, 5, 1),  # Tag der Arbeit
        date(2027, 5, 6),  # Christi Himmelfahrt
        date(2027, 5, 17),  # Pfingstmontag
    }
)

SCENARIOS = [
    pytest.param(
        "America/New_York",
        date(2026, 12, 4),
        US_HOLIDAYS_2026_2027,
        # (level, local midnight of due + days in UTC)
        [
            (1, utc(2026, 12, 14, 5)),  # Mon Dec 14 00:00 EST
            (2, utc(2027, 1, 3, 5)),  # Sun Jan 3
            (3, utc(2027, 1, 13, 5)),  # Wed Jan 13
            (4, utc(2027, 1, 18, 5)),  # Mon Jan 18, MLK Day
            (5, utc(2027, 2, 2, 5)),  # Tue Feb 2
            (6, utc(2027, 3, 4, 5)),  # Thu Mar 4
        ],
        # (level, action type, not_before): first sending instant, 08:00 EST = 13:00 UTC
        [
            (1, E, utc(2026, 12, 14, 13)),  # Monday morning
            (2, E, utc(2027, 1, 4, 13)),  # Sunday -> Monday Jan 4
            (3, S, utc(2027, 1, 13, 13)),
            (4, SUSPEND, utc(2027, 1, 19, 13)),  # MLK Day -> Tuesday Jan 19
            (4, E, utc(2027, 1, 19, 13)),
            (5, AGENCY, utc(2027, 2, 2, 13)),
            (6, WRITE_OFF, utc(2027, 3, 4, 13)),
        ],
        id="new-york-due-2026-12-04",
    ),
    pytest.param(
        "America/New_York",
        date(2027, 1, 15),  # Friday; Monday 2027-01-18 is MLK Day
        US_HOLIDAYS_2026_2027,
        [
            (1, utc(2027, 1, 25, 5)),  # Mon Jan 25 00:00 EST (the holiday still counts)
            (2, utc(2027, 2, 14, 5)),  # Sun Feb 14 00:00 EST
            (3, utc(2027, 2, 24, 5)),  # Wed Feb 24
            (4, utc(2027, 3, 1, 5)),  # Mon Mar 1
            (5, utc(2027, 3, 16, 4)),  # Tue Mar 16 00:00 EDT (DST since Sun Mar 14)
            (6, utc(2027, 4, 15, 4)),  # Thu Apr 15 00:00 EDT
        ],
        [
            (1, E, utc(2027, 1, 25, 13)),  # 08:00 EST
            (2, E, utc(2027, 2, 16, 13)),  # Sunday, then Washington's Birthday -> Tue Feb 16
            (3, S, utc(2027, 2, 24, 13)),
            (4, SUSPEND, utc(2027, 3, 1, 13)),
            (4, E, utc(2027, 3, 1, 13)),
            (5, AGENCY, utc(2027, 3, 16, 12)),  # 08:00 EDT
            (6, WRITE_OFF, utc(2027, 4, 15, 12)),
        ],
        id="new-york-mlk-due-2027-01-15",
    ),
    pytest.param(
        "Europe/Berlin",
        date(2027, 2, 12),
        BERLIN_HOLIDAYS_2027,
        [
            (1, utc(2027, 2, 21, 23)),  # Mon Feb 22 00:00 CET
            (2, utc(2027, 3, 13, 23)),  # Sun Mar 14 00:00 CET
            (3, utc(2027, 3, 23, 23)),  # Wed Mar 24 00:00 CET
            (4, utc(2027, 3, 28, 22)),  # Mon Mar 29 00:00 CEST, Easter Monday
            (5, utc(2027, 4, 12, 22)),  # Tue Apr 13 00:00 CEST
            (6, utc(2027, 5, 12, 22)),  # Thu May 13 00:00 CEST
        ],
        [
            (1, E, utc(2027, 2, 22, 7)),  # 08:00 CET
            (2, E, utc(2027, 3, 15, 7)),  # Sunday -> Monday 08:00 CET
            (3, S, utc(2027, 3, 24, 7)),
            (4, SUSPEND, utc(2027, 3, 30, 6)),  # Easter Monday -> Tuesday 08:00 CEST
            (4, E, utc(2027, 3, 30, 6)),
            (5, AGENCY, utc(2027, 4, 13, 6)),  # 08:00 CEST
            (6, WRITE_OFF, utc(2027, 5, 13, 6)),
        ],
        id="berlin-easter-due-2027-02-12",
    ),
]

# Local times of day at which the engine runs, on top of midnight and the engine's own wakes.
TIMES_OF_DAY = [
    time(0, 0),
    time(7, 59, 59),
    time(8, 0),
    time(12, 0),
    time(19, 59, 59),
    time(20, 0),
    time(23, 59, 59),
]


@pytest.mark.parametrize(("tz", "due", "holidays", "levels", "actions"), SCENARIOS)
def test_gotransverse_table_day_by_day(
    tz: str,
    due: date,
    holidays: frozenset[date],
    levels: list[tuple[int, datetime]],
    actions: list[tuple[int, ActionType, datetime]],
) -> None:
    # Given the Gotransverse policy, a Mon-Fri 08:00-20:00 calendar with the public holidays,
    # and one 250.00 invoice due on a Friday, for an account in `tz`
    zone = ZoneInfo(tz)
    cal = calendar(exclusion_dates=holidays)
    p = policy()
    v = view(
        invoice("inv-1", "250.00", due, currency="USD" if "New_York" in tz else "EUR"),
        account=account(timezone=tz, currency="USD" if "New_York" in tz else "EUR"),
    )
    planned = [
        datetime.combine(due + timedelta(days=n), t, zone).astimezone(UTC)
        for n in range(0, 101)
        for t in TIMES_OF_DAY
    ]
    heapq.heapify(planned)
    seen: set[datetime] = set()
    entered: list[tuple[int, datetime]] = []
    scheduled: list[tuple[int, ActionType, datetime]] = []
    action_ids: list[str] = []
    promised: datetime | None = None

    # When the engine runs at every planned instant and every instant it asks for
    while planned:
        now = heapq.heappop(planned)
        if now in seen:
            continue
        seen.add(now)
        d = decide(v, p, cal, now)
        if d.changed and len(seen) > 1:
            # (nothing changes before the instant the previous decision asked to be woken at;
            # None would have meant that only new data could change anything)
            assert promised is not None and now >= promised, (now, promised)
        promised = d.next_evaluation_at
        entered += [(e.data["level"], now) for e in d.events if e.kind is EventKind.LEVEL_ENTERED]
        scheduled += [(a.level, a.type, a.not_before) for a in d.actions]
        action_ids += [a.action_id for a in d.actions]
        if d.next_evaluation_at is not None and d.next_evaluation_at not in seen:
            heapq.heappush(planned, d.next_evaluation_at)
        v = apply_decision(v, d)

    # Then each level is entered exactly once, at the local midnight of its day
    assert entered == levels
    # And each action is scheduled once, for the first sending instant of the calendar
    assert scheduled == actions
    assert all(is_send_time(cal, zone, nb) for _, _, nb in scheduled)
    assert all(nb.astimezone(zone).date() not in holidays for _, _, nb in scheduled)
    assert len(action_ids) == len(set(action_ids))
    # And the case ends at level 6, each level entered once, service suspended by level 4
    (case,) = v.cases
    assert (case.status, case.level) == (CaseStatus.ACTIVE, 6)
    assert case.entries == dict.fromkeys(range(1, 7), 1)
    assert case.service_suspended_by == 4
    assert case.case_id == "C-inv-1"


@pytest.mark.parametrize(("tz", "due", "holidays", "levels", "actions"), SCENARIOS)
def test_gotransverse_levels_not_one_second_early(
    tz: str,
    due: date,
    holidays: frozenset[date],
    levels: list[tuple[int, datetime]],
    actions: list[tuple[int, ActionType, datetime]],
) -> None:
    # Given the account state just before each level's local midnight (built by the engine)
    cal = calendar(exclusion_dates=holidays)
    p = policy()
    currency = "USD" if "New_York" in tz else "EUR"
    v = view(
        invoice("inv-1", "250.00", due, currency=currency),
        account=account(timezone=tz, currency=currency),
    )
    for level_no, at in levels:
        # When the engine decides one second before the level's day begins
        early = decide(v, p, cal, at - timedelta(seconds=1))
        # Then the level is not entered, and the engine asks to come back exactly then
        assert [a.level for a in early.actions] == []
        assert early.next_evaluation_at == at
        v = apply_decision(v, early)
        # When it decides at that instant / Then the level is entered
        on_time = decide(v, p, cal, at)
        assert [c.level for c in on_time.cases] == [level_no]
        v = apply_decision(v, on_time)
        # And deciding again at the first sending instant sends nothing new
        first_send = min(nb for lv, _, nb in actions if lv == level_no)
        assert decide(v, p, cal, first_send).actions == ()
