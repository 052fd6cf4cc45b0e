"""Least privilege: no wildcard actions, resources scoped to the stack's own resources.

The documented exceptions, both forced by the services: X-Ray's trace
writes (no resource-level permissions) and SMS publishing (a phone number
has no ARN; the same policy denies every SNS ARN and pins the region).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from dunning.model import Channel
from tests.infra.conftest import Synth, references

XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(synth: Synth) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every statement of every identity policy, with the policy's logical id."""
    for logical_id, resource in synth.json["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs = [props["PolicyDocument"]]
        elif resource["Type"] == "AWS::IAM::Role":
            docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
        else:
            continue
        for doc in docs:
            for statement in doc["Statement"]:
                yield logical_id, statement


def _policy_roles(synth: Synth, policy_id: str) -> list[str]:
    resource = synth.json["Resources"][policy_id]
    if resource["Type"] == "AWS::IAM::Role":
        return [policy_id]
    return [r["Ref"] for r in resource["Properties"].get("Roles", [])]


@pytest.fixture(scope="module", params=["default", "variant"])
def any_synth(request: pytest.FixtureRequest, synth: Synth, variant: Synth) -> Synth:
    return synth if request.param == "default" else variant


def test_no_wildcard_actions(any_synth: Synth) -> None:
    for policy, statement in _statements(any_synth):
        for action in _list(statement["Action"]):
            assert "*" not in action, f"{policy}: {action}"


def test_resources_are_the_stacks_own(any_synth: Synth) -> None:
    resources = any_synth.json["Resources"]
    stack_types = {
        "AWS::DynamoDB::Table",
        "AWS::SQS::Queue",
        "AWS::KMS::Key",
        "AWS::Logs::LogGroup",
        "AWS::SecretsManager::Secret",
        "AWS::Lambda::Function",
    }
    ses_identity = f":identity/{any_synth.stack.config.sender_identity}"
    for policy, statement in _statements(any_synth):
        if statement["Effect"] != "Allow":
            continue
        actions = set(_list(statement["Action"]))
        for resource in _list(statement["Resource"]):
            if resource == "*":
                sms = actions == {"sns:Publish"} and "aws:RequestedRegion" in str(
                    statement.get("Condition")
                )
                assert actions <= XRAY or sms, f"{policy}: {sorted(actions)} on *"
                continue
            refs = {r for r in references(resource) if not r.startswith("AWS::")}  # no pseudo refs
            if refs:
                assert refs <= set(resources), f"{policy}: {resource}"
                kinds = {resources[r]["Type"] for r in refs}
                assert kinds <= stack_types, f"{policy}: {resource}"
                continue
            # ARNs built from the partition, region and account: only SES's identity and set.
            text = str(resource)
            assert actions <= {"ses:SendEmail", "ses:SendRawEmail"}, f"{policy}: {text}"
            assert ses_identity in text or ":configuration-set/" in text


def test_indexes_are_named_one_by_one(synth: Synth) -> None:
    for policy, statement in _statements(synth):
        for resource in _list(statement["Resource"]):
            assert "index/*" not in str(resource), policy


def test_sms_publish_denies_topics_and_endpoints(synth: Synth) -> None:
    publishers = [
        (policy, s) for policy, s in _statements(synth) if "sns:Publish" in _list(s["Action"])
    ]
    allows = [p for p, s in publishers if s["Effect"] == "Allow"]
    denies = [(p, s) for p, s in publishers if s["Effect"] == "Deny"]
    assert len(allows) == 1 and len(denies) == 1
    assert denies[0][0] == allows[0]  # in the same policy
    assert ":sns:*:*:*" in str(denies[0][1]["Resource"])


def _actions_of(synth: Synth, role_construct: Any) -> set[str]:
    role = synth.logical_id(role_construct)
    return {
        action
        for policy, s in _statements(synth)
        if s["Effect"] == "Allow" and role in _policy_roles(synth, policy)
        for action in _list(s["Action"])
    }


def test_each_role_has_only_its_own_capabilities(synth: Synth) -> None:
    stack = synth.stack
    roles = {f.spec.name: _actions_of(synth, f.role) for f in stack.factory.functions}
    # Providers: each in exactly one role.
    assert {n for n, a in roles.items() if "ses:SendEmail" in a} == {"mail"}
    assert {n for n, a in roles.items() if "sns:Publish" in a} == {"sms"}
    assert {n for n, a in roles.items() if "secretsmanager:GetSecretValue" in a} == {"webhook"}
    assert {n for n, a in roles.items() if "sqs:SendMessage" in a} == {"dispatch", "worker"}
    # The dispatcher writes one run record, reads and marks the book's change
    # counter, and sends shard tasks: nothing else.
    assert {a for a in roles["dispatch"] if a.startswith("dynamodb:")} == {
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
    }
    # The reporter only reads.
    assert {a for a in roles["report"] if a.startswith("dynamodb:")} <= {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:Query",
        "dynamodb:Scan",
    }
    assert "kms:Encrypt" not in roles["report"]
    for name in ("mail", "sms", "webhook"):
        assert "sqs:ChangeMessageVisibility" in roles[name]
    for actions in roles.values():
        assert "cloudwatch:PutMetricData" not in actions  # EMF goes through the logs


def test_only_the_api_reaches_the_idempotency_table(synth: Synth) -> None:
    # The channel functions keep exactly-once on the outbox records of the domain
    # table; Powertools' idempotency table serves the API's Idempotency-Key.
    stack = synth.stack
    table = synth.logical_id(stack.data.idempotency_table)
    reaching = {
        f.spec.name
        for f in stack.factory.functions
        for policy, s in _statements(synth)
        if s["Effect"] == "Allow"
        and synth.logical_id(f.role) in _policy_roles(synth, policy)
        and table in json.dumps(s["Resource"])
    }
    assert reaching == {"api"}


def test_ses_send_is_scoped_to_the_identity_and_the_from_address(any_synth: Synth) -> None:
    # Given the stage's sender address and SES identity (and configuration set, if any)
    config = any_synth.stack.config
    senders = [
        (policy, s)
        for policy, s in _statements(any_synth)
        if {"ses:SendEmail", "ses:SendRawEmail"} & set(_list(s["Action"]))
    ]
    # Then exactly one statement grants sending, to the mail function's role only
    assert len(senders) == 1, senders
    ((policy, statement),) = senders
    assert statement["Effect"] == "Allow"
    assert _policy_roles(any_synth, policy) == [
        any_synth.logical_id(any_synth.stack.actions.functions[Channel.EMAIL].role)
    ]
    assert sorted(_list(statement["Action"])) == ["ses:SendEmail", "ses:SendRawEmail"]
    # And only as the configured From address (ses:FromAddress condition)
    assert statement["Condition"] == {"StringEquals": {"ses:FromAddress": config.sender_email}}
    # And only on the configured identity (and configuration set) of this account and region
    resources = [_arn_text(r) for r in _list(statement["Resource"])]
    expected = [f"arn:PARTITION:ses:REGION:ACCOUNT:identity/{config.sender_identity}"]
    if config.ses_configuration_set:
        expected.append(
            f"arn:PARTITION:ses:REGION:ACCOUNT:configuration-set/{config.ses_configuration_set}"
        )
    assert sorted(resources) == sorted(expected)


def _arn_text(value: Any) -> str:
    """An ARN built with Fn::Join from pseudo parameters, as text (AWS::Region -> REGION)."""
    if isinstance(value, str):
        return value
    separator, parts = value["Fn::Join"]
    pseudo = {"AWS::Partition": "PARTITION", "AWS::Region": "REGION", "AWS::AccountId": "ACCOUNT"}
    return str(separator).join(p if isinstance(p, str) else pseudo[p["Ref"]] for p in parts)
