"""The functions: shared defaults, handlers, timeouts, memory, and every settings field set."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aws_cdk import aws_lambda as lambda_
from pydantic import BaseModel

from dunning.settings import ActionSettings, ApiSettings, EvaluateSettings, ReportSettings
from dunning.topology import FUNCTIONS, function
from infra.build_layer import runtime_python_version
from infra.config import StageConfig
from infra.constructs.function_factory import settings_environment
from tests.infra.conftest import Synth

# What the issue asks of each function, stated independently of dunning.topology:
# handler, timeout (s), memory (MB), settings class.
EXPECTED: dict[str, tuple[str, int, int, type[BaseModel]]] = {
    "dispatch": ("handler.dispatch", 60, 512, EvaluateSettings),
    "worker": ("handler.worker", 300, 1024, EvaluateSettings),
    "report": ("handler.report", 300, 1024, ReportSettings),
    "mail": ("mail.handler", 60, 512, ActionSettings),
    "sms": ("sms.handler", 60, 512, ActionSettings),
    "webhook": ("webhook.handler", 60, 512, ActionSettings),
    "api": ("handler.handler", 29, 1024, ApiSettings),
}


def newest_python_runtime() -> str:
    """The newest `pythonX.Y` among the `aws_lambda.Runtime` members of aws-cdk-lib."""
    versions: dict[tuple[int, int], str] = {}
    for attribute in dir(lambda_.Runtime):
        runtime = getattr(lambda_.Runtime, attribute)
        if not isinstance(runtime, lambda_.Runtime):
            continue
        found = re.fullmatch(r"python(\d+)\.(\d+)", runtime.name)
        if runtime.family == lambda_.RuntimeFamily.PYTHON and found:
            versions[(int(found[1]), int(found[2]))] = runtime.name
    assert versions, "aws-cdk-lib lists no Python runtime"
    return versions[max(versions)]


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
def test_handler_timeout_memory_and_settings_fields(synth: Synth, name: str) -> None:
    handler, timeout, memory, settings = EXPECTED[name]
    props = _function(synth, name)
    env = props["Environment"]["Variables"]
    assert props["Handler"] == handler
    assert props["Timeout"] == timeout
    # The memory the code sets for this function, deployed as such.
    assert props["MemorySize"] == memory == function(name).memory_mb
    # Every field of the function's settings class is set, defaults included.
    missing = set(settings.model_fields) - set(env)
    assert not missing, f"{name} lacks {sorted(missing)}"
    assert env["POWERTOOLS_SERVICE_NAME"] == "dunning"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Dunning"
    assert env["POWERTOOLS_LOG_LEVEL"] == "INFO"


def test_newest_python_runtime_is_computed_from_the_library() -> None:
    # The helper picks the highest version, not the last name in alphabetical order
    # (python3.9 sorts after python3.14).
    newest = newest_python_runtime()
    assert newest.startswith("python3.")
    assert int(newest.split(".")[1]) >= 14
    assert runtime_python_version() == newest.removeprefix("python")  # the layer's wheels


def test_shared_defaults(synth: Synth) -> None:
    layers = list(synth.resources("AWS::Lambda::LayerVersion"))
    roles = set()
    newest = newest_python_runtime()
    for props in (r["Properties"] for r in synth.resources("AWS::Lambda::Function").values()):
        assert props["Runtime"] == newest
        assert props["Architectures"] == ["arm64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        assert "Ref" in props["LoggingConfig"]["LogGroup"]  # an explicit log group
        assert props["Layers"] == [{"Ref": layers[0]}]
        roles.add(props["Role"]["Fn::GetAtt"][0])
    assert len(roles) == len(FUNCTIONS), "one role per function"


@pytest.mark.parametrize(
    ("stage", "days", "deletion"),
    [("synth", 30, "Retain"), ("variant", 90, "Delete")],  # cdk.json; VARIANT's -c values
)
def test_log_retention_per_stage(
    request: pytest.FixtureRequest, stage: str, days: int, deletion: str
) -> None:
    s: Synth = request.getfixturevalue(stage)
    assert s.stack.config.log_retention_days == days
    groups = s.resources("AWS::Logs::LogGroup")
    # Every function logs into a group of the stack; the API's access logs too.
    functions = s.resources("AWS::Lambda::Function").values()
    used = {f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for f in functions}
    assert len(used) == len(FUNCTIONS)
    assert s.logical_id(s.stack.api.access_logs) in groups
    assert used < set(groups)
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == days
        assert group["DeletionPolicy"] == deletion


def test_layer_is_arm64_for_the_runtime(synth: Synth) -> None:
    (layer,) = synth.resources("AWS::Lambda::LayerVersion").values()
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Properties"]["CompatibleRuntimes"] == [newest_python_runtime()]


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
        dict.fromkeys(("TABLE_NAME", "SHARD_COUNT", "QUEUE_URL"), "1"),
    )
    assert env["ALLOW_INSECURE_LOOPBACK"] == "false"  # defaults written out, as env text
    assert ActionSettings.model_validate(env).ALLOW_INSECURE_LOOPBACK is False
