"""Tables from the schema, the API's authorization, the alarms and the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match

from dunning.store.schema import IDEMPOTENCY_TABLE, TABLE
from infra.constructs.api import API_SCOPES
from tests.infra.conftest import Synth, references

ROOT = Path(__file__).resolve().parents[2]


def _table(synth: Synth, construct: Any) -> dict[str, Any]:
    return dict(synth.json["Resources"][synth.logical_id(construct)]["Properties"])


def test_table_is_the_schema(synth: Synth) -> None:
    props = _table(synth, synth.stack.data.table)
    expected = TABLE.create_table_kwargs("unused")
    assert props["KeySchema"] == expected["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(
        expected["AttributeDefinitions"], key=str
    )
    by_name = {i["IndexName"]: i for i in props["GlobalSecondaryIndexes"]}
    for index in expected["GlobalSecondaryIndexes"]:
        assert by_name[index["IndexName"]]["KeySchema"] == index["KeySchema"]
        assert by_name[index["IndexName"]]["Projection"] == index["Projection"]
    assert len(by_name) == 3
    assert props["TimeToLiveSpecification"] == {
        "AttributeName": TABLE.ttl_attribute,
        "Enabled": True,
    }


def test_tables_are_encrypted_recoverable_and_protected(synth: Synth, variant: Synth) -> None:
    key = synth.logical_id(synth.stack.data.key)
    for construct in (synth.stack.data.table, synth.stack.data.idempotency_table):
        props = _table(synth, construct)
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {
            "KMSMasterKeyId": {"Fn::GetAtt": [key, "Arn"]},
            "SSEEnabled": True,
            "SSEType": "KMS",
        }
        assert props["DeletionProtectionEnabled"] is True
    assert synth.json["Resources"][key]["Properties"]["EnableKeyRotation"] is True
    assert _table(variant, variant.stack.data.table)["DeletionProtectionEnabled"] is False


def test_idempotency_table(synth: Synth) -> None:
    props = _table(synth, synth.stack.data.idempotency_table)
    assert props["KeySchema"] == [{"AttributeName": IDEMPOTENCY_TABLE.key, "KeyType": "HASH"}]
    assert props["TimeToLiveSpecification"] == {
        "AttributeName": IDEMPOTENCY_TABLE.ttl_attribute,
        "Enabled": True,
    }


def test_every_method_requires_a_cognito_access_token(synth: Synth) -> None:
    authorizers = synth.resources("AWS::ApiGateway::Authorizer")
    (authorizer_id,) = authorizers
    assert authorizers[authorizer_id]["Properties"]["Type"] == "COGNITO_USER_POOLS"
    methods = synth.resources("AWS::ApiGateway::Method")
    assert methods
    for method in methods.values():
        props = method["Properties"]
        if props["HttpMethod"] == "OPTIONS":  # CORS preflight (none today)
            continue
        assert props["AuthorizationType"] == "COGNITO_USER_POOLS"
        assert props["AuthorizerId"] == {"Ref": authorizer_id}
        assert props["AuthorizationScopes"] == list(API_SCOPES)
        assert "RequestValidatorId" in props
        # API Gateway checks the token header only; bodies are the function's to validate
        # (Powertools OpenAPI validation: see infra/constructs/api.py).
        assert props["RequestParameters"] == {"method.request.header.Authorization": True}
        assert "RequestModels" not in props
    synth.template.has_resource_properties(
        "AWS::ApiGateway::RequestValidator",
        {"ValidateRequestBody": True, "ValidateRequestParameters": True},
    )


def test_stage_throttling_logs_tracing(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "TracingEnabled": True,
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
            "MethodSettings": [
                Match.object_like(
                    {
                        "ThrottlingRateLimit": 50,
                        "ThrottlingBurstLimit": 100,
                        "LoggingLevel": "ERROR",
                        "DataTraceEnabled": False,
                    }
                )
            ],
        },
    )


def test_user_pool_groups_scopes_and_clients(synth: Synth) -> None:
    groups = {
        g["Properties"]["GroupName"]
        for g in synth.resources("AWS::Cognito::UserPoolGroup").values()
    }
    assert groups == {"admin", "collector", "billing", "viewer"}
    synth.template.has_resource_properties(
        "AWS::Cognito::UserPoolResourceServer",
        {
            "Identifier": "dunning",
            "Scopes": Match.array_with(
                [
                    Match.object_like({"ScopeName": s})
                    for s in ("admin", "collector", "billing", "viewer")
                ]
            ),
        },
    )
    clients = {
        c["Properties"]["ClientName"]: c["Properties"]
        for c in synth.resources("AWS::Cognito::UserPoolClient").values()
    }
    billing = clients["billing-system"]
    assert billing["GenerateSecret"] is True
    assert billing["AllowedOAuthFlows"] == ["client_credentials"]
    assert billing["AllowedOAuthFlowsUserPoolClient"] is True
    assert len(billing["AllowedOAuthScopes"]) == 1
    assert "/billing" in json.dumps(billing["AllowedOAuthScopes"])
    # People cannot ask for dunning/* scopes: their role comes from their groups.
    console = clients["console"]
    assert "AllowedOAuthScopes" not in console
    assert console["AllowedOAuthFlowsUserPoolClient"] is False
    synth.template.resource_count_is("AWS::Cognito::UserPoolDomain", 1)
    synth.template.has_resource_properties(
        "AWS::Cognito::UserPool",
        {"MfaConfiguration": "ON", "UserPoolTier": "PLUS"},
    )


def test_waf_is_on_by_default_and_optional(synth: Synth, variant: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::WAFv2::WebACL",
        {
            "Scope": "REGIONAL",
            "Rules": Match.array_with(
                [Match.object_like({"Statement": {"RateBasedStatement": Match.any_value()}})]
            ),
        },
    )
    synth.template.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)
    variant.template.resource_count_is("AWS::WAFv2::WebACL", 0)


def _alarms(synth: Synth) -> list[dict[str, Any]]:
    return [a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()]


def test_alarms(synth: Synth) -> None:
    alarms = _alarms(synth)
    topic = synth.logical_id(synth.stack.monitoring.topic)
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": topic}]
    dlq_alarms = [a for a in alarms if a["MetricName"] == "ApproximateNumberOfMessagesVisible"]
    assert len(dlq_alarms) == 5  # four queue DLQs and the schedules' DLQ
    assert all(a["Threshold"] == 0 for a in dlq_alarms)
    age = [a for a in alarms if a["MetricName"] == "ApproximateAgeOfOldestMessage"]
    assert len(age) == 4
    assert all(a["Threshold"] == 3600 for a in age)
    errors = [a for a in alarms if a["MetricName"] == "Errors"]
    assert len(errors) == len(synth.stack.factory.functions)
    (missing,) = (a for a in alarms if a["MetricName"] == "RunsDispatched")
    assert missing["Namespace"] == "Dunning"
    assert missing["ComparisonOperator"] == "LessThanThreshold"
    assert missing["Threshold"] == 1
    assert missing["TreatMissingData"] == "breaching"
    assert missing["Period"] == 2 * 15 * 60
    assert missing["Statistic"] == "Sum"
    (too_large,) = (a for a in alarms if a["MetricName"] == "DecisionsTooLarge")
    assert too_large["Threshold"] == 0
    assert too_large["ComparisonOperator"] == "GreaterThanThreshold"


def test_alarm_topic_is_encrypted_and_subscribed_when_asked(synth: Synth, variant: Synth) -> None:
    synth.template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    synth.template.resource_count_is("AWS::SNS::Subscription", 0)
    variant.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "ops@example.org"}
    )
    ages = [a for a in _alarms(variant) if a["MetricName"] == "ApproximateAgeOfOldestMessage"]
    assert all(a["Threshold"] == 1800 for a in ages)


def _dashboard(synth: Synth) -> str:
    """The dashboard body as text (references to resources replaced by a placeholder)."""
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else "REF" for p in parts)
    return json.dumps(json.loads(text))  # valid JSON, uniformly escaped


def _published_metrics() -> set[str]:
    """Every metric name the functions and the shared package publish (EMF):
    `metrics.add_metric(name=...)`, `count(...)` and the reporter's `_gauge(...)`."""
    pattern = re.compile(r'(?:add_metric\(\s*name=|\bcount\(\s*|_gauge\(\s*)"([A-Z][A-Za-z]+)"')
    names: set[str] = set()
    for folder in (ROOT / "functions", ROOT / "layers" / "common" / "python" / "dunning"):
        for source in folder.rglob("*.py"):
            names.update(pattern.findall(source.read_text()))
    return names


def test_dashboard_shows_every_emf_metric(synth: Synth) -> None:
    body = json.loads(_dashboard(synth))
    text = json.dumps(body)
    published = _published_metrics()
    assert {"CasesEvaluated", "ActionOutcomes", "OpenCases", "AccountsReviewed"} <= published
    assert len(published) >= 19, sorted(published)
    for metric in sorted(published):
        assert metric in text, metric
    expressions = [
        m[0]["expression"]
        for w in body["widgets"]
        for m in w.get("properties", {}).get("metrics", [])
        if isinstance(m[0], dict) and "expression" in m[0]
    ]
    for outcome in ("delivered", "failed", "skipped", "retried"):
        assert any(f'outcome="{outcome}"' in e and "SEARCH(" in e for e in expressions), outcome
    assert all('service="dunning"' in e for e in expressions)


def _dead_letter_queues(synth: Synth) -> set[str]:
    """Every SQS queue the template names as a dead-letter target, whoever sends to it:
    a queue's redrive policy, a schedule's or a function's DeadLetterConfig, an
    event source mapping's or an invoke config's on-failure destination."""
    queues = synth.resources("AWS::SQS::Queue")
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if "deadletter" in key.lower() or key == "OnFailure":
                    found.update(r for r in references(inner) if r in queues)
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(synth.json["Resources"])
    return found


def _dashboard_widgets(synth: Synth) -> list[dict[str, Any]]:
    """The dashboard's widgets, each reference to a resource written as `@<logical id>`."""
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    text = "".join(
        p
        if isinstance(p, str)
        else f"@{p['Ref']}"
        if "Ref" in p
        else f"@{p['Fn::GetAtt'][0]}"
        if "Fn::GetAtt" in p
        else "@"
        for p in parts
    )
    return list(json.loads(text)["widgets"])


@pytest.mark.parametrize("stage", ["synth", "variant"])
def test_every_dlq_has_an_alarm_and_a_place_on_the_dashboard(
    request: pytest.FixtureRequest, stage: str
) -> None:
    s: Synth = request.getfixturevalue(stage)
    dlqs = _dead_letter_queues(s)
    queues = s.resources("AWS::SQS::Queue")
    consumed = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
        for m in s.resources("AWS::Lambda::EventSourceMapping").values()
    }
    # Every queue is either consumed by a function or a dead-letter queue (so none is missed),
    # and the schedules' DLQ is one of them.
    assert set(queues) == consumed | dlqs
    assert not consumed & dlqs
    assert s.logical_id(s.stack.evaluate.schedule_dlq) in dlqs
    assert len(dlqs) == 5

    # Given the alarms on a DLQ's visible messages
    alarmed: dict[str, str] = {}
    for alarm_id, alarm in s.resources("AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        if (props.get("Namespace"), props.get("MetricName")) != (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
        ):
            continue
        (dimension,) = props["Dimensions"]
        assert dimension["Name"] == "QueueName"
        alarmed[dimension["Value"]["Fn::GetAtt"][0]] = alarm_id
        # Then one message is enough, and the alarm pages
        assert props["Threshold"] == 0
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["AlarmActions"] == [{"Ref": s.logical_id(s.stack.monitoring.topic)}]
    assert set(alarmed) == dlqs

    widgets = _dashboard_widgets(s)
    # And the DLQ graph draws every DLQ's depth, and nothing else
    (graph,) = (w for w in widgets if w["properties"].get("title") == "Dead-letter queues")
    drawn = set()
    for metric in graph["properties"]["metrics"]:
        assert metric[:3] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName"]
        drawn.add(metric[3].removeprefix("@"))
    assert drawn == dlqs
    # And the alarm status widget shows each DLQ alarm
    (status,) = (w for w in widgets if w["type"] == "alarm")
    shown = {a.removeprefix("@") for a in status["properties"]["alarms"]}
    assert set(alarmed.values()) <= shown
