"""The emulator's request fast path builds what moto's own path builds."""

from __future__ import annotations

import copy
import json
from typing import Any

import boto3
import pytest
from botocore.awsrequest import HTTPHeaders
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.request import Request
from moto.core.utils import unix_time_millis
from moto.dynamodb.comparisons import ConditionExpressionParser
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.sqs.models import sqs_backends

from dunning import aws
from local import moto_speedups

URL = "https://dynamodb.eu-west-1.amazonaws.com/"


def headers(content_type: str, body: bytes) -> HTTPHeaders:
    h = HTTPHeaders()
    h["X-Amz-Target"] = "DynamoDB_20120810.GetItem"
    h["Content-Type"] = content_type
    h["User-Agent"] = b"Boto3/1.0 md/Botocore#1.0"  # type: ignore[assignment]
    h["Authorization"] = "AWS4-HMAC-SHA256 Credential=local/20261206/eu-west-1/dynamodb/aws4"
    h["Content-Length"] = str(len(body))
    h["amz-sdk-request"] = "attempt=1"
    return h


def comparable(request: Request) -> dict[str, Any]:
    data = request.get_data()  # reads (and keeps) the body
    environ = {
        k: v
        for k, v in request.environ.items()
        if k not in ("wsgi.input", "wsgi.errors", "werkzeug.request")
    }
    return {"environ": environ, "data": data, "url": request.url}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-amz-json-1.0", json.dumps({"TableName": "t", "Key": {}}).encode()),
        ("application/x-www-form-urlencoded; charset=utf-8", b"Action=Publish&Message=hi"),
    ],
)
def test_the_fast_environ_is_the_one_werkzeug_builds(content_type: str, body: bytes) -> None:
    moto_speedups.install()
    original = moto_speedups._original["from_primitives"].__func__
    ours = Request.from_primitives("POST", URL, headers(content_type, body), body)
    theirs = original(Request, "POST", URL, headers(content_type, body), body)
    assert comparable(ours) == comparable(theirs)
    assert ours.form == theirs.form
    assert list(ours.headers.items()) == list(theirs.headers.items())


_scalars = st.one_of(
    st.text(max_size=20).map(lambda s: {"S": s}),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(lambda d: {"N": str(d)}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.sets(st.text(min_size=1, max_size=5), min_size=1, max_size=3).map(
        lambda s: {"SS": sorted(s)}
    ),
)
_values: st.SearchStrategy[dict[str, Any]] = st.deferred(
    lambda: st.one_of(
        _scalars,
        st.lists(_values, max_size=3).map(lambda v: {"L": v}),
        st.dictionaries(st.text(min_size=1, max_size=5), _values, max_size=3).map(
            lambda v: {"M": v}
        ),
    )
)


@given(st.dictionaries(st.text(min_size=1, max_size=10), _values, min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_item_sizes_are_the_ones_moto_computes(attrs: dict[str, Any]) -> None:
    moto_speedups.install()
    item = Item(DynamoType({"S": "pk"}), None, {"PK": {"S": "pk"}, **attrs})
    assert item.size() == moto_speedups._original["item_size"](item)
    for value in item.attrs.values():
        assert value.size() == moto_speedups._original["size"](value)


def _scan_pages(ddb: Any, limit: int) -> list[list[tuple[str, str]]]:
    pages, kwargs = [], {"TableName": "t", "Limit": limit}
    while True:
        out = ddb.scan(**kwargs)
        pages.append([(it["PK"]["S"], it["SK"]["S"]) for it in out["Items"]])
        if "LastEvaluatedKey" not in out:
            return pages
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def test_scan_pages_are_the_ones_moto_returns(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_speedups.install()
    ddb = aws.dynamodb()
    ddb.create_table(
        TableName="t",
        KeySchema=[
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for n in range(60):
        ddb.put_item(TableName="t", Item={"PK": {"S": f"A#{n % 13}"}, "SK": {"S": f"X#{n:03d}"}})
    ours = _scan_pages(ddb, 7)
    monkeypatch.setattr(Table, "scan", moto_speedups._original["scan"])
    theirs = _scan_pages(ddb, 7)
    assert ours == theirs
    assert len(ours) > 5 and sum(len(p) for p in ours) == 60


@pytest.mark.parametrize("age_s", [0, 59, 61, 3600])
def test_the_retention_check_answers_as_moto_does(age_s: int) -> None:
    # Given a queue that keeps messages 60 seconds and a message sent `age_s` ago
    moto_speedups.install()
    with mock_aws():
        sqs = boto3.client("sqs", region_name="eu-west-1")
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})[
            "QueueUrl"
        ]
        sqs.send_message(QueueUrl=url, MessageBody="x")
        backend = sqs_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"]
        (message,) = backend.get_queue("q")._messages
        message.sent_timestamp = int(unix_time_millis()) - age_s * 1000
        # Then the fast check and moto's own give the same answer
        original = moto_speedups._original["within_retention"]
        expected = original(backend, "q", message)
        assert backend.is_message_valid_based_on_retention_period("q", message) is expected
        assert expected is (age_s < 60)


def test_an_items_kept_size_follows_its_updates() -> None:
    # Given an item whose size has been asked (and kept)
    moto_speedups.install()
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="eu-west-1")
        ddb.create_table(
            TableName="t",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        )
        key = {"PK": {"S": "a"}}
        ddb.put_item(TableName="t", Item={**key, "m": {"M": {"x": {"S": "1"}}}, "n": {"N": "1"}})
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].get_table("t")

        def item() -> Item:
            found = table.get_item(DynamoType(key["PK"]))
            assert found is not None
            return found

        updates = [
            ("SET s = :v", {":v": {"S": "é" * 300}}),
            ("SET m.x = :v", {":v": {"S": "a much longer nested value"}}),
            ("ADD n :v", {":v": {"N": "123456789"}}),
            ("REMOVE s", None),
        ]
        for expression, values in updates:
            item().size()  # kept
            # When it changes in place, by UpdateItem or inside a transaction
            update: dict[str, Any] = {"TableName": "t", "Key": key, "UpdateExpression": expression}
            if values:
                update["ExpressionAttributeValues"] = values
            ddb.update_item(**update)
            # Then the size it answers is the one moto computes from its attributes
            assert item().size() == moto_speedups._original["item_size"](item())
            ddb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": "t",
                            "Key": key,
                            "UpdateExpression": "SET t = :t",
                            "ExpressionAttributeValues": {":t": {"S": expression}},
                        }
                    }
                ]
            )
            assert item().size() == moto_speedups._original["item_size"](item())


CONDITIONS = [
    ("version = :v", None, {":v": {"N": "3"}}),
    ("attribute_not_exists(PK)", None, None),
    ("#s = :a AND (attribute_exists(#e) OR #e < :n)", {"#s": "status", "#e": "exp"},
     {":a": {"S": "queued"}, ":n": {"N": "10"}}),
    ("begins_with(sk, :p) AND size(tags) > :z", None, {":p": {"S": "EVENT#"}, ":z": {"N": "1"}}),
    ("contains(tags, :t) OR NOT (n BETWEEN :lo AND :hi)", None,
     {":t": {"S": "b"}, ":lo": {"N": "1"}, ":hi": {"N": "5"}}),
    ("n IN (:one, :two)", None, {":one": {"N": "1"}, ":two": {"N": "2"}}),
]  # fmt: skip
ITEMS = [
    Item(DynamoType({"S": "a"}), None, attrs)
    for attrs in (
        {"PK": {"S": "a"}},
        {"PK": {"S": "a"}, "version": {"N": "3"}, "status": {"S": "queued"}, "exp": {"N": "3"}},
        {"PK": {"S": "a"}, "sk": {"S": "EVENT#1"}, "tags": {"SS": ["a", "b"]}, "n": {"N": "2"}},
        {"PK": {"S": "a"}, "n": {"N": "7"}, "tags": {"SS": ["c"]}, "status": {"S": "sent"}},
    )
]


@pytest.mark.parametrize(("expression", "names", "values"), CONDITIONS)
def test_a_kept_condition_parse_is_moto_s_parse(
    expression: str, names: dict[str, str] | None, values: dict[str, Any] | None
) -> None:
    # Given a condition parsed by moto's own code and, twice, through the kept parse
    moto_speedups.install()
    original = moto_speedups._original["parse_condition"]
    theirs = ConditionExpressionParser(expression, names, values)
    expected = original(theirs)
    for _ in range(2):
        ours = ConditionExpressionParser(expression, names, values)
        op = ours.parse()
        # Then it finds the same names and values, and answers the same on every item
        assert ours.expr_attr_names_found == theirs.expr_attr_names_found
        assert ours.expr_attr_values_found == theirs.expr_attr_values_found
        assert [op.expr(item) for item in ITEMS] == [expected.expr(item) for item in ITEMS]


def test_an_invalid_condition_is_refused_every_time() -> None:
    moto_speedups.install()
    for _ in range(2):
        with pytest.raises((KeyError, ValueError)):
            ConditionExpressionParser("version = :missing", None, {":v": {"N": "1"}}).parse()


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=5),
        st.recursive(
            st.one_of(
                st.text(max_size=8).map(lambda v: {"S": v}),
                st.integers().map(lambda v: {"N": str(v)}),
                st.booleans().map(lambda v: {"BOOL": v}),
                st.just({"NULL": True}),
                st.lists(st.text(max_size=3), min_size=1, max_size=3, unique=True).map(
                    lambda v: {"SS": v}
                ),
            ),
            lambda inner: st.one_of(
                st.lists(inner, max_size=3).map(lambda v: {"L": v}),
                st.dictionaries(st.text(max_size=3), inner, max_size=3).map(lambda v: {"M": v}),
            ),
            max_leaves=8,
        ),
        max_size=6,
    )
)
@settings(max_examples=60, deadline=None)
def test_an_item_copies_as_moto_copies_it(attrs: dict[str, Any]) -> None:
    # Given an item with any attribute values, its size kept
    moto_speedups.install()
    item = Item(DynamoType({"S": "pk"}), DynamoType({"N": "1"}), {"PK": {"S": "pk"}, **attrs})
    item.size()
    # When it is copied by the fast copy and by moto's own
    ours = copy.deepcopy(item)
    theirs = moto_speedups._original["item_deepcopy"](item, {})
    # Then the copies are equal, share no container with the item, and have its size
    assert ours.to_json() == theirs.to_json() == item.to_json()
    assert (ours.hash_key, ours.range_key) == (item.hash_key, item.range_key)
    assert ours.attrs is not item.attrs
    for key, value in item.attrs.items():
        assert ours.attrs[key] is not value
        if value.type in ("L", "M", "SS"):
            assert ours.attrs[key].value is not value.value
    assert ours.size() == moto_speedups._original["item_size"](item)
