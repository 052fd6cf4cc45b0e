"""The single table's definition: keys, indexes, attributes. Defined once.

Used by the CDK stack (`infra/`), the tests and the local run, so the table in
AWS and the table on moto are the same table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PK = "PK"
SK = "SK"
DUE_INDEX = "due"
DUE_PK = "due_pk"  # "DUE#<shard>", present only while the account can become due
DUE_AT = "due_at"  # next evaluation time, fixed-width ISO 8601 UTC, or PARKED
# The due time of an account that owes something but that only new data or a new
# policy book can change (below the entry threshold, no policy covers it): it
# stays in the due index, after every real instant, so a run after a change of
# the book finds it (`Evaluator`, full pass) and an ordinary run never reads it.
PARKED = "9999-12-31T23:59:59.999999Z"
OUTBOX_INDEX = "outbox"
OUTBOX_PK = "outbox_pk"  # "OUTBOX#<shard>", present only while the action is unsent
OUTBOX_AT = "outbox_at"  # not_before of the action
LIST_INDEX = "lists"
LIST_PK = "list_pk"  # e.g. "APPROVAL#pending", "TASK#open", "CASE#<status>"
LIST_SK = "list_sk"
TTL_ATTRIBUTE = "expires_at"

# What the due index projects: the engine's whole view of the account, so one
# page of the index feeds decisions with no further reads.
DUE_PROJECTION = ("view", "version", "policy_id")
OUTBOX_PROJECTION = ("action",)
LIST_PROJECTION = ("body", "version")


@dataclass(frozen=True)
class Index:
    name: str
    partition_key: str
    sort_key: str
    projection: tuple[str, ...]


@dataclass(frozen=True)
class TableDefinition:
    partition_key: str = PK
    sort_key: str = SK
    indexes: tuple[Index, ...] = (
        Index(DUE_INDEX, DUE_PK, DUE_AT, DUE_PROJECTION),
        Index(OUTBOX_INDEX, OUTBOX_PK, OUTBOX_AT, OUTBOX_PROJECTION),
        Index(LIST_INDEX, LIST_PK, LIST_SK, LIST_PROJECTION),
    )
    ttl_attribute: str = TTL_ATTRIBUTE

    @property
    def string_attributes(self) -> tuple[str, ...]:
        names = [self.partition_key, self.sort_key]
        for index in self.indexes:
            names += [index.partition_key, index.sort_key]
        return tuple(names)

    def create_table_kwargs(self, table_name: str) -> dict[str, Any]:
        """Arguments for `CreateTable` (moto, local run) equal to what infra deploys."""
        return {
            "TableName": table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": "S"} for name in self.string_attributes
            ],
            "KeySchema": [
                {"AttributeName": self.partition_key, "KeyType": "HASH"},
                {"AttributeName": self.sort_key, "KeyType": "RANGE"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": index.name,
                    "KeySchema": [
                        {"AttributeName": index.partition_key, "KeyType": "HASH"},
                        {"AttributeName": index.sort_key, "KeyType": "RANGE"},
                    ],
                    "Projection": {
                        "ProjectionType": "INCLUDE",
                        "NonKeyAttributes": list(index.projection),
                    },
                }
                for index in self.indexes
            ],
        }


TABLE = TableDefinition()


@functools.lru_cache(maxsize=4096)
def iso(instant: datetime) -> str:
    """Fixed-width UTC timestamp that sorts as it compares.

    Kept per instant: a run writes the same few instants (its `as_of`, the
    actions' sending times) into every item it touches: about six calls per
    due case at 3 µs each with `strftime`, 0.1 µs kept. Equal aware instants
    give the same text whatever their zone, so any of them may fill the entry."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def due_time(text: str | None) -> datetime | None:
    """The instant a due-index sort key stands for; None when there is none
    (not in the index, or PARKED: no instant of its own)."""
    return None if text is None or text == PARKED else parse_iso(text)


@functools.lru_cache(maxsize=4096)
def shard_of(account_id: str, shards: int) -> int:
    """Stable shard of an account (FNV-1a: the same in every process and language).

    Kept per account: one decision asks it for the due index and for each
    outbox record (a byte loop, ~2 µs a call)."""
    h = 0x811C9DC5
    for byte in account_id.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % shards


@dataclass(frozen=True)
class IdempotencyTable:
    """Powertools idempotency's own table: key `id`, TTL on `expiration`."""

    key: str = "id"
    ttl_attribute: str = "expiration"

    def create_table_kwargs(self, table_name: str) -> dict[str, Any]:
        return {
            "TableName": table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": self.key, "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": self.key, "KeyType": "HASH"}],
        }


IDEMPOTENCY_TABLE = IdempotencyTable()
