"""The REST API function (API Gateway proxy integration, Cognito authorizer).

Thin: build the services once per execution environment, put them into the
resolver's context, resolve. Routes, contracts and error mapping live in
`dunning.api`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.typing import LambdaContext

from dunning import aws, clock
from dunning.api.app import app
from dunning.api.common import Services
from dunning.observability import logger, metrics, tracer
from dunning.settings import api_settings
from dunning.store import DynamoStore
from dunning.store.config import ConfigStore
from dunning.store.schema import IDEMPOTENCY_TABLE


@lru_cache(maxsize=1)
def build_services() -> Services:
    s = api_settings()
    store = DynamoStore(aws.dynamodb(), s.TABLE_NAME, s.SHARD_COUNT)
    persistence = DynamoDBPersistenceLayer(
        table_name=s.IDEMPOTENCY_TABLE_NAME,
        key_attr=IDEMPOTENCY_TABLE.key,
        expiry_attr=IDEMPOTENCY_TABLE.ttl_attribute,
        boto3_client=aws.dynamodb(),
    )
    return Services(store, ConfigStore(store), clock.now, persistence)


@logger.inject_lambda_context(clear_state=True, correlation_id_path="requestContext.requestId")
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    resolver = app()
    resolver.append_context(services=build_services(), lambda_context=context)  # type: ignore[no-untyped-call]
    return resolver.resolve(event, context)
