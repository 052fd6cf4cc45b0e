"""The scheduled evaluation on moto: dispatcher, shard workers, outbox, handlers.

Each test states the product's promise it proves (docs/architecture.md,
"Evaluation flow"): the engine's actions and nothing else, once per scheduled
time, the same result through continuations, no action for a paid account,
no action lost by a crash, no read of an account with nothing due.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from dunning import aws
from dunning.engine import apply_decision, decide
from dunning.evaluation import Evaluator, ShardResult
from dunning.model import (
    AccountView,
    Action,
    AuditEvent,
    CaseStatus,
    Decision,
    EventKind,
    Payment,
)
from dunning.queues import SqsActionQueue
from dunning.store import DynamoStore, StoredView
from dunning.store.dynamo import prune_view
from dunning.store.schema import iso
from tests.builders import account, invoice, policy
from tests.integration.conftest import SHARDS, TABLE_NAME, Env
from tests.integration.helpers import (
    AS_OF,
    CHANNELS,
    ReadTracker,
    budget_of,
    drain_actions,
    engine_expectation,
    is_due,
    key_of,
    make_env,
    outbox_pending,
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
        decision = expected.decisions.get(account_id)
        if decision is None:
            assert stored_view == prune_view(s.view)
            assert item["version"]["N"] == "1"
            continue
        assert stored_view == prune_view(apply_decision(s.view, decision)), account_id
        assert item["version"]["N"] == "2"
        nxt = decision.next_evaluation_at
        assert item.get("due_at", {}).get("S") == (iso(nxt) if nxt else None)
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

    def send_actions(self, actions: Sequence[Action]) -> list[Action]:
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("worker died before the SQS send")
        accepted = self.inner.send_actions(actions)
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
    assert rc.counts["dynamodb.Scan"] == 0
    assert rc.counts["dynamodb.BatchGetItem"] == 0
    assert rc.counts["dynamodb.GetItem"] <= SHARDS
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
