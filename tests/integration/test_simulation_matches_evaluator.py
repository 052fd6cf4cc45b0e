"""The what-if simulation predicts what the real evaluator does (moto).

One portfolio is seeded twice, in two independent tables. The simulation reads
the first table's account views and policy book and simulates 90 daily runs
with no payment; the real evaluator runs the same 90 scheduled runs
(`run_scheduled`: dispatcher, shard workers, outbox sweeps, SQS) on the second
table. Day by day, the cases entering each level, the cases opened and the
actions sent per channel must be the same, and so must the open cases per
level at the end.

moto's queries sort the whole table with slow comparisons on every call
(`Table.all_items`), which makes 90 scheduled runs cost minutes; unless
`local.moto_speedups` already replaced that method, the
`fast_moto_index_queries` fixture sorts on the same key values, computed once
per item, for this test only. It changes the emulator's speed, not its answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from moto.dynamodb.models.table import Table

from dunning import aws
from dunning.model import Case, EventKind
from dunning.simulation import SimulationResult, simulate, simulation_instants
from dunning.store.config import ConfigStore
from dunning.store.dynamo import EVENT
from dunning.store.scan import iter_views, scan_items
from tests.integration.conftest import Env
from tests.integration.helpers import (
    AS_OF,
    drain_actions,
    make_env,
    run_scheduled,
    scan_table,
    seed_standard,
)

ACCOUNTS = 150  # three policies, every level, deferred actions, approvals
DAYS = 90


def _key_value(value: Any) -> Any:
    return value.value if value.type == "S" else value.cast_value


def _all_items(self: Table) -> list[Any]:
    """moto's `Table.all_items`, sorted on plain key values computed once per item
    (the original compares `DynamoType`s, casting both sides at every comparison)."""
    items: list[Any] = []
    for hash_set in self.items.values():
        if self.range_key_attr:
            items.extend(hash_set.values())
        else:
            items.append(hash_set)
    items.sort(
        key=lambda it: (
            (_key_value(it.hash_key), _key_value(it.range_key))
            if it.range_key
            else (_key_value(it.hash_key),)
        )
    )
    return items


@pytest.fixture
def fast_moto_index_queries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only while `Table.all_items` is moto's own: `local.moto_speedups` may have
    replaced it already (index partitions), and that one must stay in place."""
    current = getattr(Table, "all_items", None)
    assert callable(current), "moto changed: revisit this fixture"
    if current.__module__ == Table.__module__:
        monkeypatch.setattr(Table, "all_items", _all_items)
    yield


def _entries_per_run(env: Env) -> tuple[Counter[tuple[datetime, str, int]], Counter[datetime]]:
    """Level entries (run, policy, level) and cases opened (run) from the audit events."""
    entries: Counter[tuple[datetime, str, int]] = Counter()
    opened: Counter[datetime] = Counter()
    for item in scan_items(env.store, types=("event",), total_segments=4):
        event = EVENT.validate_json(item["body"]["S"])
        if event.kind is EventKind.LEVEL_ENTERED:
            entries[(event.at, str(event.data["policy_id"]), int(event.data["level"]))] += 1
        elif event.kind is EventKind.CASE_OPENED:
            opened[event.at] += 1
    return entries, opened


def _twins(env: Env) -> tuple[Env, datetime]:
    """One portfolio in two tables (the simulation reads `env`, the evaluator
    runs on the twin), and the simulation's start."""
    seed_standard(env, ACCOUNTS)
    twin = make_env("dunning-twin", "twin")
    seed_standard(twin, ACCOUNTS)
    return twin, AS_OF - timedelta(days=1)


def _simulated_entries(result: SimulationResult) -> Counter[tuple[datetime, str, int]]:
    simulated: Counter[tuple[datetime, str, int]] = Counter()
    for row in result.days:
        for entry in row.level_entries:
            simulated[(row.at, entry.policy_id, entry.level)] += entry.count
    return simulated


def test_a_policy_simulated_for_90_days_enters_the_levels_the_evaluator_enters(
    env: Env, fast_moto_index_queries: None
) -> None:
    # Given one portfolio in two tables: one for the simulation, one for the evaluator
    twin, start = _twins(env)
    instants = simulation_instants(start, DAYS)
    views = list(iter_views(env.store))
    book = env.store.load_policy_book()
    table_before = scan_table(env)

    # When the simulation runs the current policies for 90 days with no payment
    with aws.RequestCounter() as requests:
        result = simulate(views, book, start=start, days=DAYS)
    # ... and the real evaluator runs the same 90 scheduled runs on the twin
    sent_per_run: list[dict[str, int]] = []
    for instant in instants:
        shard_results = run_scheduled(twin, instant)
        queued: Counter[str] = Counter()
        for shard in shard_results:
            queued.update(shard.actions_queued)
        arrived = Counter(a.channel.value for a in drain_actions(twin))
        assert arrived == queued  # what the workers report is what the queues got
        sent_per_run.append(dict(sorted(queued.items())))

    # Then the simulation made no AWS request and left its table as it was
    assert requests.total() == 0
    assert scan_table(env) == table_before
    # ... the cases entering each level are the same, run by run
    real_entries, real_opened = _entries_per_run(twin)
    simulated = _simulated_entries(result)
    assert sum(simulated.values()) > 300  # the portfolio climbs a good part of its levels
    assert {key[1] for key in simulated} == {"consumer", "business", "enterprise"}
    for row in result.days:
        real_today = {k: n for k, n in real_entries.items() if k[0] == row.at}
        simulated_today = {k: n for k, n in simulated.items() if k[0] == row.at}
        assert simulated_today == real_today, f"run {row.day} ({row.at.isoformat()})"
    assert simulated == real_entries
    # ... and so are the cases opened and the actions sent per channel, run by run
    assert {row.at: row.cases_opened for row in result.days if row.cases_opened} == dict(
        real_opened
    )
    assert [row.actions_sent for row in result.days] == sent_per_run
    assert sum(result.totals.actions_sent.values()) == sum(sum(d.values()) for d in sent_per_run)
    # ... and at the end the open cases per policy and level agree with the case items
    real_open: Counter[tuple[str, int]] = Counter()
    for item in scan_items(twin.store, types=("case",)):
        case = Case.model_validate_json(item["body"]["S"])
        if case.is_open:
            real_open[(case.policy_id, case.level)] += 1
    simulated_open: Counter[tuple[str, int]] = Counter()
    for position in result.final_open_by_level:
        simulated_open[(position.policy_id, position.level)] += position.cases
    assert simulated_open == real_open


DRAFT_DAYS = 30


def test_a_draft_simulated_enters_the_levels_the_evaluator_enters_once_it_is_activated(
    env: Env, fast_moto_index_queries: None
) -> None:
    # Given one portfolio in two tables, and a draft of the consumer policy that
    # takes every step five days earlier (the pre-due reminder too), applies to
    # running cases and opens cases from 2.00
    twin, start = _twins(env)
    book = env.store.load_policy_book()
    current = book.policies["consumer"]
    levels = tuple(
        lvl.model_copy(update={"days": lvl.days - 5}) if lvl.days > 5 or lvl.days < 0 else lvl
        for lvl in current.levels
    )
    thresholds = {currency: Decimal("2.00") for currency in ("EUR", "USD", "GBP")}
    draft = current.model_copy(
        update={
            "version": current.version + 1,
            "levels": levels,
            "thresholds": {**current.thresholds, **thresholds},
            "apply_to_running_cases": True,
        }
    )
    # When the simulation runs the draft as its activation would, for 30 days ...
    result = simulate(
        list(iter_views(env.store)), book, start=start, days=DRAFT_DAYS, override=draft
    )
    # ... and the twin activates it through the configuration store (as the API
    # does) before the same 30 scheduled runs
    config = ConfigStore(twin.store)
    created = config.create_policy_version(draft, "admin", start - timedelta(hours=1))
    assert created.version == draft.version
    config.activate_policy("consumer", created.version, "admin", start - timedelta(hours=1), None)
    sent_per_run = []
    for instant in simulation_instants(start, DRAFT_DAYS):
        queued: Counter[str] = Counter()
        for shard in run_scheduled(twin, instant):
            queued.update(shard.actions_queued)
        drain_actions(twin)
        sent_per_run.append(dict(sorted(queued.items())))
    # Then the cases entering each level and the cases opened are the same, run
    # by run, and so are the actions sent
    real_entries, real_opened = _entries_per_run(twin)
    simulated = _simulated_entries(result)
    # (the draft acts at once: its first run sends more than the current version's)
    as_is = simulate(list(iter_views(env.store)), book, start=start, days=1)
    assert sum(result.days[0].actions_sent.values()) > sum(as_is.days[0].actions_sent.values())
    assert simulated == real_entries
    assert {row.at: row.cases_opened for row in result.days if row.cases_opened} == dict(
        real_opened
    )
    assert [row.actions_sent for row in result.days] == sent_per_run
