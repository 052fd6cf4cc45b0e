"""Typed settings per function, validated once at cold start.

Field names equal the environment variable names that infra sets; an infra
test checks that every field of a function's settings is set on it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def from_environment(cls) -> Self:
        """The fields from the environment variables of the same names."""
        return cls.model_validate({k: v for k, v in os.environ.items() if k in cls.model_fields})


class EvaluateSettings(_Settings):
    TABLE_NAME: str
    SHARD_COUNT: Annotated[int, Field(ge=1, le=1000)]
    SHARD_QUEUE_URL: str
    EMAIL_QUEUE_URL: str
    SMS_QUEUE_URL: str
    WEBHOOK_QUEUE_URL: str
    # Stop a shard pass (and enqueue its continuation) when less time is left.
    TIME_MARGIN_MS: Annotated[int, Field(ge=1000)] = 20_000


@lru_cache(maxsize=1)
def evaluate_settings() -> EvaluateSettings:
    return EvaluateSettings.from_environment()


class ActionSettings(_Settings):
    """Settings of the three channel functions (email, sms, webhook)."""

    TABLE_NAME: str
    SHARD_COUNT: Annotated[int, Field(ge=1, le=1000)]
    QUEUE_URL: str  # the channel queue this function consumes
    SENDER_EMAIL: str = "billing@example.com"
    SES_CONFIGURATION_SET: str = ""
    DEFAULT_LOCALE: str = "en"
    # {"provisioning": {"url": "https://...", "secret_id": "arn:..."}, ...}
    WEBHOOK_ENDPOINTS: str = "{}"
    # First retry of a transient failure after up to this many seconds (doubling, jittered).
    RETRY_BASE_S: Annotated[int, Field(ge=1, le=900)] = 30
    # Only the local run and tests set this: plain HTTP to a receiver on 127.0.0.1.
    ALLOW_INSECURE_LOOPBACK: bool = False


@lru_cache(maxsize=1)
def action_settings() -> ActionSettings:
    return ActionSettings.from_environment()


class ApiSettings(_Settings):
    """Settings of the REST API function."""

    TABLE_NAME: str
    IDEMPOTENCY_TABLE_NAME: str  # Idempotency-Key of create-style POSTs
    SHARD_COUNT: Annotated[int, Field(ge=1, le=1000)]
    # Hosts webhook endpoints may be registered on (comma-separated; empty: any public host).
    WEBHOOK_ALLOWED_HOSTS: str = ""


@lru_cache(maxsize=1)
def api_settings() -> ApiSettings:
    return ApiSettings.from_environment()


class ReportSettings(_Settings):
    """Settings of the scheduled reporter that publishes the portfolio's gauges."""

    TABLE_NAME: str
    SHARD_COUNT: Annotated[int, Field(ge=1, le=1000)]


@lru_cache(maxsize=1)
def report_settings() -> ReportSettings:
    return ReportSettings.from_environment()
