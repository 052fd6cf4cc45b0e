"""What-if simulation: a policy run over the portfolio for N days, with no side effect.

`simulate(views, book, start=..., days=...)` replays what the scheduled
evaluator would do, one evaluation per day at `start + k days` (k = 1..N), on
in-memory copies of the account views, and counts per day the cases entering
each level, the actions per channel and type, the cases opened and recovered,
and the open amounts at each level per currency.

Faithful to the evaluator (`dunning.evaluation`):
- at each instant exactly the accounts whose next evaluation time is due are
  evaluated: initially `StoredView.due_at` (an `AccountView` given without one
  is due at once; with an override, every account of the due index is due at
  the first instant, as the first run after an activation decides the whole
  index again), then each decision's `next_evaluation_at` (None: the account
  waits, parked or out of the index, and only a payment brings it back);
- the policy is chosen by `Evaluator.decide_stored` itself (a running case
  keeps its policy, an older version it is pinned to is used unless the current
  one applies to running cases, otherwise the selection rules), with policy
  versions served from memory instead of the table;
- a changed view is pruned as the store prunes it (`prune_view`);
- actions whose `not_before` has come are sent at once, the others wait in an
  outbox that the first run at or after their `not_before` sends.

An **override** policy (a draft) replaces the current policy with its
`policy_id` for every account that policy selects, exactly as activating it
would (`OverrideScope.SAME_POLICY`); or, with `OverrideScope.ALL`, decides for
every account simulated: running cases are adopted by the draft (they keep
their level, capped at the draft's number of levels; cases of the other mode,
customer or invoice, are dropped and the draft opens its own).

Payments: `PaymentModel.NONE` assumes none; `PaymentModel.OBSERVED` lets each
account with an open case pay its whole overdue balance with the daily
probability `payment_rate` (see `observed_payment_rate`), drawn from a hash of
(seed, account, day): the same seed gives the same result whatever the order
of the input. Payments go through `dunning.ledger.apply_payment`, as the store
records them, and make the account due at once.

Not simulated: deliveries and their effects on the account (a delivered
write-off closes its case, a suspension sets the service status), approvals
(a case awaiting approval waits for the whole simulation), promises and
disputes recorded by people, new invoices.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

from pydantic import BaseModel, ConfigDict

from dunning.calendars import zone
from dunning.engine import PolicyUnavailableError, apply_decision, decide
from dunning.evaluation import MAX_PASSES, Evaluator
from dunning.ledger import apply_payment
from dunning.model import (
    OPEN_CASE_STATUSES,
    AccountView,
    Action,
    Case,
    CaseStatus,
    Decision,
    EventKind,
    InvoiceStatus,
    Payment,
    Policy,
)
from dunning.money import minor_unit
from dunning.selection import NoPolicyError
from dunning.store.dynamo import PolicyBook, StoredView, prune_view
from dunning.store.scan import ViewFilter
from dunning.store.schema import due_time

if TYPE_CHECKING:
    from dunning.evaluation import ActionQueue
    from dunning.store import DynamoStore

MAX_DAYS = 365
ZERO = Decimal(0)
UNPAID = frozenset({InvoiceStatus.PAID, InvoiceStatus.WRITTEN_OFF})


class PaymentModel(StrEnum):
    NONE = "none"  # no further payment
    OBSERVED = "observed"  # each day, an account in dunning pays all with `payment_rate`


class OverrideScope(StrEnum):
    SAME_POLICY = "same_policy"  # replaces the policy with its id (as activating it would)
    ALL = "all"  # decides for every simulated account


class MissingPolicyVersionError(LookupError):
    """Running cases are pinned to policy versions the caller did not supply."""

    def __init__(self, missing: Iterable[tuple[str, int]]) -> None:
        self.missing = tuple(sorted(set(missing)))
        listed = ", ".join(f"{p} v{v}" for p, v in self.missing)
        super().__init__(f"supply the pinned policy versions: {listed}")


# ------------------------------------------------------------------------ result


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LevelCount(_Out):
    """Cases that entered one level of one policy."""

    policy_id: str
    level: int
    name: str
    count: int


class LevelAmount(_Out):
    """Open cases at one level of one policy, and what they still owe, per currency."""

    policy_id: str
    level: int  # 0: opened, no level reached yet
    name: str
    currency: str
    cases: int
    amount: str  # plain decimal in the currency's minor units ("1234.50", "15000")


class DayCounts(_Out):
    """What happened at one simulated evaluation (or over all of them, in totals)."""

    evaluated: int = 0  # accounts due and decided
    not_covered: int = 0  # no policy selects them: they leave the due index
    failed: int = 0  # the engine refused (a running case's policy is unavailable)
    payments: int = 0  # simulated payments (observed model)
    paid: dict[str, str] = {}  # their amounts per currency
    cases_opened: int = 0
    cases_reopened: int = 0
    cases_recovered: int = 0
    promises_kept: int = 0
    promises_broken: int = 0
    approvals_requested: int = 0
    level_entries: list[LevelCount] = []
    actions_by_channel: dict[str, int] = {}  # scheduled by the decisions
    actions_by_type: dict[str, int] = {}
    actions_sent: dict[str, int] = {}  # per channel, released to the queues
    actions_deferred: int = 0  # scheduled with a later not_before (outbox)


class SimulatedDay(DayCounts):
    day: int  # 1..N
    at: datetime
    open_cases: int = 0  # at the end of the day
    open_by_level: list[LevelAmount] = []
    open_amounts: dict[str, str] = {}  # per currency, every open case


class SimulationResult(_Out):
    start: datetime
    instants: int
    accounts: int
    policy_override: str | None  # "<policy id> v<version>"
    override_scope: OverrideScope
    payment_model: PaymentModel
    payment_rate: float
    seed: int
    adopted_cases: int = 0  # ALL scope: running cases moved to the draft
    dropped_cases: int = 0  # ALL scope: running cases of the other mode
    failed_accounts: list[str] = []
    days: list[SimulatedDay]
    totals: DayCounts  # sums over the days
    final_open_by_level: list[LevelAmount] = []
    final_open_amounts: dict[str, str] = {}

    def level_entries_by_day(self) -> list[dict[tuple[str, int], int]]:
        """Per day: (policy id, level) -> cases that entered it."""
        return [{(e.policy_id, e.level): e.count for e in d.level_entries} for d in self.days]


# ------------------------------------------------------------------------ inputs


def simulation_instants(start: datetime, days: int) -> list[datetime]:
    """What a daily schedule runs: `start + k days`, k = 1..days (UTC, 24 h apart)."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be within 1..{MAX_DAYS}, got {days}")
    first = start.astimezone(UTC)
    return [first + timedelta(days=k) for k in range(1, days + 1)]


def _check_instants(instants: Sequence[datetime]) -> list[datetime]:
    if not 1 <= len(instants) <= MAX_DAYS:
        raise ValueError(f"between 1 and {MAX_DAYS} instants are needed, got {len(instants)}")
    out = []
    for instant in instants:
        if instant.tzinfo is None:
            raise ValueError("instants must be timezone-aware")
        out.append(instant.astimezone(UTC))
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError("instants must be strictly increasing")
    return out


def _as_stored(
    item: StoredView | AccountView, start: datetime, new_book: bool
) -> tuple[StoredView, datetime | None]:
    """The account and its first due time. With `new_book` (an override: what
    its activation would do), every account of the due index, parked ones
    included, is due at the first run, as the run after a change of the book
    decides the whole index again (`Evaluator.dispatch`)."""
    if isinstance(item, AccountView):
        return StoredView(item, 0), start  # never evaluated: due at once, as a write makes it
    if new_book and item.due_at is not None:
        return item, start
    return item, due_time(item.due_at)


def _book_with(book: PolicyBook, override: Policy | None) -> PolicyBook:
    if override is None:
        return book
    return replace(book, policies={**book.policies, override.policy_id: override})


def _known_versions(
    book: PolicyBook, override: Policy | None, pinned: Mapping[tuple[str, int], Policy] | None
) -> dict[tuple[str, int], Policy]:
    known = {(p.policy_id, p.version): p for p in book.policies.values()}
    known.update(pinned or {})
    if override is not None:
        known[(override.policy_id, override.version)] = override
    return known


def required_policy_versions(
    views: Iterable[StoredView | AccountView],
    book: PolicyBook,
    override: Policy | None = None,
    scope: OverrideScope = OverrideScope.SAME_POLICY,
) -> set[tuple[str, int]]:
    """The (policy id, version) pairs running cases are pinned to that neither the
    book nor the override holds: load them (`DynamoStore.get_policy_version`) and
    pass them as `pinned`."""
    if scope is OverrideScope.ALL and override is not None:
        return set()
    effective = _book_with(book, override)
    known = _known_versions(book, override, None)
    needed: set[tuple[str, int]] = set()
    for item in views:
        view = item if isinstance(item, AccountView) else item.view
        running = next((c for c in view.cases if c.is_open), None)
        if running is None or running.policy_id not in effective.policies:
            continue
        current = effective.policies[running.policy_id]
        if running.policy_version == current.version or current.apply_to_running_cases:
            continue
        key = (running.policy_id, running.policy_version)
        if key not in known:
            needed.add(key)
    return needed


class _Versions:
    """Policy versions from memory, in place of the table (`get_policy_version`)."""

    def __init__(self, known: Mapping[tuple[str, int], Policy]) -> None:
        self._known = dict(known)

    def get_policy_version(self, policy_id: str, version: int) -> Policy:
        found = self._known.get((policy_id, version))
        if found is None:
            raise MissingPolicyVersionError([(policy_id, version)])
        return found


def _selector(known: Mapping[tuple[str, int], Policy]) -> Evaluator:
    """The evaluator's own policy selection and decision (`decide_stored`), over
    in-memory policy versions; it never touches a store or a queue."""
    return Evaluator(cast("DynamoStore", _Versions(known)), cast("ActionQueue", None), shards=1)


def _adopt(view: AccountView, draft: Policy) -> tuple[AccountView, int, int]:
    """ALL scope: running cases move to the draft (same level, capped); cases of the
    draft's other mode are dropped. Returns the view, adopted and dropped counts."""
    adopted = dropped = 0
    cases: list[Case] = []
    for case in view.cases:
        if not case.is_open or (
            case.policy_id == draft.policy_id and case.policy_version == draft.version
        ):
            cases.append(case)
        elif case.mode is not draft.mode:
            dropped += 1
        else:
            adopted += 1
            cases.append(
                case.model_copy(
                    update={
                        "policy_id": draft.policy_id,
                        "policy_version": draft.version,
                        "level": min(case.level, len(draft.levels)),
                    }
                )
            )
    if not adopted and not dropped:
        return view, 0, 0
    return view.model_copy(update={"cases": tuple(cases), "case_policy": None}), adopted, dropped


# ----------------------------------------------------------------------- payments


def _draw(seed: int, account_id: str, day: int) -> float:
    """A uniform number in [0, 1) from (seed, account, day): order-independent."""
    digest = hashlib.blake2b(f"{seed}|{account_id}|{day}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _overdue_payment(view: AccountView, at: datetime, day: int) -> Payment | None:
    """A payment of the account's whole overdue balance (open invoices past due)."""
    account = view.account
    today = at.astimezone(zone(account.timezone)).date()
    overdue = sorted(
        (
            inv
            for inv in view.invoices
            if inv.currency == account.currency
            and inv.status is InvoiceStatus.OPEN
            and inv.open_amount > ZERO
            and inv.due_date < today
        ),
        key=lambda inv: (inv.due_date, inv.invoice_id),
    )
    amount = sum((inv.open_amount for inv in overdue), ZERO)
    if amount <= ZERO:
        return None
    return Payment(
        payment_id=f"sim-{day}-{account.account_id}"[:128],
        account_id=account.account_id,
        currency=account.currency,
        amount=amount,
        received_at=at,
        invoice_ids=tuple(inv.invoice_id for inv in overdue),
    )


def observed_payment_rate(
    views: Iterable[StoredView | AccountView], at: datetime, window_days: int = 90
) -> float:
    """The daily probability that a case in dunning recovers, observed in the views.

    Over the last `window_days` before `at`: recoveries (cases recovered in the
    window) divided by case-days in dunning (each case's open time inside the
    window), as a daily hazard turned into a probability (1 - e^-rate). The
    views keep open cases and the latest closed ones, which is what it sees.
    """
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    since = at - timedelta(days=window_days)
    exposure = 0.0
    recoveries = 0
    for item in views:
        view = item if isinstance(item, AccountView) else item.view
        for case in view.cases:
            end = case.closed_at or at
            start = max(case.opened_at, since)
            end = min(end, at)
            if end > start:
                exposure += (end - start).total_seconds() / 86_400
            if (
                case.status is CaseStatus.RECOVERED
                and case.closed_at is not None
                and since < case.closed_at <= at
            ):
                recoveries += 1
    if exposure <= 0:
        return 0.0
    return 1 - math.exp(-recoveries / exposure)


# ----------------------------------------------------------------------- the run


@dataclass(slots=True)
class _Tally:
    evaluated: int = 0
    not_covered: int = 0
    failed: int = 0
    payments: int = 0
    paid: dict[str, Decimal] = field(default_factory=dict)
    events: Counter[EventKind] = field(default_factory=Counter)
    levels: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    deferred: int = 0
    approvals: int = 0

    def add(self, other: _Tally) -> None:
        self.evaluated += other.evaluated
        self.not_covered += other.not_covered
        self.failed += other.failed
        self.payments += other.payments
        for currency, amount in other.paid.items():
            self.paid[currency] = self.paid.get(currency, ZERO) + amount
        self.events.update(other.events)
        self.levels.update(other.levels)
        self.by_channel.update(other.by_channel)
        self.by_type.update(other.by_type)
        self.sent.update(other.sent)
        self.deferred += other.deferred
        self.approvals += other.approvals

    def count_decision(self, decision: Decision, at: datetime) -> list[Action]:
        """Count a decision; returns its actions that must wait (not_before > at)."""
        for event in decision.events:
            self.events[event.kind] += 1
            if event.kind is EventKind.LEVEL_ENTERED:
                data = event.data
                self.levels[(str(data["policy_id"]), int(data["level"]), str(data["name"]))] += 1
        self.approvals += len(decision.approvals)
        waiting = []
        for action in decision.actions:
            self.by_channel[action.channel.value] += 1
            self.by_type[action.type.value] += 1
            if action.not_before <= at:
                self.sent[action.channel.value] += 1
            else:
                waiting.append(action)
        self.deferred += len(waiting)
        return waiting

    def counts(self) -> dict[str, object]:
        return {
            "evaluated": self.evaluated,
            "not_covered": self.not_covered,
            "failed": self.failed,
            "payments": self.payments,
            "paid": {c: _amount(a, c) for c, a in sorted(self.paid.items())},
            "cases_opened": self.events[EventKind.CASE_OPENED],
            "cases_reopened": self.events[EventKind.CASE_REOPENED],
            "cases_recovered": self.events[EventKind.CASE_RECOVERED],
            "promises_kept": self.events[EventKind.PROMISE_KEPT],
            "promises_broken": self.events[EventKind.PROMISE_BROKEN],
            "approvals_requested": self.approvals,
            "level_entries": [
                LevelCount(policy_id=p, level=lv, name=n, count=c)
                for (p, lv, n), c in sorted(self.levels.items())
            ],
            "actions_by_channel": dict(sorted(self.by_channel.items())),
            "actions_by_type": dict(sorted(self.by_type.items())),
            "actions_sent": dict(sorted(self.sent.items())),
            "actions_deferred": self.deferred,
        }


def _amount(value: Decimal, currency: str) -> str:
    try:
        quantum = minor_unit(currency)
    except ValueError:
        return format(value, "f")
    return format(value.quantize(quantum), "f")


class _LevelNames:
    def __init__(self, known: Mapping[tuple[str, int], Policy]) -> None:
        self._known = known

    def name(self, policy_id: str, version: int, level: int) -> str:
        if level == 0:
            return "opened"
        policy = self._known.get((policy_id, version))
        if policy is not None and level <= len(policy.levels):
            return policy.levels[level - 1].name
        return f"level {level}"


def _open_positions(
    views: Iterable[AccountView], names: _LevelNames
) -> tuple[int, list[LevelAmount], dict[str, str]]:
    cases: Counter[tuple[str, int, str, str]] = Counter()
    amounts: dict[tuple[str, int, str, str], Decimal] = {}
    per_currency: dict[str, Decimal] = {}
    total = 0
    for view in views:
        for case in view.cases:
            if case.status not in OPEN_CASE_STATUSES:
                continue
            total += 1
            ids = set(case.invoice_ids)
            owed = sum(
                (
                    inv.open_amount
                    for inv in view.invoices
                    if inv.invoice_id in ids and inv.status not in UNPAID
                ),
                ZERO,
            )
            currency = view.account.currency
            name = names.name(case.policy_id, case.policy_version, case.level)
            key = (case.policy_id, case.level, name, currency)
            cases[key] += 1
            amounts[key] = amounts.get(key, ZERO) + owed
            per_currency[currency] = per_currency.get(currency, ZERO) + owed
    rows = [
        LevelAmount(
            policy_id=p,
            level=lv,
            name=n,
            currency=c,
            cases=cases[(p, lv, n, c)],
            amount=_amount(amounts[(p, lv, n, c)], c),
        )
        for (p, lv, n, c) in sorted(cases)
    ]
    return total, rows, {c: _amount(a, c) for c, a in sorted(per_currency.items())}


def simulate(
    views: Iterable[StoredView | AccountView],
    book: PolicyBook,
    *,
    start: datetime,
    days: int | None = None,
    instants: Sequence[datetime] | None = None,
    override: Policy | None = None,
    override_scope: OverrideScope = OverrideScope.SAME_POLICY,
    payment_model: PaymentModel = PaymentModel.NONE,
    payment_rate: float = 0.0,
    seed: int = 0,
    pinned: Mapping[tuple[str, int], Policy] | None = None,
    pending_actions: Iterable[Action] = (),
    view_filter: ViewFilter | None = None,
    on_day: Callable[[SimulatedDay, Mapping[str, AccountView]], None] | None = None,
) -> SimulationResult:
    """Simulate the scheduled evaluator over `views` for `days` daily runs at
    `start + k days` (or at the given `instants`). Pure: nothing is written and
    the inputs are left as they were.

    `pinned` holds older policy versions that running cases are pinned to (see
    `required_policy_versions`); `pending_actions` are unsent outbox records at
    `start`; `view_filter` narrows the accounts (its policy condition uses the
    book as it is, before the override); `on_day`, when given, sees each day's
    row and the simulated views at the end of that day (read-only).
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if (days is None) == (instants is None):
        raise ValueError("give either days or instants")
    runs = simulation_instants(start, days) if days is not None else _check_instants(instants or ())
    if not 0.0 <= payment_rate <= 1.0:
        raise ValueError(f"payment_rate must be within 0..1, got {payment_rate}")
    if override_scope is OverrideScope.ALL and override is None:
        raise ValueError("the ALL scope needs an override policy")

    accounts: dict[str, StoredView] = {}
    due: dict[str, datetime | None] = {}
    for item in views:
        stored, due_at = _as_stored(item, runs[0], override is not None)
        if view_filter is not None and not view_filter.matches(stored, book):
            continue
        account_id = stored.view.account.account_id
        if account_id in accounts:
            raise ValueError(f"account {account_id} is given twice")
        accounts[account_id] = stored
        due[account_id] = due_at

    known = _known_versions(book, override, pinned)
    names = _LevelNames(known)
    draft_for_all = override if override_scope is OverrideScope.ALL else None
    effective = _book_with(book, override)
    adopted = dropped = 0
    if draft_for_all is not None:
        for account_id, stored in accounts.items():
            view, a, d = _adopt(stored.view, draft_for_all)
            adopted += a
            dropped += d
            if a or d:
                accounts[account_id] = replace(stored, view=view)
    else:
        missing = required_policy_versions(accounts.values(), book, override) - set(known)
        if missing:
            raise MissingPolicyVersionError(missing)
    selector = _selector(known)

    outbox: list[Action] = list(pending_actions)
    failed: list[str] = []
    totals = _Tally()
    rows: list[SimulatedDay] = []
    order = sorted(accounts)
    for day, at in enumerate(runs, start=1):
        tally = _Tally()
        if payment_model is PaymentModel.OBSERVED and payment_rate > 0:
            for account_id in order:
                view = accounts[account_id].view
                if not any(c.is_open for c in view.cases):
                    continue
                if _draw(seed, account_id, day) >= payment_rate:
                    continue
                payment = _overdue_payment(view, at, day)
                if payment is None:
                    continue
                paid_view, _recorded = apply_payment(view, payment)
                accounts[account_id] = replace(accounts[account_id], view=prune_view(paid_view))
                due[account_id] = at  # a payment re-opens evaluation at once
                tally.payments += 1
                tally.paid[payment.currency] = (
                    tally.paid.get(payment.currency, ZERO) + payment.amount
                )
        # The outbox sweep: deferred actions whose time has come.
        ready = [a for a in outbox if a.not_before <= at]
        if ready:
            outbox = [a for a in outbox if a.not_before > at]
            for action in ready:
                tally.sent[action.channel.value] += 1
        for account_id in order:
            due_at = due[account_id]
            if due_at is None or due_at > at:
                continue
            # A decision stopped at the engine's write budget is decided again at
            # the same instant, as the evaluator does (`Decision.more`).
            for passes in range(1, MAX_PASSES + 1):
                stored = accounts[account_id]
                try:
                    if draft_for_all is not None:
                        calendar = (
                            effective.calendars.get(draft_for_all.calendar_id)
                            if draft_for_all.calendar_id
                            else None
                        )
                        decision = decide(
                            stored.view, draft_for_all, calendar, at, selected_by="simulation"
                        )
                        new_view = apply_decision(stored.view, decision)
                    else:
                        decision, new_view = selector.decide_stored(stored, at, effective)
                except NoPolicyError:
                    tally.not_covered += 1
                    due[account_id] = None
                    break
                except PolicyUnavailableError:
                    tally.failed += 1
                    failed.append(account_id)
                    due[account_id] = None
                    break
                if passes == 1:
                    tally.evaluated += 1
                if decision.changed or decision.events:
                    accounts[account_id] = replace(stored, view=prune_view(new_view))
                due[account_id] = decision.next_evaluation_at
                outbox += tally.count_decision(decision, at)
                if not decision.more:
                    break
        open_cases, by_level, per_currency = _open_positions(
            (s.view for s in accounts.values()), names
        )
        row = SimulatedDay.model_validate(
            {
                "day": day,
                "at": at,
                "open_cases": open_cases,
                "open_by_level": by_level,
                "open_amounts": per_currency,
                **tally.counts(),
            }
        )
        rows.append(row)
        if on_day is not None:
            on_day(row, MappingProxyType({a: s.view for a, s in accounts.items()}))
        totals.add(tally)

    last = rows[-1]
    return SimulationResult(
        start=start.astimezone(UTC),
        instants=len(runs),
        accounts=len(accounts),
        policy_override=None if override is None else f"{override.policy_id} v{override.version}",
        override_scope=override_scope,
        payment_model=payment_model,
        payment_rate=payment_rate,
        seed=seed,
        adopted_cases=adopted,
        dropped_cases=dropped,
        failed_accounts=sorted(set(failed)),
        days=rows,
        totals=DayCounts.model_validate(totals.counts()),
        final_open_by_level=last.open_by_level,
        final_open_amounts=last.open_amounts,
    )


__all__ = [
    "DayCounts",
    "LevelAmount",
    "LevelCount",
    "MissingPolicyVersionError",
    "OverrideScope",
    "PaymentModel",
    "SimulatedDay",
    "SimulationResult",
    "observed_payment_rate",
    "required_policy_versions",
    "simulate",
    "simulation_instants",
]
