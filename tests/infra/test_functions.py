"""The functions: shared defaults, handlers, timeouts, and every settings field set."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from dunning.settings import ActionSettings, ApiSettings, EvaluateSettings, ReportSettings
from dunning.topology import FUNCTIONS
from infra.config import StageConfig
from infra.constructs.function_factory import settings_environment
from tests.infra.conftest import Synth

# What the issue asks of each function, stated independently of dunning.topology.
EXPECTED: dict[str, tuple[str, int, type[BaseModel]]] = {
    "dispatch": ("handler.dispatch", 60, EvaluateSettings),
    "worker": ("handler.worker", 300, EvaluateSettings),
    "report": ("handler.report", 300, ReportSettings),
    "mail": ("mail.handler", 60, ActionSettings),
    "sms": ("sms.handler", 60, ActionSettings),
    "webhook": ("webhook.handler", 60, ActionSettings),
    "api": ("handler.handler", 29, ApiSettings),
}


def _function(synth: Synth, name: str) -> dict[str, Any]:
    made = next(f for f in synth.stack.factory.functions if f.spec.name == name)
    return dict(synth.json["Resources"][synth.logical_id(made.function)]["Properties"])


def test_every_function_of_the_topology_is_deployed_once(synth: Synth) -> None:
    # Given the deployment's shape / When synthesized / Then one function per spec
    assert sorted(f.spec.name for f in synth.stack.factory.functions) == sorted(
        f.name for f in FUNCTIONS
    )
    assert len(synth.resources("AWS::Lambda::Function")) == len(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_handler_timeout_and_settings_fields(synth: Synth, name: str) -> None:
    handler, timeout, settings = EXPECTED[name]
    props = _function(synth, name)
    env = props["Environment"]["Variables"]
    assert props["Handler"] == handler
    assert props["Timeout"] == timeout
    # Every field of the function's settings class is set, defaults included.
    missing = set(settings.model_fields) - set(env)
    assert not missing, f"{name} lacks {sorted(missing)}"
    assert env["POWERTOOLS_SERVICE_NAME"] == "dunning"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Dunning"
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"


def test_shared_defaults(synth: Synth) -> None:
    layers = list(synth.resources("AWS::Lambda::LayerVersion"))
    roles = set()
    for props in (r["Properties"] for r in synth.resources("AWS::Lambda::Function").values()):
        assert props["Runtime"] == "python3.14"
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        assert "Ref" in props["LoggingConfig"]["LogGroup"]  # an explicit log group
        assert props["Layers"] == [{"Ref": layers[0]}]
        roles.add(props["Role"]["Fn::GetAtt"][0])
    assert len(roles) == len(FUNCTIONS), "one role per function"
    for group in synth.resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 30


def test_layer_is_arm64_for_the_runtime(synth: Synth) -> None:
    (layer,) = synth.resources("AWS::Lambda::LayerVersion").values()
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.14"]


def test_settings_values_from_context(synth: Synth, variant: Synth) -> None:
    mail = _function(synth, "mail")["Environment"]["Variables"]
    assert mail["SENDER_EMAIL"] == "billing@example.com"
    assert mail["ALLOW_INSECURE_LOOPBACK"] == "false"
    assert mail["WEBHOOK_ENDPOINTS"] == "{}"
    assert mail["SHARD_COUNT"] == "16"
    varied = _function(variant, "mail")["Environment"]["Variables"]
    assert varied["SENDER_EMAIL"] == "dunning@mail.example.org"
    assert varied["SES_CONFIGURATION_SET"] == "dunning-events"
    assert varied["SHARD_COUNT"] == "32"
    api = _function(synth, "api")["Environment"]["Variables"]
    # The API accepts webhook endpoints on the configured integration hosts only.
    assert api["WEBHOOK_ALLOWED_HOSTS"].split(",") == sorted(
        u.split("/")[2] for u in StageConfig().webhook_endpoints.values()
    )


def test_webhook_endpoints_name_their_secrets(synth: Synth) -> None:
    env = _function(synth, "webhook")["Environment"]["Variables"]
    rendered = str(env["WEBHOOK_ENDPOINTS"])
    for name, secret in synth.stack.actions.secrets.items():
        assert f'"{name}"' in rendered
        assert synth.logical_id(secret) in rendered  # its ARN (Ref of the secret)
    assert set(synth.stack.actions.secrets) == {"provisioning", "contact-centre", "agency", "crm"}


def test_settings_environment_refuses_gaps_and_typos() -> None:
    with pytest.raises(ValueError, match="needs a value"):
        settings_environment(ReportSettings, {"TABLE_NAME": "t"})
    with pytest.raises(ValueError, match="no fields"):
        settings_environment(ReportSettings, {"TABLE_NAME": "t", "SHARD_CONT": "1"})
    env = settings_environment(
        ActionSettings,
        dict.fromkeys(("TABLE_NAME", "IDEMPOTENCY_TABLE_NAME", "SHARD_COUNT", "QUEUE_URL"), "1"),
    )
    assert env["ALLOW_INSECURE_LOOPBACK"] == "false"  # defaults written out, as env text
    assert ActionSettings.model_validate(env).ALLOW_INSECURE_LOOPBACK is False
