"""Write the API's OpenAPI document: `python -m dunning.api.export docs/openapi.json`.

`make openapi` runs it; a test fails when the committed document is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dunning.api.app import openapi_document

DEFAULT_PATH = Path("docs/openapi.json")


def render(document: dict[str, Any] | None = None) -> str:
    """The document as it is committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(document or openapi_document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        sys.stderr.write("usage: python -m dunning.api.export [PATH]\n")
        return 2
    path = Path(args[0]) if args else DEFAULT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
