"""docs/deploy.md runs the CDK CLI only through the Makefile, which runs the pinned one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CDK_TARGETS = ("synth", "deploy", "bootstrap", "destroy")


def _code_lines(markdown: str) -> list[str]:
    """The lines of the fenced code blocks."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.splitlines()]


def test_deploy_guide_uses_make_for_every_cdk_command() -> None:
    lines = _code_lines((REPO_ROOT / "docs" / "deploy.md").read_text())
    # No global or unpinned CLI: `cdk ...` and `npx cdk ...` would pick CLI 3 or none.
    commands = [line.split("#", 1)[0] for line in lines]  # comments may name the CLI
    assert not [c for c in commands if re.search(r"(^|\s|npx\s+)cdk\s", c)]
    used = {m[1] for c in commands for m in re.finditer(r"\bmake (\w+)", c)}
    assert set(CDK_TARGETS) <= used


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", CDK_TARGETS)
def test_make_targets_run_the_pinned_cli_with_cdk_args(target: str) -> None:
    # When make prints what the target would run, with options for the CLI
    # (run from `make test`, a child make would inherit its level and flags)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    shown = subprocess.run(
        ["make", "--no-print-directory", "-n", target, "CDK_ARGS=-c stage=probe --verbose"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # Then its last command is the CLI of package.json, the subcommand, and CDK_ARGS as given
    (last,) = shown[-1:]
    assert last.startswith(f"npx --no-install cdk {target} "), last
    assert last.endswith(" -c stage=probe --verbose"), last
