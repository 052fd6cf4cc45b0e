"""Reading the whole table: a parallel-segment `Scan`, account views, the due backlog.

For reports, exports and simulations, which look at the portfolio as a whole
(the evaluator never scans: it reads the due index). Everything here only
reads.

- `scan_items(store, types=..., total_segments=...)` yields raw items (DynamoDB
  attribute-value dicts), page by page, optionally filtered on the `type`
  attribute (`#t IN (:t0, :t1)`, applied by DynamoDB). With
  `total_segments > 1` the segments are scanned in parallel threads (boto3's
  low-level clients are thread-safe); with `segment=` one Lambda scans one
  segment of `total_segments` (fan-out across invocations).
- `iter_views(store, view_filter)` yields the `StoredView` of each account item
  (SK = "ACCOUNT"), filtered by segment, currency, policy or account ids. Named
  accounts are read with BatchGetItem instead of a scan.
- `count_due(store, at)` counts the due-index entries at or before `at` (the
  evaluator's backlog) with `Select=COUNT` queries, one shard at a time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from dunning.model import AccountView
from dunning.selection import NoPolicyError, select_policy
from dunning.store.dynamo import DynamoStore, PolicyBook, StoredView
from dunning.store.schema import DUE_AT, DUE_INDEX, DUE_PK, SK, iso

ACCOUNT_SK = "ACCOUNT"
MAX_SEGMENTS = 1_000_000  # DynamoDB's limit on TotalSegments
_QUEUE_POLL_S = 0.05


def client_of(store: DynamoStore) -> Any:
    """The low-level boto3 DynamoDB client the store speaks through."""
    return store._db  # read-only; the store exposes no accessor


def _type_filter(types: Iterable[str] | None) -> dict[str, Any]:
    names = sorted(set(types or ()))
    if not names:
        return {}
    placeholders = [f":t{i}" for i in range(len(names))]
    return {
        "FilterExpression": f"#t IN ({', '.join(placeholders)})",
        "ExpressionAttributeNames": {"#t": "type"},
        "ExpressionAttributeValues": {
            p: {"S": n} for p, n in zip(placeholders, names, strict=True)
        },
    }


def _scan_pages(
    client: Any,
    table: str,
    base: Mapping[str, Any],
    segment: int | None,
    total_segments: int,
    stop: threading.Event | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """The pages of one segment (or of the whole table), following LastEvaluatedKey."""
    kwargs: dict[str, Any] = {"TableName": table, **base}
    if segment is not None:
        kwargs["Segment"] = segment
        kwargs["TotalSegments"] = total_segments
    while stop is None or not stop.is_set():
        out = client.scan(**kwargs)
        yield list(out.get("Items", []))
        last = out.get("LastEvaluatedKey")
        if not last:
            return
        kwargs["ExclusiveStartKey"] = last


def scan_items(
    store: DynamoStore,
    *,
    types: Iterable[str] | None = None,
    total_segments: int = 1,
    segment: int | None = None,
    page_size: int | None = None,
    consistent_read: bool = False,
) -> Iterator[dict[str, Any]]:
    """Every item of the table (of `types`, when given), as raw attribute-value dicts.

    `segment=None` with `total_segments > 1` scans all segments in parallel and
    yields items as pages arrive (order across segments is not defined);
    `segment=k` scans only segment k of `total_segments`.
    """
    if not 1 <= total_segments <= MAX_SEGMENTS:
        raise ValueError(f"total_segments must be within 1..{MAX_SEGMENTS}, got {total_segments}")
    if segment is not None and not 0 <= segment < total_segments:
        raise ValueError(f"segment must be within 0..{total_segments - 1}, got {segment}")
    base: dict[str, Any] = _type_filter(types)
    if page_size is not None:
        base["Limit"] = page_size
    if consistent_read:
        base["ConsistentRead"] = True
    client, table = client_of(store), store.table
    if segment is not None or total_segments == 1:
        for page in _scan_pages(client, table, base, segment, total_segments):
            yield from page
        return
    yield from _parallel_scan(client, table, base, total_segments)


def _parallel_scan(
    client: Any, table: str, base: Mapping[str, Any], total_segments: int
) -> Iterator[dict[str, Any]]:
    """One thread per segment; pages travel through a bounded queue, so memory stays
    at a few pages whatever the table's size. Closing the generator early stops
    the workers after their current page."""
    pages: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2 * total_segments)
    stop = threading.Event()

    def put(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                pages.put(message, timeout=_QUEUE_POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def work(segment: int) -> None:
        try:
            for page in _scan_pages(client, table, base, segment, total_segments, stop):
                if not put(("page", page)):
                    return
            put(("done", None))
        except Exception as err:  # handed to the consumer, raised there
            put(("error", err))

    with ThreadPoolExecutor(max_workers=total_segments, thread_name_prefix="scan") as pool:
        futures = [pool.submit(work, s) for s in range(total_segments)]
        try:
            done = 0
            while done < total_segments:
                kind, payload = pages.get()
                if kind == "done":
                    done += 1
                elif kind == "error":
                    raise payload
                else:
                    yield from payload
        finally:
            stop.set()
            while not all(f.done() for f in futures):
                try:
                    pages.get(timeout=_QUEUE_POLL_S)
                except queue.Empty:
                    continue


# ------------------------------------------------------------------ account views


def policy_of(stored: StoredView, book: PolicyBook | None = None) -> str | None:
    """The policy that runs (or would run) an account: its running case's policy;
    else the policy recorded on the item; else, with a `book`, the one selection
    picks (as the evaluator does); else the account's explicit override."""
    view = stored.view
    running = next((c for c in view.cases if c.is_open), None)
    if running is not None:
        return running.policy_id
    if stored.policy_id:
        return stored.policy_id
    if book is not None:
        currency = view.account.currency
        balance = sum(
            (inv.open_amount for inv in view.invoices if inv.currency == currency), Decimal(0)
        )
        try:
            return select_policy(
                view.account, balance, book.rules, book.policies, book.default_policy_id
            ).policy.policy_id
        except NoPolicyError:
            return None
    return view.account.policy_override


@dataclass(frozen=True, slots=True)
class ViewFilter:
    """Which accounts a report or a simulation covers; an empty set means any."""

    segments: frozenset[str] = frozenset()
    currencies: frozenset[str] = frozenset()
    policy_ids: frozenset[str] = frozenset()
    account_ids: frozenset[str] = frozenset()

    def matches(self, stored: StoredView | AccountView, book: PolicyBook | None = None) -> bool:
        if isinstance(stored, AccountView):
            stored = StoredView(stored, 0)
        account = stored.view.account
        if self.account_ids and account.account_id not in self.account_ids:
            return False
        if self.segments and account.segment not in self.segments:
            return False
        if self.currencies and account.currency not in self.currencies:
            return False
        return not self.policy_ids or policy_of(stored, book) in self.policy_ids


def iter_views(
    store: DynamoStore,
    view_filter: ViewFilter | None = None,
    *,
    book: PolicyBook | None = None,
    total_segments: int = 1,
    segment: int | None = None,
) -> Iterator[StoredView]:
    """The stored view of every account item matching `view_filter`.

    The `policy_ids` condition uses `book` (when given) to tell which policy
    would select an account without a running case (`policy_of`).
    """
    view_filter = view_filter or ViewFilter()
    if view_filter.account_ids:
        found = store.get_views(view_filter.account_ids)
        for account_id in sorted(found):
            if view_filter.matches(found[account_id], book):
                yield found[account_id]
        return
    for item in scan_items(
        store, types=("account",), total_segments=total_segments, segment=segment
    ):
        if item.get(SK, {}).get("S") != ACCOUNT_SK:
            continue
        stored = DynamoStore._stored(item)  # the store's own item parser
        if view_filter.matches(stored, book):
            yield stored


# -------------------------------------------------------------------- due backlog


def count_due(store: DynamoStore, at: datetime) -> int:
    """How many accounts the due index holds with a due time at or before `at`."""
    client = client_of(store)
    total = 0
    for shard in range(store.shards):
        kwargs: dict[str, Any] = {
            "TableName": store.table,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": f"{DUE_PK} = :p AND {DUE_AT} <= :t",
            "ExpressionAttributeValues": {":p": {"S": f"DUE#{shard}"}, ":t": {"S": iso(at)}},
            "Select": "COUNT",
        }
        while True:
            out = client.query(**kwargs)
            total += int(out.get("Count", 0))
            last = out.get("LastEvaluatedKey")
            if not last:
                break
            kwargs["ExclusiveStartKey"] = last
    return total


__all__ = [
    "ViewFilter",
    "client_of",
    "count_due",
    "iter_views",
    "policy_of",
    "scan_items",
]
