"""The user guide (`docs/api.md`) has a worked curl example of every operation.

Every operation of the committed OpenAPI document (`docs/openapi.json`),
method and path, needs at least one `curl` command in a fenced code block of
the guide; path parameters may be filled with any value. An operation added
to the API without its example fails here, naming it.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.curl_examples import (
    DATA_OPTIONS,
    DOCS,
    GUIDE,
    SEPARATORS,
    code_blocks,
    tokens,
    without_heredocs,
)

OPENAPI = DOCS / "openapi.json"

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation of an OpenAPI document."""
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    ]


def _request(args: list[str]) -> tuple[str, str] | None:
    """The method and URL path of one curl command's arguments."""
    method: str | None = None
    implied = "GET"
    url: str | None = None
    for n, arg in enumerate(args):
        nxt = args[n + 1] if n + 1 < len(args) else ""
        if arg in ("-X", "--request"):
            method = nxt
        elif arg.startswith("--request="):
            method = arg.split("=", 1)[1]
        elif arg in ("-I", "--head"):
            implied = "HEAD"
        elif arg in ("-T", "--upload-file"):
            implied = "PUT"
        elif arg in DATA_OPTIONS or any(arg.startswith(f"{o}=") for o in DATA_OPTIONS):
            implied = "POST" if implied == "GET" else implied
        elif arg.startswith("-") and not arg.startswith("--") and "X" in arg:
            rest = arg[arg.index("X") + 1 :]  # a cluster such as -sX POST or -XPOST
            method = rest or nxt
        elif url is None and re.match(r"^https?://", arg):
            url = arg
    if url is None:
        return None
    return (method or implied).upper(), urlsplit(url).path


def curl_requests(markdown: str) -> list[tuple[str, str]]:
    """(METHOD, path) of every curl command in the fenced code blocks of a guide."""
    found: list[tuple[str, str]] = []
    for block in code_blocks(markdown):
        if "curl" not in block:
            continue
        words = tokens(without_heredocs(block))
        for n, token in enumerate(words):
            if token != "curl":
                continue
            args: list[str] = []
            for arg in words[n + 1 :]:
                if arg in SEPARATORS or arg == "curl":
                    break
                args.append(arg)
            request = _request(args)
            if request is not None:
                found.append(request)
    return found


def _pattern(path: str) -> re.Pattern[str]:
    """A path template as a regular expression: a parameter takes any segment."""
    parts = re.split(r"(\{[^}/]+\})", path)
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{body}/?$")


def missing_examples(
    ops: list[tuple[str, str]], requests: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The operations no request matches (same method, path with any parameters)."""
    return [
        (method, path)
        for method, path in ops
        if not any(m == method and _pattern(path).match(p) for m, p in requests)
    ]


def _load() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    document: dict[str, Any] = json.loads(OPENAPI.read_text(encoding="utf-8"))
    return operations(document), curl_requests(GUIDE.read_text(encoding="utf-8"))


def test_every_operation_has_a_curl_example_in_the_guide() -> None:
    ops, requests = _load()
    missing = missing_examples(ops, requests)
    assert not missing, (
        f"docs/api.md has no curl example of {len(missing)} operation(s) of "
        f"docs/openapi.json: " + ", ".join(f"{m} {p}" for m, p in missing)
    )


def test_every_curl_example_of_the_api_names_an_operation() -> None:
    ops, requests = _load()
    unknown = sorted(
        {
            (m, p)
            for m, p in requests
            if p.startswith("/v1/") and not any(m == om and _pattern(op).match(p) for om, op in ops)
        }
    )
    assert not unknown, "docs/api.md calls routes docs/openapi.json does not have: " + ", ".join(
        f"{m} {p}" for m, p in unknown
    )


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("```bash\ncurl -s http://localhost:8080/v1/cases\n```\n", [("GET", "/v1/cases")]),
        (
            "```bash\ncurl -si -X POST http://localhost:8080/v1/accounts/A-1/payments \\\n"
            "  -H 'Content-Type: application/json' -d '{\"x\": 1}'\n```\n",
            [("POST", "/v1/accounts/A-1/payments")],
        ),
        (
            "```bash\ncurl -s -X PUT 'http://h/v1/calendars/c?x=1' -d @- <<'EOF'\n"
            "curl -X DELETE http://h/v1/not-a-command\nEOF\n```\n",
            [("PUT", "/v1/calendars/c")],
        ),
        (
            "```bash\ncurl -d '{}' http://h/v1/simulations | head\n"
            'x=$(curl -s "http://h/v1/tasks?limit=5")\n```\n',
            [("POST", "/v1/simulations"), ("GET", "/v1/tasks")],
        ),
        (
            "```bash\ncurl -sXDELETE http://h/v1/policies/p/versions/2\n```\n",
            [("DELETE", "/v1/policies/p/versions/2")],
        ),
        ("Inline `curl http://h/v1/cases` is not an example.\n", []),
    ],
)
def test_curl_commands_are_read_from_fenced_blocks(
    snippet: str, expected: list[tuple[str, str]]
) -> None:
    assert curl_requests(snippet) == expected


def test_a_missing_example_is_named() -> None:
    ops = [("GET", "/v1/accounts/{account_id}"), ("PUT", "/v1/accounts/{account_id}")]
    requests = [("GET", "/v1/accounts/ACC-1"), ("GET", "/v1/accounts/ACC-1/timeline")]
    assert missing_examples(ops, requests) == [("PUT", "/v1/accounts/{account_id}")]
