"""Rules 6 and 7: calendars move `not_before`, never the level; contact caps defer.

Berlin account (CET +01:00, CEST +02:00 from 2026-03-29). The invoice is due
Friday 2026-01-02. Calendar: Monday to Friday, 08:00-20:00 local, unless said.
Expected instants are hand-written UTC (08:00 CET = 07:00 UTC, 08:00 CEST = 06:00 UTC).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning.calendars import is_send_time, zone
from dunning.engine import apply_decision, decide
from dunning.ledger import apply_payment
from dunning.model import (
    ActionSpec,
    ActionType,
    CaseStatus,
    Contact,
    ContactCap,
    Decision,
    EventKind,
    Payment,
    Policy,
)
from tests.builders import calendar, email, invoice, level, policy, utc, view

DUE = date(2026, 1, 2)  # Friday
BERLIN = zone("Europe/Berlin")


def codes(d: Decision) -> list[str]:
    return [r.code for e in d.explanations for r in e.reasons]


def two_levels(days: int) -> Policy:
    return policy(levels=(level("first", days), level("second", days + 30)))


CALENDAR_CASES = [
    # level days, calendar overrides, evaluation instant, expected not_before
    pytest.param(10, {}, utc(2026, 1, 11, 23), utc(2026, 1, 12, 7),
                 id="monday-midnight-waits-for-0800"),
    pytest.param(10, {}, utc(2026, 1, 12, 12), utc(2026, 1, 12, 12),
                 id="monday-midday-goes-at-once"),
    pytest.param(10, {}, utc(2026, 1, 12, 18, 59, 59), utc(2026, 1, 12, 18, 59, 59),
                 id="monday-19:59:59-goes"),
    pytest.param(10, {}, utc(2026, 1, 12, 19), utc(2026, 1, 13, 7),
                 id="monday-20:00-quiet-hours-tuesday"),
    pytest.param(7, {}, utc(2026, 1, 8, 23), utc(2026, 1, 9, 7), id="friday-level"),
    pytest.param(8, {}, utc(2026, 1, 9, 23), utc(2026, 1, 12, 7), id="saturday-to-monday"),
    pytest.param(9, {}, utc(2026, 1, 10, 23), utc(2026, 1, 12, 7), id="sunday-to-monday"),
    pytest.param(10, {"exclusion_dates": frozenset({date(2026, 1, 12)})}, utc(2026, 1, 11, 23),
                 utc(2026, 1, 13, 7), id="excluded-monday-to-tuesday"),
    pytest.param(8, {"exclusion_dates": frozenset({date(2026, 1, 12), date(2026, 1, 13)})},
                 utc(2026, 1, 9, 23), utc(2026, 1, 14, 7), id="weekend-and-two-holidays"),
    pytest.param(8, {"business_days": frozenset({1, 2, 3, 4, 5, 6})}, utc(2026, 1, 9, 23),
                 utc(2026, 1, 10, 7), id="saturday-is-a-business-day"),
    pytest.param(10, {"send_from": time(9, 30), "send_until": time(17)}, utc(2026, 1, 11, 23),
                 utc(2026, 1, 12, 8, 30), id="custom-window-0930"),
    # Jan 2 + 86 days = Sunday 2026-03-29, the day Berlin springs forward.
    pytest.param(86, {}, utc(2026, 3, 28, 23), utc(2026, 3, 30, 6), id="dst-sunday-to-cest"),
]  # fmt: skip


@pytest.mark.parametrize(("days", "cal_kw", "now", "not_before"), CALENDAR_CASES)
def test_actions_wait_for_the_calendar_but_the_level_is_entered_on_its_day(
    days: int, cal_kw: dict[str, Any], now: datetime, not_before: datetime
) -> None:
    # Given a first level at `days` and a calendar, evaluated on the level's day
    cal = calendar(**cal_kw)
    v = view(invoice("i1", "100.00", DUE))
    # When the engine decides
    d = decide(v, two_levels(days), cal, now)
    # Then the level is entered now (days keep counting) ...
    assert [(c.level, c.entered_level_at) for c in d.cases] == [(1, now)]
    assert [e.at for e in d.events if e.kind is EventKind.LEVEL_ENTERED] == [now]
    # ... and its action waits for the first sending instant
    assert [a.not_before for a in d.actions] == [not_before]
    assert all(is_send_time(cal, BERLIN, a.not_before) for a in d.actions)
    assert ("deferred" in codes(d)) is (not_before > now)
    # And the engine does not come back for a deferred action (the outbox sweep
    # releases it): it comes back on the next level's day
    assert d.next_evaluation_at is not None
    assert d.next_evaluation_at > now + timedelta(days=29)


def test_levels_keep_counting_over_a_long_weekend() -> None:
    # Given levels on Saturday (day 8), Sunday (day 9) and excluded Monday (day 10),
    # and the next sending instant Tuesday 2026-01-13 08:00 CET
    p = policy(levels=(level("sat", 8), level("sun", 9), level("mon", 10), level("last", 40)))
    cal = calendar(exclusion_dates=frozenset({date(2026, 1, 12)}))
    v = view(invoice("i1", "100.00", DUE))
    entered: list[tuple[datetime, int, datetime]] = []
    # When the engine runs at each local midnight from Saturday to Tuesday
    for now in (utc(2026, 1, 9, 23), utc(2026, 1, 10, 23), utc(2026, 1, 11, 23)):
        d = decide(v, p, cal, now)
        entered += [(now, a.level, a.not_before) for a in d.actions]
        v = apply_decision(v, d)
    # Then each level is entered on its own day and every action waits for Tuesday 08:00
    tuesday = utc(2026, 1, 13, 7)
    assert entered == [
        (utc(2026, 1, 9, 23), 1, tuesday),
        (utc(2026, 1, 10, 23), 2, tuesday),
        (utc(2026, 1, 11, 23), 3, tuesday),
    ]


@pytest.mark.parametrize(
    ("paid_at", "now"),
    [
        # Saturday 2026-02-21 23:30 CET, Sunday 03:00 CET, Monday 2026-02-23 06:00 CET.
        pytest.param(utc(2026, 2, 21, 22), utc(2026, 2, 21, 22, 30), id="saturday-night"),
        pytest.param(utc(2026, 2, 22, 1), utc(2026, 2, 22, 2), id="sunday-small-hours"),
        pytest.param(utc(2026, 2, 23, 4), utc(2026, 2, 23, 5), id="monday-before-0800"),
    ],
)
def test_reinstatement_goes_out_at_once(paid_at: datetime, now: datetime) -> None:
    # Given a case at level 4 of the Gotransverse table (service suspended), with a calendar
    cal = calendar()
    p = policy()
    v = view(invoice("i1", "100.00", DUE))
    v = apply_decision(v, decide(v, p, cal, utc(2026, 2, 16, 12)))
    assert v.cases[0].service_suspended_by == 4
    # When the customer pays everything during quiet hours
    payment = Payment(
        payment_id="p1",
        account_id="acc-1",
        currency="EUR",
        amount=Decimal("100.00"),
        received_at=paid_at,
    )
    v, _ = apply_payment(v, payment)
    d = decide(v, p, cal, now)
    # Then the case recovers and restore_service goes now, not at the next sending instant
    assert [c.status for c in d.cases] == [CaseStatus.RECOVERED]
    assert [(a.type, a.level, a.not_before) for a in d.actions] == [
        (ActionType.RESTORE_SERVICE, 0, now)
    ]


# --------------------------------------------------------------------- contact caps

MONDAY_NOON = utc(2026, 1, 12, 12)  # day 10, 13:00 CET, inside the sending window
EMAIL_CAP = ContactCap(channel=ActionType.EMAIL, max_messages=2, window_days=7)


def email_at(*args: int) -> Contact:
    return Contact(channel=ActionType.EMAIL, at=utc(*args))


CAP_CASES = [
    # contact history, expected not_before of the level-1 email
    pytest.param((), MONDAY_NOON, id="no-history"),
    pytest.param((email_at(2026, 1, 9, 10),), MONDAY_NOON, id="one-of-two-used"),
    pytest.param((email_at(2026, 1, 6, 10), email_at(2026, 1, 9, 10)), utc(2026, 1, 13, 10),
                 id="cap-full-until-oldest-plus-7-days"),
    pytest.param((email_at(2026, 1, 5, 11, 59), email_at(2026, 1, 9, 10)), MONDAY_NOON,
                 id="oldest-outside-the-window"),
    pytest.param((email_at(2026, 1, 7, 18, 30), email_at(2026, 1, 9, 10)),
                 utc(2026, 1, 14, 18, 30), id="window-ends-at-19:30-local"),
    pytest.param((email_at(2026, 1, 7, 19, 30), email_at(2026, 1, 9, 10)),
                 utc(2026, 1, 15, 7), id="window-ends-in-quiet-hours"),
    pytest.param((email_at(2026, 1, 10, 10), email_at(2026, 1, 11, 10)), utc(2026, 1, 19, 7),
                 id="window-ends-on-saturday"),
    pytest.param((Contact(channel=ActionType.SMS, at=utc(2026, 1, 9, 10)),
                  Contact(channel=ActionType.SMS, at=utc(2026, 1, 10, 10))), MONDAY_NOON,
                 id="other-channel-does-not-count"),
]  # fmt: skip


@pytest.mark.parametrize(("contacts", "not_before"), CAP_CASES)
def test_contact_cap_defers_past_the_window_never_drops(
    contacts: tuple[Contact, ...], not_before: datetime
) -> None:
    # Given at most 2 emails per rolling 7 days and a contact history
    p = policy(levels=(level("first", 10), level("second", 40)), contact_caps=(EMAIL_CAP,))
    v = view(invoice("i1", "100.00", DUE), contacts=contacts)
    # When level 1 (one email) is entered on Monday at noon
    d = decide(v, p, calendar(), MONDAY_NOON)
    # Then the email is scheduled (never dropped), no earlier than the cap allows
    assert [(a.type, a.not_before) for a in d.actions] == [(ActionType.EMAIL, not_before)]
    # And the new contact is recorded for the next caps
    assert d.contacts is not None
    assert Contact(channel=ActionType.EMAIL, at=not_before) in d.contacts
    if not_before > MONDAY_NOON:
        assert "deferred" in codes(d)
    # And the account is not woken for it: the outbox sweep releases it
    assert d.next_evaluation_at is not None
    assert d.next_evaluation_at > not_before


def test_two_emails_of_one_level_under_a_cap_of_one_are_a_window_apart() -> None:
    # Given one email per 7 days and a level with two emails
    cap = ContactCap(channel=ActionType.EMAIL, max_messages=1, window_days=7)
    p = policy(levels=(level("first", 10, email("a"), email("b")),), contact_caps=(cap,))
    v = view(invoice("i1", "100.00", DUE))
    # When the level is entered on Monday at noon
    d = decide(v, p, calendar(), MONDAY_NOON)
    # Then both are scheduled, the second 7 days after the first, in their level order
    assert [(a.template, a.not_before) for a in d.actions] == [
        ("a", MONDAY_NOON),
        ("b", MONDAY_NOON + timedelta(days=7)),
    ]


def test_a_contact_is_never_scheduled_before_one_already_scheduled() -> None:
    # Given a generous cap and an email already scheduled for Wednesday 10:00 UTC
    cap = ContactCap(channel=ActionType.EMAIL, max_messages=5, window_days=7)
    p = policy(levels=(level("first", 10), level("second", 40)), contact_caps=(cap,))
    v = view(invoice("i1", "100.00", DUE), contacts=(email_at(2026, 1, 14, 10),))
    # When the level-1 email is scheduled on Monday noon
    d = decide(v, p, calendar(), MONDAY_NOON)
    # Then it does not overtake the scheduled one
    assert [a.not_before for a in d.actions] == [utc(2026, 1, 14, 10)]


def test_caps_do_not_apply_to_non_contact_actions() -> None:
    # Given a cap of one email per week, full, and a level with a webhook and a suspension
    cap = ContactCap(channel=ActionType.EMAIL, max_messages=1, window_days=7)
    actions = (
        ActionSpec(type=ActionType.WEBHOOK, target="crm"),
        ActionSpec(type=ActionType.SUSPEND_SERVICE, target="provisioning"),
    )
    p = policy(levels=(level("first", 10, *actions),), contact_caps=(cap,))
    v = view(invoice("i1", "100.00", DUE), contacts=(email_at(2026, 1, 11, 10),))
    # When the level is entered on Monday noon
    d = decide(v, p, calendar(), MONDAY_NOON)
    # Then both go at once
    assert [a.not_before for a in d.actions] == [MONDAY_NOON, MONDAY_NOON]
