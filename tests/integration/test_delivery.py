"""Action delivery, end to end on moto: evaluator queues -> channel functions ->
SES, SNS and a signed-webhook receiver on 127.0.0.1.

The stack is `local.cloud.LocalCloud` (the same resources and function wiring
infra deploys); the handlers are the real ones, fed by the local event source
mapping.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends

from dunning import aws, clock
from dunning.channels.templates import InMemoryTemplates, Templates, template_path
from dunning.channels.webhook import generate_secret, verify
from dunning.delivery import PermanentSendError, TransientSendError
from dunning.model import (
    Account,
    AccountView,
    Action,
    ActionSpec,
    ActionType,
    CaseStatus,
    Channel,
    EventKind,
    Invoice,
    InvoiceStatus,
    Level,
    Payment,
    Policy,
    ServiceStatus,
)
from dunning.queues import ACTION
from dunning.senders import PolicyLocales, SecretsCache, SnsSmsSender, _parse_secret
from dunning.store.scan import scan_items
from dunning.store.schema import iso
from local.cloud import LocalCloud
from local.portfolio import THRESHOLDS, seed_book
from local.receiver import WebhookReceiver
from local.runtime import sqs_record
from tests.builders import action
from tests.unit.strategies import examples

# A Tuesday, 10:00 UTC: inside sending hours in Berlin, Paris and London.
AS_OF = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
ACCOUNT_ID = "123456789012"
REGION = "eu-west-1"


def sent_emails() -> list[Any]:
    return list(ses_backends[ACCOUNT_ID][REGION].sent_messages)


def sent_sms() -> dict[str, tuple[str, str]]:
    return dict(sns_backends[ACCOUNT_ID][REGION].sms_messages)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Every line the functions log, formatted as Powertools writes it in Lambda."""
    from dunning.observability import logger

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield buffer
    logger.handlers.remove(handler)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(clock=clock.now) as r:
        yield r


@pytest.fixture
def cloud(aws_env: None, receiver: WebhookReceiver) -> Iterator[LocalCloud]:
    # Deliveries happen a minute after the scheduled run.
    clock.use(lambda: AS_OF + timedelta(minutes=1))
    stack = LocalCloud(
        webhook_base=receiver.url(""),
        shards=2,
        visibility_timeout_s=0,
        extra_env={"RETRY_BASE_S": "1"},
    ).create()
    for endpoint, secret in stack.secrets.items():
        receiver.secrets[f"/{endpoint}"] = [secret]
    seed_book(stack.store(), AS_OF)
    yield stack
    clock.use(None)


def ingest(
    stack: LocalCloud, account_id: str, locale: str, days_overdue: int, **kw: Any
) -> Account:
    """An account with one invoice `days_overdue` days past due (Berlin time)."""
    store = stack.store()
    account = Account(
        account_id=account_id,
        name=kw.pop("name", f"Customer {account_id}"),
        currency=kw.pop("currency", "EUR"),
        locale=locale,
        timezone=kw.pop("timezone", "Europe/Berlin"),
        email=kw.pop("email", f"{account_id}@example.com"),
        phone=kw.pop("phone", "+4915112345678"),
        **kw,
    )
    before = AS_OF - timedelta(days=1)
    store.upsert_account(account, before, "billing")
    due = AS_OF.date() - timedelta(days=days_overdue)
    store.upsert_invoice(
        Invoice(
            invoice_id=f"{account_id}-inv-1",
            account_id=account_id,
            currency=account.currency,
            amount=Decimal("1234.50"),
            open_amount=Decimal("1234.50"),
            issue_date=due - timedelta(days=30),
            due_date=due,
        ),
        before,
        "billing",
    )
    return account


def run(stack: LocalCloud) -> None:
    stack.evaluate(AS_OF)
    stack.deliver()


def outcomes(stack: LocalCloud, account_id: str) -> list[dict[str, Any]]:
    return [
        {"kind": e.kind.value, **e.data}
        for e in stack.store().events(account_id)
        if e.kind in (EventKind.ACTION_DELIVERED, EventKind.ACTION_FAILED, EventKind.ACTION_SKIPPED)
    ]


# ------------------------------------------------------------------ end to end


def test_each_channel_delivers_what_the_evaluator_queued(
    cloud: LocalCloud,
    receiver: WebhookReceiver,
    logs: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Given a German account at the reminder level (10 days), a French one at
    # "avoid suspension" (40 days: an SMS) and an English one at suspension (45 days)
    # (and a German one at 40 days, whose SMS goes to a German mobile number)
    de = ingest(cloud, "acc-de", "de", 10, email="anna.schmidt@example.com")
    fr = ingest(cloud, "acc-fr", "fr", 40, phone="+33612345678")
    en = ingest(cloud, "acc-en", "en", 45, email="john.smith@example.com")
    de_mobile = ingest(cloud, "acc-de-sms", "de", 40, phone="+4915112345678")
    # When the schedule fires and the channel functions run
    run(cloud)
    # Then SES sent the reminder in German and the suspension notice in English
    emails = {m.destinations["ToAddresses"][0]: m for m in sent_emails()}
    assert set(emails) == {de.email, en.email}
    german = emails["anna.schmidt@example.com"]
    assert german.source == "billing@example.com"
    assert "Zahlungserinnerung" in german.subject
    assert "1.234,50\u00a0€" in german.body
    english = emails["john.smith@example.com"]
    assert "€1,234.50" in english.body
    assert "suspen" in english.subject.lower()
    # ... SNS sent the French SMS (and the German one), GSM-7 safe (no
    # non-breaking space from the formatting)
    sms = dict(sent_sms().values())
    assert set(sms) == {fr.phone, de_mobile.phone}
    text = sms["+33612345678"]
    assert "1 234,50 €" in text and "\u00a0" not in text and "\u202f" not in text
    assert "1.234,50 €" in sms["+4915112345678"]
    # ... and the provisioning system got a signed webhook whose id is the action id
    [hook] = receiver.received
    assert hook.path == "/provisioning"
    assert hook.verified
    verify(hook.body, hook.headers, [cloud.secrets["provisioning"]], 300, clock.now())
    body = hook.json()
    assert body["type"] == "dunning.suspend_service"
    assert body["data"]["account_id"] == "acc-en"
    assert hook.headers["webhook-id"] == body["data"]["action_id"]
    assert "john.smith" not in hook.body.decode()
    # ... the account's service is suspended, and every outcome is in the audit trail
    assert cloud.store().get_view("acc-en").view.account.service_status is ServiceStatus.SUSPENDED
    assert [o["kind"] for o in outcomes(cloud, "acc-de")] == ["action_delivered"]
    assert sorted(o["type"] for o in outcomes(cloud, "acc-en")) == ["email", "suspend_service"]
    assert all(o.get("provider_id") for o in outcomes(cloud, "acc-en"))
    # ... and no log line carries an email address or a phone number
    out, err = capfd.readouterr()
    lines = logs.getvalue() + out + err
    assert lines.count("action outcome") == 5
    assert lines.count("sms rendered") == 2
    for secret in (
        "anna.schmidt",
        "john.smith",
        "@example.com",
        "+33612345678",
        "612345678",
        "+4915112345678",  # E.164, German mobile
        "15112345678",
    ):
        assert secret not in lines


def test_a_delivered_actions_outbox_record_keeps_when_it_was_queued(cloud: LocalCloud) -> None:
    # Given an action the evaluator queued at the run's instant
    ingest(cloud, "acc-1", "en", 10)
    # When the run queues it and the email function delivers it
    run(cloud)
    # Then the outbox record says delivered, when, and still when it was queued
    (record,) = [
        it
        for it in scan_items(cloud.store())
        if it["PK"]["S"] == "ACCOUNT#acc-1" and it["SK"]["S"].startswith("OUTBOX#")
    ]
    assert record["status"]["S"] == "delivered"
    assert iso(AS_OF) <= record["queued_at"]["S"] <= record["outcome_at"]["S"]


def test_a_message_delivered_three_times_sends_once(cloud: LocalCloud) -> None:
    # Given an action the evaluator queued
    ingest(cloud, "acc-1", "en", 10)
    cloud.evaluate(AS_OF)
    [body] = _receive_all(cloud, "email")
    # When SQS delivers it three times (at-least-once delivery)
    sqs = aws.sqs()
    for _ in range(3):
        sqs.send_message(QueueUrl=cloud.urls["email"], MessageBody=body)
    cloud.deliver()
    # Then one email went out, and one outcome is recorded
    assert len(sent_emails()) == 1
    assert len(outcomes(cloud, "acc-1")) == 1
    assert cloud.depth("email") == 0


def test_one_poison_record_fails_alone_and_ends_in_the_dlq(cloud: LocalCloud) -> None:
    # Given nine good actions and one poison message in one batch
    for i in range(9):
        ingest(cloud, f"acc-{i}", "en", 10)
    cloud.evaluate(AS_OF)
    bodies = _receive_all(cloud, "email")
    assert len(bodies) == 9
    sqs = aws.sqs()
    for body in [*bodies[:4], '{"action_id": 42, "broken": true', *bodies[4:]]:
        sqs.send_message(QueueUrl=cloud.urls["email"], MessageBody=body)
    source = cloud.sources["email"]
    messages: list[dict[str, Any]] = []
    while len(messages) < 10:
        messages += source.receive()
    # When the channel function handles the batch
    result = source.invoke_batch(messages)
    # Then nine were sent and only the poison one is reported failed
    assert (result.received, result.failed) == (10, 1)
    assert len(sent_emails()) == 9
    # ... and after maxReceiveCount receives it sits in the DLQ
    cloud.deliver()
    assert cloud.depth("email") == 0
    assert cloud.depth("email", dlq=True) == 1
    assert len(sent_emails()) == 9


def test_a_payment_after_the_action_was_queued_skips_it(cloud: LocalCloud) -> None:
    # Given a reminder queued for an account
    ingest(cloud, "acc-1", "en", 10)
    cloud.evaluate(AS_OF)
    # When the customer pays in full before the email function runs
    cloud.store().record_payment(
        Payment(
            payment_id="pay-1",
            account_id="acc-1",
            currency="EUR",
            amount=Decimal("1234.50"),
            received_at=AS_OF,
        ),
        AS_OF,
        "billing",
    )
    cloud.deliver()
    # Then nothing was sent and the action is recorded as skipped: recovered
    assert sent_emails() == []
    [skipped] = outcomes(cloud, "acc-1")
    assert (skipped["kind"], skipped["reason"]) == ("action_skipped", "recovered")


# ------------------------------------------------------------- failure modes


def test_a_transient_webhook_failure_retries_and_a_4xx_fails_for_good(
    cloud: LocalCloud, receiver: WebhookReceiver
) -> None:
    # Given two accounts reaching suspension, the provisioning system answering
    # 503 once then 200 for the first call, and 400 for the second
    ingest(cloud, "acc-1", "en", 45)
    cloud.evaluate(AS_OF)
    receiver.statuses["/provisioning"] = [503, 200]
    # When the webhook function runs until its queue is empty
    first = cloud.sources["webhook"].drain()
    # Then the 503 went back to the queue, hidden for its backoff (no sleep in the function)
    assert first.failed == 1
    assert cloud.depth("webhook") == 1
    assert cloud.sources["webhook"].drain().received == 0
    # ... and once the backoff (1 s with this stack's RETRY_BASE_S) has passed, the retry delivers
    time.sleep(1.2)
    assert cloud.sources["webhook"].drain().failed == 0
    assert [r.path for r in receiver.received] == ["/provisioning", "/provisioning"]
    assert [o["kind"] for o in outcomes(cloud, "acc-1") if o["type"] == "suspend_service"] == [
        "action_delivered"
    ]
    # ... and a permanent 400 is recorded as failed and acknowledged
    ingest(cloud, "acc-2", "en", 45)
    cloud.evaluate(AS_OF + timedelta(minutes=15))
    receiver.statuses["/provisioning"] = [400]
    cloud.deliver()
    [failed] = [o for o in outcomes(cloud, "acc-2") if o["type"] == "suspend_service"]
    assert (failed["kind"], failed["reason"]) == ("action_failed", "webhook_http_400")
    assert cloud.depth("webhook") == 0
    assert cloud.store().get_view("acc-2").view.account.service_status is ServiceStatus.ACTIVE


def test_an_sms_to_an_account_without_a_phone_number_fails_without_a_send(
    cloud: LocalCloud,
) -> None:
    # (numbers that are not E.164 are refused at ingestion already)
    ingest(cloud, "acc-1", "fr", 40, phone=None)
    run(cloud)
    assert sent_sms() == {}
    [failed] = outcomes(cloud, "acc-1")
    assert (failed["kind"], failed["reason"]) == ("action_failed", "no_phone_number")


def test_a_missing_template_fails_the_action_permanently(cloud: LocalCloud) -> None:
    policy = Policy(
        policy_id="odd",
        name="Odd",
        thresholds=THRESHOLDS,
        levels=(
            Level(name="l1", days=5, actions=(ActionSpec(type=ActionType.EMAIL, template="nope"),)),
        ),
    )
    store = cloud.store()
    store.put_policy(policy, "admin", AS_OF - timedelta(days=30))
    store.activate_policy("odd", 1)
    ingest(cloud, "acc-1", "en", 10, policy_override="odd")
    run(cloud)
    [failed] = outcomes(cloud, "acc-1")
    assert failed["kind"] == "action_failed"
    assert failed["reason"].startswith("template_error")
    assert cloud.depth("email") == 0


# ------------------------------------------------------------ account actions


def _account_action_policy(*specs: ActionSpec) -> Policy:
    return Policy(
        policy_id="steps",
        name="Steps",
        thresholds=THRESHOLDS,
        levels=(Level(name="step", days=5, actions=specs),),
    )


def test_write_off_closes_the_case_and_a_manual_task_is_listed(cloud: LocalCloud) -> None:
    store = cloud.store()
    store.put_policy(
        _account_action_policy(
            ActionSpec(type=ActionType.MANUAL_TASK), ActionSpec(type=ActionType.WRITE_OFF)
        ),
        "admin",
        AS_OF - timedelta(days=30),
    )
    store.activate_policy("steps", 1)
    ingest(cloud, "acc-1", "en", 10, policy_override="steps")
    run(cloud)
    view = store.get_view("acc-1").view
    [case] = view.cases
    assert case.status is CaseStatus.WRITTEN_OFF
    [invoice] = store.list_partition("acc-1", "INVOICE#")
    assert json.loads(invoice["body"]["S"])["status"] == InvoiceStatus.WRITTEN_OFF.value
    tasks = store.list_partition("acc-1", "TASK#")
    assert len(tasks) == 1
    assert json.loads(tasks[0]["body"]["S"])["type"] == "manual_task"


def test_collection_agency_and_call_go_to_their_endpoints(
    cloud: LocalCloud, receiver: WebhookReceiver
) -> None:
    store = cloud.store()
    store.put_policy(
        _account_action_policy(
            ActionSpec(type=ActionType.CALL, target="contact-centre"),
            ActionSpec(type=ActionType.COLLECTION_AGENCY),
        ),
        "admin",
        AS_OF - timedelta(days=30),
    )
    store.activate_policy("steps", 1)
    ingest(cloud, "acc-1", "en", 10, policy_override="steps")
    run(cloud)
    assert sorted(r.path for r in receiver.received) == ["/agency", "/contact-centre"]
    assert all(r.verified for r in receiver.received)


# ------------------------------------------------------------------ approvals


def test_an_approved_action_goes_out_with_the_next_run_and_a_rejected_one_never(
    cloud: LocalCloud, receiver: WebhookReceiver
) -> None:
    # Given two consumer accounts at the collection-agency level (approval required)
    store = cloud.store()
    for account_id in ("acc-1", "acc-2"):
        ingest(cloud, account_id, "en", 60)
    run(cloud)
    pending = {
        a: [json.loads(it["body"]["S"]) for it in store.list_partition(a, "APPROVAL#")]
        for a in ("acc-1", "acc-2")
    }
    assert all(len(p) == 1 for p in pending.values())
    assert not any(r.path == "/agency" for r in receiver.received)
    # When a collector approves one and rejects the other
    later = AS_OF + timedelta(hours=2)
    store.decide_approval(
        "acc-1",
        pending["acc-1"][0]["approval_id"],
        approve=True,
        actor="collector:kim",
        reason="no answer to three calls",
        on_rejected="skip_level",
        now=later,
    )
    store.decide_approval(
        "acc-2",
        pending["acc-2"][0]["approval_id"],
        approve=False,
        actor="collector:kim",
        reason="customer in hospital",
        on_rejected="stop_case",
        now=later,
    )
    clock.use(lambda: later + timedelta(minutes=16))
    cloud.evaluate(later + timedelta(minutes=15))
    cloud.deliver()
    # Then the approved hand-over reached the agency, once; the rejected one never did
    agency = [r.json()["data"]["account_id"] for r in receiver.received if r.path == "/agency"]
    assert agency == ["acc-1"]
    assert store.get_view("acc-2").view.cases[0].status is CaseStatus.STOPPED
    decided = [e for e in store.events("acc-2") if e.kind is EventKind.APPROVAL_DECIDED]
    assert decided[0].data["reason"] == "customer in hospital"
    assert decided[0].actor == "collector:kim"


# ------------------------------------------------- outcomes, time, idempotency


@contextmanager
def failing(
    client: Any, operation: str, code: str, status: int = 400, after: int = 0
) -> Iterator[list[int]]:
    """`client` answers every `operation` call after the first `after` with an
    error, as AWS would; `calls` counts the refused ones."""
    calls: list[int] = []
    passed: list[int] = []

    def answer(**_: Any) -> tuple[Any, dict[str, Any]] | None:
        if len(passed) < after:
            passed.append(1)
            return None
        calls.append(1)
        http = SimpleNamespace(status_code=status, headers={}, raw=None)
        return http, {
            "Error": {"Code": code, "Message": "injected"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }

    event = f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}"
    client.meta.events.register(event, answer)
    try:
        yield calls
    finally:
        client.meta.events.unregister(event, answer)


def _receive(stack: LocalCloud, queue: str, n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while len(messages) < n:
        batch = stack.sources[queue].receive()
        assert batch, f"expected {n} messages in {queue}, got {len(messages)}"
        messages += batch
    return messages


def _event(stack: LocalCloud, queue: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": [sqs_record(m, stack.urls[queue]) for m in messages]}


def _failed_ids(response: dict[str, Any]) -> set[str]:
    return {f["itemIdentifier"] for f in response["batchItemFailures"]}


def _two_reminders(cloud: LocalCloud) -> list[dict[str, Any]]:
    """Two accounts' reminders, queued by a run and received from the email queue."""
    ingest(cloud, "acc-1", "en", 10)
    ingest(cloud, "acc-2", "en", 10)
    cloud.evaluate(AS_OF)
    return _receive(cloud, "email", 2)


def test_an_outcome_the_batch_write_refuses_is_written_in_a_transaction(
    cloud: LocalCloud,
) -> None:
    # Given two reminders queued
    messages = _two_reminders(cloud)
    # When DynamoDB refuses the outcomes' BatchWriteItem after both emails went out
    with failing(aws.dynamodb(), "BatchWriteItem", "ProvisionedThroughputExceededException"):
        response = cloud.functions["mail"].invoke(_event(cloud, "email", messages))
    # Then the same puts went in a transaction: both acknowledged, both recorded
    assert _failed_ids(response) == set()
    assert len(sent_emails()) == 2
    provider_ids = {m.id for m in sent_emails()}
    for account_id in ("acc-1", "acc-2"):
        [delivered] = outcomes(cloud, account_id)
        assert delivered["kind"] == "action_delivered"
        assert delivered["provider_id"] in provider_ids
    # ... and a duplicate of one replays its outcome: no send, the same event rewritten
    sqs = aws.sqs()
    sqs.send_message(QueueUrl=cloud.urls["email"], MessageBody=messages[0]["Body"])
    cloud.deliver()
    assert len(sent_emails()) == 2
    assert len(outcomes(cloud, "acc-1")) == 1


def test_an_outcome_that_cannot_be_written_fails_its_record_and_the_claim_holds(
    cloud: LocalCloud,
) -> None:
    # Given two reminders queued
    messages = _two_reminders(cloud)
    db = aws.dynamodb()
    # When DynamoDB refuses both the batch write and the transaction of the outcomes
    with (
        failing(db, "BatchWriteItem", "ProvisionedThroughputExceededException"),
        failing(db, "TransactWriteItems", "ProvisionedThroughputExceededException", after=1),
    ):  # (the first transaction is the claim)
        response = cloud.functions["mail"].invoke(_event(cloud, "email", messages))
    # Then both records are reported failed (they stay in the queue) and nothing is recorded
    assert _failed_ids(response) == {m["MessageId"] for m in messages}
    assert len(sent_emails()) == 2
    assert outcomes(cloud, "acc-1") == outcomes(cloud, "acc-2") == []
    # When SQS delivers them again before the invocation's deadline
    again = _receive(cloud, "email", 2)
    response = cloud.functions["mail"].invoke(_event(cloud, "email", again))
    # Then the claims hold: nothing is sent again, the records go back to the queue
    assert _failed_ids(response) == {m["MessageId"] for m in again}
    assert len(sent_emails()) == 2
    assert outcomes(cloud, "acc-1") == outcomes(cloud, "acc-2") == []
    # When the deadline has passed (the function's timeout), the retry claims them:
    # at least once, as for an invocation that crashed after its sends
    clock.use(lambda: AS_OF + timedelta(minutes=3))
    cloud.deliver()
    assert len(sent_emails()) == 4
    assert [o["kind"] for o in outcomes(cloud, "acc-1")] == ["action_delivered"]
    assert cloud.depth("email") == 0


def test_with_too_little_time_left_every_record_goes_back_unsent(cloud: LocalCloud) -> None:
    # Given three reminders queued
    for i in range(3):
        ingest(cloud, f"acc-{i}", "en", 10)
    cloud.evaluate(AS_OF)
    messages = _receive(cloud, "email", 3)
    # When the function is invoked with 5 s left (under its 10 s margin)
    response = cloud.functions["mail"].invoke(
        _event(cloud, "email", messages), remaining=lambda: 5_000
    )
    # Then every record comes back failed, and nothing was sent or recorded
    assert _failed_ids(response) == {m["MessageId"] for m in messages}
    assert sent_emails() == []
    assert all(outcomes(cloud, f"acc-{i}") == [] for i in range(3))
    # ... and an invocation with time to spare sends them
    cloud.deliver()
    assert len(sent_emails()) == 3


def test_running_out_of_time_mid_batch_gives_back_the_unsent_claims(cloud: LocalCloud) -> None:
    # Given three reminders queued, claimed together by one invocation
    for i in range(3):
        ingest(cloud, f"acc-{i}", "en", 10)
    cloud.evaluate(AS_OF)
    messages = _receive(cloud, "email", 3)
    # When its time runs short after the first record (the claim and the first
    # record see a minute left, then 5 s: under the 10 s margin)
    left = iter([60_000, 60_000])
    response = cloud.functions["mail"].invoke(
        _event(cloud, "email", messages), remaining=lambda: next(left, 5_000)
    )
    # Then one email went out and the other two records came back unsent
    assert len(_failed_ids(response)) == 2
    assert len(sent_emails()) == 1
    records = [
        it["status"]["S"] for it in scan_items(cloud.store()) if it["SK"]["S"].startswith("OUTBOX#")
    ]
    assert sorted(records) == ["delivered", "queued", "queued"]  # given back, not held
    # ... and the next invocation sends those two at once, each once
    cloud.deliver()
    assert len(sent_emails()) == 3
    assert all(len(outcomes(cloud, f"acc-{i}")) == 1 for i in range(3))


def test_a_message_whose_action_has_no_outbox_record_is_refused(
    cloud: LocalCloud, logs: io.StringIO
) -> None:
    # Given a well-formed action message that no evaluator wrote (no outbox record)
    ingest(cloud, "acc-1", "en", 10)
    cloud.evaluate(AS_OF)
    [body] = _receive_all(cloud, "email")
    forged = {**json.loads(body), "action_id": "not-an-outbox-action"}
    aws.sqs().send_message(QueueUrl=cloud.urls["email"], MessageBody=json.dumps(forged))
    # When the email function drains its queue
    cloud.deliver()
    # Then it is never sent: it ends in the DLQ, with a line saying why
    assert sent_emails() == []
    assert cloud.depth("email", dlq=True) == 1
    assert "no outbox record for this action id" in logs.getvalue()


def test_an_action_id_reused_with_a_different_payload_is_refused(
    cloud: LocalCloud, logs: io.StringIO
) -> None:
    # Given a reminder that went out
    ingest(cloud, "acc-1", "en", 10)
    cloud.evaluate(AS_OF)
    [body] = _receive_all(cloud, "email")
    sqs = aws.sqs()
    sqs.send_message(QueueUrl=cloud.urls["email"], MessageBody=body)
    cloud.deliver()
    assert len(sent_emails()) == 1
    # When a message with the same action id but another level and template arrives
    forged = json.loads(body)
    forged["level"] += 1
    forged["template"] = "important_notice"
    sqs.send_message(QueueUrl=cloud.urls["email"], MessageBody=json.dumps(forged))
    [message] = _receive(cloud, "email", 1)
    response = cloud.functions["mail"].invoke(_event(cloud, "email", [message]))
    # Then it is refused: reported failed, not sent, flagged in the logs
    assert _failed_ids(response) == {message["MessageId"]}
    assert len(sent_emails()) == 1
    assert "action id reused with a different payload" in logs.getvalue()
    # ... and it ends in the DLQ for a person to look at; the audit trail keeps the one send
    cloud.deliver()
    assert cloud.depth("email") == 0
    assert cloud.depth("email", dlq=True) == 1
    assert len(sent_emails()) == 1
    assert [o["kind"] for o in outcomes(cloud, "acc-1")] == ["action_delivered"]


# ---------------------------------------------------------------- EMF metrics


def _emf(stdout: str, name: str) -> list[dict[str, Any]]:
    """The EMF documents of `stdout` that carry metric `name`."""
    found = []
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        directives = doc.get("_aws", {}).get("CloudWatchMetrics", [])
        if any(m["Name"] == name for d in directives for m in d["Metrics"]):
            found.append(doc)
    return found


def test_every_outcome_is_an_emf_metric_by_channel_level_and_outcome(
    cloud: LocalCloud, receiver: WebhookReceiver, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given an account at the suspension level (a webhook and an email), and the
    # provisioning system answering 503
    ingest(cloud, "acc-1", "en", 45)
    cloud.evaluate(AS_OF)
    receiver.statuses["/provisioning"] = [503]
    capfd.readouterr()
    # When the channel functions run once
    cloud.deliver()
    # Then each outcome is one EMF document in the Dunning namespace, split by
    # channel, level and outcome (and the service)
    docs = _emf(capfd.readouterr().out, "ActionOutcomes")
    [email] = [o for o in outcomes(cloud, "acc-1") if o["type"] == "email"]
    level = str(email["level"])
    assert int(level) > 0
    seen = set()
    for doc in docs:
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Dunning"
        assert directive["Metrics"] == [{"Name": "ActionOutcomes", "Unit": "Count"}]
        [dimensions] = directive["Dimensions"]
        assert set(dimensions) == {"channel", "level", "outcome", "service"}
        value = doc["ActionOutcomes"]
        assert value in (1, 1.0, [1.0], [1])
        seen.add((doc["channel"], doc["level"], doc["outcome"]))
    # ... the email delivered, the webhook retried at its real level (not "any")
    assert seen == {("email", level, "delivered"), ("webhook", level, "retried")}


# --------------------------------------------------------------- locales, SMS


def test_a_template_missing_in_the_account_language_falls_back_to_the_policy_default(
    cloud: LocalCloud,
) -> None:
    # Given a policy whose default language is German, and a Spanish-speaking
    # account (no Spanish templates ship)
    store = cloud.store()
    policy = Policy(
        policy_id="german",
        name="German",
        thresholds=THRESHOLDS,
        default_locale="de",
        levels=(
            Level(
                name="reminder",
                days=5,
                actions=(ActionSpec(type=ActionType.EMAIL, template="reminder"),),
            ),
        ),
    )
    store.put_policy(policy, "admin", AS_OF - timedelta(days=30))
    store.activate_policy("german", 1)
    ingest(cloud, "acc-es", "es", 10, policy_override="german", email="maria@example.com")
    # When the reminder goes out
    run(cloud)
    # Then it is the German template, amounts formatted in German
    [mail] = sent_emails()
    assert "Zahlungserinnerung" in mail.subject
    assert "1.234,50\u00a0€" in mail.body


def test_policy_locales_fall_back_to_the_configured_default_for_an_unknown_policy(
    cloud: LocalCloud,
) -> None:
    locales = PolicyLocales(cloud.store(), "fr")
    known = _queued_like(policy_id="consumer", policy_version=1)
    unknown = _queued_like(policy_id="gone", policy_version=7)
    assert locales(known) == "en"  # the consumer policy's default
    assert locales(unknown) == "fr"


def _queued_like(**kw: Any) -> Action:
    return action(
        **{
            "action_id": "a-1",
            "case_id": "c-1",
            "type": ActionType.SMS,
            "channel": Channel.SMS,
            "not_before": AS_OF,
            "created_at": AS_OF,
            "invoice_ids": (),
            **kw,
        }
    )


def _sms_view(phone: str | None = "+4915112345678") -> AccountView:
    account = Account(account_id="acc-1", currency="EUR", locale="en").model_copy(
        update={"phone": phone}  # model_copy: a number the model would refuse at ingestion
    )
    return AccountView(account=account)


def test_an_sms_longer_than_sns_accepts_fails_for_good_without_a_send(
    aws_env: None, logs: io.StringIO
) -> None:
    # Given an SMS template that renders 1,700 characters
    templates = Templates(
        InMemoryTemplates({template_path("sms", "en", "long", "text"): "{{ 'x' * 1700 }}"})
    )
    sender = SnsSmsSender(aws.sns(), templates, lambda _a: "en", clock.now)
    # When it is sent
    with pytest.raises(PermanentSendError) as failed:
        sender.send(_queued_like(template="long"), _sms_view())
    # Then it fails for good with the length in the reason, and nothing reached SNS
    assert failed.value.reason.startswith("sms_too_long: 1700 characters")
    assert sent_sms() == {}
    # ... and the length is reported in the logs, the number never
    assert '"characters":1700' in logs.getvalue()
    assert "+4915112345678" not in logs.getvalue()


def test_an_sms_at_the_limit_goes_out_in_its_segments(aws_env: None, logs: io.StringIO) -> None:
    templates = Templates(
        InMemoryTemplates({template_path("sms", "en", "long", "text"): "{{ 'x' * 1600 }}"})
    )
    sender = SnsSmsSender(aws.sns(), templates, lambda _a: "en", clock.now)
    sender.send(_queued_like(template="long"), _sms_view())
    [(number, text)] = sent_sms().values()
    assert (number, len(text)) == ("+4915112345678", 1600)
    assert '"segments":11' in logs.getvalue()  # 1600 GSM-7 characters: 11 segments of 153


@pytest.mark.parametrize("phone", ["0151 12345678", "+49 (0)151 12345678", "4915112345678", None])
def test_an_sms_to_an_invalid_number_fails_for_good_without_echoing_it(
    aws_env: None, logs: io.StringIO, phone: str | None
) -> None:
    sender = SnsSmsSender(aws.sns(), Templates(), lambda _a: "en", clock.now)
    with pytest.raises(PermanentSendError) as failed:
        sender.send(_queued_like(template="avoid_suspension"), _sms_view(phone))
    assert failed.value.reason == ("no_phone_number" if phone is None else "invalid_phone_number")
    assert sent_sms() == {}
    assert "12345678" not in logs.getvalue() + str(failed.value)


# -------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("raw", "secrets"),
    [
        ("whsec_new", ["whsec_new"]),
        ("  whsec_new\n", ["whsec_new"]),
        ('{"current": "whsec_new", "previous": "whsec_old"}', ["whsec_new", "whsec_old"]),
        ('{"previous": "whsec_old", "current": "whsec_new"}', ["whsec_new", "whsec_old"]),
        ('{"current": "whsec_new"}', ["whsec_new"]),
        ('{"current": "whsec_new", "previous": ""}', ["whsec_new"]),
        ('{"current": "whsec_new", "previous": null}', ["whsec_new"]),
        ('{"current": "whsec_new", "previous": "whsec_new"}', ["whsec_new"]),
    ],
)
def test_a_secret_is_one_string_or_current_and_previous(raw: str, secrets: list[str]) -> None:
    assert _parse_secret(raw) == secrets


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        '{"current": ',
        '{"previous": "whsec_old"}',
        '{"current": 5}',
        '{"current": ["whsec_a"]}',
    ],
)
def test_a_malformed_secret_fails_for_good_without_quoting_it(raw: str) -> None:
    with pytest.raises(PermanentSendError) as failed:
        _parse_secret(raw)
    assert failed.value.reason.startswith("secret_malformed")
    assert "whsec_old" not in str(failed.value)


def test_secrets_come_from_secrets_manager_and_are_cached(aws_env: None) -> None:
    client = aws.secretsmanager()
    client.create_secret(Name="plain", SecretString="whsec_plain")
    client.create_secret(
        Name="rotating", SecretString=json.dumps({"current": "whsec_b", "previous": "whsec_a"})
    )
    cache = SecretsCache(client)
    with aws.RequestCounter() as counter:
        assert cache("plain") == ["whsec_plain"]
        assert cache("rotating") == ["whsec_b", "whsec_a"]
        assert cache("plain") == ["whsec_plain"]
    assert counter.total("secretsmanager.GetSecretValue") == 2
    # A secret that does not exist is permanent (no retry finds it)
    with pytest.raises(PermanentSendError, match="secret_ResourceNotFoundException"):
        cache("missing")
    # Throttling is transient
    with (
        failing(client, "GetSecretValue", "ThrottlingException"),
        pytest.raises(TransientSendError),
    ):
        SecretsCache(client)("plain")


def test_during_a_rotation_webhooks_verify_with_the_old_or_the_new_secret(
    cloud: LocalCloud, receiver: WebhookReceiver
) -> None:
    # Given the provisioning endpoint's secret mid-rotation: a new current, the old previous
    old = cloud.secrets["provisioning"]
    new = generate_secret()
    aws.secretsmanager().put_secret_value(
        SecretId="dunning/webhooks/provisioning",
        SecretString=json.dumps({"current": new, "previous": old}),
    )
    # When a suspension goes out
    ingest(cloud, "acc-1", "en", 45)
    run(cloud)
    # Then it carries two signatures: a receiver still on the old secret verifies it,
    # and so does one already on the new secret
    [hook] = receiver.received
    assert hook.verified  # the receiver holds only the old secret
    assert len(hook.headers["webhook-signature"].split()) == 2
    verify(hook.body, hook.headers, [new], 300, clock.now())
    verify(hook.body, hook.headers, [old], 300, clock.now())


# ---------------------------------------------------------- service status


def test_deactivate_sets_the_service_status_and_tells_provisioning(
    cloud: LocalCloud, receiver: WebhookReceiver
) -> None:
    store = cloud.store()
    store.put_policy(
        _account_action_policy(ActionSpec(type=ActionType.DEACTIVATE)),
        "admin",
        AS_OF - timedelta(days=30),
    )
    store.activate_policy("steps", 1)
    ingest(cloud, "acc-1", "en", 10, policy_override="steps")
    run(cloud)
    [hook] = receiver.received
    assert (hook.path, hook.json()["type"]) == ("/provisioning", "dunning.deactivate")
    view = store.get_view("acc-1").view
    assert view.account.service_status is ServiceStatus.DEACTIVATED
    effects = [e for e in store.events("acc-1") if e.kind is EventKind.ACCOUNT_UPDATED]
    assert [e.data["effect"] for e in effects] == ["deactivate"]


def test_a_payment_after_suspension_restores_the_service(
    cloud: LocalCloud, receiver: WebhookReceiver
) -> None:
    # Given an account whose service the suspension level barred
    store = cloud.store()
    ingest(cloud, "acc-1", "en", 45)
    run(cloud)
    assert store.get_view("acc-1").view.account.service_status is ServiceStatus.SUSPENDED
    # When the customer pays in full and the next run sees it
    store.record_payment(
        Payment(
            payment_id="pay-1",
            account_id="acc-1",
            currency="EUR",
            amount=Decimal("1234.50"),
            received_at=AS_OF + timedelta(minutes=5),
        ),
        AS_OF + timedelta(minutes=5),
        "billing",
    )
    later = AS_OF + timedelta(minutes=15)
    clock.use(lambda: later + timedelta(minutes=1))
    cloud.evaluate(later)
    cloud.deliver()
    # Then provisioning was told to restore, and the account is active again
    assert [r.json()["type"] for r in receiver.received] == [
        "dunning.suspend_service",
        "dunning.restore_service",
    ]
    assert all(r.verified for r in receiver.received)
    assert store.get_view("acc-1").view.account.service_status is ServiceStatus.ACTIVE
    [restored] = [o for o in outcomes(cloud, "acc-1") if o["type"] == "restore_service"]
    assert (restored["kind"], restored["level"]) == ("action_delivered", 0)


# --------------------------------------------------------------------- helpers


def _receive_all(stack: LocalCloud, queue: str) -> list[str]:
    bodies: list[str] = []
    sqs = aws.sqs()
    while True:
        msgs = sqs.receive_message(QueueUrl=stack.urls[queue], MaxNumberOfMessages=10).get(
            "Messages", []
        )
        if not msgs:
            return bodies
        for m in msgs:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=stack.urls[queue], ReceiptHandle=m["ReceiptHandle"])


def _action(body: str) -> Action:
    return ACTION.validate_json(body)


# ------------------------------------ exactly once, whatever the deliveries

_examples = itertools.count()
# What the queue and the function may do between the run and the end.
STEP = st.one_of(
    st.tuples(st.just("duplicate"), st.integers(0, 2)),  # SQS delivers a message again
    st.tuples(  # the function takes up to n visible messages, in one of four conditions
        st.just("invoke"),
        st.sampled_from(["ok", "short", "batch_fails", "both_fail"]),
        st.integers(1, 4),
    ),
    st.just(("deadline", 0)),  # time passes beyond every claim's deadline
)


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, max_size=7))
def test_each_action_goes_out_once_whatever_the_duplicates_and_failures(
    aws_env: None, steps: list[tuple[Any, ...]]
) -> None:
    """Duplicates, invocations short of time, outcome writes refused once or
    twice, claims outliving their invocation: each action has one outcome, and a
    second send happens only after a send whose outcome could not be written
    (the documented at-least-once window)."""
    n = next(_examples)
    now = [AS_OF + timedelta(minutes=1)]
    clock.use(lambda: now[0])
    try:
        stack = LocalCloud(name=f"once-{n}", shards=2, visibility_timeout_s=0).create()
        seed_book(stack.store(), AS_OF)
        accounts = [f"once-{n}-{i}" for i in range(3)]
        for account_id in accounts:
            ingest(stack, account_id, "en", 10)
        stack.evaluate(AS_OF)
        bodies = _receive_all(stack, "email")
        assert len(bodies) == 3
        sqs: Any = aws.sqs()  # (untyped: its messages go to `_event` as plain dicts)
        url = stack.urls["email"]
        for body in bodies:
            sqs.send_message(QueueUrl=url, MessageBody=body)

        def sends() -> Counter[str]:
            to = {f"{a}@example.com": a for a in accounts}
            return Counter(
                to[d] for m in sent_emails() for d in m.destinations["ToAddresses"] if d in to
            )

        # Sends an account may see: one, plus one per send whose outcome write
        # failed twice, once that send's claim has ended (not before).
        allowed = Counter(accounts)
        lost: Counter[str] = Counter()  # such sends whose claims still hold
        for step, arg, *rest in steps:
            if step == "duplicate":
                sqs.send_message(QueueUrl=url, MessageBody=bodies[arg])
            elif step == "deadline":
                now[0] += timedelta(minutes=2)
                allowed += lost
                lost.clear()
            else:
                messages = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=rest[0], AttributeNames=["All"]
                ).get("Messages", [])
                if not messages:
                    continue
                # short: a minute left for the claim and the first record, then 5 s
                left = iter([60_000, 60_000])
                remaining = (lambda it=left: next(it, 5_000)) if arg == "short" else None
                before = sends()
                db = aws.dynamodb()
                with contextlib.ExitStack() as faults:
                    if arg in ("batch_fails", "both_fail"):
                        faults.enter_context(failing(db, "BatchWriteItem", "ThrottlingException"))
                    if arg == "both_fail":  # (the first transaction is the claim)
                        faults.enter_context(
                            failing(db, "TransactWriteItems", "ThrottlingException", after=1)
                        )
                    response = stack.functions["mail"].invoke(
                        _event(stack, "email", messages), remaining=remaining
                    )
                if arg == "both_fail":
                    lost += sends() - before
                assert all(sends()[a] <= allowed[a] for a in accounts), (sends(), allowed)
                for m in messages:
                    if m["MessageId"] not in _failed_ids(response):
                        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        # When every claim has ended and the queue is drained
        now[0] += timedelta(minutes=2)
        allowed += lost
        stack.deliver()
        # Then each action has one outcome (or its messages wait in the DLQ for a
        # person: five receives while its claim was held) ...
        dead = stack.depth("email", dlq=True)
        for account_id in accounts:
            recorded = outcomes(stack, account_id)
            assert len(recorded) <= 1
            assert len(recorded) == 1 or dead > 0
        # ... and went out once, or again only after a send whose outcome was lost
        assert all(sends()[a] <= allowed[a] for a in accounts), (sends(), allowed)
        assert all(sends()[a] >= 1 for a in accounts if outcomes(stack, a))
    finally:
        clock.use(None)
