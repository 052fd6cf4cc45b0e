"""Shared code of the integration tests: seeding, running a scheduled evaluation,
reading what arrived in the channel queues and what stays in the outbox, and a
read tracker that counts the account items DynamoDB returned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dunning import aws
from dunning.engine import decide
from dunning.evaluation import Evaluator, ShardResult, ShardTask
from dunning.model import Action, Channel, Decision
from dunning.queues import ACTION, SqsActionQueue
from dunning.store import TABLE, DynamoStore
from dunning.store.schema import DUE_INDEX
from local.portfolio import (
    Seeded,
    build_portfolio,
    standard_calendar,
    standard_policies,
    standard_rules,
)
from tests.integration.conftest import SHARDS, Env, forever

# A Monday, 07:00 UTC: 08:00 in Berlin (inside sending hours), 02:00 in New York
# and 07:00 in London (outside: deferred), afternoon in Tokyo and Sydney.
AS_OF = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
CHANNELS = ("email", "sms", "webhook")

ActionKey = tuple[str, str, str]  # (account_id, action_id, type)


def key_of(action: Action) -> ActionKey:
    return (action.account_id, action.action_id, action.type.value)


def make_env(table_name: str, prefix: str) -> Env:
    """A second, independent table and set of queues inside the running moto."""
    ddb, sqs = aws.dynamodb(), aws.sqs()
    ddb.create_table(**TABLE.create_table_kwargs(table_name))
    urls = {
        name: sqs.create_queue(QueueName=f"{prefix}-{name}")["QueueUrl"]
        for name in ("shards", *CHANNELS)
    }
    store = DynamoStore(ddb, table_name, SHARDS)
    queue = SqsActionQueue(
        sqs,
        {Channel.EMAIL: urls["email"], Channel.SMS: urls["sms"], Channel.WEBHOOK: urls["webhook"]},
        urls["shards"],
    )
    return Env(store, queue, Evaluator(store, queue, shards=SHARDS), urls, sqs, ddb)


def seed_standard(
    env: Env, n: int, *, due_fraction: float = 0.1, seed: int = 7, as_of: datetime = AS_OF
) -> list[Seeded]:
    """Standard policies, rules and calendar; `n` accounts walked by the engine."""
    env.configure(
        standard_policies(),
        as_of - timedelta(days=200),
        rules=standard_rules(),
        default="consumer",
        calendars=[standard_calendar()],
    )
    seeded = build_portfolio(n, as_of, due_fraction=due_fraction, seed=seed)
    env.store.import_views([(s.view, s.due_at) for s in seeded], as_of - timedelta(days=1))
    return seeded


def is_due(seeded: Seeded, as_of: datetime) -> bool:
    return seeded.due_at is not None and seeded.due_at <= as_of


@dataclass
class Expectation:
    """What the engine alone predicts for a run."""

    decisions: dict[str, Decision] = field(default_factory=dict)
    ready: Counter[ActionKey] = field(default_factory=Counter)  # not_before <= as_of
    deferred: Counter[ActionKey] = field(default_factory=Counter)  # not_before > as_of


def engine_expectation(seeded: Iterable[Seeded], as_of: datetime) -> Expectation:
    """The engine's own decisions on the seeded views that are due at `as_of`,
    with the policy each account was walked with and the standard calendar."""
    calendar = standard_calendar()
    out = Expectation()
    for s in seeded:
        if not is_due(s, as_of):
            continue
        decision = decide(s.view, s.policy, calendar, as_of)
        out.decisions[s.view.account.account_id] = decision
        for action in decision.actions:
            (out.ready if action.not_before <= as_of else out.deferred)[key_of(action)] += 1
    return out


def run_tasks(
    env: Env,
    tasks: Iterable[ShardTask],
    remaining: Callable[[], Callable[[], int]] = lambda: forever,
    evaluator: Evaluator | None = None,
) -> list[ShardResult]:
    """Run shard tasks to the end, following continuations; one result per part."""
    evaluator = evaluator or env.evaluator
    results = []
    pending = list(tasks)
    while pending:
        task = pending.pop(0)
        result = evaluator.run_shard(task, remaining())
        results.append(result)
        if result.continuation is not None:
            pending.append(result.continuation)
    return results


def shard_tasks(env: Env) -> list[ShardTask]:
    return [ShardTask.model_validate_json(body) for body in env.drain("shards")]


def run_scheduled(
    env: Env, as_of: datetime, evaluator: Evaluator | None = None
) -> list[ShardResult]:
    """One scheduled run: dispatch, then every shard task the shard queue holds."""
    (evaluator or env.evaluator).dispatch(as_of)
    return run_tasks(env, shard_tasks(env), evaluator=evaluator)


def drain_actions(env: Env) -> list[Action]:
    """Every action message of the three channel queues (received and deleted)."""
    return [ACTION.validate_json(body) for name in CHANNELS for body in env.drain(name)]


def outbox_pending(env: Env, until: datetime = FAR_FUTURE) -> list[Action]:
    """Unsent outbox records of every shard whose `not_before` is before `until`."""
    return [a for shard in range(SHARDS) for a in env.store.query_outbox(shard, until)]


def raw_account(env: Env, account_id: str) -> dict[str, Any]:
    item: dict[str, Any] = env.ddb.get_item(
        TableName=env.store.table,
        Key={"PK": {"S": f"ACCOUNT#{account_id}"}, "SK": {"S": "ACCOUNT"}},
        ConsistentRead=True,
    )["Item"]
    return item


def total(results: Iterable[ShardResult], attr: str) -> int:
    return sum(getattr(r, attr) for r in results)


class ReadTracker:
    """Counts the account items DynamoDB returns (any read operation, any index)."""

    def __init__(self) -> None:
        self.account_items: Counter[str] = Counter()
        self.due_index_queries = 0
        self._client: Any = None

    def _before(self, params: dict[str, Any], **_: Any) -> None:
        if params.get("IndexName") == DUE_INDEX:
            self.due_index_queries += 1

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        items: list[dict[str, Any]] = []
        if model.name in ("Query", "Scan"):
            items = parsed.get("Items", [])
        elif model.name == "GetItem" and "Item" in parsed:
            items = [parsed["Item"]]
        elif model.name == "BatchGetItem":
            items = [it for rows in parsed.get("Responses", {}).values() for it in rows]
        elif model.name == "TransactGetItems":
            items = [r["Item"] for r in parsed.get("Responses", []) if "Item" in r]
        for item in items:
            if item.get("SK", {}).get("S") == "ACCOUNT":
                self.account_items[item["PK"]["S"].removeprefix("ACCOUNT#")] += 1

    def __enter__(self) -> ReadTracker:
        self._client = aws.dynamodb()
        events = self._client.meta.events
        events.register("before-parameter-build.dynamodb.Query", self._before, "read-tracker-b")
        events.register("after-call.dynamodb.*", self._after, "read-tracker-a")
        return self

    def __exit__(self, *exc: object) -> None:
        events = self._client.meta.events
        events.unregister("before-parameter-build.dynamodb.Query", unique_id="read-tracker-b")
        events.unregister("after-call.dynamodb.*", unique_id="read-tracker-a")


class CapturedCalls:
    """Records the parameters of every call of one DynamoDB operation."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.calls: list[dict[str, Any]] = []
        self._client: Any = None

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(params)

    def __enter__(self) -> CapturedCalls:
        self._client = aws.dynamodb()
        self._client.meta.events.register(
            f"provide-client-params.dynamodb.{self.operation}", self._record, "captured-calls"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.meta.events.unregister(
            f"provide-client-params.dynamodb.{self.operation}", unique_id="captured-calls"
        )


def budget_of(items: int, margin_ms: int) -> Callable[[], Callable[[], int]]:
    """A factory of remaining-time callables: each one (one Lambda invocation)
    reports plenty of time for `items` checks, then less than the margin."""

    def factory() -> Callable[[], int]:
        calls = 0

        def remaining() -> int:
            nonlocal calls
            calls += 1
            return 900_000 if calls <= items else margin_ms - 1

        return remaining

    return factory


def scan_table(env: Env) -> list[dict[str, Any]]:
    """Every item of the table (test-side only), sorted by key."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": env.store.table, "ConsistentRead": True}
    while True:
        out = env.ddb.scan(**kwargs)
        items += out.get("Items", [])
        if "LastEvaluatedKey" not in out:
            break
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
    return sorted(items, key=lambda it: (it["PK"]["S"], it["SK"]["S"]))


def account_ids_written(operation: str, params: dict[str, Any]) -> list[str]:
    """The accounts whose account item a write request writes (a transaction's Put or
    Update, UpdateItem, PutItem, BatchWriteItem's puts); empty for anything else."""
    keys: list[dict[str, Any] | None] = []
    if operation == "TransactWriteItems":
        for entry in params.get("TransactItems", []):
            for op, body in entry.items():
                keys.append(body.get("Item") if op == "Put" else body.get("Key"))
    elif operation == "UpdateItem":
        keys.append(params.get("Key"))
    elif operation == "PutItem":
        keys.append(params.get("Item"))
    elif operation == "BatchWriteItem":
        for rows in params.get("RequestItems", {}).values():
            keys += [row.get("PutRequest", {}).get("Item") for row in rows]
    return [
        key["PK"]["S"].removeprefix("ACCOUNT#")
        for key in keys
        if key is not None and key.get("SK", {}).get("S") == "ACCOUNT"
    ]


class AccountWrites:
    """Counts, per account, the requests that write its account item, as they leave
    the client: attempts, including the ones that fail their condition."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()
        self._client: Any = None

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.attempts.update(account_ids_written(model.name, params))

    def __enter__(self) -> AccountWrites:
        self._client = aws.dynamodb()
        self._client.meta.events.register(
            "provide-client-params.dynamodb", self._record, "account-writes"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.meta.events.unregister(
            "provide-client-params.dynamodb", unique_id="account-writes"
        )


WriteHook = Callable[[int, str, dict[str, Any]], None]


class OnAccountWrite:
    """Calls `hook(n, operation, params)` just before the n-th request (1, 2, ...) that
    writes `account_id`'s account item leaves the client: after the writer read the
    account and built its conditional write, before DynamoDB checks the condition.

    What the hook does with the store (a concurrent writer's payment, a snapshot of
    the partition) is not itself observed."""

    def __init__(self, account_id: str, hook: WriteHook) -> None:
        self.account_id = account_id
        self.hook = hook
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._busy = False
        self._client: Any = None

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self._busy or self.account_id not in account_ids_written(model.name, params):
            return
        self.requests.append((model.name, params))
        self._busy = True
        try:
            self.hook(len(self.requests), model.name, params)
        finally:
            self._busy = False

    def __enter__(self) -> OnAccountWrite:
        self._client = aws.dynamodb()
        self._client.meta.events.register(
            "provide-client-params.dynamodb", self._before, f"on-write-{id(self)}"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.meta.events.unregister(
            "provide-client-params.dynamodb", unique_id=f"on-write-{id(self)}"
        )


def partition(env: Env, account_id: str) -> list[dict[str, Any]]:
    """Every item of an account's partition (test-side, strongly consistent), for
    "nothing changed" comparisons."""
    out = env.ddb.query(
        TableName=env.store.table,
        KeyConditionExpression="PK = :p",
        ExpressionAttributeValues={":p": {"S": f"ACCOUNT#{account_id}"}},
        ConsistentRead=True,
    )
    assert "LastEvaluatedKey" not in out
    items: list[dict[str, Any]] = out["Items"]
    return items
