"""Speedups for moto's in-process emulation (the emulator, not our code).

First, a faster rollback for moto's DynamoDB transactions.

moto 5.x backs up a transaction by deep-copying the whole table once per item
of the transaction, which makes every TransactWriteItems O(table size): about
one second per transaction on a table of a few thousand items. This keeps
moto's semantics (conditions evaluated in order, unicity, all-or-nothing,
CancellationReasons) but snapshots only the items the transaction touches.
Used by the tests, the benchmarks and the local run; see docs/decisions.md.
"""

from __future__ import annotations

import bisect
import copy
import functools
import inspect
import json
import re
import string
import sys
import threading
from collections import deque
from decimal import Decimal
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

from moto import backend_index, backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core import responses as moto_responses
from moto.core.botocore_stubber import BotocoreStubber
from moto.core.exceptions import HTTPException
from moto.core.request import PRESERVED_HEADER_NAMES_ENVIRON_KEY, Request
from moto.core.responses import ActionResult
from moto.core.utils import unix_time
from moto.dynamodb.comparisons import ConditionExpressionParser, get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    ItemSizeTooLarge,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.utilities import bytesize, number_size
from moto.dynamodb.parsing import ast_nodes
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.dynamodb.responses import DynamoResult
from moto.moto_api import recorder
from moto.moto_api._internal.moto_random import MotoRandom
from moto.sqs import models as sqs_models

from local import signing


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    snapshots: list[tuple[str, dict[str, Any], Item | None]] = []
    seen: set[tuple[str, str]] = set()
    errors: list[tuple[Any, Any, Any]] = []

    def rollback() -> None:
        for table_name, key, old in reversed(snapshots):
            if old is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, old.to_json()["Attributes"])

    for entry in transact_items:
        original_item: dict[str, Any] | None = None
        if len(entry) > 1:
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(entry.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            condition = op.get("ConditionExpression")
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")
            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            marker = (str(table_name), str(dict(sorted(key.items()))))
            if marker in seen:
                raise MultipleTransactionsException()
            seen.add(marker)
            current = self.get_item(table_name, key)
            if condition is not None:
                check = get_filter_expression(condition, names, values)
                if not check.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            if op_type != "ConditionCheck":
                snapshots.append((table_name, key, copy.deepcopy(current)))
            if op_type == "Put":
                self.put_item(
                    table_name,
                    op["Item"],
                    condition_expression=condition,
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            elif op_type == "Delete":
                self.delete_item(
                    table_name,
                    key,
                    condition_expression=condition,
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            elif op_type == "Update":
                self.update_item(
                    table_name,
                    key,
                    update_expression=op["UpdateExpression"],
                    condition_expression=condition,
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            rollback()
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))
        except Exception as e:  # moto reports any other failure as a cancellation reason
            errors.append((type(e).__name__, str(e), original_item))
    if any(code is not None for code, _, _ in errors):
        rollback()
        raise TransactionCanceledException(errors)


# --------------------------------------------------------------------- GSI queries
#
# moto answers a query on a secondary index by sorting the whole table and
# filtering it: O(table) per query, a second per query on a table of 100,000
# items. The local run queries the due, outbox and lists indexes several times
# per scheduled run. This keeps, per table, the items of each index partition
# (`index hash attribute value -> items`), maintained on every put, update and
# delete, and hands moto's own query code only that partition's items; moto
# still filters, sorts, pages and projects them itself. A query on the table
# itself gets the items of its partition the same way (moto compares the hash
# key of every item of the table).

_override = threading.local()
_original: dict[str, Any] = {}


def _key(item: Item) -> tuple[Any, Any]:
    return (item.hash_key.value, item.range_key.value if item.range_key else None)


def _buckets(table: Table) -> dict[str, dict[Any, dict[tuple[Any, Any], Item]]]:
    found: dict[str, dict[Any, dict[tuple[Any, Any], Item]]] | None = getattr(
        table, "_dunning_buckets", None
    )
    if found is None:
        found = {}
        for index in table.global_indexes or []:
            for key in index.schema:
                if key["KeyType"] == "HASH":
                    found.setdefault(key["AttributeName"], {})
        table._dunning_buckets = found
        table._dunning_where = {}
        for item in _original["all_items"](table):
            _reindex(table, _key(item), item)
    return found


def _reindex(table: Table, key: tuple[Any, Any], item: Item | None) -> None:
    buckets = getattr(table, "_dunning_buckets", None)
    if buckets is None:
        return  # no index query yet: built from the table on the first one
    where: dict[tuple[Any, Any], list[tuple[str, Any]]] = table._dunning_where
    for attr, value in where.pop(key, []):
        buckets[attr].get(value, {}).pop(key, None)
    if item is None:
        return
    entries = []
    for attr, bucket in buckets.items():
        found = item.attrs.get(attr)
        if found is not None:
            value = (found.type, str(found.value))
            bucket.setdefault(value, {})[key] = item
            entries.append((attr, value))
    if entries:
        where[key] = entries


def _put(self: Table, *args: Any, **kwargs: Any) -> Item:
    item: Item = _original["put_item"](self, *args, **kwargs)
    _reindex(self, _key(item), item)
    return item


def _delete(self: Table, hash_value: Any, range_value: Any = None) -> Item | None:
    item: Item | None = _original["delete_item"](self, hash_value, range_value)
    if item is not None:
        _reindex(self, _key(item), None)
    return item


def _update(self: DynamoDBBackend, table_name: str, *args: Any, **kwargs: Any) -> Item:
    table = self.get_table(table_name)
    try:
        key = args[0] if args else kwargs["key"]
        stored = table.get_item(
            DynamoType(key[table.hash_key_attr]),
            DynamoType(key[table.range_key_attr]) if table.range_key_attr else None,
        )
    except Exception:  # a malformed key: moto's own call below answers it
        stored = None
    try:
        item: Item = _original["update_item"](self, table_name, *args, **kwargs)
    finally:  # changed in place, even by an update that failed half-way (`_item_size`)
        if stored is not None:
            stored.__dict__.pop("_dunning_size", None)
    item.__dict__.pop("_dunning_size", None)  # a new item, made by the update
    _reindex(table, _key(item), item)
    return item


def _all_items(self: Table) -> list[Item]:
    candidates: list[Item] | None = getattr(_override, "items", None)
    if candidates is not None:
        return candidates
    # moto's order (hash key, then range key), compared as plain values.
    items: list[Item] = []
    for found in self.items.values():
        if self.range_key_attr:
            items.extend(found.values())
        else:
            items.append(found)
    return sorted(items, key=_table_order)


def _table_order(item: Item) -> Any:
    if item.range_key:
        return (item.hash_key.cast_value, item.range_key.cast_value)
    return item.hash_key.cast_value


def _sorted_items(
    self: Table, hash_key_attrs: list[str], range_key_attrs: list[str | None], items: list[Item]
) -> list[Item]:
    # moto's sort keys, compared as plain values instead of DynamoType pairs.
    attrs = self._generate_attr_to_sort_by(hash_key_attrs, range_key_attrs)
    items.sort(key=lambda x: tuple([x.attrs[key].cast_value for key in attrs]))
    return items


def _query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
    # moto calls query(hash_key, range_comparison, range_objs, limit, start_key,
    # forward, projections, index_name, ...): positionally or by keyword.
    index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
    if index_name is None and hash_key is not None:
        # The table itself: moto compares every item's hash key; hand it the partition.
        found = self.items.get(hash_key)
        if found is None:
            partition: list[Item] = []
        elif self.range_key_attr:
            # In moto's order already, so its own sort only confirms it.
            partition = sorted(found.values(), key=lambda x: x.range_key.cast_value)
        else:
            partition = [found]
        return _over(self, partition, _original["query"], hash_key, *args, **kwargs)
    gsi = next((i for i in self.global_indexes or [] if i.name == index_name), None)
    if gsi is None:
        return _original["query"](self, hash_key, *args, **kwargs)
    attr = next(k["AttributeName"] for k in gsi.schema if k["KeyType"] == "HASH")
    conditions = dict(kwargs.get("hash_key_conditions") or [])
    value = conditions.get(attr, hash_key)
    if value is None:
        return _original["query"](self, hash_key, *args, **kwargs)
    bucket = _buckets(self)[attr].get((value.type, str(value.value)), {})
    return _over(self, list(bucket.values()), _original["query"], hash_key, *args, **kwargs)


_SCAN_SIGNATURE = inspect.signature(Table.scan)


def _scan(self: Table, *args: Any, **kwargs: Any) -> Any:
    """moto's scan. A page after the first (no index, no segments) starts at its
    exclusive start key, found by bisection, instead of walking past every
    earlier item: moto's own loop then skips nothing."""
    bound = _SCAN_SIGNATURE.bind(self, *args, **kwargs)
    bound.apply_defaults()
    start = bound.arguments["exclusive_start_key"]
    if not start or bound.arguments["index_name"] or bound.arguments["segments"] != (None, None):
        return _original["scan"](self, *args, **kwargs)
    items = _all_items(self)
    hash_value = DynamoType(start[self.hash_key_attr]).cast_value
    if self.range_key_attr:
        key: Any = (hash_value, DynamoType(start[self.range_key_attr]).cast_value)
    else:
        key = hash_value
    position = bisect.bisect_right(items, key, key=_table_order)
    return _over(self, items[position:], _original["scan"], *args, **kwargs)


def _over(table: Table, candidates: list[Item], method: Any, *args: Any, **kwargs: Any) -> Any:
    """A moto table method run over these items instead of the whole table."""
    _override.items = candidates
    try:
        return method(table, *args, **kwargs)
    finally:
        _override.items = None


# ------------------------------------------------------------ response encoding
#
# moto 5.2 encodes every response through a generic, shape-driven serializer:
# about half of a DynamoDB call's time in-process. The data-plane results of
# DynamoDB are already in the wire format (attribute values as {"S": ...}), so
# for those operations the JSON is written directly, as moto itself did before
# its serializer existed. Errors, and every other operation, keep moto's path.

_DYNAMODB_DATA_PLANE = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "TransactGetItems",
    }
)


def _execute_result(self: ActionResult, context: Any) -> Any:
    if (
        type(self) in (ActionResult, DynamoResult)
        and isinstance(self.result, dict)
        and context.service_model.service_name == "dynamodb"
        and context.operation_model.name in _DYNAMODB_DATA_PLANE
    ):
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(self.result)
    return _original["execute_result"](self, context)


# ------------------------------------------------------------ per-request work
#
# moto redoes, on every request, work whose result only depends on its input:
# listing a response class's methods with `inspect.getmembers`, converting the
# action name to snake case, parsing the same UpdateExpression text, and
# projecting an item by deserializing all of it to Python and back. These keep
# moto's results and cache (or shortcut) the work.


@functools.cache
def _method_names(clazz: type) -> list[str]:
    return list(_original["method_names"](clazz))


@functools.lru_cache(maxsize=4096)
def _snake(name: str) -> str:
    result: str = _original["camelcase"](name)
    return result


@functools.lru_cache(maxsize=1024)
def _parsed_update(expression: str) -> Any:
    # moto's callers read the tree (`find_clauses`) or deep-copy it before they
    # change it (`Validator.__init__`): sharing one parsed tree is safe.
    return _original["make_update"](expression)


def _make_update(cls: type, expression: str) -> Any:
    return _parsed_update(expression)


def _project(self: Item, projection_expressions: list[list[str]]) -> Item:
    """Top-level attribute names only (an index's projection, a plain
    ProjectionExpression): copy those attributes; paths go through moto."""
    if any(len(path) != 1 or "[" in path[0] for path in projection_expressions):
        result: Item = _original["project"](self, projection_expressions)
        return result
    attrs = {}
    for (name,) in projection_expressions:
        found = self.attrs.get(name)
        if found is not None:
            attrs[name] = _wire(found)
    return Item(hash_key=self.hash_key, range_key=self.range_key, attrs=attrs)


def _wire(attribute: DynamoType) -> dict[str, Any]:
    """One attribute in the wire format, as new objects (as `Item.to_json`)."""
    value = attribute.value
    if isinstance(value, dict):
        return {attribute.type: {k: v.to_regular_json() for k, v in value.items()}}
    if isinstance(value, list):
        return {
            attribute.type: [v.to_regular_json() if isinstance(v, DynamoType) else v for v in value]
        }
    return {attribute.type: value}


# ------------------------------------------------------------ attribute values
#
# Every comparison, hash and size of a DynamoDB value goes through
# `DynamoType.cast_value` and `DynamoType.size`, which test the value's type one
# method call at a time; sorting a partition makes millions of them. Strings and
# numbers (nearly every key and attribute) take a short path to the same result.
# An item checks its 400 KB limit on every attribute it is built with (O(n^2)
# in its attributes); it is checked once, on the total, which raises exactly
# when moto would (sizes only grow as attributes are added).


def _cast_value(self: DynamoType) -> Any:
    kind = self.type
    if kind == "S":
        return self.value
    if kind == "N":
        return Decimal(self.value)
    return _original["cast_value"](self)


def _size(self: DynamoType) -> int:
    kind = self.type
    size: int
    if kind == "S":
        size = bytesize(self.value)
        return size
    if kind == "N":
        size = number_size(str(self.value))
        return size
    size = _original["size"](self)
    return size


def _item_size(self: Item) -> int:
    """moto's `Item.size` (names plus values), over `_size` directly, kept on the
    item: a query asks the size of every item it returns, for its 1 MB pages.
    Items change in place only in UpdateItem (`_update` drops the size); a
    put makes a new item, whose size `_item_init` has just computed."""
    size: int | None = self.__dict__.get("_dunning_size")
    if size is None:
        size = sum(bytesize(key) + _size(value) for key, value in self.attrs.items())
        self._dunning_size = size
    return size


def _item_init(
    self: Item, hash_key: DynamoType, range_key: DynamoType | None, attrs: dict[str, Any]
) -> None:
    self.hash_key = hash_key
    self.range_key = range_key
    built = LimitedSizeDict.__new__(LimitedSizeDict)
    total = 0
    for key, value in attrs.items():
        attribute = DynamoType(value)
        total += bytesize(key) + attribute.size()
        dict.__setitem__(built, key, attribute)
    if total > 405000:  # moto's limit (LimitedSizeDict)
        raise ItemSizeTooLarge
    self.attrs = built
    self._dunning_size = total


def _node_deepcopy(self: Any, memo: dict[int, Any]) -> Any:
    """What `copy.deepcopy` does for a plain object (new instance, deep-copied
    `__dict__`), without the pickle protocol: the update expression's tree is
    copied on every UpdateItem."""
    found = memo.get(id(self))
    if found is not None:
        return found
    clone = object.__new__(type(self))
    memo[id(self)] = clone
    clone.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
    return clone


_SCALARS = frozenset({"S", "N", "B", "BOOL", "NULL"})


def _copy_value(value: DynamoType, memo: dict[int, Any]) -> DynamoType:
    """moto's `DynamoType.__deepcopy__` for a scalar (it shares the immutable
    value too); lists, maps and sets take moto's own."""
    if value.type not in _SCALARS:
        return copy.deepcopy(value, memo)
    found: DynamoType | None = memo.get(id(value))
    if found is None:
        found = object.__new__(DynamoType)
        found.type = value.type
        found.value = value.value
        memo[id(value)] = found
    return found


def _item_deepcopy(self: Item, memo: dict[int, Any]) -> Item:
    """moto's `Item.__deepcopy__` (queries, scans and transactions copy every
    item they touch) with scalars copied inline; the kept size goes along,
    the attributes being the same."""
    found: Item | None = memo.get(id(self))
    if found is not None:
        return found
    result = object.__new__(type(self))
    memo[id(self)] = result
    result.hash_key = _copy_value(self.hash_key, memo)
    result.range_key = _copy_value(self.range_key, memo) if self.range_key is not None else None
    attrs = LimitedSizeDict.__new__(LimitedSizeDict)
    dict.__init__(attrs)
    for key, value in self.attrs.items():
        dict.__setitem__(attrs, key, _copy_value(value, memo))
    result.attrs = attrs
    size = self.__dict__.get("_dunning_size")
    if size is not None:
        result._dunning_size = size
    return result


def _random_string(
    self: MotoRandom, length: int = 20, include_digits: bool = True, lower_case: bool = False
) -> str:
    """moto's request ids, message ids and receipt handles: the same alphabet and
    length, drawn in one call instead of one `choice` per character."""
    pool = string.ascii_letters + (string.digits if include_digits else "")
    drawn = "".join(self.choices(pool, k=length))
    return drawn.lower() if lower_case else drawn


def _receipt_handle() -> str:
    """moto's SQS receipt handle (185 lower-case letters), drawn in one call."""
    handle: str = sqs_models.random.get_random_string(185, include_digits=False, lower_case=True)
    return handle


def _within_retention(self: sqs_models.SQSBackend, queue_name: str, message: Any) -> bool:
    """moto's check, reading the queue's retention period directly: moto asks
    `get_queue_attributes`, which computes every attribute of the queue
    (message counts included) for each message received."""
    retention_period = self.get_queue(queue_name).message_retention_period
    return bool(retention_period + message.sent_timestamp / 1000 > unix_time())


_lexed: dict[str, tuple[Any, ...]] = {}


def _lex_condition(self: ConditionExpressionParser) -> deque[Any]:
    """The tokens of a condition or filter expression depend on its text only:
    lexed once per text (moto lexes it with a dozen regexes per token on every
    request), handed out as fresh nodes."""
    expression = self.condition_expression
    tokens = _lexed.get(expression)
    if tokens is None:
        tokens = tuple(_original["lex"](self))
        if len(_lexed) < 4096:
            _lexed[expression] = tokens
    return deque(token._replace(children=[]) for token in tokens)


# moto parses a condition expression into a tree of operators on every use, up
# to three times per transaction item (the request's validation, the
# transaction's check, the put's own). The tree depends only on the expression,
# its names and its values, and nothing in it changes when it is evaluated: a
# parse is kept per (expression, names, values), with the names and values it
# found, which moto's callers read to refuse unused ones. Errors are not kept.
_parsed: dict[tuple[Any, ...], tuple[Any, list[str], list[str]]] = {}


def _parse_condition(self: ConditionExpressionParser) -> Any:
    expression = self.condition_expression
    if not expression:
        return _original["parse_condition"](self)
    names = self.expression_attribute_names
    values = self.expression_attribute_values
    try:
        key = (
            expression,
            tuple(sorted(names.items())) if names else None,
            json.dumps(values, sort_keys=True) if values else None,
        )
    except (TypeError, ValueError):  # values that are not plain JSON: moto's path
        return _original["parse_condition"](self)
    kept = _parsed.get(key)
    if kept is None:
        names_before = len(self.expr_attr_names_found)
        values_before = len(self.expr_attr_values_found)
        op = _original["parse_condition"](self)
        if len(_parsed) < 16384:
            _parsed[key] = (
                op,
                self.expr_attr_names_found[names_before:],
                self.expr_attr_values_found[values_before:],
            )
        return op
    op, names_found, values_found = kept
    self.expr_attr_names_found.extend(names_found)
    self.expr_attr_values_found.extend(values_found)
    return op


# moto validates an UpdateExpression with ten processors, each walking the
# whole tree; per node, each asks `isinstance` against ABCs and rebuilds its map
# of node types. The walk below is moto's (children first, the same hook, the
# first matching type of the map processes the node), with those answers kept
# per node type.
_is_node: dict[type, bool] = {}
_processor_index: dict[tuple[type, type], int] = {}


def _traverse_node_recursively(self: Any, node: Any, child_id: int = -1) -> Any:
    kind = type(node)
    is_node = _is_node.get(kind)
    if is_node is None:
        is_node = _is_node[kind] = isinstance(node, ast_nodes.Node)
    if not is_node:
        return node
    parent_node = node.parent
    children = node.children
    if children is not None:
        for i, child_node in enumerate(children):
            self.pre_processing_of_child(node, i)
            self.traverse_node_recursively(child_node, i)
    key = (type(self), kind)
    index = _processor_index.get(key)
    if index is None:
        index = next((n for n, k in enumerate(self._processing_map()) if isinstance(node, k)), -1)
        _processor_index[key] = index
    if index >= 0:
        node = list(self._processing_map().values())[index](node)
        node.parent = parent_node
        if parent_node:
            parent_node.children[child_id] = node
    return node


# --------------------------------------------------------------- requests
# moto turns each botocore request into a werkzeug request through werkzeug's
# test EnvironBuilder, walks every service's URL patterns to find its handler,
# and parses JSON bodies shape by shape. Our requests are POSTs to "/" with a
# body (JSON for DynamoDB, SQS and Secrets Manager; a form for SES and SNS):
# for those, the WSGI environ is built directly (as EnvironBuilder builds it),
# the handler is looked up once per URL, and a JSON body without binary values
# is read with json.loads (what moto's parser returns for such a body).
# Anything else takes moto's own path.


def _from_primitives(
    cls: type[Request], method: str, url: str, headers: Any, body: Any = None
) -> Request:
    if isinstance(body, str):
        body = body.encode("utf-8")
    parts = urlsplit(url)
    if not isinstance(body, bytes) or not body or parts.path != "/" or parts.query:
        return _original["from_primitives"].__func__(cls, method, url, headers, body)
    host = parts.netloc
    name, _, port = host.partition(":")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "REQUEST_URI": "/",
        "RAW_URI": "/",
        "SERVER_NAME": name,
        "SERVER_PORT": port or ("443" if parts.scheme == "https" else "80"),
        "HTTP_HOST": host,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": parts.scheme,
        "wsgi.input": BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    http: dict[str, str] = {}
    preserved: dict[str, str] = {}
    for key, raw in headers.items():
        value = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        upper = key.upper().replace("-", "_")
        if upper == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif upper not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
            wsgi_key = f"HTTP_{upper}"
            previous = http.get(wsgi_key)
            http[wsgi_key] = value if previous is None else f"{previous}, {value}"
            if "_" in key and key.lower().startswith("x-amz-meta-"):
                preserved[wsgi_key] = key
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.update(http)
    request = cls(environ)
    environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = preserved
    return request


_handlers: dict[str, Any] = {}


def _handler_for(url: str) -> Any:
    """The handler moto's stubber would call for a URL (its own lookup)."""
    for service, pattern in backend_index.backend_url_patterns:
        if pattern.match(url):
            accounts = backends.get_backend(service)[DEFAULT_ACCOUNT_ID]
            backend = accounts["us-east-1"] if "us-east-1" in accounts else accounts["aws"]
            for pattern_url, method in backend.urls.items():
                if re.compile(pattern_url).match(url):
                    return method
            return None
    return None


def _process_request(self: BotocoreStubber, request: Any) -> Any:
    url = request.url
    parts = urlsplit(url)
    if parts.path != "/" or parts.query or not parts.netloc.endswith(".amazonaws.com"):
        return _original["process_request"](self, request)
    handler = _handlers.get(url)
    if handler is None:
        handler = _handler_for(url)
        if handler is None:
            return _original["process_request"](self, request)
        _handlers[url] = handler
    normalized = Request.from_primitives(request.method, url, request.headers, request.body)
    try:
        recorder._record_request(normalized)
        return handler(normalized, url, normalized.headers)
    except HTTPException as e:
        return e.code, e.get_headers(), e.get_body()


def _get_action(self: Any) -> str:
    """moto's action name for this response's request, worked out once (each
    request gets its own response object; moto asks three times)."""
    action: str | None = self.__dict__.get("_dunning_action")
    if action is None:
        action = self.__dict__["_dunning_action"] = _original["get_action"](self)
    return action


_JSON_BODIES = {"dynamodb": (b'"B"', b'"BS"'), "sqs": (b"Binary",), "secretsmanager": (b"Binary",)}


def _parse_parameters(self: Any, request: Request) -> None:
    binary = _JSON_BODIES.get(self.boto3_service_name)
    if binary is not None:
        body = request.get_data()
        if body[:1] == b"{" and not any(marker in body for marker in binary):
            self.params = json.loads(body)
            return
    _original["parse_parameters"](self, request)


def install() -> None:
    """Replace moto's transaction rollback with the item-level one, give its
    secondary-index queries a partition map, and cache its per-request work
    (idempotent). Also installs the cached SigV4 signer (`local.signing`)."""
    DynamoDBBackend.transact_write_items = _transact_write_items
    signing.install()
    if _original:
        return
    _original.update(
        put_item=Table.put_item,
        delete_item=Table.delete_item,
        update_item=DynamoDBBackend.update_item,
        all_items=Table.all_items,
        query=Table.query,
        execute_result=ActionResult.execute_result,
        method_names=moto_responses.method_names_from_class,
        camelcase=moto_responses.camelcase_to_underscores,
        make_update=UpdateExpressionParser.make,
        project=Item.project,
        cast_value=DynamoType.cast_value.fget,
        size=DynamoType.size,
        lex=ConditionExpressionParser._lex_condition_expression,
        parse_condition=ConditionExpressionParser.parse,
        from_primitives=Request.__dict__["from_primitives"],
        process_request=BotocoreStubber.process_request,
        parse_parameters=moto_responses.BaseResponse.parse_parameters,
        traverse=ast_nodes.DepthFirstTraverser.traverse_node_recursively,
        get_action=moto_responses.BaseResponse._get_action,
        item_size=Item.size,
        scan=Table.scan,
        within_retention=sqs_models.SQSBackend.is_message_valid_based_on_retention_period,
        item_deepcopy=Item.__deepcopy__,
    )
    Table.put_item = _put
    Table.delete_item = _delete
    DynamoDBBackend.update_item = _update
    Table.all_items = _all_items
    Table.query = _query
    ActionResult.execute_result = _execute_result
    moto_responses.method_names_from_class = _method_names
    moto_responses.camelcase_to_underscores = _snake
    UpdateExpressionParser.make = classmethod(_make_update)
    Item.project = _project
    Table.sorted_items = _sorted_items
    DynamoType.cast_value = property(_cast_value)
    DynamoType.size = _size
    Item.__init__ = _item_init
    ast_nodes.Node.__deepcopy__ = _node_deepcopy
    Item.__deepcopy__ = _item_deepcopy
    sqs_models.camelcase_to_underscores = _snake
    MotoRandom.get_random_string = _random_string
    sqs_models.generate_receipt_handle = _receipt_handle
    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = _within_retention
    ConditionExpressionParser._lex_condition_expression = _lex_condition
    ConditionExpressionParser.parse = _parse_condition
    Request.from_primitives = classmethod(_from_primitives)
    BotocoreStubber.process_request = _process_request
    moto_responses.BaseResponse.parse_parameters = _parse_parameters
    ast_nodes.DepthFirstTraverser.traverse_node_recursively = _traverse_node_recursively
    moto_responses.BaseResponse._get_action = _get_action
    Item.size = _item_size
    Table.scan = _scan
