"""The committed OpenAPI document (`docs/openapi.json`) is the one the API generates.

A route, contract or limit changed without `make openapi` fails here, so API
consumers never read a stale document.
"""

from __future__ import annotations

import json
from pathlib import Path

from dunning.api.export import render

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_openapi_document_is_current() -> None:
    generated = render()
    committed = COMMITTED.read_text(encoding="utf-8")
    if committed != generated:
        paths_now = set(json.loads(generated)["paths"])
        paths_then = set(json.loads(committed)["paths"])
        raise AssertionError(
            "docs/openapi.json is stale: run `make openapi` and commit it "
            f"(paths added: {sorted(paths_now - paths_then)}, "
            f"removed: {sorted(paths_then - paths_now)})"
        )


def test_every_operation_declares_its_errors_and_its_security() -> None:
    document = json.loads(COMMITTED.read_text(encoding="utf-8"))
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("security") == [{"cognito": []}], where
            assert {"401", "403", "422"} <= set(operation["responses"]), where
            if "{" in path:
                assert "404" in operation["responses"], where
            if "requestBody" in operation:
                assert {"413", "415"} <= set(operation["responses"]), where
