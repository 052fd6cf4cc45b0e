"""A work queue and its dead-letter queue, with the settings every queue shares."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from dunning.topology import (
    DLQ_RETENTION_DAYS,
    MAX_RECEIVE_COUNT,
    QUEUE_RETENTION_DAYS,
    visibility_timeout_s,
)


class QueueWithDlq(Construct):
    """`queue` moves a message to `dlq` after `MAX_RECEIVE_COUNT` receives.

    Both are encrypted (SSE-SQS) and refuse requests without TLS. The
    visibility timeout is six times the consumer's timeout (`dunning.topology`),
    so a message is never visible again while a batch holding it still runs.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name: str) -> None:
        super().__init__(scope, construct_id)
        self.name = name
        self.dlq = sqs.Queue(
            self,
            "Dlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(DLQ_RETENTION_DAYS),
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(QUEUE_RETENTION_DAYS),
            visibility_timeout=Duration.seconds(visibility_timeout_s(name)),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=MAX_RECEIVE_COUNT
            ),
        )
