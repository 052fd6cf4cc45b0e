"""Queues, DLQs, event source mappings and the schedules."""

from __future__ import annotations

import json
from typing import Any

from dunning.topology import MAX_RECEIVE_COUNT
from tests.infra.conftest import Synth

FOURTEEN_DAYS = 14 * 24 * 3600


def _ref(value: dict[str, Any]) -> str:
    """The logical id a Ref or a GetAtt points at."""
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


def _enforces_tls(synth: Synth, queue_id: str) -> bool:
    for policy in synth.resources("AWS::SQS::QueuePolicy").values():
        props = policy["Properties"]
        if {"Ref": queue_id} not in props["Queues"]:
            continue
        for statement in props["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Deny" and statement.get("Condition") == {
                "Bool": {"aws:SecureTransport": "false"}
            }:
                return True
    return False


def test_every_queue_has_a_dlq_with_the_stated_settings(synth: Synth) -> None:
    queues = synth.resources("AWS::SQS::Queue")
    schedule_dlq = synth.logical_id(synth.stack.evaluate.schedule_dlq)
    work = {k: q for k, q in queues.items() if "RedrivePolicy" in q["Properties"]}
    assert len(work) == 4  # shards, email, sms, webhook
    dlqs = set()
    for queue_id, queue in work.items():
        redrive = queue["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == MAX_RECEIVE_COUNT
        dlq_id = _ref(redrive["deadLetterTargetArn"])
        dlqs.add(dlq_id)
        assert queues[dlq_id]["Properties"]["MessageRetentionPeriod"] == FOURTEEN_DAYS
        assert _enforces_tls(synth, queue_id)
    assert len(dlqs) == 4, "a DLQ of its own for each queue"
    # The remaining queue is the schedules' DLQ; nothing else.
    assert set(queues) - set(work) - dlqs == {schedule_dlq}
    for queue_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
        assert _enforces_tls(synth, queue_id)
    assert queues[schedule_dlq]["Properties"]["MessageRetentionPeriod"] == FOURTEEN_DAYS


def test_event_source_mappings(synth: Synth, variant: Synth) -> None:
    functions = synth.resources("AWS::Lambda::Function")
    queues = synth.resources("AWS::SQS::Queue")
    mappings = synth.resources("AWS::Lambda::EventSourceMapping")
    assert len(mappings) == 4
    for mapping in mappings.values():
        props = mapping["Properties"]
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        # Visibility at least six times the consumer's timeout.
        timeout = functions[_ref(props["FunctionName"])]["Properties"]["Timeout"]
        visibility = queues[_ref(props["EventSourceArn"])]["Properties"]["VisibilityTimeout"]
        assert visibility >= 6 * timeout

    def concurrency(s: Synth) -> dict[str, int]:
        out = {}
        for channel, fn in s.stack.actions.functions.items():
            (mapping,) = (
                m["Properties"]
                for m in s.resources("AWS::Lambda::EventSourceMapping").values()
                if m["Properties"]["FunctionName"] == {"Ref": s.logical_id(fn.function)}
            )
            out[channel.value] = mapping["ScalingConfig"]["MaximumConcurrency"]
        return out

    assert concurrency(synth) == {"email": 10, "sms": 5, "webhook": 5}
    assert concurrency(variant) == {"email": 20, "sms": 3, "webhook": 7}


def _schedules(s: Synth) -> dict[str, dict[str, Any]]:
    functions = {
        s.logical_id(s.stack.evaluate.dispatch.function): "dispatch",
        s.logical_id(s.stack.evaluate.report.function): "report",
    }
    return {
        functions[_ref(r["Properties"]["Target"]["Arn"])]: r["Properties"]
        for r in s.resources("AWS::Scheduler::Schedule").values()
    }


def test_schedules_rate_time_zone_input_retries_dlq(synth: Synth, variant: Synth) -> None:
    schedules = _schedules(synth)
    assert schedules["dispatch"]["ScheduleExpression"] == "rate(15 minutes)"
    assert schedules["dispatch"]["ScheduleExpressionTimezone"] == "UTC"
    assert schedules["report"]["ScheduleExpression"] == "rate(6 hours)"
    dlq = synth.logical_id(synth.stack.evaluate.schedule_dlq)
    for props in schedules.values():
        target = props["Target"]
        assert json.loads(target["Input"]) == {"scheduled_time": "<aws.scheduler.scheduled-time>"}
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
        assert _ref(target["DeadLetterConfig"]["Arn"]) == dlq
        assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    varied = _schedules(variant)
    assert varied["dispatch"]["ScheduleExpression"] == "rate(10 minutes)"
    assert varied["dispatch"]["ScheduleExpressionTimezone"] == "Europe/Paris"


def test_scheduler_role_invokes_exactly_the_two_functions(synth: Synth) -> None:
    role = synth.logical_id(synth.stack.evaluate.scheduler_role)
    (doc,) = (
        p["Properties"]["PolicyDocument"]
        for p in synth.resources("AWS::IAM::Policy").values()
        if p["Properties"]["Roles"] == [{"Ref": role}]
    )
    (invoke,) = (s for s in doc["Statement"] if s["Action"] == "lambda:InvokeFunction")
    assert sorted(_ref(r) for r in invoke["Resource"]) == sorted(
        [
            synth.logical_id(synth.stack.evaluate.dispatch.function),
            synth.logical_id(synth.stack.evaluate.report.function),
        ]
    )
