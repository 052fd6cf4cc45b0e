"""The common layer: the shared `dunning` package and its runtime dependencies.

`make layer` builds the directory (`python -m infra.build_layer`) without
Docker: arm64 wheels for the runtime's Python, plus a copy of the package.
Synthesis only packages the directory; tests point `layer_dir` at a copy of
the bare package.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.constructs.function_factory import ARCHITECTURE, RUNTIME

REPO_ROOT = Path(__file__).resolve().parents[2]


class CommonLayer(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, layer_dir: str) -> None:
        super().__init__(scope, construct_id)
        path = Path(layer_dir)
        if not path.is_absolute():
            path = REPO_ROOT / path
        if not (path / "python" / "dunning" / "__init__.py").is_file():
            raise FileNotFoundError(
                f"no layer at {path}: run `make layer` (or set the layer_dir context)"
            )
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            code=lambda_.Code.from_asset(str(path), exclude=["**/__pycache__", "*.pyc"]),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="dunning shared package and its runtime dependencies",
        )
