"""cfn-lint on the synthesized templates: no errors, no warnings but one known CDK pattern."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cfnlint.api import lint
from cfnlint.config import ConfigMixIn, ManualArgs
from cfnlint.rules import RulesCollection
from cfnlint.runner.cli import Runner

from tests.infra.conftest import Synth

# W3005: CDK adds DependsOn on a function's role next to the GetAtt of it (to
# order the role's policy before the function); redundant, harmless.
IGNORED = ["W3005"]
REGIONS = ["us-east-1", "eu-west-1", "eu-central-1"]


@pytest.fixture(scope="module")
def rules() -> RulesCollection:
    """Loaded once for both templates (loading costs about as much as linting)."""
    return Runner(ConfigMixIn(regions=REGIONS, ignore_checks=IGNORED)).rules


@pytest.mark.parametrize("stage", ["default", "variant"])
def test_cfn_lint(
    stage: str, synth: Synth, variant: Synth, rules: RulesCollection, tmp_path: Path
) -> None:
    chosen = synth if stage == "default" else variant
    path = tmp_path / "template.json"
    path.write_text(json.dumps(chosen.json, indent=1))
    matches = lint(
        path.read_text(),
        rules=rules,
        config=ManualArgs(regions=REGIONS, ignore_checks=IGNORED),
    )
    problems = [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches]
    assert problems == []


def test_the_linter_is_live(rules: RulesCollection) -> None:
    # Given a template with an unknown property / Then the same rules report it.
    broken = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"Nope": 1}}}}
    matches = lint(json.dumps(broken), rules=rules, config=ManualArgs(regions=REGIONS))
    assert any(m.rule.id.startswith("E") for m in matches)
