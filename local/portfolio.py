"""Synthetic portfolios for the benchmarks, the tests and the local run.

Accounts are walked through the real engine up to the chosen instant, so the
cases, levels, reminders and next evaluation times they carry are the ones the
product itself would have produced; `due_fraction` of them have something to
do at `as_of` (a level reached that day), the rest are not due yet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from dunning.calendars import local_midnight, zone
from dunning.engine import apply_decision, decide
from dunning.model import (
    Account,
    AccountView,
    ActionSpec,
    ActionType,
    Calendar,
    CatchUp,
    ContactCap,
    Invoice,
    Level,
    Mode,
    Policy,
    PolicyRule,
)
from dunning.store import DynamoStore

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "Europe/London")
CURRENCIES = (("EUR", "100.00"), ("USD", "120.00"), ("JPY", "15000"), ("GBP", "90.00"))
THRESHOLDS = {
    "EUR": Decimal("10.00"),
    "USD": Decimal("10.00"),
    "JPY": Decimal("1000"),
    "GBP": Decimal("10.00"),
    "KWD": Decimal("3.000"),
}


def _email(template: str) -> ActionSpec:
    return ActionSpec(type=ActionType.EMAIL, template=template)


def standard_policies(calendar_id: str | None = "default") -> list[Policy]:
    """Consumer (customer mode), small business, and enterprise/VIP (gentler, per invoice)."""
    consumer = Policy(
        policy_id="consumer",
        name="Consumer",
        thresholds=THRESHOLDS,
        calendar_id=calendar_id,
        levels=(
            Level(name="pre-due", days=-3, actions=(_email("pre_due"),)),
            Level(name="reminder", days=10, actions=(_email("reminder"),)),
            Level(name="important notice", days=30, actions=(_email("important_notice"),)),
            Level(
                name="avoid suspension",
                days=40,
                actions=(ActionSpec(type=ActionType.SMS, template="avoid_suspension"),),
            ),
            Level(
                name="suspension",
                days=45,
                actions=(
                    ActionSpec(type=ActionType.SUSPEND_SERVICE, target="provisioning"),
                    _email("suspension"),
                ),
            ),
            Level(
                name="collection agency",
                days=60,
                actions=(
                    ActionSpec(
                        type=ActionType.COLLECTION_AGENCY, target="agency", requires_approval=True
                    ),
                ),
            ),
            Level(name="write-off", days=90, actions=(ActionSpec(type=ActionType.WRITE_OFF),)),
        ),
        contact_caps=(ContactCap(channel=ActionType.EMAIL, max_messages=3, window_days=7),),
    )
    business = consumer.model_copy(
        update={
            "policy_id": "business",
            "name": "Small business",
            "levels": (
                Level(name="reminder", days=7, actions=(_email("reminder"),)),
                Level(name="important notice", days=21, actions=(_email("important_notice"),)),
                Level(
                    name="account manager call",
                    days=35,
                    actions=(ActionSpec(type=ActionType.CALL, target="contact-centre"),),
                ),
                Level(
                    name="suspension",
                    days=50,
                    actions=(
                        ActionSpec(
                            type=ActionType.SUSPEND_SERVICE,
                            target="provisioning",
                            requires_approval=True,
                        ),
                    ),
                ),
            ),
        }
    )
    vip = Policy(
        policy_id="enterprise",
        name="Enterprise / VIP",
        mode=Mode.INVOICE,
        thresholds=THRESHOLDS,
        calendar_id=calendar_id,
        catch_up=CatchUp.SEQUENTIAL,
        min_gap_days=5,
        levels=(
            Level(name="courtesy", days=15, actions=(_email("courtesy"),)),
            Level(
                name="account manager",
                days=45,
                actions=(ActionSpec(type=ActionType.MANUAL_TASK),),
            ),
            Level(name="formal notice", days=75, actions=(_email("formal_notice"),)),
        ),
    )
    return [consumer, business, vip]


def standard_rules() -> list[PolicyRule]:
    return [
        PolicyRule(rule_id="vip", policy_id="enterprise", priority=20, segments=frozenset({"vip"})),
        PolicyRule(
            rule_id="business", policy_id="business", priority=10, segments=frozenset({"business"})
        ),
    ]


def standard_calendar() -> Calendar:
    return Calendar(
        calendar_id="default",
        name="Business days, common holidays",
        exclusion_dates=frozenset(
            {date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 26), date(2027, 1, 1)}
        ),
    )


def seed_book(store: DynamoStore, at: datetime) -> None:
    """The standard policies (active, created 200 days before `at`), the standard
    calendar and no selection rules (everyone on `consumer`), written straight to
    an empty table: the set-up of tests and benchmarks."""
    for p in standard_policies():
        store.put_policy(p, "admin", at - timedelta(days=200))
        store.activate_policy(p.policy_id, p.version)
    store.put_calendar(standard_calendar())
    store.put_rules([], "consumer")


@dataclass(frozen=True, slots=True)
class Seeded:
    view: AccountView
    due_at: datetime | None
    policy: Policy


def build_portfolio(
    n: int,
    as_of: datetime,
    *,
    due_fraction: float = 0.1,
    seed: int = 7,
    calendar: Calendar | None = None,
) -> list[Seeded]:
    """`n` accounts walked by the engine up to just before `as_of`."""
    rng = random.Random(seed)
    policies = {p.policy_id: p for p in standard_policies()}
    calendar = calendar or standard_calendar()
    segments = ("consumer", "consumer", "consumer", "business", "vip")
    result: list[Seeded] = []
    for i in range(n):
        currency, amount = CURRENCIES[i % len(CURRENCIES)]
        segment = segments[i % len(segments)]
        tz_name = ZONES[(i // 3) % len(ZONES)]
        account = Account(
            account_id=f"acc-{i:06d}",
            name=f"Customer {i}",
            segment=segment,
            currency=currency,
            timezone=tz_name,
            locale=("en", "de", "fr")[i % 3],
            email=f"customer{i}@example.com",
            phone=f"+4915{i:08d}",
        )
        policy = policies[
            "enterprise"
            if segment == "vip"
            else "business"
            if segment == "business"
            else "consumer"
        ]
        today = as_of.astimezone(zone(tz_name)).date()
        dunning_days = [lv.days for lv in policy.levels if lv.days > 0]
        due = rng.random() < due_fraction
        if due:
            # A level is reached today: the account is due at as_of.
            first_due = today - timedelta(days=rng.choice(dunning_days))
        else:
            # Not due: overdue but between levels, or not yet due at all.
            first_due = today + timedelta(days=rng.randint(5, 40))
        invoices = []
        for j in range(rng.randint(1, 3)):
            due_date = first_due + timedelta(days=30 * j) if not due else first_due
            amt = Decimal(amount) * (j + 1)
            invoices.append(
                Invoice(
                    invoice_id=f"inv-{i:06d}-{j}",
                    account_id=account.account_id,
                    currency=currency,
                    amount=amt,
                    open_amount=amt,
                    issue_date=due_date - timedelta(days=30),
                    due_date=due_date,
                )
            )
        view = AccountView(account=account, invoices=tuple(invoices))
        # Walk the engine through the past so state is what the product would hold.
        next_at: datetime | None = as_of - timedelta(days=120)
        # Up to the start of today (local): what happens today is the run's to do.
        last = local_midnight(today, zone(tz_name)) - timedelta(microseconds=1)
        steps = 0
        while next_at is not None and next_at <= last and steps < 50:
            decision = decide(view, policy, calendar, next_at)
            view = apply_decision(view, decision)
            next_at = decision.next_evaluation_at
            steps += 1
        result.append(Seeded(view, next_at, policy))
    return result
