"""Engine benchmark: decisions per second of `decide()` on prepared views, one core.

Builds a synthetic portfolio (mixed currencies, time zones, policies, levels,
suspensions, promises, approvals, reminders) as the store would hand it to the
engine, then times `decide()` alone over the whole portfolio at several
instants. CPU time (`time.process_time`) is used so that a busy machine skews
the figure less than wall time would.

Last line: `engine: decisions_per_s=<n> us_per_decision=<x>`.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from dunning.engine import apply_decision, decide
from dunning.model import (
    Account,
    AccountView,
    ActionSpec,
    ActionType,
    Calendar,
    Case,
    CaseStatus,
    CatchUp,
    ContactCap,
    Invoice,
    Level,
    Mode,
    Policy,
    Suspension,
    SuspensionKind,
)

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "UTC")
CURRENCIES = (("EUR", "100.00"), ("USD", "120.00"), ("JPY", "15000"), ("KWD", "35.500"))


def _email(t: str) -> ActionSpec:
    return ActionSpec(type=ActionType.EMAIL, template=t)


def make_policies() -> list[Policy]:
    thresholds = {"EUR": Decimal("10.00"), "USD": Decimal("10.00"), "JPY": Decimal("1000")}
    thresholds["KWD"] = Decimal("3.000")
    standard = Policy(
        policy_id="standard",
        name="standard",
        thresholds=thresholds,
        levels=(
            Level(name="pre-due", days=-3, actions=(_email("pre_due"),)),
            Level(name="reminder", days=10, actions=(_email("reminder"),)),
            Level(name="notice", days=30, actions=(_email("notice"),)),
            Level(
                name="avoid suspension",
                days=40,
                actions=(ActionSpec(type=ActionType.SMS, template="avoid"),),
            ),
            Level(
                name="suspension",
                days=45,
                actions=(ActionSpec(type=ActionType.SUSPEND_SERVICE, target="prov"),),
            ),
            Level(
                name="agency",
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
    gentle = Policy(
        policy_id="vip",
        name="enterprise",
        mode=Mode.INVOICE,
        thresholds=thresholds,
        catch_up=CatchUp.SEQUENTIAL,
        min_gap_days=5,
        levels=(
            Level(name="courtesy", days=15, actions=(_email("courtesy"),)),
            Level(name="account manager", days=45, actions=(ActionSpec(type=ActionType.CALL),)),
            Level(name="notice", days=75, actions=(_email("notice"),)),
        ),
    )
    return [standard, gentle]


def make_portfolio(n: int, now: datetime, rng: random.Random) -> list[AccountView]:
    views: list[AccountView] = []
    for i in range(n):
        currency, amount = CURRENCIES[i % len(CURRENCIES)]
        account = Account(
            account_id=f"acc-{i}",
            currency=currency,
            timezone=ZONES[i % len(ZONES)],
            segment="vip" if i % 5 == 0 else "consumer",
        )
        invoices = []
        for j in range(rng.randint(1, 4)):
            due = now.date() - timedelta(days=rng.randint(-10, 100))
            amt = Decimal(amount)
            open_amt = amt if rng.random() < 0.8 else (amt / 2).quantize(amt)
            invoices.append(
                Invoice(
                    invoice_id=f"inv-{i}-{j}",
                    account_id=account.account_id,
                    currency=currency,
                    amount=amt,
                    open_amount=open_amt,
                    issue_date=due - timedelta(days=30),
                    due_date=due,
                )
            )
        views.append(AccountView(account=account, invoices=tuple(invoices)))
    return views


def prepare(
    views: list[AccountView], policies: list[Policy], cal: Calendar, start: datetime
) -> list[tuple[AccountView, Policy]]:
    """Walk each account through its history so that cases sit at varied levels,
    then suspend a share of them (promises, disputes) as a real portfolio has."""
    prepared = []
    for i, view in enumerate(views):
        policy = policies[1] if view.account.segment == "vip" else policies[0]
        v = view
        for step in (60, 30, 10, 0):
            v = apply_decision(v, decide(v, policy, cal, start - timedelta(days=step)))
        if i % 7 == 0:
            v = _suspend(v, start)
        prepared.append((v, policy))
    return prepared


def _suspend(view: AccountView, now: datetime) -> AccountView:
    open_cases = [c for c in view.cases if c.status is CaseStatus.ACTIVE]
    if not open_cases:
        return view
    case = open_cases[0]
    sid = f"s-{case.case_id}"
    suspension = Suspension(
        suspension_id=sid,
        account_id=case.account_id,
        case_id=case.case_id,
        kind=SuspensionKind.PROMISE_TO_PAY,
        starts_at=now - timedelta(days=5),
        ends_at=now + timedelta(days=10),
        currency=view.account.currency,
        promised_amount=Decimal(1),
        promised_date=(now + timedelta(days=3)).date(),
    )
    suspended: Case = case.model_copy(update={"status": CaseStatus.SUSPENDED, "suspension_id": sid})
    cases = tuple(suspended if c.case_id == case.case_id else c for c in view.cases)
    return view.model_copy(update={"cases": cases, "suspensions": (suspension,)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    start = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    cal = Calendar(
        calendar_id="cal",
        exclusion_dates=frozenset({date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 31)}),
    )
    policies = make_policies()
    prepared = prepare(make_portfolio(args.accounts, start, rng), policies, cal, start)
    instants = [start + timedelta(days=d, hours=h) for d in (1, 7, 20) for h in (0, 9)]

    outcomes: Counter[str] = Counter()
    for view, policy in prepared:
        dec = decide(view, policy, cal, instants[0])
        outcomes["with_actions" if dec.actions else "changed" if dec.changed else "no_change"] += 1

    best = float("inf")
    decisions = 0
    for _ in range(args.rounds):
        for now in instants:
            t0 = time.process_time()
            for view, policy in prepared:
                decide(view, policy, cal, now)
            elapsed = time.process_time() - t0
            decisions = len(prepared)
            best = min(best, elapsed / decisions)
    us = best * 1e6
    print(f"accounts={len(prepared)} instants={len(instants)} rounds={args.rounds}")
    print(f"mix at first instant: {dict(outcomes)}")
    print(f"engine: decisions_per_s={int(1 / best)} us_per_decision={us:.2f}")


if __name__ == "__main__":
    main()
