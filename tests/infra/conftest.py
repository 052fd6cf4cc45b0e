"""The CDK app, synthesized once per test session.

Synthesis packages the layer directory but does not need its wheels: the
layer is pointed at a temporary copy of the bare `dunning` package, so the
tests download nothing. Two stages are synthesized: `default` (the context of
cdk.json) and `variant` (every optional branch flipped), the latter through
the real cdk-nag plugin path that `cdk synth` uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Validations
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from infra.app import build
from infra.build_layer import copy_package
from infra.stacks.dunning import DunningStack

REPO_ROOT = Path(__file__).resolve().parents[2]

VARIANT = {
    "stage": "variant",
    "schedule_rate_minutes": "10",  # as `-c key=value` gives it: a string
    "schedule_time_zone": "Europe/Paris",
    "shard_count": "32",
    "sender_email": "dunning@mail.example.org",
    "ses_configuration_set": "dunning-events",
    "alarm_email": "ops@example.org",
    "send_concurrency": '{"email": 20, "sms": 3, "webhook": 7}',
    "webhook_endpoints": '{"crm": "https://crm.example.org/hooks"}',
    "send_window_seconds": "1800",
    "log_retention_days": "90",
    "deletion_protection": "false",
    "enable_waf": "false",
    "api_cloudwatch_role": "false",
}


@dataclass(frozen=True)
class Synth:
    app: App
    stack: DunningStack
    template: Template
    json: dict[str, Any]  # the template, converted once (each to_json() is a jsii round trip)

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.json["Resources"].items() if r["Type"] == kind}

    def logical_id(self, construct: Any) -> str:
        return self.stack.get_logical_id(construct.node.default_child)


def cdk_context() -> dict[str, Any]:
    """The context `cdk synth` would read from cdk.json."""
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


@pytest.fixture(scope="session")
def layer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("layer")
    copy_package(target)
    return target


@pytest.fixture(scope="session")
def synth(layer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    app = App(
        context={**cdk_context(), "layer_dir": str(layer_dir)},
        outdir=str(tmp_path_factory.mktemp("cdk.out")),
    )
    stack = build(app)
    template = Template.from_stack(stack)
    return Synth(app, stack, template, dict(template.to_json()))


@pytest.fixture(scope="session")
def variant(layer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Every optional branch flipped, synthesized with the cdk-nag plugin on
    (a finding makes `app.synth()` raise, exactly as in `cdk synth`)."""
    app = App(
        context={**cdk_context(), **VARIANT, "layer_dir": str(layer_dir)},
        outdir=str(tmp_path_factory.mktemp("cdk.out.variant")),
    )
    stack = build(app)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    assembly = app.synth()
    template = assembly.get_stack_by_name(stack.stack_name).template
    return Synth(app, stack, Template.from_json(template), dict(template))


def references(value: Any) -> set[str]:
    """The logical ids a resource expression refers to (Ref, GetAtt, inside Joins)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            return {value["Fn::GetAtt"][0]}
        return set().union(*(references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(references(v) for v in value)) if value else set()
    return set()
