"""The one place that sets what every function shares.

Runtime, architecture, memory and timeout (from `dunning.topology`), JSON
logs into an explicit log group with retention, active tracing, the common
layer, the Powertools environment, and a role of its own. A function's
settings are checked against its settings class here: synthesis fails when a
field without a default has no value, so a function can never start without
its configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from pydantic import BaseModel

from dunning.topology import FunctionSpec
from infra.config import LOG_RETENTION, METRICS_NAMESPACE, SERVICE_NAME, StageConfig
from infra.nag import acknowledge

# The newest Python runtime aws-cdk-lib knows (cdk-nag L1 checks exactly this).
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"

_LOG_LEVELS = {
    "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
    "INFO": lambda_.ApplicationLogLevel.INFO,
    "WARNING": lambda_.ApplicationLogLevel.WARN,
    "ERROR": lambda_.ApplicationLogLevel.ERROR,
}


def _encode(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def settings_environment(settings: type[BaseModel], values: Mapping[str, str]) -> dict[str, str]:
    """Every field of `settings` as an environment variable, defaults written out.

    Unknown names are refused (a typo would otherwise be silently ignored by
    the function), and so are required fields without a value.
    """
    unknown = set(values) - set(settings.model_fields)
    if unknown:
        raise ValueError(f"{settings.__name__} has no fields {sorted(unknown)}")
    env: dict[str, str] = {}
    for name, field in settings.model_fields.items():
        if name in values:
            env[name] = values[name]
        elif field.is_required():
            raise ValueError(f"{settings.__name__}.{name} needs a value")
        else:
            env[name] = _encode(field.get_default(call_default_factory=True))
    return env


class DunningFunction(Construct):
    """A function with its role and its log group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: FunctionSpec,
        settings: Mapping[str, str],
        layer: lambda_.ILayerVersion,
        config: StageConfig,
        description: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec
        removal = RemovalPolicy.RETAIN if config.deletion_protection else RemovalPolicy.DESTROY
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"dunning {spec.name}: {description}",
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=LOG_RETENTION[config.log_retention_days],
            removal_policy=removal,
        )
        self.log_group.grant_write(self.role)
        self.environment = {
            "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": config.log_level,
            **settings_environment(spec.settings, settings),
        }
        self.function = lambda_.Function(
            self,
            "Function",
            description=f"dunning {spec.name}: {description}",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=lambda_.Code.from_asset(
                str(FUNCTIONS_DIR / spec.folder), exclude=["__pycache__", "*.pyc"]
            ),
            handler=spec.handler,
            memory_size=spec.memory_mb,
            timeout=Duration.seconds(spec.timeout_s),
            layers=[layer],
            role=self.role,
            environment=self.environment,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=_LOG_LEVELS[config.log_level],
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "Active X-Ray tracing adds xray:PutTraceSegments and xray:PutTelemetryRecords; "
            "X-Ray has no resource-level permissions for them, so their resource is '*' "
            "(https://docs.aws.amazon.com/xray/latest/devguide/security_iam_id-based-policy-examples.html).",
        )


class FunctionFactory:
    """Makes the stack's functions, all with the same shared defaults."""

    def __init__(self, *, layer: lambda_.ILayerVersion, config: StageConfig) -> None:
        self.layer = layer
        self.config = config
        self.functions: list[DunningFunction] = []

    def create(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: FunctionSpec,
        settings: Mapping[str, str],
        description: str,
    ) -> DunningFunction:
        made = DunningFunction(
            scope,
            construct_id,
            spec=spec,
            settings=settings,
            layer=self.layer,
            config=self.config,
            description=description,
        )
        self.functions.append(made)
        return made
