"""Hypothesis strategies for the dunning engine's inputs.

Everything is built through the pydantic models, so an invalid combination
cannot be generated: a strategy that could produce one would fail loudly with
a `ValidationError` instead of being silently filtered.

Amounts are drawn as integers of minor units and scaled to the currency (JPY
has none, EUR two, KWD three), so every amount is valid for its currency.
Dates cluster around 2026-2028, with leap days and the days on which the
generated zones change their UTC offset drawn more often than chance would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from dunning.engine import can_accept_promise
from dunning.ledger import apply_payment
from dunning.model import (
    Account,
    AccountView,
    Action,
    ActionSpec,
    ActionType,
    Calendar,
    CaseStatus,
    CatchUp,
    ContactCap,
    Decision,
    Invoice,
    InvoiceStatus,
    Level,
    Mode,
    Payment,
    Policy,
    Suspension,
    SuspensionEnd,
    SuspensionKind,
    SuspensionProfile,
)
from dunning.money import MINOR_UNITS, minor_unit

# ----------------------------------------------------------------------- settings

# `DUNNING_HYPOTHESIS_SCALE=10 pytest tests/unit` runs ten times more examples.
_SCALE = float(os.environ.get("DUNNING_HYPOTHESIS_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, round(n * _SCALE))


# Building pydantic models makes the first examples slow; the engine is pure, so
# a deadline would only measure the machine's load.
PROPERTY_SETTINGS = settings(
    max_examples=examples(100),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WALK_SETTINGS = settings(PROPERTY_SETTINGS, max_examples=examples(120))
# A passing run of the state machine costs about 40 ms per example of 40 steps
# (2 cores, 2026-11): 200 examples stay well under the 60 s budget. A failing
# run spends most of its time shrinking; one bug at a time keeps that short.
STATEFUL_SETTINGS = settings(
    PROPERTY_SETTINGS,
    max_examples=examples(200),
    stateful_step_count=40,
    report_multiple_bugs=False,
)

# ------------------------------------------------------------------ vocabulary

ACCOUNT_ID = "acc-1"
CURRENCIES = ("EUR", "USD", "JPY", "KWD")
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Chatham",  # +12:45 / +13:45, changes at 02:45 local
    "America/Santiago",  # changes at local midnight: some days have no 00:00
)
INVOICE_TYPES = ("standard", "usage")
FIRST_DAY = date(2026, 1, 1)
LAST_DAY = date(2028, 12, 31)
ONE_DAY = timedelta(days=1)


def units(currency: str, n: int) -> Decimal:
    """`n` minor units of `currency` as an exact amount (`units("EUR", 1234)` is 12.34)."""
    return Decimal(n).scaleb(-MINOR_UNITS[currency])


def minor_units(currency: str, amount: Decimal) -> int:
    return int(amount.scaleb(MINOR_UNITS[currency]))


@cache
def zone_change_days(name: str) -> tuple[date, ...]:
    """The days of 2026-2028 on which zone `name` changes its UTC offset (local dates;
    a change at local midnight, as in Santiago, belongs to the day that starts late)."""
    tz = ZoneInfo(name)
    found: set[date] = set()
    day = FIRST_DAY
    before = datetime.combine(day, time(12), tz).utcoffset()
    while day <= LAST_DAY:
        after = datetime.combine(day + ONE_DAY, time(12), tz).utcoffset()
        if after != before:
            found.update({day, day + ONE_DAY})
        before = after
        day += ONE_DAY
    return tuple(sorted(found))


@cache
def offset_change_days() -> tuple[date, ...]:
    """Days (and the day either side) on which one of `ZONES` changes its UTC offset."""
    found: set[date] = set()
    for name in ZONES:
        for day in zone_change_days(name):
            found.update({day - ONE_DAY, day, day + ONE_DAY})
    return tuple(sorted(found))


LEAP_DAYS = (date(2028, 2, 28), date(2028, 2, 29), date(2028, 3, 1))
YEAR_ENDS = (date(2026, 12, 31), date(2027, 1, 1), date(2027, 12, 31), date(2028, 1, 1))


def special_days() -> st.SearchStrategy[date]:
    return st.sampled_from((*LEAP_DAYS, *YEAR_ENDS, *offset_change_days()))


def days_2026_2028() -> st.SearchStrategy[date]:
    """Any day of 2026-2028, with leap and DST-change days drawn often."""
    return st.one_of(st.dates(FIRST_DAY, LAST_DAY), special_days())


def local_instant(day: date, tz: ZoneInfo, seconds: int) -> datetime:
    """`seconds` after the start of `day` in `tz`, as an aware UTC datetime.

    Computed here without the package's calendar helpers: the first instant
    whose local date is `day` is found by stepping back from local noon.
    """
    noon = datetime.combine(day, time(12), tz).astimezone(UTC)
    start = noon - timedelta(hours=12)
    # A day may be 23, 24 or 25 hours long: move to the first instant of `day`.
    while start.astimezone(tz).date() >= day:
        start -= timedelta(minutes=15)
    while start.astimezone(tz).date() < day:
        start += timedelta(minutes=15)
    return start + timedelta(seconds=seconds)


def instants_around(
    day: date, tz: ZoneInfo, *, before: int = 30, after: int = 150
) -> st.SearchStrategy[datetime]:
    """Aware UTC instants from `before` days before to `after` days after `day` (local)."""
    offsets = st.integers(-before, after)
    if after > 0:  # mostly after `day`: that is where dunning happens
        later = st.integers(1, after)
        offsets = st.one_of(later, later, later, st.integers(-before, 0))
    return st.builds(
        lambda offset, seconds: local_instant(day + timedelta(days=offset), tz, seconds),
        offsets,
        st.one_of(st.just(0), st.integers(0, 86_399)),
    )


@st.composite
def clock_change_instants(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone that changes its clocks and an instant on (or next to) a change day,
    mostly in the small hours."""
    name = draw(st.sampled_from([z for z in ZONES if zone_change_days(z)]))
    day = draw(st.sampled_from(zone_change_days(name)))
    seconds = draw(st.one_of(st.integers(0, 5 * 3600), st.integers(0, 86_399)))
    return name, local_instant(day, ZoneInfo(name), seconds)


def instants() -> st.SearchStrategy[datetime]:
    """Any aware UTC instant from late 2025 to early 2029."""
    return st.datetimes(
        min_value=datetime(2025, 10, 1),
        max_value=datetime(2029, 3, 31),
        timezones=st.just(UTC),
    )


# ------------------------------------------------------------------------ accounts


@st.composite
def accounts(
    draw: st.DrawFn,
    currency: st.SearchStrategy[str] | None = None,
    timezone: st.SearchStrategy[str] | None = None,
) -> Account:
    return Account(
        account_id=ACCOUNT_ID,
        currency=draw(st.sampled_from(CURRENCIES) if currency is None else currency),
        timezone=draw(st.sampled_from(ZONES) if timezone is None else timezone),
        locale=draw(st.sampled_from(("en", "de", "fr_FR", "ja"))),
        email="customer@example.com",
        phone="+4915112345678",
    )


# ------------------------------------------------------------------------ invoices


@st.composite
def invoices(
    draw: st.DrawFn,
    currency: str,
    invoice_id: str,
    due: st.SearchStrategy[date] | None = None,
    *,
    statuses: bool = True,
    foreign: bool = True,
) -> Invoice:
    """One invoice; open amounts may be partial; a few are paid, disputed or foreign."""
    if foreign and draw(st.integers(0, 19)) == 0:
        currency = draw(st.sampled_from([c for c in CURRENCIES if c != currency]))
    amount = draw(st.integers(1, 500_000))
    open_amount = draw(st.one_of(st.just(amount), st.integers(1, amount)))
    status = InvoiceStatus.OPEN
    if statuses:
        status = draw(
            st.sampled_from(
                (InvoiceStatus.OPEN,) * 8 + (InvoiceStatus.PAID, InvoiceStatus.DISPUTED)
            )
        )
    if status is InvoiceStatus.PAID:
        open_amount = 0
    due_date = draw(days_2026_2028() if due is None else due)
    return Invoice(
        invoice_id=invoice_id,
        account_id=ACCOUNT_ID,
        type=draw(st.sampled_from(INVOICE_TYPES[:1] * 4 + INVOICE_TYPES[1:])),
        currency=currency,
        amount=units(currency, amount),
        open_amount=units(currency, open_amount),
        issue_date=due_date - timedelta(days=draw(st.integers(0, 45))),
        due_date=due_date,
        status=status,
    )


@st.composite
def invoice_sets(
    draw: st.DrawFn, currency: str, *, max_size: int = 5, statuses: bool = True
) -> tuple[Invoice, ...]:
    """1..max_size invoices with due dates clustered around one day."""
    first = draw(days_2026_2028())
    near = st.integers(-60, 60).map(lambda d: first + timedelta(days=d))
    n = draw(st.integers(1, max_size))
    return tuple(
        draw(invoices(currency, f"inv-{i + 1}", near if i else st.just(first), statuses=statuses))
        for i in range(n)
    )


# ------------------------------------------------------------------------ policies

NON_MESSAGE_ACTIONS = (
    ActionType.WEBHOOK,
    ActionType.CALL,
    ActionType.SUSPEND_SERVICE,
    ActionType.DEACTIVATE,
    ActionType.COLLECTION_AGENCY,
    ActionType.WRITE_OFF,
    ActionType.MANUAL_TASK,
)


@st.composite
def action_specs(draw: st.DrawFn, *, approvals: bool = True) -> ActionSpec:
    kind = draw(st.sampled_from((ActionType.EMAIL, ActionType.SMS, *NON_MESSAGE_ACTIONS)))
    template: str | None = draw(st.sampled_from(("reminder", "final_notice", "suspension.v2")))
    if kind not in (ActionType.EMAIL, ActionType.SMS) and draw(st.booleans()):
        template = None
    target = "provisioning" if kind in NON_MESSAGE_ACTIONS and draw(st.booleans()) else None
    return ActionSpec(
        type=kind,
        template=template,
        target=target,
        requires_approval=approvals and draw(st.integers(0, 9)) == 0,
    )


@st.composite
def levels(
    draw: st.DrawFn, currency: str, days: int, number: int, *, approvals: bool = True
) -> Level:
    min_amount: dict[str, Decimal] = {}
    if draw(st.integers(0, 3)) == 0:
        min_amount[currency] = units(currency, draw(st.integers(0, 300_000)))
    return Level(
        name=f"level {number}",
        days=days,
        min_amount=min_amount,
        actions=tuple(draw(st.lists(action_specs(approvals=approvals), max_size=3))),
        skip_reinstatement=draw(st.booleans()),
    )


@st.composite
def promise_profiles(draw: st.DrawFn) -> SuspensionProfile:
    default_days = draw(st.integers(1, 30))
    return SuspensionProfile(
        kind=SuspensionKind.PROMISE_TO_PAY,
        default_days=default_days,
        max_days=draw(st.integers(default_days, 60)),
        on_end=draw(st.sampled_from(SuspensionEnd)),
        grace_days=draw(st.integers(0, 5)),
        max_broken_promises=draw(st.none() | st.integers(0, 3)),
    )


@st.composite
def policies(
    draw: st.DrawFn,
    currency: str,
    *,
    modes: tuple[Mode, ...] = (Mode.CUSTOMER, Mode.INVOICE),
    approvals: bool = True,
    pre_due: bool = True,
) -> Policy:
    """A valid policy with 1-8 levels for an account in `currency`."""
    count = draw(st.integers(1, 8))
    low = -20 if pre_due else 1
    days = sorted(draw(st.lists(st.integers(low, 90), min_size=count, max_size=count, unique=True)))
    # Entry thresholds mostly well below invoice amounts, so that cases open.
    entry = draw(st.one_of(st.integers(1, 2_000), st.integers(1, 100_000)))
    exit_thresholds: dict[str, Decimal] = {}
    if draw(st.booleans()):
        # Never 0: with an exit threshold of 0 nothing could ever recover.
        exit_thresholds[currency] = units(currency, draw(st.integers(1, entry)))
    thresholds = {currency: units(currency, entry)}
    other = draw(st.sampled_from(CURRENCIES))
    thresholds.setdefault(other, units(other, draw(st.integers(0, 100_000))))
    catch_up = draw(st.sampled_from(CatchUp))
    min_gap = draw(st.integers(1, 10) if catch_up is CatchUp.SEQUENTIAL else st.integers(0, 3))
    caps = draw(
        st.lists(
            st.builds(
                ContactCap,
                channel=st.sampled_from((ActionType.EMAIL, ActionType.SMS, ActionType.CALL)),
                max_messages=st.integers(1, 3),
                window_days=st.integers(1, 14),
            ),
            max_size=3,
            unique_by=lambda cap: cap.channel,
        )
    )
    extra: dict[str, object] = {}
    if draw(st.booleans()):
        extra["suspension_profiles"] = {SuspensionKind.PROMISE_TO_PAY: draw(promise_profiles())}
    if draw(st.integers(0, 3)) == 0:
        extra["reinstatement_actions"] = tuple(
            draw(st.lists(action_specs(approvals=approvals), min_size=1, max_size=2))
        )
    return Policy(
        policy_id="pol-1",
        name="generated",
        mode=draw(st.sampled_from(modes)),
        invoice_types=draw(st.sampled_from((frozenset(), frozenset({"standard"})))),
        thresholds=thresholds,
        exit_thresholds=exit_thresholds,
        levels=tuple(
            draw(levels(currency, d, i + 1, approvals=approvals)) for i, d in enumerate(days)
        ),
        catch_up=catch_up,
        min_gap_days=min_gap,
        contact_caps=tuple(caps),
        **extra,  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------- calendars


@st.composite
def sending_windows(draw: st.DrawFn, *, night: bool = False) -> tuple[time, time]:
    """A sending window at minute resolution; with `night`, its bounds fall mostly
    in the small hours, where clocks change."""
    if not night and draw(st.booleans()):
        return time(8, 0), time(20, 0)
    minute = st.integers(0, 24 * 60 - 1)
    if night:
        minute = st.one_of(st.integers(0, 5 * 60), minute)
    start, end = sorted(draw(st.lists(minute, min_size=2, max_size=2, unique=True)))
    return time(*divmod(start, 60)), time(*divmod(end, 60))


@st.composite
def calendars(draw: st.DrawFn, *, night: bool = False) -> Calendar:
    send_from, send_until = draw(sending_windows(night=night))
    return Calendar(
        calendar_id="cal-1",
        business_days=frozenset(draw(st.sets(st.integers(1, 7), min_size=1))),
        exclusion_dates=frozenset(draw(st.sets(days_2026_2028(), max_size=8))),
        send_from=send_from,
        send_until=send_until,
    )


# ----------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """One account with its invoices, its policy and calendar, and an instant."""

    view: AccountView
    policy: Policy
    calendar: Calendar
    now: datetime

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.view.account.timezone)

    @property
    def currency(self) -> str:
        return self.view.account.currency


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    modes: tuple[Mode, ...] = (Mode.CUSTOMER, Mode.INVOICE),
    approvals: bool = True,
    max_invoices: int = 5,
) -> Scenario:
    account = draw(accounts())
    policy = draw(policies(account.currency, modes=modes, approvals=approvals))
    invs = draw(invoice_sets(account.currency, max_size=max_invoices))
    anchor = draw(st.sampled_from(sorted({inv.due_date for inv in invs})))
    now = draw(instants_around(anchor, ZoneInfo(account.timezone), before=30, after=120))
    return Scenario(
        view=AccountView(account=account, invoices=invs),
        policy=policy,
        calendar=draw(calendars()),
        now=now,
    )


# ---------------------------------------------------------------- clock walks


@dataclass(frozen=True)
class Advance:
    """Move the clock forward."""

    by: timedelta


@dataclass(frozen=True)
class Pay:
    """Pay `permille`/1000 of what is open (at least one minor unit)."""

    permille: int


@dataclass(frozen=True)
class Reverse:
    """Reverse the n-th payment not yet reversed (modulo their number)."""

    n: int


@dataclass(frozen=True)
class Promise:
    """The customer promises `permille`/1000 of the open case's balance in `in_days`."""

    permille: int
    in_days: int


Step = Advance | Pay | Reverse | Promise


def advances() -> st.SearchStrategy[Advance]:
    return st.one_of(
        st.integers(1, 72).map(lambda h: Advance(timedelta(hours=h))),
        st.integers(1, 20).map(lambda d: Advance(timedelta(days=d))),
        st.integers(1, 3_600).map(lambda s: Advance(timedelta(seconds=s))),
    )


def walk_steps(*, payments: bool, max_size: int = 25) -> st.SearchStrategy[list[Step]]:
    """A sequence of clock moves; with `payments`, also payments, reversals and
    promises to pay (what collectors and the billing system do between runs)."""
    step: st.SearchStrategy[Step] = advances()
    if payments:
        # Half the steps move the clock, so that cases live long enough to climb.
        step = st.one_of(
            advances(),
            advances(),
            st.integers(1, 1200).map(lambda p: Pay(min(p, 1000))),  # about 1 in 6 pays all
            st.integers(0, 10).map(Reverse),
            st.builds(Promise, st.integers(1, 1000), st.integers(0, 20)),
        )
    return st.lists(step, min_size=1, max_size=max_size)


# ------------------------------------------------- helpers shared by the tests


def pay(
    view: AccountView, at: datetime, payment_id: str, permille: int = 1000, *, named: bool = False
) -> tuple[AccountView, Payment | None]:
    """Pay a share of what is open in the account's currency (all of it at 1000)."""
    currency = view.account.currency
    payable = [
        inv
        for inv in view.invoices
        if inv.currency == currency
        and inv.open_amount > 0
        and (named or inv.status is InvoiceStatus.OPEN)
    ]
    open_total = sum((inv.open_amount for inv in payable), Decimal(0))
    if open_total == 0:
        return view, None
    share = (open_total * permille / 1000).quantize(minor_unit(currency), rounding=ROUND_DOWN)
    payment = Payment(
        payment_id=payment_id,
        account_id=view.account.account_id,
        currency=currency,
        amount=max(share, minor_unit(currency)),
        received_at=at,
        invoice_ids=tuple(inv.invoice_id for inv in payable) if named else (),
    )
    return apply_payment(view, payment)


def promise_to_pay(
    view: AccountView,
    policy: Policy,
    at: datetime,
    suspension_id: str,
    permille: int,
    in_days: int,
) -> AccountView:
    """Record a promise on the first running case, as a collector would through the
    API: only on an active case that `can_accept_promise` allows. Else no change."""
    case = next((c for c in view.cases if c.status is CaseStatus.ACTIVE), None)
    if case is None or not can_accept_promise(case, policy)[0]:
        return view
    currency = view.account.currency
    ids = set(case.invoice_ids)
    owed = sum((i.open_amount for i in view.invoices if i.invoice_id in ids), Decimal(0))
    amount = (owed * permille / 1000).quantize(minor_unit(currency), rounding=ROUND_DOWN)
    profile = policy.profile(SuspensionKind.PROMISE_TO_PAY)
    tz = ZoneInfo(view.account.timezone)
    promise = Suspension(
        suspension_id=suspension_id,
        account_id=case.account_id,
        case_id=case.case_id,
        kind=SuspensionKind.PROMISE_TO_PAY,
        starts_at=at,
        ends_at=at + timedelta(days=profile.max_days),
        currency=currency,
        promised_amount=max(amount, minor_unit(currency)),
        promised_date=at.astimezone(tz).date() + timedelta(days=in_days),
    )
    held = case.model_copy(update={"status": CaseStatus.SUSPENDED, "suspension_id": suspension_id})
    return view.model_copy(
        update={
            "cases": tuple(held if c.case_id == case.case_id else c for c in view.cases),
            "suspensions": (*view.suspensions, promise),
        }
    )


def content(action: Action) -> tuple[object, ...]:
    """What an action does, whatever the instant it was scheduled at."""
    return (
        action.account_id,
        action.case_id,
        action.type,
        action.level,
        action.entry,
        action.index,
        action.template,
        action.target,
    )


def in_sending_hours(calendar: Calendar, tz: ZoneInfo, instant: datetime) -> bool:
    """The calendar rule read on the local wall clock, independently of the package."""
    local = instant.astimezone(tz)
    return (
        local.isoweekday() in calendar.business_days
        and local.date() not in calendar.exclusion_dates
        and calendar.send_from <= local.time().replace(tzinfo=None) < calendar.send_until
    )


def what_changed(decision: Decision) -> str:
    parts = [f"actions={[(a.case_id, a.level, a.type.value) for a in decision.actions]}"]
    parts.append(f"cases={[(c.case_id, c.status.value, c.level) for c in decision.cases]}")
    parts.append(f"approvals={[a.approval_id for a in decision.approvals]}")
    parts.append(f"suspensions={[(x.suspension_id, x.status.value) for x in decision.suspensions]}")
    parts.append(f"events={[e.kind.value for e in decision.events]}")
    parts.append(f"reasons={[r.code for x in decision.explanations for r in x.reasons]}")
    return "; ".join(parts)
