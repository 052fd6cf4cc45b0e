"""The batch routes, `POST /invoices/batch` and `POST /payments/batch`, through
API Gateway proxy events against moto.

Each item must leave the table as its single route leaves it: the tests send
the same data to a twin account through the single routes and compare the two
partitions, item by item (the account id and the ids derived from it aside).
They also pin what a batch costs in AWS requests, its 422s, its per-item
statuses and its roles."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from dunning import aws
from dunning.store import DynamoStore, RetryableError
from local.cloud import LocalCloud
from tests.integration.api_helpers import Api, account_body, invoice_body, payment_body
from tests.integration.helpers import CapturedCalls

# Account ids that are not part of one another (the comparison replaces them).
BATCH = ("batch-acc-1", "batch-acc-2", "batch-acc-3")
TWIN = ("twin-acc-1", "twin-acc-2", "twin-acc-3")


def on(account_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A batch item: a single route's body with its account."""
    return {"account_id": account_id, **body}


def _items(stack: LocalCloud, account_id: str) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "TableName": stack.table_name,
        "KeyConditionExpression": "PK = :p",
        "ExpressionAttributeValues": {":p": {"S": f"ACCOUNT#{account_id}"}},
        "ConsistentRead": True,
    }
    while True:
        out = aws.dynamodb().query(**kwargs)
        yield from out["Items"]
        if "LastEvaluatedKey" not in out:
            return
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def partition(stack: LocalCloud, account_id: str) -> list[str]:
    """Every item of the account's partition, comparable with a twin's: the
    account id replaced, and what is derived from it by hashing (event ids,
    body hashes, the due index's shard) left out."""
    found = []
    for item in _items(stack, account_id):
        plain = json.loads(json.dumps(item).replace(account_id, "ACC"))
        plain.pop("due_pk", None)
        plain.pop("body_hash", None)
        if plain["type"]["S"] == "event":
            body = json.loads(plain["body"]["S"])
            body.pop("event_id")
            plain["body"] = body
            plain["SK"] = plain["SK"]["S"].rsplit("#", 1)[0]  # EVENT#<at>#<phase>#<seq>
        found.append(json.dumps(plain, sort_keys=True))
    return sorted(found)


def accounts(api: Api, *ids: str) -> None:
    for account_id in ids:
        api.ok("PUT", f"/accounts/{account_id}", "billing", account_body())


# -------------------------------------------------------------- invoices


def test_a_batch_writes_each_invoice_as_the_single_route_does(api: Api, stack: LocalCloud) -> None:
    # Given three accounts and their twins: the second's inv-2 on an exclusion
    # list, the third with a credit of 200.00 (an overpayment)
    accounts(api, *BATCH, *TWIN)
    listed = [f"{a}/inv-2" for a in (BATCH[1], TWIN[1])]
    api.ok("PUT", "/exclusion-lists/legal", "admin", {"name": "Legal", "invoices": listed})
    for account_id in (BATCH[2], TWIN[2]):
        api.ok("POST", f"/accounts/{account_id}/payments", "billing", payment_body("p", "200.00"))
    first, second = invoice_body("inv-1", 12), invoice_body("inv-2", -10)  # overdue, not yet due
    # When the batch names the accounts' invoices interleaved ...
    sent = [on(BATCH[0], first), on(BATCH[1], second), on(BATCH[0], second), on(BATCH[2], first)]
    response = api("POST", "/invoices/batch", "billing", {"invoices": sent})
    # ... and the twins get the same through the single routes (the first account's
    # two invoices are one transaction, as the one-account bulk route writes them)
    api.ok("POST", f"/accounts/{TWIN[0]}/invoices/bulk", "billing", {"invoices": [first, second]})
    api.ok("PUT", f"/accounts/{TWIN[1]}/invoices/inv-2", "billing", second)
    api.ok("PUT", f"/accounts/{TWIN[2]}/invoices/inv-1", "billing", first)
    # Then every invoice is created, answered in the request's order
    assert response.status == 200, response.text
    assert response.json()["results"] == [
        {
            "index": n,
            "account_id": item["account_id"],
            "invoice_id": item["invoice_id"],
            "status": 201,
            "version": 1,
            "error": None,
        }
        for n, item in enumerate(sent)
    ]
    # ... and each account's partition (invoices, view, due time, credit, payment,
    # audit events) is its twin's
    for batch, twin in zip(BATCH, TWIN, strict=True):
        assert partition(stack, batch) == partition(stack, twin), batch
    # ... which is what the routes promise: the list excludes, the credit pays, the
    # billing system is the actor of the events
    [excluded] = api.ok("GET", f"/accounts/{BATCH[1]}")["invoices"]
    assert api.ok("GET", f"/accounts/{BATCH[2]}")["summary"]["credit"] == "80.00"
    timeline = api.ok("GET", f"/accounts/{BATCH[2]}/timeline")["items"]
    [received] = [e for e in timeline if e["kind"] == "invoice_received"]
    assert received["data"]["paid_by_credit"] == {"p": "120.00"}
    assert received["actor"] == "billing:local-user"
    events = api.ok("GET", f"/accounts/{BATCH[1]}/timeline")["items"]
    [changed] = [e for e in events if e["kind"] == "exclusion_changed"]
    assert changed["data"]["excluded_invoices"] == [excluded["invoice_id"]] == ["inv-2"]


def test_the_same_batch_again_answers_200_and_writes_nothing(api: Api, stack: LocalCloud) -> None:
    # Given a batch that was stored
    accounts(api, *BATCH)
    sent = [on(a, invoice_body(f"inv-{n}", 12)) for a in BATCH for n in (1, 2)]
    assert {
        r["status"]
        for r in api.ok("POST", "/invoices/batch", "billing", {"invoices": sent})["results"]
    } == {201}
    before = {a: partition(stack, a) for a in BATCH}
    # When it is sent again (a retry after a lost answer)
    with aws.RequestCounter() as counter:
        again = api.ok("POST", "/invoices/batch", "billing", {"invoices": sent})
    # Then each invoice answers 200 with its version, and nothing was written:
    # one read of the 3 accounts, their credit and the 6 invoices, and no write
    assert [(r["status"], r["version"], r["error"]) for r in again["results"]] == [
        (200, 1, None)
    ] * len(sent)
    assert counter.counts == {"dynamodb.BatchGetItem": 1}
    assert {a: partition(stack, a) for a in BATCH} == before


def test_the_same_invoice_twice_in_a_batch_is_written_once(api: Api, stack: LocalCloud) -> None:
    accounts(api, BATCH[0])
    item = on(BATCH[0], invoice_body("inv-1", 12))
    results = api.ok("POST", "/invoices/batch", "billing", {"invoices": [item, item]})["results"]
    assert [(r["index"], r["status"]) for r in results] == [(0, 201), (1, 200)]
    assert len(api.ok("GET", f"/accounts/{BATCH[0]}")["invoices"]) == 1


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"amount": "12.345"}, ["body", "invoices", 3, "amount"]),
        ({"amount": 12.5}, ["body", "invoices", 3, "amount"]),
        ({"due_date": "2026-01-01"}, ["body", "invoices", 3, "due_date"]),
        ({"account_id": None}, ["body", "invoices", 3, "account_id"]),
        ({"invoice_id": "inv-0", "amount": "1.00"}, ["body", "invoices", 3, "invoice_id"]),
    ],
    ids=["decimals", "a number", "due before issue", "no account", "repeat, another body"],
)
def test_a_malformed_invoice_is_a_422_at_its_index_and_nothing_is_written(
    api: Api, stack: LocalCloud, change: dict[str, Any], loc: list[Any]
) -> None:
    accounts(api, *BATCH)
    sent = [on(BATCH[n % 3], invoice_body(f"inv-{n}", 12)) for n in range(5)]
    sent[3] = {k: v for k, v in {**sent[3], **change}.items() if v is not None}
    with aws.RequestCounter() as counter:
        response = api("POST", "/invoices/batch", "billing", {"invoices": sent})
    assert response.status == 422, response.text
    error = response.json()
    assert error["code"] == "validation_error"
    assert [d["loc"] for d in error["details"]] == [loc]
    assert counter.total("dynamodb.") == 0  # not even read
    for account_id in BATCH:
        assert api.ok("GET", f"/accounts/{account_id}")["invoices"] == []


def test_a_batch_holds_100_invoices_and_49_of_one_account(api: Api) -> None:
    accounts(api, *BATCH)
    # 50 of one account are more than one transaction holds: a 422, nothing written
    sent = [on(BATCH[0], invoice_body(f"inv-{n}", 3)) for n in range(50)]
    response = api("POST", "/invoices/batch", "billing", {"invoices": sent})
    assert response.status == 422, response.text
    assert [d["loc"] for d in response.json()["details"]] == [["body", "invoices"]]
    assert BATCH[0] in response.json()["message"]
    assert api.ok("GET", f"/accounts/{BATCH[0]}")["invoices"] == []
    # ... while 100 items, the limit, pass (49 of one account), and 101 do not
    sent = [on(a, invoice_body(f"inv-{n}", 3)) for a in BATCH[:2] for n in range(49)]
    sent += [on(BATCH[2], invoice_body("inv-x", 3)), on(BATCH[2], invoice_body("inv-y", 3))]
    results = api.ok("POST", "/invoices/batch", "billing", {"invoices": sent})["results"]
    assert len(results) == 100 and {r["status"] for r in results} == {201}
    extra = [*sent, on(BATCH[2], invoice_body("inv-z", 3))]
    too_many = api("POST", "/invoices/batch", "billing", {"invoices": extra})
    assert too_many.status == 422 and too_many.json()["details"][0]["loc"] == ["body", "invoices"]


def test_an_unknown_account_is_a_404_for_its_invoices_and_the_others_are_written(
    api: Api,
) -> None:
    accounts(api, BATCH[0], BATCH[2])
    sent = [
        on(BATCH[0], invoice_body("inv-1", 12)),
        on("ghost", invoice_body("inv-1", 12)),
        on(BATCH[2], invoice_body("inv-1", 12)),
        on("ghost", invoice_body("inv-2", 12)),
    ]
    results = api.ok("POST", "/invoices/batch", "billing", {"invoices": sent})["results"]
    assert [r["status"] for r in results] == [201, 404, 201, 404]
    assert results[1]["error"]["code"] == "not_found" and results[1]["version"] is None
    assert "ghost" in results[1]["error"]["message"]
    for account_id in (BATCH[0], BATCH[2]):
        assert [i["invoice_id"] for i in api.ok("GET", f"/accounts/{account_id}")["invoices"]] == [
            "inv-1"
        ]
    assert api("GET", "/accounts/ghost").status == 404


def test_an_invoice_its_account_refuses_is_a_409_and_its_other_invoices_are_written(
    api: Api,
) -> None:
    # Given an account with inv-1 stored, and an account in USD
    accounts(api, BATCH[0])
    api.ok("PUT", f"/accounts/{BATCH[1]}", "billing", account_body(currency="USD"))
    api.ok("PUT", f"/accounts/{BATCH[0]}/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    # When a batch brings another body under inv-1, a euro invoice for the USD
    # account, and good invoices around them
    sent = [
        on(BATCH[0], invoice_body("inv-2", 12)),
        on(BATCH[0], invoice_body("inv-1", 12, amount="99.00")),
        on(BATCH[1], invoice_body("inv-1", 12)),
        on(BATCH[0], invoice_body("inv-3", 12)),
    ]
    results = api.ok("POST", "/invoices/batch", "billing", {"invoices": sent})["results"]
    # Then those two are 409s that say why and where, as the single route's
    assert [r["status"] for r in results] == [201, 409, 409, 201]
    clash, currency = results[1]["error"], results[2]["error"]
    assert clash["code"] == currency["code"] == "conflict"
    assert clash["details"][0]["loc"] == ["body", "invoices", 1, "invoice_id"]
    assert currency["details"][0]["loc"] == ["body", "invoices", 2, "currency"]
    other = invoice_body("inv-1", 12, amount="99.00")
    single = api("PUT", f"/accounts/{BATCH[0]}/invoices/inv-1", "billing", other)
    assert single.status == 409 and single.json()["message"] == clash["message"]
    # ... and the account's other invoices are written, the stored inv-1 unchanged
    stored = {
        i["invoice_id"]: i["amount"] for i in api.ok("GET", f"/accounts/{BATCH[0]}")["invoices"]
    }
    assert stored == {"inv-1": "120.00", "inv-2": "120.00", "inv-3": "120.00"}
    assert api.ok("GET", f"/accounts/{BATCH[1]}")["invoices"] == []


def test_a_throttled_batch_is_a_503_and_sending_it_again_completes_it(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given DynamoDB throttling the second account's transaction
    accounts(api, *BATCH)
    sent = [on(a, invoice_body("inv-1", 12)) for a in BATCH]
    original = DynamoStore._transact
    calls: list[str] = []

    def throttled(self: DynamoStore, items: list[dict[str, Any]], what: str) -> None:
        calls.append(what)
        if len(calls) == 2:
            raise RetryableError("throttled")
        original(self, items, what)

    monkeypatch.setattr(DynamoStore, "_transact", throttled)
    # When the batch is sent, it is a 503 (the error mapping of every route) ...
    response = api("POST", "/invoices/batch", "billing", {"invoices": sent})
    assert response.status == 503 and response.headers["Retry-After"] == "2"
    # ... and sent again, what was written answers 200, the rest is written
    results = api.ok("POST", "/invoices/batch", "billing", {"invoices": sent})["results"]
    assert [r["status"] for r in results] == [200, 201, 201]


# -------------------------------------------------------------- payments


def test_a_payment_batch_allocates_and_keeps_credit_as_the_single_route(
    api: Api, stack: LocalCloud
) -> None:
    # Given accounts with open invoices, and their twins
    accounts(api, *BATCH, *TWIN)
    for account_id in (*BATCH, *TWIN):
        for body in (invoice_body("inv-1", 30), invoice_body("inv-2", 12, amount="50.00")):
            api.ok("PUT", f"/accounts/{account_id}/invoices/{body['invoice_id']}", "billing", body)
    # When the batch pays: the first account twice (an invoice it names, then more
    # than is left: credit), the second the oldest due, the third a plan-less part
    payments = [
        (0, payment_body("pay-1", "50.00", invoice_ids=["inv-2"])),
        (1, payment_body("pay-1", "120.00")),
        (0, payment_body("pay-2", "200.00")),
        (2, payment_body("pay-1", "30.00")),
    ]
    sent = [on(BATCH[n], body) for n, body in payments]
    results = api.ok("POST", "/payments/batch", "billing", {"payments": sent})["results"]
    # ... and the twins the same through the single route, in the same order
    singles = [
        api.ok("POST", f"/accounts/{TWIN[n]}/payments", "billing", body) for n, body in payments
    ]
    # Then each is recorded as the single route records it: same allocations, same credit
    assert [r["status"] for r in results] == [201] * 4
    for result, single, item in zip(results, singles, sent, strict=True):
        assert result["payment"] == {**single, "account_id": item["account_id"]}
        assert result["version"] == 1 and result["error"] is None
    assert results[2]["payment"]["unallocated"] == "80.00"
    assert api.ok("GET", f"/accounts/{BATCH[0]}")["summary"]["credit"] == "80.00"
    for batch, twin in zip(BATCH, TWIN, strict=True):
        assert partition(stack, batch) == partition(stack, twin), batch
    # When the same batch comes again: 200s, the payments as stored, nothing written
    with aws.RequestCounter() as counter:
        again = api.ok("POST", "/payments/batch", "billing", {"payments": sent})["results"]
    assert [r["status"] for r in again] == [200] * 4
    assert [r["payment"] for r in again] == [r["payment"] for r in results]
    assert counter.counts == {"dynamodb.BatchGetItem": 1}


def test_a_payment_its_account_refuses_answers_as_the_single_route_and_the_next_go_on(
    api: Api,
) -> None:
    # Given an account with an invoice and a recorded payment, and one in USD
    accounts(api, BATCH[0])
    api.ok("PUT", f"/accounts/{BATCH[1]}", "billing", account_body(currency="USD"))
    api.ok("PUT", f"/accounts/{BATCH[0]}/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    api.ok("POST", f"/accounts/{BATCH[0]}/payments", "billing", payment_body("pay-1", "10.00"))
    refused = [
        (on("ghost", payment_body("pay-2", "10.00")), 404, "not_found", None),
        (on(BATCH[0], payment_body("pay-1", "11.00")), 409, "conflict", ["payment_id"]),
        (
            on(BATCH[0], payment_body("pay-3", "10.00", invoice_ids=["inv-404"])),
            422,
            "validation_error",
            ["invoice_ids", 0],
        ),
        (on(BATCH[1], payment_body("pay-4", "10.00")), 422, "validation_error", ["currency"]),
    ]
    good = on(BATCH[0], payment_body("pay-5", "20.00"))
    sent = [item for item, *_ in refused] + [good]
    # When they come in one batch
    results = api.ok("POST", "/payments/batch", "billing", {"payments": sent})["results"]
    # Then each refused one gets its single route's status and error, at its index
    for n, (item, status, code, field) in enumerate(refused):
        result = results[n]
        assert (result["status"], result["error"]["code"]) == (status, code), result
        assert result["payment"] is None and result["version"] is None
        body = {k: v for k, v in item.items() if k != "account_id"}
        single = api("POST", f"/accounts/{item['account_id']}/payments", "billing", body)
        assert single.status == status, single.text
        assert single.json()["message"] == result["error"]["message"]
        if field is not None:
            assert [d["loc"] for d in result["error"]["details"]] == [
                ["body", "payments", n, *field]
            ]
    # ... and the payment after them is recorded
    assert results[-1]["status"] == 201
    assert results[-1]["payment"]["allocations"] == [{"invoice_id": "inv-1", "amount": "20.00"}]


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"amount": "10.001"}, ["body", "payments", 2, "amount"]),
        ({"received_at": "yesterday"}, ["body", "payments", 2, "received_at"]),
        ({"payment_id": "pay-0", "amount": "3.00"}, ["body", "payments", 2, "payment_id"]),
    ],
    ids=["decimals", "no instant", "repeat, another body"],
)
def test_a_malformed_payment_is_a_422_at_its_index_and_nothing_is_written(
    api: Api, change: dict[str, Any], loc: list[Any]
) -> None:
    accounts(api, BATCH[0])
    api.ok("PUT", f"/accounts/{BATCH[0]}/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    before = api.ok("GET", f"/accounts/{BATCH[0]}")
    sent = [on(BATCH[0], payment_body(f"pay-{n}", "10.00")) for n in range(4)]
    sent[2] = {**sent[2], **change}
    with aws.RequestCounter() as counter:
        response = api("POST", "/payments/batch", "billing", {"payments": sent})
    assert response.status == 422, response.text
    assert [d["loc"] for d in response.json()["details"]] == [loc]
    assert counter.total("dynamodb.") == 0
    assert api.ok("GET", f"/accounts/{BATCH[0]}") == before


# ------------------------------------------------------------ roles, cost


@pytest.mark.parametrize("path", ["/invoices/batch", "/payments/batch"])
def test_only_billing_and_admin_may_send_a_batch(api: Api, path: str) -> None:
    accounts(api, BATCH[0])
    key = "invoices" if "invoices" in path else "payments"
    body = invoice_body("inv-1", 3) if key == "invoices" else payment_body("pay-1", "1.00")
    sent = {key: [on(BATCH[0], body)]}
    for role in ("collector", "viewer"):
        refused = api("POST", path, role, sent)
        assert refused.status == 403 and refused.json()["code"] == "forbidden", role
    assert api("POST", path, None, sent).status == 401
    assert api.ok("GET", f"/accounts/{BATCH[0]}")["version"] == 1  # nothing written
    assert api("POST", path, "billing", sent).json()["results"][0]["status"] == 201
    assert api("POST", path, "admin", sent).json()["results"][0]["status"] == 200


def test_a_batch_reads_everything_at_once_and_writes_one_transaction_per_account(
    api: Api,
) -> None:
    # Given 100 accounts, and a container that has ingested once (its policy book
    # and exclusion lists read)
    ids = [f"acc-{n:03d}" for n in range(100)]
    accounts(api, *ids)
    api.ok("PUT", f"/accounts/{ids[0]}/invoices/warm", "billing", invoice_body("warm", 3))
    # When one batch brings an invoice for each
    sent = [on(a, invoice_body("inv-1", 12)) for a in ids]
    with aws.RequestCounter() as counter, CapturedCalls("BatchGetItem") as reads:
        results = api.ok("POST", "/invoices/batch", "billing", {"invoices": sent})["results"]
    assert {r["status"] for r in results} == {201}
    # Then it read the accounts, their credit and the invoices in full BatchGetItems
    # (100 keys each: 300 keys, 3 reads; the single route reads once per invoice)
    # and wrote one transaction per account, nothing else
    keys = [
        len(call["RequestItems"][next(iter(call["RequestItems"]))]["Keys"]) for call in reads.calls
    ]
    assert keys == [100, 100, 100]
    assert counter.counts == {
        "dynamodb.BatchGetItem": math.ceil(3 * len(ids) / 100),
        "dynamodb.TransactWriteItems": len(ids),
    }
    # When the payments of the same accounts come, two for the first account
    payments = [on(a, payment_body("pay-1", "20.00")) for a in ids[:99]]
    payments.append(on(ids[0], payment_body("pay-2", "20.00")))
    with aws.RequestCounter() as counter:
        paid = api.ok("POST", "/payments/batch", "billing", {"payments": payments})["results"]
    assert {r["status"] for r in paid} == {201}
    # Then the same: one read per 100 keys (each payment, 99 accounts and their
    # credit), one transaction per payment; the second payment of an account
    # starts from what the first wrote, without reading it again
    assert counter.counts == {
        "dynamodb.BatchGetItem": math.ceil((100 + 99 + 99) / 100),
        "dynamodb.TransactWriteItems": 100,
    }
