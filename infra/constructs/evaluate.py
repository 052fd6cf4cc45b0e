"""functions/evaluate: the schedule, the dispatcher, the shard queue, the workers, the reporter.

EventBridge Scheduler fires `dispatch` every `schedule_rate_minutes` with
`{"scheduled_time": <aws.scheduler.scheduled-time>}`: the scheduled instant
is the evaluation time, so a retried or duplicated fire evaluates the same
instant (and the dispatcher's run record stops the duplicate). The
dispatcher enqueues one task per shard; `worker` consumes them one per
invocation, so shards run in parallel. A slower schedule (`report_rate_minutes`,
6 hours by default) fires `report`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from dunning.model import Channel
from dunning.topology import DLQ_RETENTION_DAYS, function
from infra.config import StageConfig
from infra.constructs.data import READ, Data
from infra.constructs.function_factory import DunningFunction, FunctionFactory
from infra.constructs.queues import QueueWithDlq
from infra.nag import acknowledge

# The evaluation instant is the scheduled time, never the invocation's clock.
SCHEDULE_INPUT = {"scheduled_time": "<aws.scheduler.scheduled-time>"}
# A failed invocation is retried for up to this long, then goes to the DLQ; the
# next fire evaluates anyway (everything due stays in the due index).
SCHEDULE_MAX_EVENT_AGE_S = 600
SCHEDULE_RETRIES = 3


class Evaluate(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data: Data,
        factory: FunctionFactory,
        channel_queues: Mapping[Channel, sqs.IQueue],
    ) -> None:
        super().__init__(scope, construct_id)
        self.shards = QueueWithDlq(self, "Shards", name="shards")
        settings = {
            "TABLE_NAME": data.table.table_name,
            "SHARD_COUNT": str(config.shard_count),
            "SHARD_QUEUE_URL": self.shards.queue.queue_url,
            "EMAIL_QUEUE_URL": channel_queues[Channel.EMAIL].queue_url,
            "SMS_QUEUE_URL": channel_queues[Channel.SMS].queue_url,
            "WEBHOOK_QUEUE_URL": channel_queues[Channel.WEBHOOK].queue_url,
        }

        self.dispatch = factory.create(
            self,
            "Dispatch",
            spec=function("dispatch"),
            settings=settings,
            description="enqueues one evaluation task per shard for a scheduled time",
        )
        # The run record (PutItem); the book's change counter (GetItem, UpdateItem).
        data.grant_table(
            self.dispatch.role,
            ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem"],
            write=True,
        )
        self.shards.queue.grant_send_messages(self.dispatch.role)

        self.worker = factory.create(
            self,
            "Worker",
            spec=function("worker"),
            settings=settings,
            description="evaluates the due accounts of one shard and queues their actions",
        )
        data.grant_table(
            self.worker.role,
            [
                "dynamodb:Query",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:ConditionCheckItem",
            ],
            index_actions=["dynamodb:Query"],
            write=True,
        )
        self.shards.queue.grant_send_messages(self.worker.role)  # continuations
        for queue in channel_queues.values():
            queue.grant_send_messages(self.worker.role)
        self.worker.function.add_event_source(
            sources.SqsEventSource(
                self.shards.queue,
                batch_size=1,  # one shard per invocation: shards evaluate in parallel
                report_batch_item_failures=True,
            )
        )

        self.report = factory.create(
            self,
            "Report",
            spec=function("report"),
            settings={
                "TABLE_NAME": data.table.table_name,
                "SHARD_COUNT": str(config.shard_count),
            },
            description="publishes the portfolio's gauges",
        )
        data.grant_table(
            self.report.role,
            [*READ, "dynamodb:Scan"],
            index_actions=["dynamodb:Query", "dynamodb:Scan"],
        )

        # Scheduler: failed invocations are retried, then land in a DLQ.
        self.schedule_dlq = sqs.Queue(
            self,
            "ScheduleDlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(DLQ_RETENTION_DAYS),
        )
        acknowledge(
            self.schedule_dlq,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter queue of the evaluation and report schedules "
            "(their targets' DeadLetterConfig); a dead-letter queue needs no DLQ of its own, and "
            "its depth raises an alarm.",
        )
        # One role for both schedules: invoke exactly these two functions, and
        # write to the schedules' DLQ.
        stack = Stack.of(self)
        self.scheduler_role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description="EventBridge Scheduler: invokes the dispatcher and the reporter",
        )
        self.scheduler_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[self.dispatch.function.function_arn, self.report.function.function_arn],
            )
        )
        self.schedule_dlq.grant_send_messages(self.scheduler_role)
        self.schedule = self._schedule(
            "EvaluationSchedule",
            self.dispatch,
            f"rate({_rate(config.schedule_rate_minutes)})",
            config,
            "fires the dunning evaluation",
        )
        self.report_schedule = self._schedule(
            "ReportSchedule",
            self.report,
            f"rate({_rate(config.report_rate_minutes)})",
            config,
            "fires the portfolio report",
        )

    def _schedule(
        self,
        construct_id: str,
        target: DunningFunction,
        expression: str,
        config: StageConfig,
        description: str,
    ) -> scheduler.CfnSchedule:
        return scheduler.CfnSchedule(
            self,
            construct_id,
            description=f"dunning {config.stage}: {description}",
            schedule_expression=expression,
            schedule_expression_timezone=config.schedule_time_zone,
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            state="ENABLED",
            target=scheduler.CfnSchedule.TargetProperty(
                arn=target.function.function_arn,
                role_arn=self.scheduler_role.role_arn,
                input=json.dumps(SCHEDULE_INPUT),
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_event_age_in_seconds=SCHEDULE_MAX_EVENT_AGE_S,
                    maximum_retry_attempts=SCHEDULE_RETRIES,
                ),
                dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(
                    arn=self.schedule_dlq.queue_arn
                ),
            ),
        )


def _rate(minutes: int) -> str:
    if minutes % 60 == 0:
        hours = minutes // 60
        return f"{hours} hour" if hours == 1 else f"{hours} hours"
    return f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"
