"""DynamoStore on moto: idempotent ingestion, payments and reversals, conditional
writes, batching, and the sparse due index."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning import aws, engine
from dunning.engine import apply_decision, decide
from dunning.evaluation import ShardTask
from dunning.model import (
    AccountView,
    ActionSpec,
    ActionType,
    EventKind,
    InvoiceStatus,
    Level,
    Mode,
    Payment,
)
from dunning.store import ConflictError, DecisionTooLargeError, DynamoStore, StoredView
from dunning.store.schema import PARKED, iso, shard_of
from tests.builders import account, action, email, invoice, level, policy
from tests.integration.conftest import SHARDS, TABLE_NAME, Env
from tests.integration.helpers import CapturedCalls, partition, raw_account, run_tasks

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ACC = "acc-1"


def _kinds(env: Env, account_id: str = ACC) -> Counter[EventKind]:
    return Counter(e.kind for e in env.store.events(account_id))


def _item(env: Env, sk: str, account_id: str = ACC) -> dict[str, Any] | None:
    out: dict[str, Any] = env.ddb.get_item(
        TableName=env.store.table,
        Key={"PK": {"S": f"ACCOUNT#{account_id}"}, "SK": {"S": sk}},
        ConsistentRead=True,
    )
    return out.get("Item")


def _partition(env: Env, account_id: str = ACC) -> list[dict[str, Any]]:
    return partition(env, account_id)


def _evaluate_all(env: Env, as_of: datetime) -> None:
    run_tasks(env, [ShardTask(run_id="t", as_of=as_of, shard=s) for s in range(SHARDS)])


def _three_invoices(env: Env) -> None:
    """acc-1 (EUR) with A 100.00 due Jan 10, B 200.00 due Feb 10, C 300.00 due Mar 20."""
    env.configure([policy()], T0 - timedelta(days=90))
    env.store.upsert_account(account(), T0 - timedelta(days=60), "billing")
    env.store.upsert_invoice(
        invoice("A", "100.00", date(2026, 1, 10)), T0 - timedelta(days=60), "billing"
    )
    env.store.upsert_invoice(
        invoice("B", "200.00", date(2026, 2, 10)), T0 - timedelta(days=30), "billing"
    )
    env.store.upsert_invoice(
        invoice("C", "300.00", date(2026, 3, 20), issue_date=date(2026, 2, 20)),
        T0 - timedelta(days=10),
        "billing",
    )


def _payment(payment_id: str = "pay-1", amount: str = "150.00", **kw: Any) -> Payment:
    base: dict[str, Any] = {
        "payment_id": payment_id,
        "account_id": ACC,
        "currency": "EUR",
        "amount": Decimal(amount),
        "received_at": T0,
    }
    base.update(kw)
    return Payment(**base)


def _open(env: Env) -> dict[str, Decimal]:
    return {inv.invoice_id: inv.open_amount for inv in env.store.get_view(ACC).view.invoices}


# ------------------------------------------------------------------ ingestion


def test_same_invoice_twice_is_a_no_op(env: Env) -> None:
    # Given an account with one invoice
    env.configure([policy()], T0)
    env.store.upsert_account(account(), T0, "billing")
    first = env.store.upsert_invoice(invoice("inv-1"), T0, "billing")
    before = _partition(env)
    # When the billing system sends the same invoice again, later
    again = env.store.upsert_invoice(invoice("inv-1"), T0 + timedelta(hours=1), "billing")
    # Then the second write is a no-op: not created, same version, one audit event
    assert first.created is True
    assert again.created is False
    assert again.version == first.version
    assert _kinds(env)[EventKind.INVOICE_RECEIVED] == 1
    assert _partition(env) == before


def test_another_invoice_body_under_the_same_id_is_a_conflict(env: Env) -> None:
    # Given an account with invoice inv-1 of 100.00
    env.configure([policy()], T0)
    env.store.upsert_account(account(), T0, "billing")
    env.store.upsert_invoice(invoice("inv-1", "100.00"), T0, "billing")
    before = _partition(env)
    # When another body arrives under the same invoice id
    # Then it is refused as a conflict on the invoice id, and nothing changed
    with pytest.raises(ConflictError) as caught:
        env.store.upsert_invoice(invoice("inv-1", "999.00"), T0 + timedelta(hours=1), "billing")
    assert caught.value.field == "invoice_id"
    assert _partition(env) == before
    assert env.store.get_view(ACC).view.invoices[0].amount == Decimal("100.00")


def test_an_invoice_resent_after_a_payment_keeps_its_paid_state(env: Env) -> None:
    # Given an invoice partly paid
    _three_invoices(env)
    env.store.record_payment(_payment(amount="40.00", invoice_ids=("C",)), T0, "billing")
    before = _partition(env)
    # When the billing system sends the same invoice again (open amount as issued)
    result = env.store.upsert_invoice(
        invoice("C", "300.00", date(2026, 3, 20), issue_date=date(2026, 2, 20)),
        T0 + timedelta(hours=1),
        "billing",
    )
    # Then it is a no-op: the payment is not undone
    assert result.created is False
    assert _open(env)["C"] == Decimal("260.00")
    assert _partition(env) == before


def test_same_payment_twice_is_a_no_op(env: Env) -> None:
    # Given a recorded payment
    _three_invoices(env)
    first = env.store.record_payment(_payment(), T0, "billing")
    before = _partition(env)
    # When the same payment arrives again
    again = env.store.record_payment(_payment(), T0 + timedelta(hours=1), "billing")
    # Then nothing changes: the same allocations, one audit event, no second allocation
    assert again.allocations == first.allocations
    assert _kinds(env)[EventKind.PAYMENT_RECEIVED] == 1
    assert _partition(env) == before
    assert _open(env) == {"B": Decimal("150.00"), "C": Decimal("300.00")}


def test_another_payment_body_under_the_same_id_is_a_conflict(env: Env) -> None:
    # Given a recorded payment of 150.00
    _three_invoices(env)
    env.store.record_payment(_payment(), T0, "billing")
    before = _partition(env)
    # When another amount arrives under the same payment id
    # Then it is a conflict on the payment id, and nothing changed
    with pytest.raises(ConflictError) as caught:
        env.store.record_payment(_payment(amount="10.00"), T0 + timedelta(hours=1), "billing")
    assert caught.value.field == "payment_id"
    assert _partition(env) == before


def test_a_payment_resent_after_its_reversal_is_not_applied_again(env: Env) -> None:
    # Given a payment that bounced
    _three_invoices(env)
    env.store.record_payment(_payment(), T0, "billing")
    env.store.reverse_payment(ACC, "pay-1", "cheque bounced", T0 + timedelta(days=1), "billing")
    before = _partition(env)
    # When the billing system re-sends the original payment
    again = env.store.record_payment(_payment(), T0 + timedelta(days=2), "billing")
    # Then it is recognised (reversed) and the invoices stay reopened
    assert again.reversed_at is not None
    assert _partition(env) == before
    assert _open(env) == {"A": Decimal("100.00"), "B": Decimal("200.00"), "C": Decimal("300.00")}


# ------------------------------------------------------------------ payments


def test_a_payment_updates_the_view_and_makes_the_account_due_at_once(env: Env) -> None:
    # Given three invoices, evaluated once: the account is not due before the next level
    _three_invoices(env)
    _evaluate_all(env, T0 - timedelta(hours=1))
    shard = shard_of(ACC, SHARDS)
    due_before = raw_account(env, ACC)["due_at"]["S"]
    assert due_before > iso(T0)
    assert env.store.query_due(shard, T0).items == []
    paid_at = T0 + timedelta(minutes=7)
    # When a payment of 150.00 arrives without naming invoices
    with CapturedCalls("TransactWriteItems") as tx, aws.RequestCounter() as rc:
        recorded = env.store.record_payment(_payment(), paid_at, "billing")
    # Then it pays the oldest due first: A in full, then 50.00 of B
    assert [(a.invoice_id, a.amount) for a in recorded.allocations] == [
        ("A", Decimal("100.00")),
        ("B", Decimal("50.00")),
    ]
    # ... the view keeps what is open (A, paid, left it)
    assert _open(env) == {"B": Decimal("150.00"), "C": Decimal("300.00")}
    inv_a = _item(env, "INVOICE#A")
    assert inv_a is not None
    assert '"status":"paid"' in inv_a["body"]["S"]
    # ... the account is due at the write time, in its shard
    item = raw_account(env, ACC)
    assert item["due_at"]["S"] == iso(paid_at)
    assert item["due_pk"]["S"] == f"DUE#{shard}"
    due = env.store.query_due(shard, paid_at).items
    assert [s.view.account.account_id for s in due] == [ACC]
    # ... and the view, the payment, the invoices and the audit event were one transaction
    assert rc.counts["dynamodb.TransactWriteItems"] == 1
    assert rc.total("dynamodb.PutItem") + rc.total("dynamodb.BatchWriteItem") == 0
    assert len(tx.calls) == 1
    written = {
        next(iter(op.values())).get("Item", next(iter(op.values())).get("Key"))["SK"]["S"]
        for op in tx.calls[0]["TransactItems"]
    }
    events = [e for e in env.store.events(ACC) if e.kind is EventKind.PAYMENT_RECEIVED]
    assert len(events) == 1
    assert events[0].data["allocations"] == {"A": "100.00", "B": "50.00"}
    assert {"ACCOUNT", "PAYMENT#pay-1", "INVOICE#A", "INVOICE#B"} <= written
    assert any(sk.startswith("EVENT#") and sk.endswith(events[0].event_id) for sk in written)


def test_a_reversal_reopens_exactly_what_the_payment_paid(env: Env) -> None:
    # Given P1 (150.00: A in full, 50.00 of B), then P2 (50.00 more on B)
    _three_invoices(env)
    env.store.record_payment(_payment("P1", "150.00"), T0, "billing")
    env.store.record_payment(_payment("P2", "50.00"), T0 + timedelta(hours=1), "billing")
    assert _open(env) == {"B": Decimal("100.00"), "C": Decimal("300.00")}
    bounced_at = T0 + timedelta(days=3)
    # When P1 bounces
    reversed_p1 = env.store.reverse_payment(ACC, "P1", "cheque bounced", bounced_at, "billing")
    # Then A (which had left the view) is back, open in full, and B gets back 50.00 only
    view = env.store.get_view(ACC).view
    assert _open(env) == {"A": Decimal("100.00"), "B": Decimal("150.00"), "C": Decimal("300.00")}
    assert next(i for i in view.invoices if i.invoice_id == "A").status is InvoiceStatus.OPEN
    inv_a = _item(env, "INVOICE#A")
    assert inv_a is not None
    assert '"open_amount":"100.00"' in inv_a["body"]["S"]
    assert reversed_p1.reversed_at == bounced_at
    # ... P2 stays as it was
    p2 = _item(env, "PAYMENT#P2")
    assert p2 is not None
    assert "reversed_at" not in p2["body"]["S"]
    # ... the account is due at once, and the reversal is audited once
    assert raw_account(env, ACC)["due_at"]["S"] == iso(bounced_at)
    assert _kinds(env)[EventKind.PAYMENT_REVERSED] == 1


def test_a_reversal_is_idempotent(env: Env) -> None:
    # Given a reversed payment
    _three_invoices(env)
    env.store.record_payment(_payment(), T0, "billing")
    first = env.store.reverse_payment(ACC, "pay-1", "bounced", T0 + timedelta(days=1), "billing")
    before = _partition(env)
    # When the reversal arrives again
    again = env.store.reverse_payment(ACC, "pay-1", "bounced", T0 + timedelta(days=2), "billing")
    # Then nothing is reopened twice: same amounts, one audit event, no write
    assert again.reversed_at == first.reversed_at
    assert _partition(env) == before
    assert _open(env) == {"A": Decimal("100.00"), "B": Decimal("200.00"), "C": Decimal("300.00")}
    assert _kinds(env)[EventKind.PAYMENT_REVERSED] == 1


# --------------------------------------------------------- conditional writes


def _decided(env: Env, at: datetime) -> tuple[StoredView, Any, Any]:
    stored = env.store.get_view(ACC)
    decision = decide(stored.view, policy(), None, at)
    return stored, decision, apply_decision(stored.view, decision)


def test_a_stale_decision_is_a_conflict_and_writes_nothing(env: Env) -> None:
    # Given a decision taken on the account at version v (a level is due: case, action, events)
    _three_invoices(env)
    stored, decision, new_view = _decided(env, T0)
    assert decision.changed and decision.actions and decision.events
    # ... and a payment that lands meanwhile (version v+1)
    env.store.record_payment(_payment(amount="10.00"), T0, "billing")
    before = _partition(env)
    # When the decision is saved against version v
    # Then it is a conflict, and nothing of it was written
    with pytest.raises(ConflictError):
        env.store.save_decision(stored, new_view, decision, T0)
    assert _partition(env) == before
    assert env.store.cases(ACC) == []
    # ... the same for a due-only move
    with pytest.raises(ConflictError):
        env.store.save_due_only(stored, T0 + timedelta(days=5), T0)
    assert _partition(env) == before


def test_a_decision_too_big_for_one_transaction_writes_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision and its audit trail are written in one transaction or not at all:
    one that needs more than 100 writes is refused whole (the engine's budget keeps
    decisions smaller; this is what the store does when something slips past it)."""
    # Given an invoice-mode policy and 40 overdue invoices decided without the
    # engine's write budget: 40 cases and 40 actions with two audit events each
    monkeypatch.setattr(engine, "WRITE_BUDGET", 10_000)
    p = policy(mode=Mode.INVOICE, levels=(level("reminder", 10, email("reminder")),))
    env.configure([p], T0 - timedelta(days=90))
    env.store.upsert_account(account(), T0 - timedelta(days=60), "billing")
    for i in range(40):
        env.store.upsert_invoice(
            invoice(f"i{i:02d}", "50.00", date(2026, 1, 10)), T0 - timedelta(days=50), "billing"
        )
    stored = env.store.get_view(ACC)
    decision = decide(stored.view, p, None, T0)
    new_view = apply_decision(stored.view, decision)
    before = _partition(env)
    # When it is saved
    # Then it is refused, and nothing of it was written
    with pytest.raises(DecisionTooLargeError, match=r"needs [12]\d\d writes"):
        env.store.save_decision(stored, new_view, decision, T0)
    assert _partition(env) == before


def test_a_stale_decisions_conflict_carries_the_account_as_it_now_is(env: Env) -> None:
    """A decision's conditional write asks for the current account on failure
    (ReturnValuesOnConditionCheckFailure): the conflict carries it, at its new version."""
    # Given a decision taken at version v, and a payment that lands meanwhile (v+1)
    _three_invoices(env)
    stored, decision, new_view = _decided(env, T0)
    env.store.record_payment(_payment(amount="10.00"), T0, "billing")
    now = env.store.get_view(ACC)
    assert now.version == stored.version + 1
    # When the stale decision is saved
    with pytest.raises(ConflictError) as caught:
        env.store.save_decision(stored, new_view, decision, T0)
    # Then the account's cancellation reason holds the item as the payment left it;
    # the other writes of the transaction had no condition to fail
    reasons = caught.value.reasons
    assert reasons[0]["Code"] == "ConditionalCheckFailed"
    assert {r["Code"] for r in reasons[1:]} <= {"None"}
    item = reasons[0]["Item"]
    assert item["version"]["N"] == str(now.version)
    assert AccountView.model_validate_json(item["view"]["S"]) == now.view


# ------------------------------------------------------------------ batching


def _rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "PutRequest": {
                "Item": {
                    "PK": {"S": f"TEST#{i:04d}"},
                    "SK": {"S": "ROW"},
                    "n": {"N": str(i)},
                }
            }
        }
        for i in range(n)
    ]


def test_batch_write_and_batch_get_chunk_by_the_service_limits(env: Env) -> None:
    rows = _rows(260)
    keys = [{k: r["PutRequest"]["Item"][k] for k in ("PK", "SK")} for r in rows]
    # Given 60 rows, When they are written in one call of batch_write
    with aws.RequestCounter() as rc:
        calls = env.store.batch_write(rows[:60])
    # Then three BatchWriteItem calls carried them (25 + 25 + 10)
    assert calls == 3
    assert rc.counts["dynamodb.BatchWriteItem"] == 3
    # Given 200 more, When 260 keys (and 5 unknown ones) are read back
    env.store.batch_write(rows[60:])
    unknown = [{"PK": {"S": f"NOPE#{i}"}, "SK": {"S": "ROW"}} for i in range(5)]
    with CapturedCalls("BatchGetItem") as got, aws.RequestCounter() as rc:
        found = env.store.batch_get(keys + unknown)
    # Then three BatchGetItem calls of at most 100 keys returned each row once
    assert rc.counts["dynamodb.BatchGetItem"] == 3
    assert [len(c["RequestItems"][TABLE_NAME]["Keys"]) for c in got.calls] == [100, 100, 65]
    assert sorted(int(it["n"]["N"]) for it in found) == list(range(260))


class _Unreliable:
    """A DynamoDB client that leaves the last two requests of the first batch
    write, and the last two keys of the first batch get, unprocessed."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.writes: list[int] = []
        self.gets: list[int] = []

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        (table, requests), *_ = RequestItems.items()
        self.writes.append(len(requests))
        if len(self.writes) == 1:
            self._client.batch_write_item(RequestItems={table: requests[:-2]})
            return {"UnprocessedItems": {table: requests[-2:]}}
        out: dict[str, Any] = self._client.batch_write_item(RequestItems=RequestItems)
        return out

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        (table, spec), *_ = RequestItems.items()
        self.gets.append(len(spec["Keys"]))
        if len(self.gets) == 1:
            out = self._client.batch_get_item(
                RequestItems={table: {**spec, "Keys": spec["Keys"][:-2]}}
            )
            out["UnprocessedKeys"] = {table: {**spec, "Keys": spec["Keys"][-2:]}}
            return dict(out)
        result: dict[str, Any] = self._client.batch_get_item(RequestItems=RequestItems)
        return result


def test_batch_write_and_batch_get_retry_what_was_left_unprocessed(env: Env) -> None:
    # Given a client that leaves part of the first batch unprocessed
    flaky = _Unreliable(env.ddb)
    store = DynamoStore(flaky, TABLE_NAME, SHARDS)  # type: ignore[arg-type]
    rows = _rows(30)
    keys = [{k: r["PutRequest"]["Item"][k] for k in ("PK", "SK")} for r in rows]
    # When 30 rows are written and read back
    calls = store.batch_write(rows)
    found = store.batch_get(keys)
    # Then the unprocessed ones were retried and nothing is missing or doubled
    assert flaky.writes == [25, 2, 5]
    assert calls == 3
    assert flaky.gets == [30, 2]
    assert sorted(int(it["n"]["N"]) for it in found) == list(range(30))


# ------------------------------------------------------------ sparse due index


def test_an_account_with_nothing_to_do_leaves_the_due_index(env: Env) -> None:
    # Given: an account without invoices; one overdue below the entry threshold (5.00 < 10.00);
    # one whose only invoice is paid; and one overdue and dunned (the control)
    env.configure([policy()], T0 - timedelta(days=90))
    t_write = T0 - timedelta(days=5)
    for acc_id in ("empty", "small", "paid", "dunned"):
        env.store.upsert_account(account(account_id=acc_id), t_write, "billing")
    env.store.upsert_invoice(
        invoice("s1", "5.00", date(2026, 1, 10), account_id="small"), t_write, "billing"
    )
    env.store.upsert_invoice(
        invoice("p1", "80.00", date(2026, 1, 10), account_id="paid"), t_write, "billing"
    )
    env.store.record_payment(
        _payment("pp", "80.00", account_id="paid", received_at=t_write), t_write, "billing"
    )
    env.store.upsert_invoice(
        invoice("d1", "80.00", date(2026, 1, 10), account_id="dunned"), t_write, "billing"
    )
    # ... the three with invoices are in the due index after their writes; the one
    # with nothing to dun never entered it
    for acc_id in ("small", "paid", "dunned"):
        assert "due_pk" in raw_account(env, acc_id)
    assert "due_pk" not in raw_account(env, "empty")
    # When the scheduled evaluation runs
    _evaluate_all(env, T0)
    # Then the two that owe nothing carry no due attributes
    for acc_id in ("empty", "paid"):
        item = raw_account(env, acc_id)
        assert "due_pk" not in item, acc_id
        assert "due_at" not in item, acc_id
    # ... the one below the threshold is parked: only a new book can dun it without new data
    small = raw_account(env, "small")
    assert small["due_pk"]["S"] == f"DUE#{shard_of('small', SHARDS)}"
    assert small["due_at"]["S"] == PARKED
    # ... while the dunned account waits for its next level
    dunned = raw_account(env, "dunned")
    assert dunned["due_pk"]["S"] == f"DUE#{shard_of('dunned', SHARDS)}"
    assert dunned["due_at"]["S"] > iso(T0)
    in_index = {
        s.view.account.account_id
        for shard in range(SHARDS)
        for s in env.store.query_due(shard, datetime(2100, 1, 1, tzinfo=UTC)).items
    }
    assert in_index == {"dunned"}  # the parked one is never due


def test_a_level_with_only_a_future_step_keeps_the_account_in_the_index(env: Env) -> None:
    # Given an invoice not yet due (the engine wakes up on its due date)
    p = policy(
        levels=(
            Level(
                name="reminder",
                days=10,
                actions=(ActionSpec(type=ActionType.EMAIL, template="reminder"),),
            ),
        )
    )
    env.configure([p], T0 - timedelta(days=90))
    env.store.upsert_account(account(), T0 - timedelta(days=1), "billing")
    env.store.upsert_invoice(
        invoice("f1", "80.00", date(2026, 4, 1), issue_date=date(2026, 3, 1)),
        T0 - timedelta(days=1),
        "billing",
    )
    # When the scheduled evaluation runs
    _evaluate_all(env, T0)
    # Then the account stays in the index, due when something can change, not before
    item = raw_account(env, ACC)
    assert "due_pk" in item
    assert item["due_at"]["S"] > iso(T0)
    assert env.store.query_due(shard_of(ACC, SHARDS), T0).items == []


# ------------------------------------------------------ claims on the outbox


def test_a_claim_is_one_deliverys_until_its_deadline_or_its_release(env: Env) -> None:
    # Given two actions in the outbox, one queued, one still pending
    store = env.store
    first, second = action(action_id="act-1"), action(action_id="act-2", index=1)
    store.batch_write(
        [{"PutRequest": {"Item": store.outbox_item(a, pending=True)}} for a in (first, second)]
    )
    store.mark_queued([first], T0)
    now, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    # When one delivery claims both, then another tries before the deadline
    assert store.claim([first, second], now, until, "inv-a") == [first, second]
    assert store.claim([first, second], now + timedelta(seconds=30), until, "inv-b") == []
    # Then the records are the first's, out of the outbox index (no sweep resends them)
    _, records = store.delivery_state([first, second])
    assert {r.status for r in records.values()} == {"sending"}
    assert store.query_outbox(shard_of("acc-1", SHARDS), T0 + timedelta(days=1)) == []
    # ... and a release by the other delivery gives nothing back; the owner's does
    store.release([first], "inv-b")
    assert store.delivery_state([first])[1]["act-1"].status == "sending"
    store.release([first], "inv-a")
    assert store.delivery_state([first])[1]["act-1"].status == "queued"
    assert store.claim([first], now, until, "inv-b") == [first]
    # ... and after its deadline a claim can be taken over (the owner may have crashed)
    assert store.claim([second], until + timedelta(seconds=1), until, "inv-c") == [second]
    # ... but never once an outcome is written
    store.record_outcomes([(second, "delivered", "sent", "ses-1")], until)
    assert store.claim([second], until + timedelta(days=1), until, "inv-d") == []
    done = store.delivery_state([second])[1]["act-2"]
    assert (done.status, done.provider_id, done.outcome_at) == ("delivered", "ses-1", until)
