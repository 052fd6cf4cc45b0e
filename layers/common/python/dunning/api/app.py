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

from dunning.api.common import (
    JSON,
    ApiError,
    detail,
    domain_error,
    error_response,
    field_path,
    pydantic_details,
)
from dunning.api.routes import analysis, billing, collectors, config, reading
from dunning.observability import logger
from dunning.store import RetryableError

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


def _location(app: APIGatewayRestResolver, field: str) -> list[str | int] | None:
    """Where a domain error's field is, for the route being served: a path
    parameter (`["path", "policy_id"]`), else the body when the route reads one
    (`["body", "invoices", 3, "currency"]`), else nowhere (None)."""
    dependant = getattr(app.context.get("_route"), "dependant", None)
    parts = field_path(field)
    if not parts:
        return None
    bodies = getattr(dependant, "body_params", None) or []
    body_fields = {n for b in bodies for n in getattr(b.type_, "model_fields", {})}
    path_names = {p.alias for p in getattr(dependant, "path_params", None) or []}
    if bodies and (parts[0] in body_fields or parts[0] not in path_names):
        return ["body", *parts]
    if parts[0] in path_names:
        return ["path", *parts]
    return None


def _handle(err: Exception, app: APIGatewayRestResolver) -> Response[Any]:
    """Framework errors, then the domain's (`domain_error`, the one table), then 503/500."""
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
            ApiError(422, "validation_error", "the request is invalid", pydantic_details(errors))
        )
    mapped = domain_error(err, ["body"], lambda field: _location(app, field))
    if mapped is not None:
        return error_response(mapped)
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

    app.exception_handler(Exception)(lambda err: _handle(err, app))

    @app.not_found
    def not_found(_: Exception) -> Response[Any]:
        return error_response(ApiError(404, "not_found", "no such route"))

    _authorize_before_validation(app)
    app.enable_swagger(path=f"{PREFIX}/docs", title=TITLE, version=VERSION, description=DESCRIPTION)
    return app


def _refuse_body(app_: Any) -> Response[Any] | None:
    """413 for a body over the limit; 415 for a body that is not JSON on a route
    that reads one (Powertools would parse forms, or fail on other types)."""
    event = app_.current_event
    body = event.body or ""
    if len(body.encode()) > MAX_BODY_BYTES:
        return error_response(
            ApiError(413, "payload_too_large", f"bodies are at most {MAX_BODY_BYTES} bytes")
        )
    route = app_.context.get("_route")
    if not getattr(getattr(route, "dependant", None), "body_params", None):
        return None
    content_type = (event.headers.get("content-type") or "").strip()
    if content_type and not content_type.lower().startswith(JSON):
        return error_response(
            ApiError(
                415,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
                [detail(["header", "Content-Type"], f"not JSON: {content_type[:100]}")],
            )
        )
    return None


def _authorize_before_validation(app: APIGatewayRestResolver) -> None:
    """Run a route's role check, then the body's size and media type, before
    Powertools validates the request.

    Powertools puts request validation first in every route's middleware
    stack, which would answer an unauthorised caller with a 422 describing the
    body it expected. This wraps that middleware so the route's role check
    (the middlewares marked `role_check` by `require`) answers 401/403 first,
    then a body too large (413) or not JSON (415), then validation (422).
    """
    validate = app._request_validation_middleware

    def admit_then_validate(app_: Any, next_middleware: Any) -> Any:
        refused = _refuse_body(app_)
        return refused if refused is not None else validate(app_, next_middleware)

    def authorize_then_validate(app_: Any, next_middleware: Any) -> Any:
        route = app_.context.get("_route")
        for check in getattr(route, "middlewares", None) or []:
            if getattr(check, "role_check", False):
                return check(app_, lambda a: admit_then_validate(a, next_middleware))
        return admit_then_validate(app_, next_middleware)

    app._request_validation_middleware = authorize_then_validate  # type: ignore[assignment]


@cache
def app() -> APIGatewayRestResolver:
    return build_app()


SECURITY_SCHEME = "cognito"
ERROR_REF = "#/components/schemas/ErrorResponse"
# Schemas Powertools adds for its own validation errors; this API answers them with
# `ErrorResponse` (see `_handle`), so the document must not name them.
_POWERTOOLS_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _tidy(document: dict[str, Any]) -> dict[str, Any]:
    """What Powertools generates, corrected where it does not say what the API does.

    - A response declared without a model (204) gets Powertools' return schema
      (`{"title": "Return"}`) as JSON content: it has no body, so no content.
    - Powertools registers its own validation-error schemas even when every 422
      is ours: they are dropped once nothing refers to them.
    - A path parameter that its route's pattern refuses answers 404 (no such
      route): every operation with path parameters declares the 404.
    - A body too large (413) or not JSON (415) is refused before validation
      (`_refuse_body`): every operation with a request body declares both.
    - The Cognito bearer token every route needs is declared as a security scheme.
    """

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {JSON: {"schema": {"$ref": ERROR_REF}}}}

    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            declared = operation["responses"]
            if "{" in path:
                declared.setdefault(
                    "404", error("No such resource (or a path parameter out of its pattern)")
                )
            if "requestBody" in operation:
                declared.setdefault("413", error(f"The body is over {MAX_BODY_BYTES} bytes"))
                declared.setdefault("415", error("The body is not application/json"))
            for status, response in operation.get("responses", {}).items():
                content = response.get("content")
                if status == "204" or content == {JSON: {"schema": {"title": "Return"}}}:
                    response.pop("content", None)
            operation.setdefault("security", [{SECURITY_SCHEME: []}])
    components = document.setdefault("components", {})
    schemas = components.get("schemas", {})
    used = {r.rsplit("/", 1)[1] for r in _refs(document.get("paths", {}))}
    while more := {r.rsplit("/", 1)[1] for n in used if n in schemas for r in _refs(schemas[n])}:
        if more <= used:
            break
        used |= more
    for name in _POWERTOOLS_SCHEMAS:
        if name not in used:
            schemas.pop(name, None)
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A Cognito access token (people: user groups admin, collector, "
            "billing, viewer; machine clients: a `dunning/<role>` scope). Locally "
            "(`dunning serve`): `Bearer local:<role>`.",
        }
    }
    return document


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (exported to docs/openapi.json by `make openapi`)."""
    schema = app().get_openapi_json_schema(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        servers=[Server(url="/")],
    )
    document: dict[str, Any] = json.loads(schema)
    return _tidy(document)
