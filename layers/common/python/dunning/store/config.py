"""Configuration in the single table: policy versions, calendars, selection
rules, exclusion lists, templates, and the configuration audit.

Every change is one transaction with its configuration-audit record (who
changed which resource, when, from what to what), conditional on the
resource's version so two admins never overwrite each other silently.

| item | PK | SK |
|---|---|---|
| policy version | `POLICY#<id>` | `V#<8 digits>` (`list_pk=POLICY`) |
| current policy | `POLICY#<id>` | `CURRENT` (`list_pk=POLICY#current`) |
| calendar | `CALENDAR#<id>` | `CALENDAR` (`list_pk=CALENDAR`) |
| selection rules | `CONFIG#selection` | `CONFIG` |
| exclusion list | `EXCLUSION#<id>` | `LIST` (`list_pk=EXCLUSION`) |
| exclusion registry | `CONFIG#exclusions` | `CONFIG` (`list:<id>` = its version) |
| template part | `TEMPLATES` | `<channel>/<locale>/<name><suffix>` |
| config audit | `AUDIT#config` | `EVENT#<iso time>#<id>` |
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from dunning.model import Calendar, ExclusionList, Policy, PolicyRule
from dunning.store.dynamo import TEMPLATES_PK, DynamoStore, PolicyBook, _n, _s
from dunning.store.errors import ConflictError, NotFoundError
from dunning.store.schema import LIST_PK, LIST_SK, PK, SK, iso, parse_iso

AUDIT_PK = "AUDIT#config"
EXCLUSION_REGISTRY = {PK: _s("CONFIG#exclusions"), SK: _s("CONFIG")}
_LIST_ATTR = "list:"


@dataclass(frozen=True, slots=True)
class Versioned:
    body: Any
    version: int
    updated_at: str | None = None
    updated_by: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyVersionInfo:
    policy: Policy
    created_at: str
    created_by: str
    activated: bool  # was ever activated (not a draft)
    current: bool


@dataclass(frozen=True, slots=True)
class ConfigChange:
    at: datetime
    actor: str
    resource: str  # policy, calendar, selection, exclusion_list, template
    resource_id: str
    action: str  # created, updated, activated, deactivated, deleted
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class ExclusionSnapshot:
    """Every stored exclusion list, read consistently, with the transaction item
    that makes a write conditional on none of them having changed since."""

    lists: tuple[ExclusionList, ...]
    guard: dict[str, Any]


def _sorted_sets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_sets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sorted_sets(v) for v in value]
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return sorted(value, key=str)
    return value


def plain(model: BaseModel) -> Any:
    """A model as JSON-ready data, its sets as sorted lists (a frozenset's order
    changes from one process to the next; responses and audit records must not)."""
    return to_jsonable_python(_sorted_sets(model.model_dump()))


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return plain(value)
    return value


BOOK_MAX_AGE_S = 60.0


class ConfigStore:
    """Configuration reads and writes over the store's table and client."""

    def __init__(self, store: DynamoStore) -> None:
        self.store = store
        self._db: Any = store._db
        self.table = store.table
        self._exclusions_cache: tuple[int, tuple[ExclusionList, ...]] | None = None
        self._last_snapshot: ExclusionSnapshot | None = None
        self._book: tuple[float, PolicyBook] | None = None

    # ------------------------------------------------------------ primitives

    def _audit(self, change: ConfigChange) -> dict[str, Any]:
        body = {
            "at": iso(change.at),
            "actor": change.actor,
            "resource": change.resource,
            "resource_id": change.resource_id,
            "action": change.action,
            "before": _dump(change.before),
            "after": _dump(change.after),
        }
        # Changes stamped with the same instant (a pinned clock, a batch) keep the
        # order they were made in: the wall clock's nanoseconds break the tie.
        tie = f"{time.time_ns():020d}{uuid.uuid4().hex[:6]}"
        return {
            "Put": {
                "TableName": self.table,
                "Item": {
                    PK: _s(AUDIT_PK),
                    SK: _s(f"EVENT#{iso(change.at)}#{tie}"),
                    "type": _s("config_audit"),
                    "body": _s(json.dumps(body, sort_keys=True)),
                },
            }
        }

    def _versioned_put(
        self, item: dict[str, Any], expected: int | None, current: int
    ) -> dict[str, Any]:
        """A put conditional on the stored version (`expected` from If-Match,
        else the version just read; 0 means the item must not exist)."""
        version = current if expected is None else expected
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        if version == 0:
            put["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            put["ConditionExpression"] = "version = :v"
            put["ExpressionAttributeValues"] = {":v": _n(version)}
        return {"Put": put}

    def _write(self, items: list[dict[str, Any]], what: str, precondition: bool) -> None:
        self._book = None  # a configuration change: the next book is read again
        try:
            self.store._transact(items, what)
        except ConflictError as err:
            raise ConflictError(
                f"{what}: it changed meanwhile (version mismatch)", precondition=precondition
            ) from err

    def policy_book(self, max_age_s: float = BOOK_MAX_AGE_S) -> PolicyBook:
        """The current policies, rules and calendars, read at most `max_age_s`
        seconds ago (three reads when it is read again).

        For ingestion, which decides when an account is next due: a book changed
        in another container is seen within `max_age_s`; one changed through
        this store is seen at once (docs/decisions.md, 2026-12-07)."""
        now = time.monotonic()
        if self._book is None or now - self._book[0] > max_age_s:
            self._book = (now, self.store.load_policy_book())
        return self._book[1]

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        return self.store._get(pk, sk)

    # -------------------------------------------------------------- policies

    def policy_versions(self, policy_id: str) -> list[PolicyVersionInfo]:
        current = self._get(f"POLICY#{policy_id}", "CURRENT")
        current_version = int(current["version"]["N"]) if current else None
        out = []
        for it in self.store._query_all(
            KeyConditionExpression="PK = :p AND begins_with(SK, :v)",
            ExpressionAttributeValues={":p": _s(f"POLICY#{policy_id}"), ":v": _s("V#")},
        ):
            policy = Policy.model_validate_json(it["body"]["S"])
            out.append(
                PolicyVersionInfo(
                    policy,
                    it.get("created_at", {}).get("S", ""),
                    it.get("actor", {}).get("S", ""),
                    "activated_at" in it,
                    policy.version == current_version,
                )
            )
        return out

    def policy_ids(self) -> list[str]:
        ids = {
            it[LIST_SK]["S"].split("#", 1)[0]
            for it in self.store._query_all(
                IndexName="lists",
                KeyConditionExpression="list_pk = :p",
                ExpressionAttributeValues={":p": _s("POLICY")},
            )
        }
        return sorted(ids)

    def create_policy_version(self, policy: Policy, actor: str, now: datetime) -> Policy:
        """Store the next version of a policy (1 for a new one); never overwrites."""
        for _attempt in range(5):
            versions = self.policy_versions(policy.policy_id)
            latest = max((v.policy.version for v in versions), default=0)
            new = policy.model_copy(update={"version": latest + 1})
            item = {
                PK: _s(f"POLICY#{new.policy_id}"),
                SK: _s(f"V#{new.version:08d}"),
                "type": _s("policy"),
                "body": _s(new.model_dump_json()),
                "actor": _s(actor),
                "created_at": _s(iso(now)),
                LIST_PK: _s("POLICY"),
                LIST_SK: _s(f"{new.policy_id}#{new.version:08d}"),
            }
            previous = next((v.policy for v in versions if v.policy.version == latest), None)
            try:
                self.store._transact(
                    [
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": item,
                                "ConditionExpression": "attribute_not_exists(PK)",
                            }
                        },
                        self._audit(
                            ConfigChange(
                                now, actor, "policy", new.policy_id, "created", previous, new
                            )
                        ),
                    ],
                    "create policy version",
                )
            except ConflictError:
                continue
            return new
        raise ConflictError(f"policy {policy.policy_id} keeps changing; try again")

    def activate_policy(
        self, policy_id: str, version: int, actor: str, now: datetime, expected: int | None
    ) -> Policy:
        """Make `version` the current one (the one new cases run on)."""
        item = self._get(f"POLICY#{policy_id}", f"V#{version:08d}")
        if item is None:
            raise NotFoundError(f"policy {policy_id} v{version} does not exist")
        current = self._get(f"POLICY#{policy_id}", "CURRENT")
        current_version = int(current["version"]["N"]) if current else 0
        if expected is not None and expected != current_version:
            raise ConflictError(
                f"policy {policy_id} is current at version {current_version}", precondition=True
            )
        policy = Policy.model_validate_json(item["body"]["S"])
        put: dict[str, Any] = {
            "TableName": self.table,
            "Item": {
                PK: _s(f"POLICY#{policy_id}"),
                SK: _s("CURRENT"),
                "type": _s("policy_current"),
                "body": item["body"],
                "version": _n(version),
                LIST_PK: _s("POLICY#current"),
                LIST_SK: _s(policy_id),
            },
        }
        if current is None:
            put["ConditionExpression"] = "attribute_not_exists(PK)"
        else:
            put["ConditionExpression"] = "version = :v"
            put["ExpressionAttributeValues"] = {":v": _n(current_version)}
        mark = {
            "Update": {
                "TableName": self.table,
                "Key": {PK: _s(f"POLICY#{policy_id}"), SK: _s(f"V#{version:08d}")},
                "UpdateExpression": "SET activated_at = if_not_exists(activated_at, :t)",
                "ExpressionAttributeValues": {":t": _s(iso(now))},
            }
        }
        before = {"version": current_version} if current else None
        audit = self._audit(
            ConfigChange(now, actor, "policy", policy_id, "activated", before, {"version": version})
        )
        self._write(
            [{"Put": put}, mark, audit, self.store.book_changed(now)],
            "activate policy",
            expected is not None,
        )
        return policy

    def deactivate_policy(
        self, policy_id: str, actor: str, now: datetime, expected: int | None
    ) -> None:
        current = self._get(f"POLICY#{policy_id}", "CURRENT")
        if current is None:
            raise NotFoundError(f"policy {policy_id} has no current version")
        version = int(current["version"]["N"])
        if expected is not None and expected != version:
            raise ConflictError(
                f"policy {policy_id} is current at version {version}", precondition=True
            )
        selection = self.selection()
        if selection.body["default_policy_id"] == policy_id or any(
            r.policy_id == policy_id for r in selection.body["rules"]
        ):
            raise ConflictError(
                f"policy {policy_id} is named by the selection rules; change them first",
                field="policy_id",
            )
        delete = {
            "Delete": {
                "TableName": self.table,
                "Key": {PK: _s(f"POLICY#{policy_id}"), SK: _s("CURRENT")},
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": _n(version)},
            }
        }
        audit = self._audit(
            ConfigChange(now, actor, "policy", policy_id, "deactivated", {"version": version}, None)
        )
        self._write(
            [delete, audit, self.store.book_changed(now)], "deactivate policy", expected is not None
        )

    def delete_draft(self, policy_id: str, version: int, actor: str, now: datetime) -> None:
        item = self._get(f"POLICY#{policy_id}", f"V#{version:08d}")
        if item is None:
            raise NotFoundError(f"policy {policy_id} v{version} does not exist")
        if "activated_at" in item:
            raise ConflictError(
                f"policy {policy_id} v{version} was activated: it is history, not a draft"
            )
        delete = {
            "Delete": {
                "TableName": self.table,
                "Key": {PK: _s(f"POLICY#{policy_id}"), SK: _s(f"V#{version:08d}")},
                "ConditionExpression": (
                    "attribute_exists(PK) AND attribute_not_exists(activated_at)"
                ),
            }
        }
        before = Policy.model_validate_json(item["body"]["S"])
        audit = self._audit(ConfigChange(now, actor, "policy", policy_id, "deleted", before, None))
        self._write([delete, audit], "delete draft", False)

    # ------------------------------------------------------------- calendars

    def calendar(self, calendar_id: str) -> Versioned:
        item = self._get(f"CALENDAR#{calendar_id}", "CALENDAR")
        if item is None:
            raise NotFoundError(f"calendar {calendar_id} does not exist")
        return Versioned(
            Calendar.model_validate_json(item["body"]["S"]),
            int(item.get("version", {"N": "1"})["N"]),
            item.get("updated_at", {}).get("S"),
            item.get("updated_by", {}).get("S"),
        )

    def calendars(self) -> list[Versioned]:
        return [
            Versioned(
                Calendar.model_validate_json(it["body"]["S"]),
                int(it.get("version", {"N": "1"})["N"]),
            )
            for it in self.store._query_all(
                IndexName="lists",
                KeyConditionExpression="list_pk = :p",
                ExpressionAttributeValues={":p": _s("CALENDAR")},
            )
        ]

    def put_calendar(
        self, calendar: Calendar, actor: str, now: datetime, expected: int | None
    ) -> Versioned:
        try:
            before: Versioned | None = self.calendar(calendar.calendar_id)
        except NotFoundError:
            before = None
        current = before.version if before else 0
        if expected is not None and expected != current:
            raise ConflictError(
                f"calendar {calendar.calendar_id} is at version {current}", precondition=True
            )
        version = current + 1
        item = {
            PK: _s(f"CALENDAR#{calendar.calendar_id}"),
            SK: _s("CALENDAR"),
            "type": _s("calendar"),
            "body": _s(calendar.model_dump_json()),
            "version": _n(version),
            "updated_at": _s(iso(now)),
            "updated_by": _s(actor),
            LIST_PK: _s("CALENDAR"),
            LIST_SK: _s(calendar.calendar_id),
        }
        audit = self._audit(
            ConfigChange(
                now,
                actor,
                "calendar",
                calendar.calendar_id,
                "updated" if before else "created",
                before.body if before else None,
                calendar,
            )
        )
        self._write(
            [self._versioned_put(item, expected, current), audit, self.store.book_changed(now)],
            "put calendar",
            expected is not None,
        )
        return Versioned(calendar, version, iso(now), actor)

    # ------------------------------------------------------- selection rules

    def selection(self) -> Versioned:
        item = self._get("CONFIG#selection", "CONFIG")
        if item is None:
            return Versioned({"rules": [], "default_policy_id": None}, 0)
        data = json.loads(item["body"]["S"])
        rules = [PolicyRule.model_validate(r, strict=False) for r in data["rules"]]
        return Versioned(
            {"rules": rules, "default_policy_id": data["default_policy_id"]},
            int(item.get("version", {"N": "1"})["N"]),
        )

    def put_selection(
        self,
        rules: Sequence[PolicyRule],
        default_policy_id: str | None,
        actor: str,
        now: datetime,
        expected: int | None,
    ) -> Versioned:
        before = self.selection()
        if expected is not None and expected != before.version:
            raise ConflictError(
                f"the selection rules are at version {before.version}", precondition=True
            )
        body = {
            "rules": [r.model_dump(mode="json") for r in rules],
            "default_policy_id": default_policy_id,
        }
        item = {
            PK: _s("CONFIG#selection"),
            SK: _s("CONFIG"),
            "type": _s("selection"),
            "body": _s(json.dumps(body)),
            "version": _n(before.version + 1),
        }
        audit = self._audit(
            ConfigChange(
                now,
                actor,
                "selection",
                "selection",
                "updated",
                {
                    "rules": [r.model_dump(mode="json") for r in before.body["rules"]],
                    "default_policy_id": before.body["default_policy_id"],
                },
                body,
            )
        )
        self._write(
            [
                self._versioned_put(item, expected, before.version),
                audit,
                self.store.book_changed(now),
            ],
            "put selection rules",
            expected is not None,
        )
        return Versioned(
            {"rules": list(rules), "default_policy_id": default_policy_id}, before.version + 1
        )

    # ------------------------------------------------------- exclusion lists

    def exclusion_list(self, list_id: str) -> Versioned:
        item = self._get(f"EXCLUSION#{list_id}", "LIST")
        if item is None:
            raise NotFoundError(f"exclusion list {list_id} does not exist")
        return Versioned(
            ExclusionList.model_validate_json(item["body"]["S"]),
            int(item["version"]["N"]),
            item.get("updated_at", {}).get("S"),
            item.get("updated_by", {}).get("S"),
        )

    def exclusion_lists(self) -> list[Versioned]:
        return [
            Versioned(ExclusionList.model_validate_json(it["body"]["S"]), int(it["version"]["N"]))
            for it in self.store._query_all(
                IndexName="lists",
                KeyConditionExpression="list_pk = :p",
                ExpressionAttributeValues={":p": _s("EXCLUSION")},
            )
        ]

    def exclusion_snapshot(self, *, reuse: bool = False) -> ExclusionSnapshot:
        """Every exclusion list, as of now, and a guard for the write that applies
        them: a ConditionCheck on the registry's version, which every list
        change moves. A list saved between this read and that write fails the
        write, which then reads again (`DynamoStore`'s retries).

        The lists of a registry version never change, so they are kept in memory
        per version: a fresh snapshot costs one GetItem of the registry. With
        `reuse`, the last snapshot this store took is returned without a read:
        its guard still holds the write to the lists it saw, so a list saved
        since (here or in another container) fails that write, and the retry
        asks for a fresh one. A steady stream of ingestion then costs no read of
        the lists at all."""
        if reuse and self._last_snapshot is not None:
            return self._last_snapshot
        self._last_snapshot = snapshot = self._read_exclusion_snapshot()
        return snapshot

    def _read_exclusion_snapshot(self) -> ExclusionSnapshot:
        item = self._get("CONFIG#exclusions", "CONFIG")
        check: dict[str, Any] = {"TableName": self.table, "Key": dict(EXCLUSION_REGISTRY)}
        if item is None:  # no list saved since the registry exists: the lists index
            check["ConditionExpression"] = "attribute_not_exists(PK)"
            lists = tuple(v.body for v in self.exclusion_lists())
            return ExclusionSnapshot(lists, {"ConditionCheck": check})
        version = int(item["version"]["N"])
        check["ConditionExpression"] = "version = :v"
        check["ExpressionAttributeValues"] = {":v": _n(version)}
        cached = self._exclusions_cache
        if cached is None or cached[0] != version:
            ids = [k.removeprefix(_LIST_ATTR) for k in item if k.startswith(_LIST_ATTR)]
            keys = [{PK: _s(f"EXCLUSION#{i}"), SK: _s("LIST")} for i in sorted(ids)]
            found = [
                ExclusionList.model_validate_json(it["body"]["S"])
                for it in self.store.batch_get(keys)
            ]
            cached = (version, tuple(sorted(found, key=lambda x: x.list_id)))
            self._exclusions_cache = cached
        return ExclusionSnapshot(cached[1], {"ConditionCheck": check})

    def _registry_update(self, list_id: str, version: int) -> dict[str, Any]:
        """The registry's entry for a saved list, and its version moved on. The
        first time, the lists saved before the registry existed join it too."""
        self._last_snapshot = None  # this write moves the registry's version
        names = {"#l": f"{_LIST_ATTR}{list_id}"}
        values: dict[str, Any] = {":v": _n(version), ":zero": _n(0), ":one": _n(1)}
        sets = ["#l = :v"]
        if self._get("CONFIG#exclusions", "CONFIG") is None:
            for n, old in enumerate(x for x in self.exclusion_lists() if x.body.list_id != list_id):
                names[f"#o{n}"] = f"{_LIST_ATTR}{old.body.list_id}"
                values[f":o{n}"] = _n(old.version)
                sets.append(f"#o{n} = :o{n}")
        sets.append("version = if_not_exists(version, :zero) + :one")
        return {
            "Update": {
                "TableName": self.table,
                "Key": dict(EXCLUSION_REGISTRY),
                "UpdateExpression": "SET " + ", ".join(sets),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def put_exclusion_list(
        self, exclusion: ExclusionList, actor: str, now: datetime, expected: int | None
    ) -> tuple[Versioned, ExclusionList | None]:
        """Store the list; returns it and the list it replaced (to propagate)."""
        try:
            before: Versioned | None = self.exclusion_list(exclusion.list_id)
        except NotFoundError:
            before = None
        current = before.version if before else 0
        if expected is not None and expected != current:
            raise ConflictError(
                f"exclusion list {exclusion.list_id} is at version {current}", precondition=True
            )
        item = {
            PK: _s(f"EXCLUSION#{exclusion.list_id}"),
            SK: _s("LIST"),
            "type": _s("exclusion_list"),
            "body": _s(exclusion.model_dump_json()),
            "version": _n(current + 1),
            "updated_at": _s(iso(now)),
            "updated_by": _s(actor),
            LIST_PK: _s("EXCLUSION"),
            LIST_SK: _s(exclusion.list_id),
        }
        audit = self._audit(
            ConfigChange(
                now,
                actor,
                "exclusion_list",
                exclusion.list_id,
                "updated" if before else "created",
                before.body if before else None,
                exclusion,
            )
        )
        self._write(
            [
                self._versioned_put(item, expected, current),
                self._registry_update(exclusion.list_id, current + 1),
                audit,
            ],
            "put exclusion list",
            expected is not None,
        )
        return Versioned(exclusion, current + 1, iso(now), actor), (before.body if before else None)

    # ------------------------------------------------------------- templates

    def template(self, paths: Sequence[str]) -> dict[str, str]:
        keys = [{PK: _s(TEMPLATES_PK), SK: _s(p)} for p in paths]
        return {it[SK]["S"]: it["source"]["S"] for it in self.store.batch_get(keys)}

    def put_template(
        self,
        parts: Mapping[str, str],  # path -> source
        resource_id: str,
        actor: str,
        now: datetime,
    ) -> None:
        before = self.template(list(parts))
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        PK: _s(TEMPLATES_PK),
                        SK: _s(path),
                        "type": _s("template"),
                        "source": _s(source),
                        "updated_at": _s(iso(now)),
                        "updated_by": _s(actor),
                    },
                }
            }
            for path, source in parts.items()
        ]
        items.append(
            self._audit(
                ConfigChange(
                    now,
                    actor,
                    "template",
                    resource_id,
                    "updated" if before else "created",
                    before or None,
                    dict(parts),
                )
            )
        )
        self._write(items, "put template", False)

    # ------------------------------------------------------------ the audit

    def changes(
        self, limit: int, start_key: dict[str, Any] | None = None
    ) -> tuple[list[ConfigChange], dict[str, Any] | None]:
        """Configuration changes, newest first, one page."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :p AND begins_with(SK, :e)",
            "ExpressionAttributeValues": {":p": _s(AUDIT_PK), ":e": _s("EVENT#")},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        out = self._db.query(**kwargs)
        changes = []
        for it in out.get("Items", []):
            body = json.loads(it["body"]["S"])
            changes.append(
                ConfigChange(
                    parse_iso(body["at"]),
                    body["actor"],
                    body["resource"],
                    body["resource_id"],
                    body["action"],
                    body["before"],
                    body["after"],
                )
            )
        return changes, out.get("LastEvaluatedKey")
