"""Stage settings, read once from CDK context and validated.

Every key has a default here; `cdk.json` sets the ones a deployment usually
changes, and `cdk synth -c key=value` overrides any of them for one run.
Values given on the command line arrive as strings: numbers, booleans and
JSON objects are parsed from them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlsplit

from aws_cdk import aws_logs as logs
from constructs import Node
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dunning.model import Channel

# The Powertools service name of every function: dashboards and alarms use it
# as a fixed dimension, so it is one value for the whole stack.
SERVICE_NAME = "dunning"
METRICS_NAMESPACE = "Dunning"

# The retention periods CloudWatch Logs accepts (days).
LOG_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
}

# Integration endpoints the webhook channel reaches (names as the senders'
# default targets use them); their URLs are per deployment.
DEFAULT_WEBHOOK_ENDPOINTS = {
    "provisioning": "https://provisioning.example.com/dunning",
    "contact-centre": "https://contact-centre.example.com/dunning",
    "agency": "https://agency.example.com/dunning",
    "crm": "https://crm.example.com/dunning",
}


class StageConfig(BaseModel):
    """What differs between deployments (dev, test, prod) of the same stack."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    stage: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,19}$")] = "dev"
    # Evaluation schedule (EventBridge Scheduler).
    # At most 12 h: the missing-run alarm looks at two periods, and an alarm sees one day at most.
    schedule_rate_minutes: Annotated[int, Field(ge=1, le=720)] = 15
    # The reporter scans the whole table: about $0.16 per run at 1 million accounts
    # (on-demand reads), so every 6 hours by default rather than hourly.
    report_rate_minutes: Annotated[int, Field(ge=15, le=1440)] = 360
    schedule_time_zone: str = "UTC"
    shard_count: Annotated[int, Field(ge=1, le=1000)] = 16
    # Email: the From address, the SES identity that may send it (a domain or
    # the address itself; default: the address's domain), an optional
    # configuration set.
    sender_email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] = (
        "billing@example.com"
    )
    ses_identity: str = ""
    ses_configuration_set: str = ""
    default_locale: str = "en"
    # Per-channel maximum concurrency of the SQS event source mappings (2..1000).
    send_concurrency: dict[Channel, Annotated[int, Field(ge=2, le=1000)]] = Field(
        default_factory=lambda: {Channel.EMAIL: 10, Channel.SMS: 5, Channel.WEBHOOK: 5}
    )
    # Webhook integration endpoints: name -> HTTPS URL; one secret each.
    webhook_endpoints: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_WEBHOOK_ENDPOINTS)
    )
    # Hosts the API accepts for webhook endpoints (default: the hosts above).
    webhook_allowed_hosts: str = ""
    # Operations.
    alarm_email: str = ""
    send_window_seconds: Annotated[int, Field(ge=60)] = 3600
    log_retention_days: int = 30
    log_level: Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")] = "INFO"
    deletion_protection: bool = True
    # API.
    api_throttle_rate: Annotated[int, Field(ge=1)] = 50
    api_throttle_burst: Annotated[int, Field(ge=1)] = 100
    api_cloudwatch_role: bool = True
    enable_waf: bool = True
    waf_rate_limit: Annotated[int, Field(ge=10)] = 1000
    auth_domain_prefix: str = ""
    # Where `make layer` put the layer (tests point it at a temporary copy).
    layer_dir: str = "build/layer"

    @field_validator("send_concurrency", "webhook_endpoints", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION:
            raise ValueError(f"log_retention_days must be one of {sorted(LOG_RETENTION)}")
        return value

    @field_validator("webhook_endpoints")
    @classmethod
    def _https_endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"webhook endpoint name {name!r}: letters, digits, - and _")
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError(f"webhook endpoint {name!r} must be an https:// URL")
        return value

    @model_validator(mode="after")
    def _every_channel(self) -> StageConfig:
        missing = set(Channel) - set(self.send_concurrency)
        if missing:
            raise ValueError(f"send_concurrency lacks {sorted(c.value for c in missing)}")
        return self

    @property
    def sender_identity(self) -> str:
        """The SES identity the mail function may send as."""
        return self.ses_identity or self.sender_email.rsplit("@", 1)[1]

    @property
    def allowed_webhook_hosts(self) -> str:
        if self.webhook_allowed_hosts:
            return self.webhook_allowed_hosts
        hosts = {urlsplit(url).hostname or "" for url in self.webhook_endpoints.values()}
        return ",".join(sorted(hosts))

    @classmethod
    def from_node(cls, node: Node) -> StageConfig:
        """The settings from CDK context (cdk.json, `-c key=value`), defaults elsewhere."""
        values = {
            name: node.try_get_context(name)
            for name in cls.model_fields
            if node.try_get_context(name) is not None
        }
        return cls.model_validate(values)
