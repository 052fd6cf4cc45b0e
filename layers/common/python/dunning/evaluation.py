"""The scheduled evaluation: dispatcher and shard worker, over ports.

- `dispatch(as_of)`: records the run once (conditional put keyed on the
  scheduled time) and enqueues one task per shard of the due index. After a
  change of the policy book (through the API) the tasks cover the whole index,
  not only its due part: every account that owes something is decided again
  with the new book, once.
- `run_shard(task)`: sends the shard's outbox records whose time has come
  (deferred actions, or ones a crash left unsent), then reads the due index
  page by page, decides each due account with the engine, writes each decision
  in one conditional transaction (view + cases + audit + outbox), and sends
  the due actions to the channel queues in batches of ten. On a conflict (a
  payment landed meanwhile) it decides again on the account as the failed
  write returned it (ReturnValuesOnConditionCheckFailure), without a read. Near
  the end of its time budget it stops and returns a continuation task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict

from dunning.engine import apply_decision, decide
from dunning.ids import stable_id
from dunning.model import AccountView, Action, Decision, EventKind, Policy
from dunning.observability import logger
from dunning.selection import NoPolicyError, select_policy
from dunning.store import (
    ConflictError,
    DecisionTooLargeError,
    DynamoStore,
    PolicyBook,
    StoredView,
)
from dunning.store.config import BOOK_MAX_AGE_S
from dunning.store.schema import iso

CONFLICT_RETRIES = 3
MAX_PASSES = 50  # decisions of one account at one instant (`Decision.more`)
SQS_BATCH = 10
# Actions SQS accepted are marked queued every this many (one conditional
# transaction each; `mark_queued` takes up to 100): few sent records wait
# unmarked if the worker stops.
MARK_BATCH = 25
# A change of the book is evaluated by the first run at least this long after
# it: ingestion keeps the book it read for as long (`ConfigStore.policy_book`).
BOOK_SETTLE = timedelta(seconds=BOOK_MAX_AGE_S)


class ShardTask(BaseModel):
    """One shard of one scheduled run (the shard queue's message body)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    as_of: AwareDatetime
    shard: int
    start_key: dict[str, Any] | None = None
    part: int = 0
    # The whole shard of the due index, not only its due part: the policy book
    # changed since the last such run (`Evaluator.dispatch`).
    whole: bool = False


class ActionQueue(Protocol):
    def send_actions(
        self, actions: Sequence[Action], queued_at: datetime | None = None
    ) -> list[Action]: ...

    def send_tasks(self, tasks: Sequence[BaseModel]) -> int: ...


@dataclass(slots=True)
class ShardResult:
    evaluated: int = 0
    changed: int = 0
    level_changes: int = 0
    approvals: int = 0
    recovered: int = 0
    conflicts_retried: int = 0
    not_covered: int = 0
    outbox_resent: int = 0
    extra_passes: int = 0  # decisions continued at the same instant (`Decision.more`)
    too_large: int = 0  # decisions that did not fit one transaction (left due)
    reviewed: int = 0  # accounts not yet due, decided by a whole-index run
    moved: int = 0  # of those, the ones whose due time the new book moved
    actions_queued: Counter[str] = field(default_factory=Counter)
    actions_deferred: int = 0
    continuation: ShardTask | None = None


def _ahead(stored: StoredView, as_of: datetime) -> bool:
    """Not due yet at `as_of` (read by a whole-index run before its time)."""
    return stored.due_at is not None and stored.due_at > iso(as_of)


def run_id_for(as_of: datetime) -> str:
    return "run-" + stable_id("run", iso(as_of))


class Decider:
    """Decides for stored accounts as the evaluator does (no side effect): the
    policy a running case keeps (its pinned version), else the one the rules
    select; the policy's calendar. Used by the worker and by the API's preview."""

    def __init__(self, store: DynamoStore) -> None:
        self.store = store
        self._pinned: dict[tuple[str, int], Policy] = {}

    def policy_for(self, view: AccountView, book: PolicyBook) -> tuple[Policy, str, Policy | None]:
        """The policy that decides for this account, and a pinned older version."""
        running = next((c for c in view.cases if c.is_open), None)
        if running is not None and running.policy_id in book.policies:
            current = book.policies[running.policy_id]
            if running.policy_version == current.version or current.apply_to_running_cases:
                return current, "running case", None
            key = (running.policy_id, running.policy_version)
            if key not in self._pinned:
                self._pinned[key] = self.store.get_policy_version(*key)
            return current, "running case", self._pinned[key]
        currency = view.account.currency
        balance = sum(
            (inv.open_amount for inv in view.invoices if inv.currency == currency), Decimal(0)
        )
        selection = select_policy(
            view.account, balance, book.rules, book.policies, book.default_policy_id
        )
        return selection.policy, selection.selected_by, None

    def decide_stored(
        self, stored: StoredView, as_of: datetime, book: PolicyBook
    ) -> tuple[Decision, AccountView]:
        """The engine's decision for a stored account (no side effect)."""
        policy, selected_by, pinned = self.policy_for(stored.view, book)
        view = (
            stored.view
            if pinned is None
            else stored.view.model_copy(update={"case_policy": pinned})
        )
        calendar = book.calendars.get(policy.calendar_id) if policy.calendar_id else None
        decision = decide(view, policy, calendar, as_of, selected_by=selected_by)
        return decision, apply_decision(stored.view, decision)


class NextEvaluation:
    """When an account must next be evaluated, given its view after new billing
    data (an invoice, a payment), for the write that stores that data.

    The engine decides at `now`, as the evaluator would at its next run. If
    that changes anything (a case opens or recovers, a level is entered), the
    account is due now and the next run acts. If it changes nothing, the
    answer is the decision's `next_evaluation_at`: with no new data nothing
    changes before it, so the next run would only have read the account from
    the due index, decided the same and moved its due time there (one
    UpdateItem). No policy for the account: due now, and the evaluator reports
    it as it does today."""

    def __init__(self, decider: Decider, book: Callable[[], PolicyBook]) -> None:
        self.decider = decider
        self.book = book

    def __call__(self, view: AccountView, now: datetime) -> datetime | None:
        try:
            decision, _ = self.decider.decide_stored(StoredView(view, 0), now, self.book())
        except NoPolicyError:
            return now
        except Exception:  # the billing data must be stored regardless
            # The evaluator meets the same failure at the next run and reports it
            # where decisions fail; the invoice or payment is not refused for it.
            logger.exception(
                "next evaluation not decided", extra={"account_id": view.account.account_id}
            )
            return now
        if decision.changed or decision.events or decision.more:
            return now
        return decision.next_evaluation_at


class Evaluator:
    def __init__(
        self,
        store: DynamoStore,
        queue: ActionQueue,
        *,
        shards: int,
        time_margin_ms: int = 20_000,
    ) -> None:
        self.store = store
        self.queue = queue
        self.shards = shards
        self.time_margin_ms = time_margin_ms
        self.decider = Decider(store)
        self._pending: dict[str, list[Action]] = {}  # per channel, under ten
        self._accepted: list[Action] = []  # queued, to be marked in the outbox

    # ----------------------------------------------------------- dispatcher

    def dispatch(self, as_of: datetime) -> int:
        """Enqueue one task per shard, once per scheduled time. Returns tasks sent."""
        run_id = run_id_for(as_of)
        if not self.store.record_run(as_of, run_id, self.shards):
            logger.info("run already dispatched", extra={"run_id": run_id, "as_of": iso(as_of)})
            return 0
        book = self.store.book_revision()
        whole = book.pending(as_of, BOOK_SETTLE)
        tasks = [
            ShardTask(run_id=run_id, as_of=as_of, shard=s, whole=whole) for s in range(self.shards)
        ]
        sent = self.queue.send_tasks(tasks)
        if whole:
            # Marked once the tasks are out: should the send fail, the next run
            # evaluates the whole index instead.
            self.store.mark_rescheduled(book.revision, as_of)
            logger.info(
                "the policy book changed: this run decides every account again",
                extra={"run_id": run_id, "revision": book.revision},
            )
        return sent

    # --------------------------------------------------------------- worker

    def run_shard(
        self,
        task: ShardTask,
        remaining_ms: Callable[[], int],
        book: PolicyBook | None = None,
        *,
        flush: bool = True,
    ) -> ShardResult:
        """Evaluate one shard task. With `flush=False` the last partial SQS
        batches wait in the buffer for `flush()` (several tasks of one Lambda
        batch then share them); the outbox keeps them safe meanwhile."""
        result = ShardResult()
        as_of = task.as_of
        book = book or self.store.load_policy_book()
        if task.part == 0:
            self._send_outbox(task, result)
        start_key = task.start_key
        while True:
            page = self.store.query_due(task.shard, as_of, start_key, whole=task.whole)
            last_done: StoredView | None = None
            for stored in page.items:
                if remaining_ms() < self.time_margin_ms:
                    result.continuation = self._continuation(task, last_done, start_key)
                    break
                if task.whole and _ahead(stored, as_of):
                    result.reviewed += 1
                self._buffer(self._evaluate(stored, as_of, book, result), as_of, result)
                last_done = stored
            if result.continuation is not None or not page.last_key:
                break
            start_key = page.last_key
        if flush:
            self.flush(as_of, result)
        return result

    def _continuation(
        self, task: ShardTask, last_done: StoredView | None, page_start: dict[str, Any] | None
    ) -> ShardTask:
        key = page_start
        if last_done is not None and last_done.due_at is not None:
            account_id = last_done.view.account.account_id
            key = {
                "PK": {"S": f"ACCOUNT#{account_id}"},
                "SK": {"S": "ACCOUNT"},
                "due_pk": {"S": f"DUE#{task.shard}"},
                "due_at": {"S": last_done.due_at},
            }
        return task.model_copy(update={"start_key": key, "part": task.part + 1})

    def _send_outbox(self, task: ShardTask, result: ShardResult) -> None:
        pending = self.store.query_outbox(task.shard, task.as_of)
        if pending:
            result.outbox_resent += len(pending)
            self._buffer(pending, task.as_of, result)

    def _buffer(self, actions: list[Action], as_of: datetime, result: ShardResult) -> None:
        """Queue actions per channel; full batches of ten go out at once."""
        full: list[Action] = []
        for action in actions:
            group = self._pending.setdefault(action.channel.value, [])
            group.append(action)
            if len(group) == SQS_BATCH:
                full += group
                self._pending[action.channel.value] = []
        if full:
            self._send(full, as_of, result)

    def flush(self, as_of: datetime, result: ShardResult | None = None) -> None:
        """Send what waits in the per-channel buffers, then mark all queued."""
        rest = [a for group in self._pending.values() for a in group]
        self._pending.clear()
        if rest:
            self._send(rest, as_of, result or ShardResult())
        if self._accepted:
            self.store.mark_queued(self._accepted, as_of)
            self._accepted = []

    def _send(self, actions: list[Action], as_of: datetime, result: ShardResult) -> None:
        accepted = self.queue.send_actions(actions, as_of)
        self._accepted += accepted
        if len(self._accepted) >= MARK_BATCH:
            whole = len(self._accepted) - len(self._accepted) % MARK_BATCH
            self.store.mark_queued(self._accepted[:whole], as_of)
            self._accepted = self._accepted[whole:]
        for action in accepted:
            result.actions_queued[action.channel.value] += 1

    def decide_stored(
        self, stored: StoredView, as_of: datetime, book: PolicyBook
    ) -> tuple[Decision, AccountView]:
        """The engine's decision for a stored account (no side effect)."""
        return self.decider.decide_stored(stored, as_of, book)

    def _evaluate(
        self, stored: StoredView, as_of: datetime, book: PolicyBook, result: ShardResult
    ) -> list[Action]:
        """Decide and write one account; returns its actions due now.

        A decision that stopped at the engine's write budget (`Decision.more`)
        is written, then the account is read back and decided again at the same
        instant, until nothing more is left. After `MAX_PASSES` the account stays
        due at this instant and the next run goes on with it."""
        ready: list[Action] = []
        for passes in range(1, MAX_PASSES + 1):
            decision = self._decide_and_write(stored, as_of, book, result)
            if decision is None:
                return ready
            if passes == 1:
                result.evaluated += 1
                if decision.changed:
                    result.changed += 1
            for event in decision.events:
                if event.kind is EventKind.LEVEL_ENTERED:
                    result.level_changes += 1
                elif event.kind is EventKind.CASE_RECOVERED:
                    result.recovered += 1
            result.approvals += len(decision.approvals)
            now_due = [a for a in decision.actions if a.not_before <= as_of]
            result.actions_deferred += len(decision.actions) - len(now_due)
            ready += now_due
            if not decision.more:
                break
            result.extra_passes += 1
            stored = self.store.get_view(stored.view.account.account_id)
        return ready

    def _decide_and_write(
        self, stored: StoredView, as_of: datetime, book: PolicyBook, result: ShardResult
    ) -> Decision | None:
        """One decision for one account, written conditionally (re-decided on a
        conflict). None when nothing could be written: no policy covers the
        account, or the decision does not fit in one transaction."""
        account_id = stored.view.account.account_id
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                decision, new_view = self.decide_stored(stored, as_of, book)
            except NoPolicyError as err:
                result.not_covered += 1
                logger.warning("no policy", extra={"account_id": account_id, "error": str(err)})
                self.store.save_due_only(stored, None, as_of)
                return None
            try:
                if decision.changed or decision.events:
                    self.store.save_decision(stored, new_view, decision, as_of)
                elif self.store.save_due_only(
                    stored, decision.next_evaluation_at, as_of
                ) and _ahead(stored, as_of):
                    result.moved += 1  # not due yet, and the new book moved it
            except ConflictError as err:
                if attempt == CONFLICT_RETRIES:
                    raise
                result.conflicts_retried += 1
                stored = self.store.view_after_conflict(err, account_id)
                continue
            except DecisionTooLargeError as err:
                # Nothing is written; the account stays due and is tried again by
                # the next run, while the rest of the shard goes on (alarm metric).
                result.too_large += 1
                logger.error(
                    "decision too large", extra={"account_id": account_id, "error": str(err)}
                )
                return None
            return decision
        raise AssertionError("unreachable")  # the last attempt returns or raises
