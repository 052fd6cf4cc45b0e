"""What every route shares: roles, services, responses, errors, cursors, ETags.

- **Roles** come from the Cognito authorizer's claims: user groups
  (`cognito:groups`) for people, `dunning/<role>` scopes for machine clients.
  `require(...)` is a route middleware that answers 401 without claims and 403
  without one of the route's roles. `admin` may do everything.
- **Services** (store, configuration store, clock, idempotency persistence)
  are passed into the resolver's context per invocation (`app.append_context`),
  so routes never build their own adapters.
- **Errors** have one shape everywhere: `{"code", "message", "details"}` with
  the location of each problem; `domain_error()` maps domain errors in one
  table, for a request (`dunning.api.app`) and for each item of a batch.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer
from pydantic import BaseModel, ValidationError

from dunning.api.contracts import ErrorDetail, ErrorResponse
from dunning.collect import CollectorError
from dunning.evaluation import Decider, NextEvaluation
from dunning.ledger import LedgerError
from dunning.money import CurrencyMismatchError
from dunning.selection import NoPolicyError
from dunning.store import ConflictError, DynamoStore, NotFoundError
from dunning.store.config import ConfigStore

JSON = "application/json"


class Role(StrEnum):
    ADMIN = "admin"
    COLLECTOR = "collector"
    BILLING = "billing"
    VIEWER = "viewer"


ROLE_SCOPE_PREFIX = "dunning/"


@dataclass
class Services:
    store: DynamoStore
    config: ConfigStore
    clock: Callable[[], datetime]
    persistence: BasePersistenceLayer | None = None
    # When an account is next due after an invoice or a payment (the evaluator's
    # answer, from the configuration store's cached policy book).
    next_evaluation: NextEvaluation = field(init=False)

    def __post_init__(self) -> None:
        self.next_evaluation = NextEvaluation(Decider(self.store), self.config.policy_book)


class ApiError(Exception):
    """An error with its HTTP status and body (raised by routes and helpers)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Iterable[ErrorDetail] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = headers or {}


def error_response(err: ApiError) -> Response[Any]:
    body = ErrorResponse(code=err.code, message=err.message, details=err.details)
    return Response(
        status_code=err.status,
        content_type=JSON,
        body=body.model_dump_json(),
        headers=err.headers,
    )


def detail(loc: Iterable[str | int], msg: str, type_: str = "value_error") -> ErrorDetail:
    return ErrorDetail(loc=list(loc), msg=msg, type=type_)


def readable(msg: str) -> str:
    """A pydantic message without its technical prefix ("Value error, ...")."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def field_path(field: str) -> list[str | int]:
    """A dotted field (`invoices.3.amount`) as a location (`["invoices", 3, "amount"]`)."""
    return [int(p) if p.isdigit() else p for p in field.split(".") if p]


def pydantic_details(
    errors: Iterable[Mapping[str, Any]], prefix: Iterable[str | int] = ()
) -> list[ErrorDetail]:
    """Pydantic's errors as ours: the field path under `prefix`, a readable message."""
    head = list(prefix)
    return [
        detail(
            [*head, *(p if isinstance(p, int) else str(p) for p in err.get("loc", ()))],
            readable(str(err.get("msg", "invalid"))),
            str(err.get("type", "invalid")),
        )
        for err in errors
    ]


def domain_error(
    err: Exception,
    body: list[str | int],
    at: Callable[[str], list[str | int] | None],
) -> ApiError | None:
    """A domain error as the API answers it, in one table for every route and
    for each item of a batch; None for what is no client's mistake (the caller
    answers 503 or 500). `body` is where the request's body is (`["body"]`, or
    `["body", "payments", 3]` for an item of a batch); `at` says where a field
    an error names is (None: nowhere)."""

    def located(field: str | None, message: str) -> list[ErrorDetail]:
        where = at(field) if field else None
        return [detail(where, message)] if where else []

    if isinstance(err, ValidationError):  # a domain model refused a value of the body
        return ApiError(
            422, "validation_error", "the request is invalid", pydantic_details(err.errors(), body)
        )
    if isinstance(err, NotFoundError | LookupError) and not isinstance(err, NoPolicyError):
        return ApiError(404, "not_found", str(err).strip("'\""))
    if isinstance(err, ConflictError):
        if err.precondition:
            return ApiError(412, "precondition_failed", str(err))
        return ApiError(409, "conflict", str(err), located(err.field, str(err)))
    if isinstance(err, CollectorError):
        if err.field:
            return ApiError(422, "validation_error", str(err), located(err.field, str(err)))
        return ApiError(409, "conflict", str(err))
    if isinstance(err, NoPolicyError):
        return ApiError(409, "not_covered", str(err))
    if isinstance(err, CurrencyMismatchError):  # a payment in another currency than the account's
        return ApiError(422, "validation_error", str(err), [detail([*body, "currency"], str(err))])
    if isinstance(err, LedgerError):
        return ApiError(422, "validation_error", str(err), [detail(body, str(err))])
    return None


def _error_content(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"model": ErrorResponse}}}


# Declared on every route, so the schema says what each status returns.
COMMON_ERRORS: dict[int, dict[str, Any]] = {
    400: _error_content("Malformed request (JSON, cursor, header)"),
    401: _error_content("No credentials"),
    403: _error_content("The caller's role may not use this route"),
    422: _error_content("The request is well formed but invalid; details say where"),
    503: _error_content("Busy (throttled): try again after Retry-After seconds"),
}
NOT_FOUND = {404: _error_content("The resource does not exist")}
CONFLICT = {409: _error_content("The resource's state refuses the request")}
PRECONDITION = {412: _error_content("If-Match names a stale version")}


def success(status: int, model: type[BaseModel] | None, description: str) -> dict[int, Any]:
    """A success response to declare next to the route's main one (a PUT that
    answers 201 when it creates, 200 when it updates)."""
    if model is None:
        return {status: {"description": description}}
    return {status: {"description": description, "content": {JSON: {"model": model}}}}


def responses(
    status: int, model: type[BaseModel] | None, description: str, *extra: dict[int, Any]
) -> dict[int, Any]:
    out: dict[int, Any] = dict(COMMON_ERRORS)
    for more in extra:
        out.update(more)
    out.update(success(status, model, description))
    return out


def ok(
    model: BaseModel,
    status: int = 200,
    etag: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    all_headers = dict(headers or {})
    if etag is not None:
        all_headers["ETag"] = f'"{etag}"'
    return Response(
        status_code=status, content_type=JSON, body=model.model_dump_json(), headers=all_headers
    )


def no_content() -> Response[Any]:
    """204: no body, so no Content-Type either."""
    return Response(status_code=204, body="")


# -------------------------------------------------------------------- roles


def _claims(router: BaseRouter) -> dict[str, Any]:
    event = router.current_event
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = authorizer.get("claims")
    return claims if isinstance(claims, dict) else {}


def _split(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        return [v for v in re.split(r"[\s,\[\]\"]+", value) if v]
    return []


def roles_of(claims: dict[str, Any]) -> set[Role]:
    names = set(_split(claims.get("cognito:groups")))
    names |= {
        s.removeprefix(ROLE_SCOPE_PREFIX)
        for s in _split(claims.get("scope"))
        if s.startswith(ROLE_SCOPE_PREFIX)
    }
    return {Role(n) for n in names if n in Role._value2member_map_}


def actor_of(router: BaseRouter) -> str:
    """Who is calling, for the audit trail: a user name or a machine client id."""
    claims = _claims(router)
    for key in ("cognito:username", "username", "client_id", "sub"):
        value = claims.get(key)
        if isinstance(value, str) and value:
            roles = sorted(r.value for r in roles_of(claims))
            return f"{roles[0] if roles else 'user'}:{value}"
    return "unknown"


def require(*allowed: Role) -> list[Callable[[Any, NextMiddleware], Response[Any]]]:
    """Route middleware: the caller needs one of `allowed` (admin always passes)."""
    wanted = {*allowed, Role.ADMIN}

    def check(app: Any, next_middleware: NextMiddleware) -> Response[Any]:
        claims = _claims(app)
        if not claims:
            return error_response(ApiError(401, "unauthorized", "no credentials"))
        if not roles_of(claims) & wanted:
            names = ", ".join(sorted(r.value for r in wanted))
            return error_response(
                ApiError(403, "forbidden", f"this route needs one of the roles: {names}")
            )
        return next_middleware(app)

    check.role_check = True  # type: ignore[attr-defined]
    return [check]


ADMIN = require(Role.ADMIN)
COLLECTOR = require(Role.COLLECTOR)
BILLING = require(Role.BILLING)
VIEWER = require(Role.VIEWER, Role.COLLECTOR, Role.BILLING)


def services(router: BaseRouter) -> Services:
    found = router.context.get("services")
    if not isinstance(found, Services):
        raise RuntimeError("the API was invoked without its services")
    return found


# ------------------------------------------------------------ ETag, cursors


def if_match(value: str | None) -> int | None:
    """The version an `If-Match: "<n>"` header names (None when absent)."""
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 12:
        raise ApiError(
            400,
            "bad_request",
            'If-Match must be an ETag this API returned, e.g. "3"',
            [detail(["header", "If-Match"], "not a version ETag")],
        )
    return int(text)


_KEY_ATTRS = {"PK", "SK", "list_pk", "list_sk", "due_pk", "due_at"}


def encode_cursor(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    plain = {k: v["S"] for k, v in key.items()}
    return base64.urlsafe_b64encode(json.dumps(plain, sort_keys=True).encode()).decode()


def decode_cursor(cursor: str | None, pk: str | None = None) -> dict[str, Any] | None:
    """A page cursor back into DynamoDB's start key; anything else is a 400."""
    if cursor is None:
        return None
    bad = ApiError(
        400,
        "bad_request",
        "the cursor is not one this API returned",
        [detail(["query", "cursor"], "invalid cursor")],
    )
    try:
        plain = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"==="))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if (
        not isinstance(plain, dict)
        or not plain
        or not set(plain) <= _KEY_ATTRS
        or not all(isinstance(v, str) and 0 < len(v) < 1100 for v in plain.values())
        or (pk is not None and plain.get("PK") != pk)
    ):
        raise bad
    return {k: {"S": v} for k, v in plain.items()}
