"""The mail channel function: consumes the email queue (partial batch responses).

Thin: the wiring is `dunning.senders.build_channel_consumer`; delivery, the
freshness check, idempotency on the action id and retries live in
`dunning.delivery`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from dunning.delivery import ChannelConsumer
from dunning.model import Channel
from dunning.observability import logger, metrics, tracer
from dunning.senders import build_channel_consumer
from dunning.settings import action_settings


@lru_cache(maxsize=1)
def build_consumer() -> ChannelConsumer:
    return build_channel_consumer(Channel.EMAIL, action_settings())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return build_consumer().handle(event, context)
