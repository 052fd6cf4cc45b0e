"""Action delivery, end to end on moto: evaluator queues -> channel functions ->
SES, SNS and a signed-webhook receiver on 127.0.0.1.

The stack is `local.cloud.LocalCloud` (the same resources and function wiring
infra deploys); the handlers are the real ones, fed by the local event source
mapping.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends

from dunning import aws, clock
from dunning.channels.webhook import verify
from dunning.model import (
    Account,
    Action,
    ActionSpec,
    ActionType,
    CaseStatus,
    EventKind,
    Invoice,
    InvoiceStatus,
    Level,
    Payment,
    Policy,
    ServiceStatus,
)
from dunning.queues import ACTION
from local.cloud import LocalCloud
from local.portfolio import THRESHOLDS, standard_calendar, standard_policies
from local.receiver import WebhookReceiver

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
    logger.removeHandler(handler)


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
    store = stack.store()
    for p in standard_policies():
        store.put_policy(p, "admin", AS_OF - timedelta(days=200))
        store.activate_policy(p.policy_id, p.version)
    store.put_calendar(standard_calendar())
    store.put_rules([], "consumer")
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
    de = ingest(cloud, "acc-de", "de", 10, email="anna.schmidt@example.com")
    fr = ingest(cloud, "acc-fr", "fr", 40, phone="+33612345678")
    en = ingest(cloud, "acc-en", "en", 45, email="john.smith@example.com")
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
    # ... SNS sent the French SMS, GSM-7 safe (no non-breaking space from the formatting)
    sms = list(sent_sms().values())
    assert [number for number, _ in sms] == [fr.phone]
    text = sms[0][1]
    assert "1 234,50 €" in text and "\u00a0" not in text and "\u202f" not in text
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
    assert lines.count("action outcome") == 4
    for secret in ("anna.schmidt", "john.smith", "@example.com", "+33612345678", "612345678"):
        assert secret not in lines


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


# --------------------------------------------------------------------- helpers


def _receive_all(stack: LocalCloud, queue: str) -> list[str]:
    bodies = []
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
