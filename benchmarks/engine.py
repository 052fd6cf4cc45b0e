"""Engine benchmark: decisions per second of `decide()` on prepared views, one core.

Builds a synthetic portfolio (`local.portfolio`: mixed currencies, time zones,
segments with their policies, levels, reminders, approvals; a share suspended
on promises to pay) walked by the engine itself, then times `decide()` alone
over the whole portfolio at several instants. CPU time (`time.process_time`)
is used so that a busy machine skews the figure less than wall time would.

Run: `.venv/bin/python -m benchmarks.engine`.
Last line: `engine: decisions_per_s=<n> us_per_decision=<x>`.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from dunning.engine import decide
from dunning.model import (
    AccountView,
    Case,
    CaseStatus,
    Policy,
    Suspension,
    SuspensionKind,
)
from local.portfolio import build_portfolio, standard_calendar


def prepare(n: int, start: datetime, seed: int) -> list[tuple[AccountView, Policy]]:
    """Accounts walked by the engine to `start` (cases at varied levels), a
    share of them suspended on a promise to pay, as a real portfolio has."""
    prepared = []
    for i, seeded in enumerate(build_portfolio(n, start, due_fraction=0.3, seed=seed)):
        view = _suspend(seeded.view, start) if i % 7 == 0 else seeded.view
        prepared.append((view, seeded.policy))
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

    start = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
    cal = standard_calendar()
    prepared = prepare(args.accounts, start, args.seed)
    instants = [start + timedelta(days=d, hours=h) for d in (0, 1, 7, 20) for h in (0, 9)]

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
