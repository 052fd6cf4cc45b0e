"""moto, in-process: the real store and queues, created from the same definitions infra uses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dunning import aws
from dunning.evaluation import Evaluator
from dunning.model import Calendar, Channel, Policy, PolicyRule
from dunning.queues import SqsActionQueue
from dunning.store import TABLE, DynamoStore
from local import moto_speedups

moto_speedups.install()

TABLE_NAME = "dunning-test"
SHARDS = 4


@dataclass
class Env:
    store: DynamoStore
    queue: SqsActionQueue
    evaluator: Evaluator
    urls: dict[str, str]
    sqs: Any
    ddb: Any

    def configure(
        self,
        policies: list[Policy],
        now: datetime,
        rules: list[PolicyRule] | None = None,
        default: str | None = None,
        calendars: list[Calendar] | None = None,
    ) -> None:
        for p in policies:
            self.store.put_policy(p, "test", now)
            self.store.activate_policy(p.policy_id, p.version)
        for c in calendars or []:
            self.store.put_calendar(c)
        self.store.put_rules(rules or [], default or policies[0].policy_id)

    def drain(self, name: str) -> list[str]:
        """Receive and delete every message of a queue; returns the bodies."""
        bodies: list[str] = []
        while True:
            out = self.sqs.receive_message(QueueUrl=self.urls[name], MaxNumberOfMessages=10)
            msgs = out.get("Messages", [])
            if not msgs:
                return bodies
            for m in msgs:
                bodies.append(m["Body"])
            self.sqs.delete_message_batch(
                QueueUrl=self.urls[name],
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)
                ],
            )


def isolate_aws(patch: pytest.MonkeyPatch) -> None:
    """Fake credentials in one region, and no real endpoint or profile: every AWS
    call made while they hold goes to moto."""
    for key, value in {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        patch.setenv(key, value)
    patch.delenv("AWS_ENDPOINT_URL", raising=False)
    patch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    isolate_aws(monkeypatch)
    aws.reset_clients()
    with mock_aws():
        yield
    aws.reset_clients()


@pytest.fixture
def env(aws_env: None) -> Env:
    ddb = aws.dynamodb()
    ddb.create_table(**TABLE.create_table_kwargs(TABLE_NAME))
    sqs = aws.sqs()
    urls = {}
    for name in ("shards", "email", "sms", "webhook"):
        urls[name] = sqs.create_queue(QueueName=f"dunning-{name}")["QueueUrl"]
    store = DynamoStore(ddb, TABLE_NAME, SHARDS)
    queue = SqsActionQueue(
        sqs,
        {Channel.EMAIL: urls["email"], Channel.SMS: urls["sms"], Channel.WEBHOOK: urls["webhook"]},
        urls["shards"],
    )
    evaluator = Evaluator(store, queue, shards=SHARDS)
    return Env(store, queue, evaluator, urls, sqs, ddb)


def forever() -> int:
    """A Lambda context's remaining time that never runs out."""
    return 900_000


os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "DunningTest")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "dunning")
_ = boto3  # clients are created lazily through dunning.aws


# The API tests' fixtures (the local stack and a client).
from tests.integration.api_helpers import api, stack  # noqa: E402, F401
