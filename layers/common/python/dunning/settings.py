"""Typed settings per function, validated once at cold start.

Field names equal the environment variable names that infra sets; an infra
test checks that every field of a function's settings is set on it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


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
    return EvaluateSettings.model_validate(
        {k: v for k, v in os.environ.items() if k in EvaluateSettings.model_fields}
    )


__all__ = ["EvaluateSettings", "evaluate_settings"]
