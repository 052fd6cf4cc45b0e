"""API Gateway, done locally: REST proxy events for the API function.

moto's API Gateway does not invoke Lambda proxies nor run authorizers. This
builds the event a REST API with a Cognito user-pool authorizer passes to the
function (path, query, headers, body, and the authorizer's claims), so the
real handler answers the real way. The role comes from the caller: in tests
from the `role` argument, over HTTP from a local bearer token
`Authorization: Bearer local:<role>[:<user>]` (or the `X-Dunning-Role`
header), which stands in for a Cognito token. Without one, no claims are
passed and every route answers 401, as behind the authorizer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from local.runtime import ACCOUNT, LocalFunction

LOCAL_ROLE_HEADER = "x-dunning-role"


def claims_for(role: str | None, user: str = "local-user") -> dict[str, str] | None:
    if role is None:
        return None
    return {
        "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, user)),
        "cognito:username": user,
        "cognito:groups": role,
        "token_use": "access",
        "scope": "aws.cognito.signin.user.admin",
    }


def proxy_event(
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
    claims: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The event of a REST API `{proxy+}` resource with a Cognito authorizer."""
    hdrs = dict(headers or {})
    context: dict[str, Any] = {
        "resourcePath": "/{proxy+}",
        "httpMethod": method,
        "path": f"/prod{path}",
        "stage": "prod",
        "requestId": str(uuid.uuid4()),
        "accountId": ACCOUNT,
        "identity": {"sourceIp": "127.0.0.1", "userAgent": hdrs.get("User-Agent", "local")},
    }
    if claims is not None:
        context["authorizer"] = {"claims": dict(claims)}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "queryStringParameters": dict(query) if query else None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": False,
    }


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


def _headers(result: Mapping[str, Any]) -> dict[str, str]:
    headers = {k: str(v) for k, v in (result.get("headers") or {}).items()}
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key] = ", ".join(str(v) for v in values)
    return headers


@dataclass
class ApiClient:
    """Calls the API function as API Gateway would, with a caller's role."""

    function: LocalFunction

    def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = None,
        user: str = "local-user",
        json_body: Any = None,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        claims: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        text = json.dumps(json_body) if json_body is not None else body
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        event = proxy_event(
            method,
            path,
            query=query,
            headers=hdrs,
            body=text,
            claims=claims if claims is not None else claims_for(role, user),
        )
        result = self.function.invoke(event)
        return ApiResponse(int(result["statusCode"]), _headers(result), result.get("body") or "")


def wsgi_app(
    function: LocalFunction,
    extra_routes: Callable[[str, str, dict[str, Any]], ApiResponse | None] | None = None,
) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """A WSGI application in front of the API function (for `dunning serve` and
    for schemathesis). `extra_routes` may answer local-only paths first."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO") or "/"
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        response = None
        if extra_routes is not None:
            response = extra_routes(method, path, {"query": query, "body": raw, "headers": headers})
        if response is None:
            role, user = _local_identity(headers)
            event = proxy_event(
                method,
                path,
                query=query or None,
                headers=headers,
                body=raw.decode("utf-8", "replace") if raw else None,
                claims=claims_for(role, user),
            )
            result = function.invoke(event)
            response = ApiResponse(
                int(result["statusCode"]), _headers(result), result.get("body") or ""
            )
        payload = response.text.encode()
        out_headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        out_headers.append(("Content-Length", str(len(payload))))
        start_response(f"{response.status} {_REASONS.get(response.status, 'Status')}", out_headers)
        return [payload]

    return app


def _local_identity(headers: Mapping[str, str]) -> tuple[str | None, str]:
    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization", "")
    if auth.lower().startswith("bearer local:"):
        parts = auth.split(":", 2)
        role = parts[1].strip() or None
        return role, (parts[2].strip() if len(parts) > 2 else "local-user")
    if LOCAL_ROLE_HEADER in lower:
        return lower[LOCAL_ROLE_HEADER].strip() or None, lower.get("x-dunning-user", "local-user")
    return None, "anonymous"


# The reason phrases of the statuses the API answers (HTTP/1.x status lines).
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
