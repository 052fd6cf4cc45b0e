"""`Idempotency-Key` for create-style POSTs (Powertools idempotency).

A client that retries a POST with the same key gets the first response back
and nothing is done twice; the same key with another body is a 422. Keys are
scoped by route and account, so two clients cannot collide across resources.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from pydantic import BaseModel

from dunning.api.common import ApiError, Services, detail

KEY_TTL_S = 24 * 3600


def with_idempotency_key(
    services: Services,
    key: str | None,
    scope: str,
    account_id: str,
    body: BaseModel,
    create: Callable[[], dict[str, Any]],
    lambda_context: Any = None,
) -> dict[str, Any]:
    """Run `create` once per (scope, account, key); later calls return its result."""
    if key is None or services.persistence is None:
        return create()
    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="body",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=KEY_TTL_S,
    )
    if lambda_context is not None:
        config.register_lambda_context(lambda_context)

    def run(request: dict[str, Any]) -> dict[str, Any]:
        return create()

    once = idempotent_function(
        run, data_keyword_argument="request", persistence_store=services.persistence, config=config
    )
    request = {"key": f"{scope}:{account_id}:{key}", "body": body.model_dump(mode="json")}
    try:
        result: dict[str, Any] = once(request=request)
    except IdempotencyValidationError:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request body",
            [detail(["header", "Idempotency-Key"], "reused with a different body")],
        ) from None
    except IdempotencyAlreadyInProgressError:
        raise ApiError(
            409, "in_progress", "a request with this Idempotency-Key is still running"
        ) from None
    return result
