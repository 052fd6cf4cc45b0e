"""The deployment, emulated in-process on moto: resources, functions, wiring.

`LocalCloud.create()` makes what the CDK stack makes, from the same
definitions (`dunning.store.schema` for the tables, `dunning.topology` for the
functions, queues and DLQs, `dunning.settings` for each function's
environment): the table and the idempotency table, the shard and channel
queues with their DLQs, the SES sender identity, one Secrets Manager secret per
webhook endpoint. It then runs the real handlers the way Lambda would: the
schedule fires the dispatcher, event source mappings feed the worker and the
channel functions, the API function answers proxy events.

The caller starts moto (`with mock_aws():`) before creating it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dunning import aws
from dunning.channels.webhook import generate_secret
from dunning.model import Channel
from dunning.queues import SqsActionQueue
from dunning.store import TABLE, DynamoStore
from dunning.store.schema import IDEMPOTENCY_TABLE
from dunning.topology import (
    FUNCTIONS,
    MAX_RECEIVE_COUNT,
    QUEUES,
    FunctionSpec,
    visibility_timeout_s,
)
from local import moto_speedups
from local.runtime import LocalFunction, PollResult, SqsEventSource

ENDPOINT_NAMES = ("provisioning", "contact-centre", "agency", "crm")
LOCAL_ENV = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
POWERTOOLS_ENV = {
    "POWERTOOLS_SERVICE_NAME": "dunning",
    "POWERTOOLS_METRICS_NAMESPACE": "Dunning",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


@dataclass
class LocalCloud:
    """One emulated stack. `webhook_base` is where integration endpoints live
    (a `local.receiver.WebhookReceiver` on 127.0.0.1)."""

    name: str = "dunning"
    shards: int = 8
    sender: str = "billing@example.com"
    webhook_base: str | None = None
    visibility_timeout_s: int | None = None  # None: what infra sets (6x the timeout)
    extra_env: Mapping[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    dlq_urls: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # endpoint -> whsec_ secret
    functions: dict[str, LocalFunction] = field(default_factory=dict)
    sources: dict[str, SqsEventSource] = field(default_factory=dict)

    @property
    def table_name(self) -> str:
        return self.name

    @property
    def idempotency_table_name(self) -> str:
        return f"{self.name}-idempotency"

    # ---------------------------------------------------------------- create

    def create(self) -> LocalCloud:
        moto_speedups.install()
        ddb, sqs = aws.dynamodb(), aws.sqs()
        ddb.create_table(**TABLE.create_table_kwargs(self.table_name))
        ddb.create_table(**IDEMPOTENCY_TABLE.create_table_kwargs(self.idempotency_table_name))
        for queue in QUEUES:
            dlq = sqs.create_queue(QueueName=f"{self.name}-{queue}-dlq")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            visibility = (
                self.visibility_timeout_s
                if self.visibility_timeout_s is not None
                else visibility_timeout_s(queue)
            )
            self.urls[queue] = sqs.create_queue(
                QueueName=f"{self.name}-{queue}",
                Attributes={
                    "VisibilityTimeout": str(visibility),
                    "RedrivePolicy": json.dumps(
                        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
                    ),
                },
            )["QueueUrl"]
            self.dlq_urls[queue] = dlq
        aws.ses().verify_email_identity(EmailAddress=self.sender)
        endpoints: dict[str, dict[str, str]] = {}
        for endpoint in ENDPOINT_NAMES:
            secret = generate_secret()
            arn = aws.secretsmanager().create_secret(
                Name=f"{self.name}/webhooks/{endpoint}", SecretString=secret
            )["ARN"]
            self.secrets[endpoint] = secret
            if self.webhook_base:
                endpoints[endpoint] = {"url": f"{self.webhook_base}/{endpoint}", "secret_id": arn}
        self._endpoints = json.dumps(endpoints)
        for spec in FUNCTIONS:
            self.functions[spec.name] = LocalFunction(
                f"{self.name}-{spec.name}",
                f"{spec.module}:{spec.attribute}",
                self.environment(spec),
                spec.timeout_s * 1000,
            )
            if spec.queue:
                self.sources[spec.queue] = SqsEventSource(
                    sqs, self.urls[spec.queue], self.functions[spec.name]
                )
        return self

    def environment(self, spec: FunctionSpec) -> dict[str, str]:
        """The environment infra gives the function: every settings field, set."""
        values = {
            "TABLE_NAME": self.table_name,
            "IDEMPOTENCY_TABLE_NAME": self.idempotency_table_name,
            "SHARD_COUNT": str(self.shards),
            "SHARD_QUEUE_URL": self.urls["shards"],
            "EMAIL_QUEUE_URL": self.urls["email"],
            "SMS_QUEUE_URL": self.urls["sms"],
            "WEBHOOK_QUEUE_URL": self.urls["webhook"],
            "QUEUE_URL": self.urls.get(spec.queue or "", ""),
            "SENDER_EMAIL": self.sender,
            "WEBHOOK_ENDPOINTS": self._endpoints,
            # The local receiver listens on plain HTTP on 127.0.0.1 (never in AWS).
            "ALLOW_INSECURE_LOOPBACK": "true",
            "RETRY_BASE_S": "30",
            **self.extra_env,
        }
        env = {k: v for k, v in values.items() if k in spec.settings.model_fields}
        return {**LOCAL_ENV, **POWERTOOLS_ENV, **env}

    # ------------------------------------------------------------- handles

    def store(self) -> DynamoStore:
        return DynamoStore(aws.dynamodb(), self.table_name, self.shards)

    def action_queue(self) -> SqsActionQueue:
        return SqsActionQueue(
            aws.sqs(),
            {
                Channel.EMAIL: self.urls["email"],
                Channel.SMS: self.urls["sms"],
                Channel.WEBHOOK: self.urls["webhook"],
            },
            self.urls["shards"],
        )

    # ----------------------------------------------------------------- run

    def fire_schedule(self, as_of: datetime) -> Any:
        """What EventBridge Scheduler does at `as_of`: invoke the dispatcher."""
        stamp = as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.functions["dispatch"].invoke({"scheduled_time": stamp})

    def evaluate(self, as_of: datetime) -> PollResult:
        """One scheduled run to its end: dispatch, then the worker over every
        shard task (continuations included)."""
        self.fire_schedule(as_of)
        return self.sources["shards"].drain()

    def deliver(self) -> dict[str, PollResult]:
        """The channel functions consume what their queues hold."""
        return {queue: self.sources[queue].drain() for queue in ("email", "sms", "webhook")}

    def depth(self, queue: str, dlq: bool = False) -> int:
        url = (self.dlq_urls if dlq else self.urls)[queue]
        attrs = aws.sqs().get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        return self.functions[name].invoke(event)
