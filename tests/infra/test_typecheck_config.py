"""mypy follows only the aws_cdk modules the stack uses (pyproject.toml says
why). A module the stack starts to use must join that list, or mypy would take
it as `Any` and check nothing about it."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cdk_modules_imported() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "infra").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "aws_cdk":
                    found.add("aws_cdk")
                    found.update(
                        f"aws_cdk.{a.name}" for a in node.names if a.name.startswith("aws_")
                    )
                elif node.module.startswith("aws_cdk."):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "aws_cdk")
    return found


def cdk_modules_followed() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    followed: set[str] = set()
    for override in config["overrides"]:
        if override.get("follow_imports") == "normal":
            followed.update(override["module"])
    return followed


def test_every_cdk_module_the_stack_imports_is_type_checked() -> None:
    imported = cdk_modules_imported()
    assert {"aws_cdk", "aws_cdk.aws_lambda", "aws_cdk.aws_dynamodb"} <= imported
    assert imported - cdk_modules_followed() == set()
