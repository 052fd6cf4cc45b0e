"""The scheduled evaluation on moto: dispatcher, shard workers, outbox, handlers.

Each test states the product's promise it proves (docs/architecture.md,
"Evaluation flow"): the engine's actions and nothing else, once per scheduled
time, the same result through continuations, no action for a paid account,
no action lost by a crash, no read of an account with nothing due.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from dunning import aws, collect
from dunning.engine import apply_decision, decide
from dunning.evaluation import Evaluator, ShardResult, ShardTask
from dunning.model import (
    AccountView,
    Action,
    ActionType,
    AuditEvent,
    Case,
    CaseStatus,
    Decision,
    EventKind,
    Mode,
    Payment,
    ServiceStatus,
    SuspensionKind,
)
from dunning.queues import SqsActionQueue
from dunning.simulation import simulate
from dunning.store import DynamoStore, Mutation, StoredView
from dunning.store.dynamo import (
    APPROVAL,
    DECISION_PHASE,
    event_sort_key,
    owes,
    prune_view,
)
from dunning.store.scan import count_due, iter_views
from dunning.store.schema import DUE_AT, DUE_INDEX, DUE_PK, PARKED, iso, shard_of
from local.portfolio import Seeded
from tests.builders import account, email, invoice, level, policy
from tests.integration.conftest import SHARDS, TABLE_NAME, Env
from tests.integration.helpers import (
    AS_OF,
    CHANNELS,
    AccountWrites,
    OnAccountWrite,
    ReadTracker,
    budget_of,
    drain_actions,
    engine_expectation,
    is_due,
    key_of,
    make_env,
    outbox_pending,
    partition,
    raw_account,
    run_scheduled,
    run_tasks,
    scan_table,
    seed_standard,
    shard_tasks,
    total,
)

EVENT = TypeAdapter(AuditEvent)


def _events(items: Sequence[dict[str, Any]]) -> list[AuditEvent]:
    return [
        EVENT.validate_json(it["body"]["S"]) for it in items if it["SK"]["S"].startswith("EVENT#")
    ]


def _accounts(items: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        it["PK"]["S"].removeprefix("ACCOUNT#"): it for it in items if it["SK"]["S"] == "ACCOUNT"
    }


# ------------------------------------------------------------ 1. correctness


def test_one_run_produces_exactly_the_engines_actions(env: Env) -> None:
    # Given 1,000 accounts walked by the engine up to AS_OF, about 10 % of them due
    seeded = seed_standard(env, 1000)
    expected = engine_expectation(seeded, AS_OF)
    due_ids = set(expected.decisions)
    # ... the evaluator's own policy selection agrees with the engine-only expectation
    book = env.store.load_policy_book()
    for s in seeded:
        if is_due(s, AS_OF):
            via_store, _ = env.evaluator.decide_stored(StoredView(s.view, 0), AS_OF, book)
            engine_only = expected.decisions[s.view.account.account_id]
            # (explanations differ only in how the policy was selected)
            assert replace(via_store, explanations=()) == replace(engine_only, explanations=())
    # ... and the scenario is not trivial: actions now, actions deferred, levels entered
    assert len(due_ids) >= 50
    assert sum(expected.ready.values()) >= 20
    assert sum(expected.deferred.values()) >= 20
    # When one scheduled run is dispatched and every shard task is worked
    results = run_scheduled(env, AS_OF)
    # Then exactly the engine's ready actions arrived in the channel queues ...
    arrived = Counter(key_of(a) for a in drain_actions(env))
    assert arrived == expected.ready
    # ... and exactly its deferred ones wait in the outbox for their time
    assert Counter(key_of(a) for a in outbox_pending(env)) == expected.deferred
    assert total(results, "evaluated") == len(due_ids)
    assert sum(sum(r.actions_queued.values()) for r in results) == sum(expected.ready.values())
    assert total(results, "actions_deferred") == sum(expected.deferred.values())
    # ... the audit trail holds every event the engine decided (each level entry), no other
    items = scan_table(env)
    stored_events = {(e.account_id, e.event_id, e.kind) for e in _events(items)}
    predicted = {
        (e.account_id, e.event_id, e.kind) for d in expected.decisions.values() for e in d.events
    }
    assert stored_events == predicted
    level_entries = 0
    for account_id, decision in expected.decisions.items():
        entered = {e.event_id for e in decision.events if e.kind is EventKind.LEVEL_ENTERED}
        trail = env.store.events(account_id)
        assert entered == {e.event_id for e in trail if e.kind is EventKind.LEVEL_ENTERED}
        level_entries += len(entered)
    assert level_entries >= 50
    # ... every due account holds the engine's new view and next time; the others are untouched
    accounts = _accounts(items)
    assert len(accounts) == 1000
    for s in seeded:
        account_id = s.view.account.account_id
        item = accounts[account_id]
        stored_view = AccountView.model_validate_json(item["view"]["S"])
        found = expected.decisions.get(account_id)
        if found is None:
            assert stored_view == prune_view(s.view)
            assert item["version"]["N"] == "1"
            continue
        assert stored_view == prune_view(apply_decision(s.view, found)), account_id
        assert item["version"]["N"] == "2"
        nxt = found.next_evaluation_at
        owing = owes(apply_decision(s.view, found))
        assert item.get("due_at", {}).get("S") == (
            iso(nxt) if nxt else PARKED if owing else None
        ), account_id
    # ... and each approval the engine asked for is pending
    approvals = {
        it["SK"]["S"].removeprefix("APPROVAL#")
        for it in items
        if it["SK"]["S"].startswith("APPROVAL#") and it.get("list_pk", {}).get("S")
    }
    assert approvals == {a.approval_id for d in expected.decisions.values() for a in d.approvals}


def test_deferred_actions_go_out_once_when_their_time_comes(env: Env) -> None:
    # Given a run at 07:00 UTC that deferred actions outside the accounts' sending hours
    seed_standard(env, 400, due_fraction=0.3)
    run_scheduled(env, AS_OF)
    first = Counter(a.action_id for a in drain_actions(env))
    deferred = outbox_pending(env)
    later = AS_OF + timedelta(hours=12)  # 19:00 UTC: New York 14:00, London 19:00
    coming = {a.action_id for a in deferred if a.not_before <= later}
    assert coming, "the scenario must defer actions to later that day"
    # When the run twelve hours later happens
    run_scheduled(env, later)
    second = Counter(a.action_id for a in drain_actions(env))
    # Then the deferred actions whose time came arrived in it, each once, none sent twice
    assert coming <= set(second)
    assert max((first + second).values()) == 1
    assert all(a.not_before > later for a in outbox_pending(env))


# --------------------------------------------------------------- 2. once only


def test_a_scheduled_time_runs_once_and_a_redelivered_task_changes_nothing(env: Env) -> None:
    # Given a portfolio with due accounts
    seed_standard(env, 400, due_fraction=0.2)
    # When the same scheduled time is dispatched twice (also by another Lambda instance)
    first = env.evaluator.dispatch(AS_OF)
    second = env.evaluator.dispatch(AS_OF)
    other = Evaluator(env.store, env.queue, shards=SHARDS).dispatch(AS_OF)
    # Then only the first dispatch enqueued tasks, one per shard
    assert (first, second, other) == (SHARDS, 0, 0)
    tasks = shard_tasks(env)
    assert sorted(t.shard for t in tasks) == list(range(SHARDS))
    # Given the tasks worked once
    results = run_tasks(env, tasks)
    assert total(results, "evaluated") > 0
    sent = drain_actions(env)
    assert sent
    before = scan_table(env)
    # When SQS delivers every task again
    again = run_tasks(env, tasks)
    # Then nothing is evaluated, sent or written again: no action, no audit event
    assert total(again, "evaluated") == 0
    assert total(again, "outbox_resent") == 0
    assert sum(sum(r.actions_queued.values()) for r in again) == 0
    assert drain_actions(env) == []
    after = scan_table(env)
    assert len(_events(after)) == len(_events(before))
    assert after == before


# ---------------------------------------------------------- 3. continuations


def test_continuations_reach_the_same_result_as_one_pass(env: Env) -> None:
    # Given two identical copies of a portfolio with many due accounts per shard
    copy = make_env("dunning-copy", "copy")
    seeded = seed_standard(env, 240, due_fraction=0.5, seed=11)
    seed_standard(copy, 240, due_fraction=0.5, seed=11)
    due = sum(is_due(s, AS_OF) for s in seeded)
    assert due >= 80
    # When the first is evaluated in one pass per shard
    one_pass = run_scheduled(env, AS_OF)
    # ... and the second by workers whose time budget allows 4 accounts per invocation
    copy.evaluator.dispatch(AS_OF)
    margin = copy.evaluator.time_margin_ms
    parts = run_tasks(copy, shard_tasks(copy), remaining=budget_of(4, margin))
    # Then the work was split in continuations (never more than 4 accounts a part) ...
    assert len(one_pass) == SHARDS
    assert len(parts) >= due // 4
    assert all(p.evaluated <= 4 for p in parts)
    assert Counter(p.continuation is None for p in parts)[True] == SHARDS
    assert total(parts, "evaluated") == total(one_pass, "evaluated") == due
    # ... with the same actions queued, the same outbox and the same final table
    assert sorted(_bodies(copy)) == sorted(_bodies(env))
    assert sorted(map(repr, outbox_pending(copy))) == sorted(map(repr, outbox_pending(env)))
    assert scan_table(copy) == scan_table(env)


def test_a_whole_run_through_continuations_reaches_the_same_result_as_one_pass(
    env: Env,
) -> None:
    # Given two identical copies of a portfolio, and a run that must review the
    # whole due index (the policy book changed)
    copy = make_env("dunning-copy", "copy")
    seed_standard(env, 160, due_fraction=0.3, seed=5)
    seed_standard(copy, 160, due_fraction=0.3, seed=5)
    in_index = {s.view.account.account_id for s in iter_views(env.store) if s.due_at is not None}
    assert len(in_index) >= 60
    tasks = [ShardTask(run_id="run-whole", as_of=AS_OF, shard=s, whole=True) for s in range(SHARDS)]
    # When the first copy runs it in one pass per shard, the second 3 accounts a part
    with ReadTracker() as reads:
        one_pass = run_tasks(env, tasks)
    margin = copy.evaluator.time_margin_ms
    parts = run_tasks(copy, tasks, remaining=budget_of(3, margin))
    # Then every account of the index was read, not yet due ones included ...
    assert set(reads.account_items) == in_index
    assert total(one_pass, "reviewed") > 0
    # ... and, the book being the one the portfolio was walked with, no due time
    # of an account not yet due moved (the engine's next evaluation is stable)
    assert total(one_pass, "moved") == total(parts, "moved") == 0
    # (a part reads the accounts the earlier parts moved past its start again:
    # they decide nothing new at the same instant, and write nothing)
    assert total(parts, "reviewed") >= total(one_pass, "reviewed")
    # ... the continuations stayed whole, and both copies ended the same
    assert len(parts) > SHARDS * 3
    assert all(p.continuation.whole for p in parts if p.continuation is not None)
    assert sorted(_bodies(copy)) == sorted(_bodies(env))
    assert scan_table(copy) == scan_table(env)


def _bodies(env: Env) -> list[str]:
    return [body for name in CHANNELS for body in env.drain(name)]


# --------------------------------------------------------- 4. payment race

DUE = date(2026, 1, 2)
DAY_11 = datetime(2026, 1, 13, 12, 0, tzinfo=UTC)  # 11 days overdue: level 1 (10 days)
DAY_31 = datetime(2026, 2, 2, 12, 0, tzinfo=UTC)  # 31 days overdue: level 2 (30 days)


def _two_accounts(env: Env) -> None:
    env.configure([policy()], DAY_11 - timedelta(days=60))
    for acc in ("acc-1", "acc-2"):
        env.store.upsert_account(account(account_id=acc), DAY_11 - timedelta(days=40), "billing")
        env.store.upsert_invoice(
            invoice(f"{acc}-inv", "100.00", DUE, account_id=acc),
            DAY_11 - timedelta(days=40),
            "billing",
        )


class RacingStore(DynamoStore):
    """Records a payment through the real store between the worker's read of an
    account and its conditional write, the first time that account is written."""

    def __init__(self, env: Env, payments: dict[str, Payment]) -> None:
        super().__init__(env.ddb, env.store.table, env.store.shards)
        self.payments = payments
        self.raced: list[str] = []

    def save_decision(
        self, stored: StoredView, new_view: AccountView, decision: Decision, now: datetime
    ) -> None:
        account_id = stored.view.account.account_id
        if account_id in self.payments and account_id not in self.raced:
            self.raced.append(account_id)
            self.record_payment(self.payments[account_id], now, "billing")
        super().save_decision(stored, new_view, decision, now)


def test_a_payment_landing_during_the_decision_wins(env: Env) -> None:
    # Given two accounts in dunning at level 1, both reaching level 2 on day 31
    _two_accounts(env)
    run_scheduled(env, DAY_11)
    assert {a.account_id for a in drain_actions(env)} == {"acc-1", "acc-2"}
    # ... and a full payment of acc-1 landing between the worker's read and its write
    payment = Payment(
        payment_id="pay-race",
        account_id="acc-1",
        currency="EUR",
        amount=Decimal("100.00"),
        received_at=DAY_31,
    )
    racing = RacingStore(env, {"acc-1": payment})
    evaluator = Evaluator(racing, env.queue, shards=SHARDS)
    # When the day-31 run evaluates them
    results = run_scheduled(env, DAY_31, evaluator)
    # Then the write conflicted and was decided again on the paid account
    assert racing.raced == ["acc-1"]
    assert total(results, "conflicts_retried") >= 1
    # ... no action for acc-1 was queued or left in the outbox; acc-2 got its level 2
    sent = drain_actions(env)
    assert [(a.account_id, a.level) for a in sent] == [("acc-2", 2)]
    assert [a for a in outbox_pending(env) if a.account_id == "acc-1"] == []
    # ... the payment is kept
    stored = env.store.get_view("acc-1")
    assert stored.view.invoices == ()
    kinds = Counter(e.kind for e in env.store.events("acc-1"))
    assert kinds[EventKind.PAYMENT_RECEIVED] == 1
    # ... and the case recovered at level 1, never entering level 2
    (case,) = env.store.cases("acc-1")
    assert case.status is CaseStatus.RECOVERED
    assert case.level == 1
    assert [c.status for c in stored.view.cases] == [CaseStatus.RECOVERED]
    assert kinds[EventKind.CASE_RECOVERED] == 1
    assert kinds[EventKind.LEVEL_ENTERED] == 1
    assert "due_pk" not in raw_account(env, "acc-1")


# ------------------------------------------------------------ 5. crash


class CrashingQueue:
    """The channel queues, failing once as if the worker died before SQS took the batch."""

    def __init__(self, inner: SqsActionQueue) -> None:
        self.inner = inner
        self.crashes = 1
        self.sent: list[Action] = []

    def send_actions(
        self, actions: Sequence[Action], queued_at: datetime | None = None
    ) -> list[Action]:
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("worker died before the SQS send")
        accepted = self.inner.send_actions(actions, queued_at)
        self.sent += accepted
        return accepted

    def send_tasks(self, tasks: Sequence[BaseModel]) -> int:
        return self.inner.send_tasks(tasks)


def _run_each(env: Env, as_of: datetime, evaluator: Evaluator) -> tuple[list[ShardResult], int]:
    """One scheduled run whose shard tasks are separate messages: one failing task
    does not stop the others. Returns the results and the number of failed tasks."""
    evaluator.dispatch(as_of)
    results, failed = [], 0
    for task in shard_tasks(env):
        try:
            results += run_tasks(env, [task], evaluator=evaluator)
        except RuntimeError:
            failed += 1
    return results, failed


def test_an_action_left_by_a_crash_is_sent_once_by_the_next_run(env: Env) -> None:
    # Given two accounts reaching level 1, and a worker that dies after writing its
    # decisions and before SQS accepts their actions
    _two_accounts(env)
    queue = CrashingQueue(env.queue)
    evaluator = Evaluator(env.store, queue, shards=SHARDS)
    predicted = {
        a.action_id
        for acc in ("acc-1", "acc-2")
        for a in decide(env.store.get_view(acc).view, policy(), None, DAY_11).actions
    }
    assert len(predicted) == 2
    # When the scheduled run fails on its first send
    results, failed = _run_each(env, DAY_11, evaluator)
    assert failed == 1
    # Then every decision is written, and what was not sent waits in the outbox
    first = Counter(a.action_id for a in drain_actions(env))
    left = {a.action_id for a in outbox_pending(env, DAY_11)}
    assert left
    assert set(first) | left == predicted
    assert not set(first) & left
    assert [c.level for acc in ("acc-1", "acc-2") for c in env.store.cases(acc)] == [1, 1]
    # When the next scheduled run comes (15 minutes later)
    results, failed = _run_each(env, DAY_11 + timedelta(minutes=15), evaluator)
    # Then the pending actions are sent from the outbox, once, and nothing is decided again
    second = Counter(a.action_id for a in drain_actions(env))
    assert failed == 0
    assert second == Counter(left)
    assert total(results, "outbox_resent") == len(left)
    assert total(results, "changed") == 0
    assert outbox_pending(env) == []
    # When a third run comes, Then nothing more is sent
    results, failed = _run_each(env, DAY_11 + timedelta(minutes=30), evaluator)
    assert drain_actions(env) == []
    assert total(results, "outbox_resent") == 0
    assert Counter(a.action_id for a in queue.sent) == Counter(predicted)


class FastChannelQueue:
    """The channel queues, with a channel function so fast that it writes the
    first action's outcome before the worker marks the batch queued."""

    def __init__(self, inner: SqsActionQueue, store: DynamoStore) -> None:
        self.inner = inner
        self.store = store
        self.delivered: list[Action] = []

    def send_actions(
        self, actions: Sequence[Action], queued_at: datetime | None = None
    ) -> list[Action]:
        accepted = self.inner.send_actions(actions, queued_at)
        if accepted and not self.delivered:
            first = accepted[0]
            at = queued_at or DAY_11
            outcome = (first, "delivered", "sent", "msg-1")
            self.store.record_outcomes([outcome], at, {first.action_id: at})
            self.delivered.append(first)
        return accepted

    def send_tasks(self, tasks: Sequence[BaseModel]) -> int:
        return self.inner.send_tasks(tasks)


def test_an_outcome_written_before_the_batch_is_marked_queued_is_kept(env: Env) -> None:
    # Given two accounts reaching level 1, and a channel function that delivers the
    # first action before the worker marks the batch queued
    _two_accounts(env)
    queue = FastChannelQueue(env.queue, env.store)
    evaluator = Evaluator(env.store, queue, shards=SHARDS)
    # When the scheduled run goes
    _, failed = _run_each(env, DAY_11, evaluator)
    assert failed == 0
    # Then the delivered record keeps its outcome; the other one is queued; none is
    # left in the outbox index to be sent again
    records = {
        it["SK"]["S"].removeprefix("OUTBOX#"): it
        for it in scan_table(env)
        if it["SK"]["S"].startswith("OUTBOX#")
    }
    assert len(records) == 2
    (delivered,) = queue.delivered
    statuses = {k: it["status"]["S"] for k, it in records.items()}
    assert statuses.pop(delivered.action_id) == "delivered"
    assert list(statuses.values()) == ["queued"]
    assert all("outbox_pk" not in it for it in records.values())
    assert outbox_pending(env, DAY_11 + timedelta(days=1)) == []


# ------------------------------------------------------- 6. no needless read


def test_accounts_with_nothing_due_are_never_read(env: Env) -> None:
    # Given 1,000 accounts, about 10 % due at AS_OF
    seeded = seed_standard(env, 1000)
    due = {s.view.account.account_id for s in seeded if is_due(s, AS_OF)}
    assert 50 <= len(due) <= 200
    # When one scheduled run is dispatched and worked
    with aws.RequestCounter() as rc, ReadTracker() as reads:
        results = run_scheduled(env, AS_OF)
    # Then exactly the due accounts were read, each once, and through the due index only
    assert total(results, "evaluated") == len(due)
    assert set(reads.account_items) == due
    assert set(reads.account_items.values()) == {1}
    assert reads.due_index_queries == SHARDS  # one page per shard
    # ... no Scan, no batch read, a single-item read only for the selection rules
    # (and the dispatcher's for the book's change counter)
    assert rc.counts["dynamodb.Scan"] == 0
    assert rc.counts["dynamodb.BatchGetItem"] == 0
    assert rc.counts["dynamodb.GetItem"] <= SHARDS + 1
    # ... and a handful of queries: per shard the outbox, the due index, the policy book
    assert rc.counts["dynamodb.Query"] <= SHARDS * 4


# --------------------------------------------------------- 7. the handlers


@dataclass
class FakeContext:
    """What the Lambda runtime passes; the remaining time is scripted."""

    function_name: str = "dunning-evaluate-worker"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = (
        "arn:aws:lambda:eu-west-1:123456789012:function:dunning-evaluate-worker"
    )
    aws_request_id: str = "52fdfc07-2182-454f-963f-5f0f9a621d72"
    log_group_name: str = "/aws/lambda/dunning-evaluate-worker"
    log_stream_name: str = "2026/11/02/[$LATEST]abcdef"
    budget_items: int | None = None
    margin_ms: int = 20_000
    _calls: int = 0

    def get_remaining_time_in_millis(self) -> int:
        self._calls += 1
        if self.budget_items is not None and self._calls > self.budget_items:
            return self.margin_ms - 1
        return 600_000


@pytest.fixture
def handler_env(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    from dunning.observability import metrics
    from dunning.settings import evaluate_settings
    from functions.evaluate import handler

    for key, value in {
        "TABLE_NAME": TABLE_NAME,
        "SHARD_COUNT": str(SHARDS),
        "SHARD_QUEUE_URL": env.urls["shards"],
        "EMAIL_QUEUE_URL": env.urls["email"],
        "SMS_QUEUE_URL": env.urls["sms"],
        "WEBHOOK_QUEUE_URL": env.urls["webhook"],
        "POWERTOOLS_METRICS_NAMESPACE": "DunningTest",
        "POWERTOOLS_SERVICE_NAME": "evaluate",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    # The metrics object was built at import, before these variables: as in Lambda,
    # give it the namespace its environment names.
    monkeypatch.setattr(metrics, "namespace", "DunningTest")
    handler.build_evaluator.cache_clear()
    evaluate_settings.cache_clear()
    yield env
    handler.build_evaluator.cache_clear()
    evaluate_settings.cache_clear()


def _sqs_event(env: Env, queue: str, poison: str | None = None) -> dict[str, Any]:
    """An SQS event as Lambda's poller builds it, from the messages of a queue."""
    arn = f"arn:aws:sqs:eu-west-1:123456789012:dunning-{queue}"
    records = []
    while True:
        out = env.sqs.receive_message(
            QueueUrl=env.urls[queue],
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = out.get("Messages", [])
        if not messages:
            break
        for m in messages:
            records.append(
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m["Attributes"],
                    "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": "eu-west-1",
                }
            )
    if poison is not None:
        records.insert(
            1,
            {
                **records[0],
                "messageId": "0b3a9bd7-0000-4000-8000-00000000dead",
                "receiptHandle": "AQEBpoison",
                "body": poison,
                "md5OfBody": "00000000000000000000000000000000",
            },
        )
    return {"Records": records}


def _ack(env: Env, queue: str, event: dict[str, Any], response: dict[str, Any]) -> None:
    """What Lambda's poller does after a batch: delete the messages that did not fail."""
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    for record in event["Records"]:
        if record["messageId"] not in failed:
            env.sqs.delete_message(QueueUrl=env.urls[queue], ReceiptHandle=record["receiptHandle"])


def _emf(out: str) -> list[dict[str, Any]]:
    blobs = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blobs.append(json.loads(line))
    return blobs


def test_the_handlers_run_a_scheduled_evaluation(
    handler_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    from functions.evaluate import handler

    env = handler_env
    seeded = seed_standard(env, 300, due_fraction=0.25)
    expected = engine_expectation(seeded, AS_OF)
    scheduler_event = {"scheduled_time": "2026-11-02T07:00:00Z"}
    # When EventBridge Scheduler fires the dispatcher, twice for the same time
    first = handler.dispatch(scheduler_event, FakeContext(function_name="dunning-dispatch"))
    again = handler.dispatch(scheduler_event, FakeContext(function_name="dunning-dispatch"))
    # Then one task per shard was enqueued, once
    assert first == {"as_of": "2026-11-02T07:00:00+00:00", "shard_tasks": SHARDS}
    assert again["shard_tasks"] == 0
    # When the worker receives the shard tasks with a poison message among them
    event = _sqs_event(env, "shards", poison="{not json")
    assert len(event["Records"]) == SHARDS + 1
    response = handler.worker(event, FakeContext())
    # Then only the poison message is reported failed
    assert response == {
        "batchItemFailures": [{"itemIdentifier": "0b3a9bd7-0000-4000-8000-00000000dead"}]
    }
    _ack(env, "shards", event, response)
    # ... and the good ones did the engine's work: its ready actions queued, the rest deferred
    assert Counter(key_of(a) for a in drain_actions(env)) == expected.ready
    assert Counter(key_of(a) for a in outbox_pending(env)) == expected.deferred
    assert env.sqs.receive_message(QueueUrl=env.urls["shards"]).get("Messages", []) == []
    capsys.readouterr()


def test_the_worker_publishes_the_actions_it_queued_per_channel(
    handler_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    from functions.evaluate import handler

    env = handler_env
    seed_standard(env, 300, due_fraction=0.25)
    handler.dispatch({"scheduled_time": "2026-11-02T07:00:00Z"}, FakeContext())
    event = _sqs_event(env, "shards")
    capsys.readouterr()
    # When the worker runs the shard tasks
    _ack(env, "shards", event, handler.worker(event, FakeContext()))
    metrics = _emf(capsys.readouterr().out)
    queued = Counter(a.channel.value for a in drain_actions(env))
    assert len(queued) >= 2
    # Then its ActionsQueued metric counts, per channel, what arrived in that channel's queue
    published: Counter[str] = Counter()
    for blob in metrics:
        if "ActionsQueued" not in blob:
            continue
        values = blob["ActionsQueued"]
        published[blob.get("channel", "<none>")] += int(
            sum(values) if isinstance(values, list) else values
        )
    assert published == queued


def test_a_worker_out_of_time_hands_over_to_its_continuation(
    handler_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    from functions.evaluate import handler

    env = handler_env
    seeded = seed_standard(env, 200, due_fraction=0.4, seed=3)
    expected = engine_expectation(seeded, AS_OF)
    handler.dispatch({"scheduled_time": "2026-11-02T07:00:00Z"}, FakeContext())
    # When every invocation has time for 5 accounts only, and continuations go back via SQS
    invocations = 0
    while True:
        event = _sqs_event(env, "shards")
        if not event["Records"]:
            break
        for record in event["Records"]:
            invocations += 1
            single = {"Records": [record]}
            response = handler.worker(single, FakeContext(budget_items=5))
            assert response == {"batchItemFailures": []}
            _ack(env, "shards", single, response)
        assert invocations < 200
    # Then the shards were finished in several invocations, with the engine's result
    assert invocations > SHARDS
    assert Counter(key_of(a) for a in drain_actions(env)) == expected.ready
    assert Counter(key_of(a) for a in outbox_pending(env)) == expected.deferred
    capsys.readouterr()


# ------------------------------------------------- 8. due-index pagination
#
# The evaluator has no page-size setting: `run_shard` calls `query_due` without
# a `Limit`, so its pages are DynamoDB's own (1 MB). Accounts with large views
# make a shard span several real pages, with no test-only path in the code.

PAGED_AS_OF = DAY_11  # every due account is 11 days overdue: it enters level 1


def _shard0_ids(n: int, width: int = 100) -> list[str]:
    """`n` long account ids of shard 0 (long ids make large views)."""
    ids: list[str] = []
    i = 0
    while len(ids) < n:
        candidate = f"acc-{i:05d}-".ljust(width, "p")
        if shard_of(candidate, SHARDS) == 0:
            ids.append(candidate)
        i += 1
    return ids


def _large_view(account_id: str, invoices: int) -> AccountView:
    """An account with `invoices` small overdue invoices (about 0.4 KB each in its view)."""
    return AccountView(
        account=account(account_id=account_id),
        invoices=tuple(
            invoice(
                f"{account_id[:10]}-{j:04d}-".ljust(120, "i"), "10.00", DUE, account_id=account_id
            )
            for j in range(invoices)
        ),
    )


def _due_pages(env: Env, shard: int, as_of: datetime) -> list[list[str]]:
    """The due index's pages of a shard as DynamoDB serves them (account ids),
    read test-side with the index's own key condition."""
    pages: list[list[str]] = []
    kwargs: dict[str, Any] = {
        "TableName": env.store.table,
        "IndexName": DUE_INDEX,
        "KeyConditionExpression": f"{DUE_PK} = :p AND {DUE_AT} <= :t",
        "ExpressionAttributeValues": {":p": {"S": f"DUE#{shard}"}, ":t": {"S": iso(as_of)}},
    }
    while True:
        out = env.ddb.query(**kwargs)
        pages.append([it["PK"]["S"].removeprefix("ACCOUNT#") for it in out["Items"]])
        if "LastEvaluatedKey" not in out:
            return pages
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def _budgets(*per_part: int) -> Callable[[], Callable[[], int]]:
    """Remaining-time callables, one per part: part i may check `per_part[i]`
    accounts (the last figure repeats), then it is out of time."""
    parts = iter(per_part)
    last = per_part[-1]

    def factory() -> Callable[[], int]:
        nonlocal last
        last = next(parts, last)
        return budget_of(last, 20_000)()

    return factory


def test_every_due_account_is_evaluated_once_across_pages_and_continuations(env: Env) -> None:
    """A shard spanning several 1 MB due-index pages, cut by continuations at a page
    boundary, inside a page and across pages, evaluates each due account exactly once."""
    # Given 58 due accounts of shard 0 whose views (~42 KB) fill three 1 MB pages,
    # 5 accounts of shard 0 not due yet, and 6 small due accounts in the other shards
    env.configure([policy()], PAGED_AS_OF - timedelta(days=60))
    ids = _shard0_ids(63)
    due_ids, later_ids = ids[:58], ids[58:]
    others = [f"acc-{i}" for i in range(40) if shard_of(f"acc-{i}", SHARDS) != 0][:6]
    views: list[tuple[AccountView, datetime | None]] = [
        (_large_view(a, 110), PAGED_AS_OF - timedelta(minutes=100 - n))
        for n, a in enumerate(due_ids)
    ]
    views += [(_large_view(a, 1), PAGED_AS_OF + timedelta(days=3)) for a in later_ids]
    views += [(_large_view(a, 1), PAGED_AS_OF - timedelta(hours=1)) for a in others]
    env.store.import_views(views, PAGED_AS_OF - timedelta(days=1))
    pages = _due_pages(env, 0, PAGED_AS_OF)
    assert len(pages) >= 3 and all(len(p) > 3 for p in pages[:2]), [len(p) for p in pages]
    assert [a for p in pages for a in p] == due_ids  # the index serves them in due order
    # When shard 0's task runs with time for: exactly page 1 (out of time on the first
    # item of page 2), then 3 accounts (inside page 2), then everything left (across pages)
    tasks = [ShardTask(run_id="paged", as_of=PAGED_AS_OF, shard=s) for s in range(SHARDS)]
    with ReadTracker() as reads, AccountWrites() as writes:
        parts = run_tasks(env, tasks[:1], remaining=_budgets(len(pages[0]), 3, 10_000))
        rest = run_tasks(env, tasks[1:])
    # Then the continuations cut at a page's end, inside a page, and one part read on
    # across page boundaries
    assert [p.evaluated for p in parts] == [len(pages[0]), 3, len(due_ids) - len(pages[0]) - 3]
    keys = [p.continuation.start_key for p in parts if p.continuation is not None]
    assert len(keys) == 2
    assert keys[0] is not None and keys[0]["PK"]["S"] == f"ACCOUNT#{pages[0][-1]}"
    assert keys[1] is not None and keys[1]["PK"]["S"] == f"ACCOUNT#{pages[1][2]}"
    assert reads.due_index_queries >= len(pages) + 2 + (SHARDS - 1)
    # ... each due account was written exactly once (one conditional write, no retry),
    # the accounts not due never were, and neither was read
    assert writes.attempts == Counter(dict.fromkeys([*due_ids, *others], 1))
    assert not set(reads.account_items) & set(later_ids)
    assert total(parts, "evaluated") + total(rest, "evaluated") == len(due_ids) + len(others)
    # ... with one level-1 reminder each, sent once, and the next evaluation in the future
    sent = Counter(a.account_id for a in drain_actions(env))
    assert sent == Counter(dict.fromkeys([*due_ids, *others], 1))
    for account_id in due_ids:
        item = raw_account(env, account_id)
        (case,) = AccountView.model_validate_json(item["view"]["S"]).cases
        assert case.level == 1
        assert item["version"]["N"] == "2"
        assert item["due_at"]["S"] > iso(PAGED_AS_OF)
    assert _due_pages(env, 0, PAGED_AS_OF) == [[]]


# ------------------------------------------- 9. audit events are atomic


def _sks(items: Sequence[dict[str, Any]], prefix: str) -> set[str]:
    return {it["SK"]["S"] for it in items if it["SK"]["S"].startswith(prefix)}


def _rename(env: Env, account_id: str, at: datetime) -> None:
    """A concurrent writer (billing) renames the account: a new version of it."""
    current = env.store.get_view(account_id).view.account
    env.store.upsert_account(current.model_copy(update={"name": "Renamed Ltd"}), at, "billing")


def test_a_decisions_audit_events_are_written_with_it_or_not_at_all(env: Env) -> None:
    """A decision's audit events travel in the transaction that writes its account and
    case: a conflict leaves none of them, the successful retry writes them all."""
    # Given two accounts reaching level 1, and a concurrent writer that renames acc-1
    # between the worker's read and its first write
    _two_accounts(env)
    before = {e.event_id for e in env.store.events("acc-1")}
    after_conflict: list[dict[str, Any]] = []

    def race(n: int, operation: str, params: dict[str, Any]) -> None:
        if n == 1:
            _rename(env, "acc-1", DAY_11 - timedelta(minutes=5))
        elif n == 2:  # the retry: the cancelled attempt is over, nothing else ran since
            after_conflict.extend(partition(env, "acc-1"))

    # When the scheduled run evaluates them
    with OnAccountWrite("acc-1", race) as hook:
        results = run_scheduled(env, DAY_11)
    # Then acc-1's decision was written in two transactions: the cancelled one, the retry
    assert [op for op, _ in hook.requests] == ["TransactWriteItems"] * 2
    assert total(results, "conflicts_retried") == 1
    # ... the decision written is the engine's on the renamed account (as the retry read it)
    assert after_conflict
    (acc_item,) = [it for it in after_conflict if it["SK"]["S"] == "ACCOUNT"]
    renamed = AccountView.model_validate_json(acc_item["view"]["S"])
    assert renamed.account.name == "Renamed Ltd"
    decision = decide(renamed, policy(), None, DAY_11)
    final_view = env.store.get_view("acc-1")
    assert final_view.view == prune_view(apply_decision(renamed, decision))
    assert final_view.version == int(acc_item["version"]["N"]) + 1
    (case,) = final_view.view.cases
    decided = {e.event_id for e in decision.events}
    assert len(decided) >= 2
    # ... each attempt carried the decision's events in the same request as the account's
    # conditional put, the case and the outbox record
    event_sk = {event_sort_key(e, n, DECISION_PHASE) for n, e in enumerate(decision.events)}
    for _, params in hook.requests:
        items = params["TransactItems"]
        puts = [i["Put"] for i in items if "Put" in i]
        account_put = next(p for p in puts if p["Item"]["SK"]["S"] == "ACCOUNT")
        assert account_put["ConditionExpression"] == "version = :v"
        assert _sks([p["Item"] for p in puts], "EVENT#") == event_sk
        assert _sks([p["Item"] for p in puts], "CASE#") == {f"CASE#{case.case_id}"}
        assert len(_sks([p["Item"] for p in puts], "OUTBOX#")) == 1
    # ... after the cancelled attempt: the concurrent rename, and nothing of the decision
    assert _sks(after_conflict, "EVENT#").isdisjoint(event_sk)
    assert _sks(after_conflict, "CASE#") == set()
    assert _sks(after_conflict, "OUTBOX#") == set()
    assert renamed.cases == ()
    # ... after the retry: every event of the decision, once, with its case and outbox record
    final = partition(env, "acc-1")
    assert event_sk <= _sks(final, "EVENT#")
    new_events = [e for e in _events(final) if e.event_id not in before]
    assert Counter(e.kind for e in new_events)[EventKind.ACCOUNT_UPDATED] == 1
    assert sorted(e.event_id for e in new_events if e.kind is not EventKind.ACCOUNT_UPDATED) == (
        sorted(decided)
    )
    assert _sks(final, "CASE#") == {f"CASE#{case.case_id}"}
    assert len(_sks(final, "OUTBOX#")) == 1


class CrashAfterTransaction(DynamoStore):
    """The real store, whose process dies once right after a decision's transaction."""

    def __init__(self, env: Env) -> None:
        super().__init__(env.ddb, env.store.table, env.store.shards)
        self.crashed = False

    def save_decision(
        self, stored: StoredView, new_view: AccountView, decision: Decision, now: datetime
    ) -> None:
        super().save_decision(stored, new_view, decision, now)
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("worker died after the decision's transaction")


def test_a_crash_after_a_large_decisions_transaction_loses_no_audit_event(env: Env) -> None:
    """A decision needing more writes than one transaction holds keeps its whole audit
    trail through a crash between its writes and the redelivered shard task."""
    # Given an invoice-mode policy and 40 overdue invoices: 40 cases and 40 actions with
    # two audit events each, more than one transaction (100 writes) holds
    p = policy(mode=Mode.INVOICE, levels=(level("reminder", 10, email("reminder")),))
    env.configure([p], DAY_11 - timedelta(days=60))
    env.store.upsert_account(account(), DAY_11 - timedelta(days=40), "billing")
    env.store.upsert_invoices(
        [invoice(f"inv-{i:02d}", "50.00", DUE) for i in range(40)],
        DAY_11 - timedelta(days=40),
        "billing",
    )
    stored = env.store.get_view("acc-1")
    # (what the engine alone does at that instant: several passes, every event of them)
    view, expected_events, passes = stored.view, set(), 0
    while True:
        decision = decide(view, p, None, DAY_11)
        expected_events |= {e.event_id for e in decision.events}
        view, passes = apply_decision(view, decision), passes + 1
        if not decision.more:
            break
    assert passes > 1, "the scenario must not fit in one transaction"
    # When the worker dies right after the first of the account's transactions
    crashing = Evaluator(CrashAfterTransaction(env), env.queue, shards=SHARDS)
    crashing.dispatch(DAY_11)
    tasks = shard_tasks(env)
    with pytest.raises(RuntimeError, match="worker died"):
        run_tasks(env, tasks, evaluator=crashing)
    # ... SQS redelivers its shard tasks to a healthy worker, and the next runs come
    run_tasks(env, tasks)
    run_scheduled(env, DAY_11 + timedelta(minutes=15))
    run_scheduled(env, DAY_11 + timedelta(days=1))
    # Then the decision was written once and its actions went out once ...
    assert len(env.store.cases("acc-1")) == 40
    assert len({a.action_id for a in drain_actions(env)}) == 40
    # ... and the audit trail holds every event of every pass
    trail = {e.event_id for e in env.store.events("acc-1")}
    missing = expected_events - trail
    assert missing == set(), f"{len(missing)} of {len(expected_events)} audit events lost"


# ---------------------------------------------- 10. metrics and log keys

DAY = timedelta(days=1)


def _metric_sum(blobs: Sequence[dict[str, Any]], name: str) -> int:
    """The sum of a metric's values over EMF blobs that declare it."""
    found = 0
    for blob in blobs:
        declared = {m["Name"] for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
        if name in declared:
            values = blob[name]
            found += int(sum(values) if isinstance(values, list) else values)
    return found


def _log_records(out: str) -> list[dict[str, Any]]:
    """Powertools logger lines (JSON with a level and a message, not EMF)."""
    records = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' not in line:
            record = json.loads(line)
            if "level" in record and "message" in record:
                records.append(record)
    return records


def test_the_worker_publishes_its_counts_and_logs_with_run_and_shard(
    handler_env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's EMF metrics CasesEvaluated, LevelChanges, ConflictsRetried and
    Continuations equal what a known run did, and its log lines carry run_id and shard."""
    import sys

    from dunning.evaluation import run_id_for
    from dunning.observability import logger
    from functions.evaluate import handler

    # (the logger's handler holds the stdout of import time: point it at the captured one)
    monkeypatch.setattr(logger.registered_handler, "stream", sys.stdout)
    env = handler_env
    # Given 200 accounts, 40 % due, and a concurrent writer renaming one due account
    # between the worker's read and its write
    seeded = seed_standard(env, 200, due_fraction=0.4, seed=3)
    expected = engine_expectation(seeded, AS_OF)
    level_changes = sum(
        e.kind is EventKind.LEVEL_ENTERED for d in expected.decisions.values() for e in d.events
    )
    raced = min(a for a, d in expected.decisions.items() if d.events)
    assert len(expected.decisions) >= 60 and level_changes >= 60
    # ... and one due account whose policy override names no policy (the worker warns)
    env.store.upsert_account(
        account(account_id="acc-orphan", policy_override="retired"), AS_OF - DAY, "billing"
    )
    env.store.upsert_invoice(
        invoice("orphan-1", "100.00", date(2026, 10, 1), account_id="acc-orphan"),
        AS_OF - DAY,
        "billing",
    )
    handler.dispatch({"scheduled_time": "2026-11-02T07:00:00Z"}, FakeContext())
    capsys.readouterr()

    def race(n: int, operation: str, params: dict[str, Any]) -> None:
        if n == 1:
            _rename(env, raced, AS_OF - timedelta(minutes=5))

    # When every invocation has time for 7 accounts, one shard task per invocation
    invocations = 0
    with OnAccountWrite(raced, race) as hook:
        while event := _sqs_event(env, "shards"):
            if not event["Records"]:
                break
            for record in event["Records"]:
                invocations += 1
                single = {"Records": [record]}
                response = handler.worker(single, FakeContext(budget_items=7))
                assert response == {"batchItemFailures": []}
                _ack(env, "shards", single, response)
            assert invocations < 100
    out = capsys.readouterr().out
    assert len(hook.requests) == 2  # the cancelled write and its retry
    blobs = _emf(out)
    # Then the metrics count what happened: every due case once, each level entered,
    # the one conflict, and one continuation per invocation that ran out of time
    assert invocations > SHARDS
    assert _metric_sum(blobs, "CasesEvaluated") == len(expected.decisions)
    assert _metric_sum(blobs, "LevelChanges") == level_changes
    assert _metric_sum(blobs, "ConflictsRetried") == 1
    assert _metric_sum(blobs, "Continuations") == invocations - SHARDS
    worker_blobs = [b for b in blobs if "CasesEvaluated" in b]
    assert len(worker_blobs) == invocations
    for blob in worker_blobs:
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "DunningTest"
    # ... and every log line of the worker carries the run and the shard it worked
    records = _log_records(out)
    assert records
    run_id = run_id_for(AS_OF)
    assert {r.get("run_id") for r in records} == {run_id}
    assert {r.get("shard") for r in records} == set(range(SHARDS))
    (warning,) = [r for r in records if r["message"] == "no policy"]
    assert warning["account_id"] == "acc-orphan"
    assert warning["shard"] == shard_of("acc-orphan", SHARDS)
    summaries = [r for r in records if r["message"] == "shard evaluated"]
    assert len(summaries) == invocations
    assert sum(r["evaluated"] for r in summaries) == len(expected.decisions)
    assert sum(r["continuation"] for r in summaries) == invocations - SHARDS
    for shard in range(SHARDS):
        parts = sorted(r["part"] for r in summaries if r["shard"] == shard)
        assert parts == list(range(len(parts)))


# ------------------------------------- 11. a concurrent writer, re-read and retried

RACE_AT = DAY_11 - timedelta(minutes=5)  # when the concurrent writer's change lands
_race_tables = itertools.count()


def _race_portfolio(env: Env) -> None:
    """acc-1 and acc-2 reach level 1 at DAY_11 (a decision: a transaction); acc-3's
    invoice is not overdue yet (nothing changes: a due-only update)."""
    env.configure([policy()], DAY_11 - timedelta(days=60))
    for acc, due in (("acc-1", DUE), ("acc-2", DUE), ("acc-3", date(2026, 1, 20))):
        env.store.upsert_account(account(account_id=acc), DAY_11 - timedelta(days=40), "billing")
        env.store.upsert_invoice(
            invoice(f"{acc}-inv", "100.00", due, account_id=acc),
            DAY_11 - timedelta(days=40),
            "billing",
        )


@dataclass(frozen=True)
class ConcurrentChange:
    """What another writer does to an account, through the real store."""

    kind: str  # "payment", "rename" or "invoice"
    amount: Decimal
    due: date

    def apply(self, env: Env, account_id: str) -> None:
        if self.kind == "payment":
            payment = Payment(
                payment_id="pay-race",
                account_id=account_id,
                currency="EUR",
                amount=self.amount,
                received_at=RACE_AT,
            )
            env.store.record_payment(payment, RACE_AT, "billing")
        elif self.kind == "invoice":
            extra = invoice(f"{account_id}-extra", self.amount, self.due, account_id=account_id)
            env.store.upsert_invoice(extra, RACE_AT, "billing")
        else:
            _rename(env, account_id, RACE_AT)


CHANGES = st.builds(
    ConcurrentChange,
    kind=st.sampled_from(["payment", "rename", "invoice"]),
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("150.00"), places=2),
    due=st.dates(min_value=date(2025, 11, 1), max_value=date(2026, 2, 28)),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(target=st.sampled_from(["acc-1", "acc-3"]), change=CHANGES)
def test_a_write_racing_the_worker_ends_as_if_it_had_landed_first(
    aws_env: None, target: str, change: ConcurrentChange
) -> None:
    """A concurrent write between the worker's read and its conditional write (decision
    or due-only move) is kept, and the retry re-reads: the end state, queues and outbox
    are those of a run where the write landed before the read."""
    n = next(_race_tables)
    racing, sequential = make_env(f"race-{n}", f"race-{n}"), make_env(f"seq-{n}", f"seq-{n}")
    _race_portfolio(racing)
    _race_portfolio(sequential)
    # Given the change landing before the run on one table ...
    change.apply(sequential, target)
    plain = run_scheduled(sequential, DAY_11)
    # ... and, on the other, between the worker's read of the target and its write
    with OnAccountWrite(
        target, lambda k, *_: change.apply(racing, target) if k == 1 else None
    ) as hook:
        raced = run_scheduled(racing, DAY_11)
    event(f"raced write: {hook.requests[0][0]}, retry: {hook.requests[-1][0]}")
    # Then the racing write was refused once and retried on what the writer left
    assert total(raced, "conflicts_retried") == 1
    assert total(plain, "conflicts_retried") == 0
    assert total(raced, "evaluated") == total(plain, "evaluated") == 3
    # ... and the table, the channel queues and the outbox are those of the sequential run
    assert scan_table(racing) == scan_table(sequential)
    assert sorted(_bodies(racing)) == sorted(_bodies(sequential))
    assert outbox_pending(racing) == outbox_pending(sequential)


# ------------------------------ 12. a varied portfolio against the simulation

VARIED_AT = AS_OF - timedelta(days=10)  # when the collectors and billing acted


def _open_balance(view: AccountView) -> Decimal:
    currency = view.account.currency
    return sum(
        (i.open_amount for i in view.invoices if i.currency == currency and i.open_amount > 0),
        Decimal(0),
    )


def _pay(env: Env, view: AccountView, amount: Decimal, at: datetime, tag: str) -> None:
    account_id = view.account.account_id
    env.store.record_payment(
        Payment(
            payment_id=f"pay-{tag}-{account_id}",
            account_id=account_id,
            currency=view.account.currency,
            amount=amount,
            received_at=at,
        ),
        at,
        "billing",
    )


def _exclude_account(view: AccountView) -> Mutation:
    """The account is named by the exclusion list `legal-hold`."""
    return Mutation(view.model_copy(update={"excluded_by": ("legal-hold",)}))


def _exclude_first_invoice(view: AccountView) -> Mutation:
    """The account's first invoice is named by an exclusion list."""
    first, *rest = view.invoices
    excluded = first.model_copy(update={"excluded": True})
    return Mutation(view.model_copy(update={"invoices": (excluded, *rest)}))


def _vary(env: Env, seeded: Sequence[Seeded]) -> dict[str, list[str]]:
    """Bring a standard portfolio into varied states through the real store: payments
    in full and in part, promises to pay (kept, broken, still running), disputes
    (over and running), exclusion lists (account and invoice), suspended service,
    early payments. Returns the accounts of each group."""
    rng = random.Random(5)
    policy_of = {s.view.account.account_id: s.policy for s in seeded}
    dunned = sorted(
        s.view.account.account_id
        for s in seeded
        if any(c.status is CaseStatus.ACTIVE for c in s.view.cases)
    )
    quiet = sorted(s.view.account.account_id for s in seeded if not s.view.cases)
    rng.shuffle(dunned)
    rng.shuffle(quiet)
    sizes = {
        "paid": 20,
        "part_paid": 15,
        "promise_kept": 12,
        "promise_broken": 12,
        "promise_running": 12,
        "dispute_over": 10,
        "dispute_running": 10,
        "excluded": 12,
        "invoice_excluded": 10,
        "service_suspended": 10,
    }
    assert len(dunned) >= sum(sizes.values())
    groups: dict[str, list[str]] = {}
    for name, size in sizes.items():
        groups[name], dunned = dunned[:size], dunned[size:]
    groups["paid_early"], groups["excluded_quiet"] = quiet[:12], quiet[12:18]

    def active_case(view: AccountView) -> Case:
        return next(c for c in view.cases if c.status is CaseStatus.ACTIVE)

    views = {s.view.account.account_id: s.view for s in seeded}  # as imported
    for acc in groups["paid"] + groups["paid_early"]:
        _pay(env, views[acc], _open_balance(views[acc]), VARIED_AT, "full")
    for acc in groups["part_paid"]:
        smallest = min(i.open_amount for i in views[acc].invoices if i.open_amount > 0)
        _pay(env, views[acc], smallest, VARIED_AT, "part")
    # Promises and disputes on each account's running case (nothing wrote it since import)
    for name, days in (("promise_kept", 2), ("promise_broken", 2), ("promise_running", 25)):
        for acc in groups[name]:
            view = views[acc]
            promised = min(i.open_amount for i in view.invoices if i.open_amount > 0)
            today = VARIED_AT.astimezone(ZoneInfo(view.account.timezone)).date()
            promise = partial(
                collect.promise_to_pay,
                policy=policy_of[acc],
                case_id=active_case(view).case_id,
                suspension_id=f"ptp-{acc}",
                amount=promised,
                promised_date=today + timedelta(days=days),
                now=VARIED_AT,
                actor="collector",
            )
            env.store.mutate(acc, promise, VARIED_AT)
            if name == "promise_kept":
                _pay(env, view, promised, VARIED_AT + timedelta(days=1), "promise")
    for name, days in (("dispute_over", 3), ("dispute_running", 40)):
        for acc in groups[name]:
            dispute = partial(
                collect.suspend,
                policy=policy_of[acc],
                case_id=active_case(views[acc]).case_id,
                suspension_id=f"dispute-{acc}",
                kind=SuspensionKind.DISPUTE,
                reason="the customer disputes the amount",
                days=days,
                now=VARIED_AT,
                actor="collector",
            )
            env.store.mutate(acc, dispute, VARIED_AT)
    # Exclusion lists as the view records them (the lists' own API is not under test)
    for acc in groups["excluded"] + groups["excluded_quiet"]:
        env.store.mutate(acc, _exclude_account, VARIED_AT)
    for acc in groups["invoice_excluded"]:
        env.store.mutate(acc, _exclude_first_invoice, VARIED_AT)
    for n, acc in enumerate(groups["service_suspended"]):
        current = views[acc].account
        suspended = current.model_copy(update={"service_status": ServiceStatus.SUSPENDED})
        env.store.upsert_account(suspended, VARIED_AT, "billing")
        if n % 2 == 0:  # half of them pay everything afterwards
            _pay(env, views[acc], _open_balance(views[acc]), VARIED_AT + timedelta(days=2), "all")
    return groups


def test_a_varied_portfolio_of_1000_accounts_runs_as_the_simulation_predicts(env: Env) -> None:
    """1,000 accounts in mixed currencies, time zones and states (paid, promises,
    disputes, exclusions, suspended service): one run leaves no account due, sends no
    action twice, and matches the pure-engine simulation account by account."""
    # Given a standard portfolio brought into varied states by billing and collectors
    seeded = seed_standard(env, 1000, due_fraction=0.3, seed=21)
    groups = _vary(env, seeded)
    views = list(iter_views(env.store))
    assert len(views) == 1000
    assert len({v.view.account.currency for v in views}) >= 4
    assert len({v.view.account.timezone for v in views}) >= 5
    book = env.store.load_policy_book()
    due_before = {v.view.account.account_id for v in views if v.due_at and v.due_at <= iso(AS_OF)}
    # ... and the pure-engine simulation of the next scheduled run, at AS_OF
    simulated: dict[str, AccountView] = {}
    sim = simulate(
        views,
        book,
        start=AS_OF - timedelta(days=1),
        days=1,
        on_day=lambda _row, at_end: simulated.update(at_end),
    )
    (row,) = sim.days
    assert row.at == AS_OF
    # When the scheduled run is dispatched and every shard task worked
    results = run_scheduled(env, AS_OF)
    # Then no account is left due at AS_OF: each due one has its next evaluation later
    assert count_due(env.store, AS_OF) == 0
    items = scan_table(env)
    accounts = _accounts(items)
    for account_id in due_before:
        due_at = accounts[account_id].get("due_at", {}).get("S")
        assert due_at is None or due_at > iso(AS_OF), account_id
    # ... no action twice: sent, deferred and held for approval, every action id is unique
    sent = drain_actions(env)
    waiting = outbox_pending(env)
    held = [
        a
        for it in items
        if it["SK"]["S"].startswith("APPROVAL#") and it.get("list_pk")
        for a in APPROVAL.validate_json(it["body"]["S"]).actions
    ]
    ids = Counter(a.action_id for a in [*sent, *waiting, *held])
    assert ids and max(ids.values()) == 1
    # ... none for an excluded account, none for a case under a running promise or dispute
    excluded = {*groups["excluded"], *groups["excluded_quiet"]}
    paused = {
        c.case_id
        for v in views
        if v.view.account.account_id in {*groups["promise_running"], *groups["dispute_running"]}
        for c in v.view.cases
        if c.status is CaseStatus.SUSPENDED
    }
    assert len(paused) == len(groups["promise_running"]) + len(groups["dispute_running"])
    assert excluded <= due_before
    for action in [*sent, *waiting, *held]:
        assert action.account_id not in excluded and action.case_id not in paused, action
    # ... the counts agree with the simulation's ...
    assert total(results, "evaluated") == row.evaluated == len(due_before) - row.not_covered
    assert total(results, "not_covered") == row.not_covered
    assert total(results, "recovered") == row.cases_recovered
    pending = [it for it in items if it["SK"]["S"].startswith("APPROVAL#") and it.get("list_pk")]
    assert total(results, "approvals") == row.approvals_requested == len(pending)
    assert total(results, "level_changes") == sum(e.count for e in row.level_entries)
    assert total(results, "actions_deferred") == row.actions_deferred == len(waiting)
    assert dict(Counter(a.channel.value for a in sent)) == row.actions_sent
    run_events = [e for e in _events(items) if e.at == AS_OF and e.actor == "engine"]
    kinds = Counter(e.kind for e in run_events)
    assert kinds[EventKind.PROMISE_KEPT] == row.promises_kept
    assert kinds[EventKind.PROMISE_BROKEN] == row.promises_broken
    assert kinds[EventKind.CASE_OPENED] == row.cases_opened
    assert kinds[EventKind.CASE_REOPENED] == row.cases_reopened
    assert kinds[EventKind.CASE_RECOVERED] == row.cases_recovered
    entered = Counter(
        (str(e.data["policy_id"]), int(e.data["level"]))
        for e in run_events
        if e.kind is EventKind.LEVEL_ENTERED
    )
    assert entered == Counter({(e.policy_id, e.level): e.count for e in row.level_entries})
    # ... and so does every account's stored view
    for account_id, view in simulated.items():
        stored = AccountView.model_validate_json(accounts[account_id]["view"]["S"])
        assert stored == view, account_id
    # ... on a run where each kind of state had something to show
    assert row.promises_kept >= 5 and row.promises_broken >= 5
    assert row.cases_recovered >= 20 and row.approvals_requested >= 1
    assert row.actions_deferred >= 10 and len(row.actions_sent) >= 2
    restored = {a.account_id for a in [*sent, *waiting] if a.type is ActionType.RESTORE_SERVICE}
    assert restored  # service suspended by dunning comes back once the case recovers


@pytest.mark.parametrize(
    ("target", "raced_write"), [("acc-1", "TransactWriteItems"), ("acc-3", "UpdateItem")]
)
def test_a_conflict_is_retried_on_the_account_the_failed_write_returned(
    env: Env, target: str, raced_write: str
) -> None:
    """ReturnValuesOnConditionCheckFailure: the refused write (decision transaction or
    due-only update) brings the account back as it now is; the retry reads nothing."""
    _race_portfolio(env)
    env.evaluator.dispatch(DAY_11)
    tasks = shard_tasks(env)
    racing = False
    worker_reads: list[str] = []

    def race(n: int, *_: object) -> None:
        nonlocal racing
        if n == 1:
            racing = True
            _rename(env, target, RACE_AT)
            racing = False

    def on_read(params: dict[str, Any], **_: object) -> None:
        if not racing and params["Key"]["PK"]["S"] == f"ACCOUNT#{target}":
            worker_reads.append(params["Key"]["SK"]["S"])

    env.ddb.meta.events.register("provide-client-params.dynamodb.GetItem", on_read, "reads")
    # When a rename lands between the worker's read of the account and its write
    with OnAccountWrite(target, race) as hook:
        results = run_tasks(env, tasks)
    env.ddb.meta.events.unregister("provide-client-params.dynamodb.GetItem", unique_id="reads")
    # Then the write was refused once and retried without reading the account again
    assert [op for op, _ in hook.requests] == [raced_write, raced_write]
    assert total(results, "conflicts_retried") == 1
    assert worker_reads == []
    # ... and the retry decided on the renamed account
    assert env.store.get_view(target).view.account.name == "Renamed Ltd"
