"""The REST API: one Powertools resolver, one router per resource, errors mapped
to HTTP in one place (`_handle`), the OpenAPI document generated from the
routes' types.

Routes live under `/v1`. The Lambda handler (`functions/api/handler.py`) puts
the services into the resolver's context for each invocation and resolves.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import Server
from pydantic import ValidationError

from dunning.api.common import ApiError, detail, error_response
from dunning.api.routes import analysis, billing, collectors, config, reading
from dunning.collect import CollectorError
from dunning.ledger import LedgerError
from dunning.observability import logger
from dunning.selection import NoPolicyError
from dunning.store import ConflictError, NotFoundError, RetryableError

PREFIX = "/v1"
TITLE = "Dunning API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Collect overdue invoices with configurable, escalating, customer-friendly policies. "
    "Every route needs a Cognito token: people by their group (admin, collector, billing, "
    "viewer), machine clients by a `dunning/<role>` scope. Money is a decimal string next "
    "to its ISO 4217 currency; times are ISO 8601 with a zone. Errors share one body: "
    "`{code, message, details: [{loc, msg, type}]}`."
)
MAX_BODY_BYTES = 1_000_000


def _validation_details(errors: Any) -> list[Any]:
    out = []
    for err in errors:
        loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
        out.append(detail(loc, str(err.get("msg", "invalid")), str(err.get("type", "invalid"))))
    return out


def _handle(err: Exception) -> Response[Any]:
    """Domain and framework errors to HTTP, in one table."""
    if isinstance(err, ApiError):
        return error_response(err)
    if isinstance(err, RequestValidationError):
        errors = err.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(
                ApiError(
                    400, "bad_request", "the body is not valid JSON", [detail(["body"], "json")]
                )
            )
        return error_response(
            ApiError(422, "validation_error", "the request is invalid", _validation_details(errors))
        )
    if isinstance(err, ValidationError):  # a domain model refused a value
        return error_response(
            ApiError(
                422,
                "validation_error",
                "the request is invalid",
                [
                    detail(["body", *d.loc], d.msg, d.type)
                    for d in _validation_details(err.errors())
                ],
            )
        )
    if isinstance(err, NotFoundError | LookupError) and not isinstance(err, NoPolicyError):
        return error_response(ApiError(404, "not_found", str(err).strip("'\"")))
    if isinstance(err, ConflictError):
        if err.precondition:
            return error_response(ApiError(412, "precondition_failed", str(err)))
        where = [detail(["body", *err.field.split(".")], str(err))] if err.field else []
        return error_response(ApiError(409, "conflict", str(err), where))
    if isinstance(err, CollectorError):
        if err.field:
            return error_response(
                ApiError(422, "validation_error", str(err), [detail(["body", err.field], str(err))])
            )
        return error_response(ApiError(409, "conflict", str(err)))
    if isinstance(err, NoPolicyError):
        return error_response(ApiError(409, "not_covered", str(err)))
    if isinstance(err, LedgerError):
        return error_response(
            ApiError(422, "validation_error", str(err), [detail(["body"], str(err))])
        )
    if isinstance(err, RetryableError):
        return error_response(
            ApiError(503, "unavailable", "try again shortly", headers={"Retry-After": "2"})
        )
    logger.exception("unhandled error")
    return error_response(ApiError(500, "internal_error", "something went wrong on our side"))


def build_app() -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)
    for module in (billing, collectors, config, reading, analysis):
        app.include_router(module.router, prefix=PREFIX)

    app.exception_handler(Exception)(_handle)

    @app.not_found
    def not_found(_: Exception) -> Response[Any]:
        return error_response(ApiError(404, "not_found", "no such route"))

    def limit_body(app_: APIGatewayRestResolver, next_middleware: Any) -> Response[Any]:
        body = app_.current_event.body or ""
        if len(body.encode()) > MAX_BODY_BYTES:
            return error_response(
                ApiError(413, "payload_too_large", f"bodies are at most {MAX_BODY_BYTES} bytes")
            )
        return next_middleware(app_)  # type: ignore[no-any-return]

    app.use([limit_body])
    _authorize_before_validation(app)
    app.enable_swagger(path=f"{PREFIX}/docs", title=TITLE, version=VERSION, description=DESCRIPTION)
    return app


def _authorize_before_validation(app: APIGatewayRestResolver) -> None:
    """Run a route's role check before Powertools validates the request.

    Powertools puts request validation first in every route's middleware
    stack, which would answer an unauthorised caller with a 422 describing the
    body it expected. This wraps that middleware so the route's role check
    (the middlewares marked `role_check` by `require`) answers 401/403 first.
    """
    validate = app._request_validation_middleware

    def authorize_then_validate(app_: Any, next_middleware: Any) -> Any:
        route = app_.context.get("_route")
        for check in getattr(route, "middlewares", None) or []:
            if getattr(check, "role_check", False):
                return check(app_, lambda a: validate(a, next_middleware))
        return validate(app_, next_middleware)

    app._request_validation_middleware = authorize_then_validate  # type: ignore[assignment]


@cache
def app() -> APIGatewayRestResolver:
    return build_app()


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (exported to docs/openapi.json by `make openapi`)."""
    schema = app().get_openapi_json_schema(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        servers=[Server(url="/")],
    )
    document: dict[str, Any] = json.loads(schema)
    return document
