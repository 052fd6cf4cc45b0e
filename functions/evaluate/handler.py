"""Evaluator Lambdas: the dispatcher (EventBridge Scheduler), the shard worker (SQS)
and the reporter (EventBridge Scheduler: the portfolio's gauges).

Thin: parse the event, call `dunning.evaluation.Evaluator`, shape the response,
publish metrics. The scheduled time in the event is the evaluation instant,
never the wall clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from dunning import aws, clock, reports
from dunning.evaluation import Evaluator, ShardResult, ShardTask
from dunning.model import Channel
from dunning.observability import count, logger, metrics, tracer
from dunning.queues import SqsActionQueue
from dunning.settings import evaluate_settings, report_settings
from dunning.store import DynamoStore, PolicyBook

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@lru_cache(maxsize=1)
def build_evaluator() -> Evaluator:
    """Production wiring, built on first use (no I/O at import)."""
    s = evaluate_settings()
    store = DynamoStore(aws.dynamodb(), s.TABLE_NAME, s.SHARD_COUNT)
    queue = SqsActionQueue(
        aws.sqs(),
        {
            Channel.EMAIL: s.EMAIL_QUEUE_URL,
            Channel.SMS: s.SMS_QUEUE_URL,
            Channel.WEBHOOK: s.WEBHOOK_QUEUE_URL,
        },
        s.SHARD_QUEUE_URL,
    )
    return Evaluator(store, queue, shards=s.SHARD_COUNT, time_margin_ms=s.TIME_MARGIN_MS)


def scheduled_time(event: dict[str, Any]) -> datetime:
    """EventBridge Scheduler passes `<aws.scheduler.scheduled-time>` as `scheduled_time`;
    an EventBridge rule's event carries `time`."""
    raw = event.get("scheduled_time") or event.get("time")
    if not isinstance(raw, str):
        raise ValueError("the event carries no scheduled time")
    instant = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if instant.tzinfo is None:
        raise ValueError(f"scheduled time {raw!r} has no time zone")
    return instant.astimezone(UTC)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def dispatch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    as_of = scheduled_time(event)
    logger.append_keys(as_of=as_of.isoformat())
    sent = build_evaluator().dispatch(as_of)
    metrics.add_metric(name="RunsDispatched", unit=MetricUnit.Count, value=1 if sent else 0)
    return {"as_of": as_of.isoformat(), "shard_tasks": sent}


def _record_handler(record: SQSRecord, context: LambdaContext, book: PolicyBook) -> None:
    task = ShardTask.model_validate_json(record.body)
    logger.append_keys(run_id=task.run_id, shard=task.shard, part=task.part)
    evaluator = build_evaluator()
    result = evaluator.run_shard(task, context.get_remaining_time_in_millis, book, flush=False)
    if result.continuation is not None:
        evaluator.queue.send_tasks([result.continuation])
        metrics.add_metric(name="Continuations", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="CasesEvaluated", unit=MetricUnit.Count, value=result.evaluated)
    metrics.add_metric(name="LevelChanges", unit=MetricUnit.Count, value=result.level_changes)
    metrics.add_metric(
        name="ConflictsRetried", unit=MetricUnit.Count, value=result.conflicts_retried
    )
    metrics.add_metric(name="CasesRecovered", unit=MetricUnit.Count, value=result.recovered)
    metrics.add_metric(name="ApprovalsRequested", unit=MetricUnit.Count, value=result.approvals)
    metrics.add_metric(name="OutboxResent", unit=MetricUnit.Count, value=result.outbox_resent)
    metrics.add_metric(name="DecisionsTooLarge", unit=MetricUnit.Count, value=result.too_large)
    if task.whole:  # a run after a change of the policy book
        metrics.add_metric(name="AccountsReviewed", unit=MetricUnit.Count, value=result.reviewed)
        metrics.add_metric(name="DueTimesMoved", unit=MetricUnit.Count, value=result.moved)
    for channel, queued in result.actions_queued.items():
        count("ActionsQueued", queued, channel=channel)
    logger.info(
        "shard evaluated",
        extra={
            "evaluated": result.evaluated,
            "changed": result.changed,
            "extra_passes": result.extra_passes,
            "actions_queued": dict(result.actions_queued),
            "continuation": result.continuation is not None,
        },
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def worker(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    evaluator = build_evaluator()
    tail = ShardResult()  # what the final flush of the shared batches queues
    book = evaluator.store.load_policy_book()  # once for all the batch's shard tasks
    try:
        return process_partial_response(
            event=event,
            record_handler=lambda record: _record_handler(record, context, book),
            processor=processor,
            context=context,
        )
    finally:
        # The shard tasks of this batch share their last, partial SQS batches.
        # Should this fail, the actions stay in the outbox for the next run.
        evaluator.flush(clock.now(), tail)
        for channel, queued in tail.actions_queued.items():
            count("ActionsQueued", queued, channel=channel)


@lru_cache(maxsize=1)
def build_report_store() -> DynamoStore:
    s = report_settings()
    return DynamoStore(aws.dynamodb(), s.TABLE_NAME, s.SHARD_COUNT)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def report(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Summarize the portfolio at the scheduled time and publish its gauges (EMF)."""
    at = scheduled_time(event)
    logger.append_keys(as_of=at.isoformat())
    summary = reports.report(build_report_store(), at)
    logger.info(
        "portfolio reported",
        extra={"open_cases": summary.open_cases, "outstanding": summary.outstanding},
    )
    return {"at": at.isoformat(), "open_cases": summary.open_cases}
