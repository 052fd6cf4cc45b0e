"""functions/actions: one queue (+ DLQ), one function, one provider grant per channel.

Each channel function consumes its own queue with partial batch responses
and a per-channel maximum concurrency (the provider's sending rate is the
limit, not Lambda). It reads and writes the domain table only (freshness
check, claims on the actions' outbox records, outcomes), and may reach
exactly one provider: SES as the configured identity (mail), SMS through SNS
(sms), the integration endpoints' secrets (webhook).
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from dunning.model import Channel
from dunning.topology import SQS_BATCH_SIZE, function
from infra.config import StageConfig
from infra.constructs.data import Data
from infra.constructs.function_factory import DunningFunction, FunctionFactory
from infra.constructs.queues import QueueWithDlq
from infra.nag import acknowledge

# The functions of `dunning.topology` that deliver each channel.
CHANNEL_FUNCTIONS = {Channel.EMAIL: "mail", Channel.SMS: "sms", Channel.WEBHOOK: "webhook"}
TABLE_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
)


def pascal(name: str) -> str:
    """`contact-centre` -> `ContactCentre` (construct ids, output names)."""
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


class Actions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data: Data,
        factory: FunctionFactory,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.queues: dict[Channel, QueueWithDlq] = {}
        self.functions: dict[Channel, DunningFunction] = {}

        # One signing secret per integration endpoint.
        self.secrets: dict[str, secretsmanager.Secret] = {}
        endpoints: dict[str, dict[str, str]] = {}
        for name, url in sorted(config.webhook_endpoints.items()):
            secret = secretsmanager.Secret(
                self,
                f"{pascal(name)}Secret",
                description=f"dunning {config.stage}: HMAC signing secret of the {name} webhook",
                # 44 letters and digits: valid base64 of a 33-byte key (see docs/deploy.md).
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    secret_string_template='{"previous": ""}',  # noqa: S106 (a shape, no secret)
                    generate_string_key="current",
                    exclude_punctuation=True,
                    include_space=False,
                    password_length=44,
                ),
            )
            acknowledge(
                secret,
                "AwsSolutions-SMG4",
                "A webhook signing secret is shared with the receiving partner, who must accept "
                "a new one before it signs; automatic rotation cannot coordinate that. Rotation "
                "is manual: set {current: new, previous: old}, both sign until the partner "
                "switches (docs/deploy.md).",
            )
            self.secrets[name] = secret
            endpoints[name] = {"url": url, "secret_id": secret.secret_arn}

        for channel, function_name in CHANNEL_FUNCTIONS.items():
            spec = function(function_name)
            if spec.queue != channel.value:
                raise ValueError(f"{function_name} consumes {spec.queue}, not {channel.value}")
            queues = QueueWithDlq(self, f"{pascal(channel.value)}Queue", name=channel.value)
            fn = factory.create(
                self,
                pascal(function_name),
                spec=spec,
                settings={
                    "TABLE_NAME": data.table.table_name,
                    "SHARD_COUNT": str(config.shard_count),
                    "QUEUE_URL": queues.queue.queue_url,
                    "SENDER_EMAIL": config.sender_email,
                    "SES_CONFIGURATION_SET": config.ses_configuration_set,
                    "DEFAULT_LOCALE": config.default_locale,
                    "WEBHOOK_ENDPOINTS": (
                        stack.to_json_string(endpoints) if channel is Channel.WEBHOOK else "{}"
                    ),
                    "ALLOW_INSECURE_LOOPBACK": "false",
                },
                description=f"delivers {channel.value} actions",
            )
            data.grant_table(fn.role, TABLE_ACTIONS, write=True)
            fn.function.add_event_source(
                sources.SqsEventSource(
                    queues.queue,
                    batch_size=SQS_BATCH_SIZE,
                    report_batch_item_failures=True,
                    max_concurrency=config.send_concurrency[channel],
                )
            )
            self.queues[channel] = queues
            self.functions[channel] = fn

        self._grant_ses(config, self.functions[Channel.EMAIL])
        self._grant_sms(self.functions[Channel.SMS])
        for secret in self.secrets.values():
            secret.grant_read(self.functions[Channel.WEBHOOK].role)

    def _grant_ses(self, config: StageConfig, mail: DunningFunction) -> None:
        stack = Stack.of(self)
        resources = [
            stack.format_arn(
                service="ses", resource="identity", resource_name=config.sender_identity
            )
        ]
        if config.ses_configuration_set:
            resources.append(
                stack.format_arn(
                    service="ses",
                    resource="configuration-set",
                    resource_name=config.ses_configuration_set,
                )
            )
        mail.role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["ses:SendEmail", "ses:SendRawEmail"],
                resources=resources,
                conditions={"StringEquals": {"ses:FromAddress": config.sender_email}},
            )
        )

    def _grant_sms(self, sms: DunningFunction) -> None:
        """SMS to phone numbers only, in the stack's region.

        `sns:Publish` to a phone number has no resource ARN, so the allow names
        `*`; the deny takes every topic and platform endpoint back out of it.
        """
        stack = Stack.of(self)
        policy = iam.Policy(
            self,
            "SmsPublishPolicy",
            roles=[sms.role],
            statements=[
                iam.PolicyStatement(
                    sid="PublishSmsToPhoneNumbers",
                    actions=["sns:Publish"],
                    resources=["*"],
                    conditions={"StringEquals": {"aws:RequestedRegion": stack.region}},
                ),
                iam.PolicyStatement(
                    sid="NoTopicsNorEndpoints",
                    effect=iam.Effect.DENY,
                    actions=["sns:Publish"],
                    resources=[f"arn:{stack.partition}:sns:*:*:*"],
                ),
            ],
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "SNS Publish to a phone number (SMS) has no resource ARN, so IAM only accepts '*' "
            "for it. The same policy denies sns:Publish on every SNS ARN (topics, platform "
            "endpoints) and the allow is limited to the stack's region, which leaves exactly "
            "direct SMS sending.",
        )
