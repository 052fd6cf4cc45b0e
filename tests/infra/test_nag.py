"""cdk-nag AwsSolutions: no unacknowledged finding, and every acknowledgment earns its place.

The default stage is checked directly (`validate_scope`); the variant stage
went through the plugin path of `cdk synth` in its fixture (a finding would
have made its synthesis raise).
"""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

import infra.nag
from infra.app import build
from tests.infra.conftest import Synth, cdk_context

ACK_KEY = Validations.ACKNOWLEDGED_RULES_METADATA_KEY
VAGUE = ("todo", "fixme", "not needed", "false positive", "n/a", "ok", "suppress")


def _acknowledgments(app: App) -> dict[tuple[str, str], str]:
    """(construct path, finding id) -> reason, from the construct tree's metadata."""
    found = {}
    for construct in app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == ACK_KEY:
                for rule, reason in dict(entry.data).items():
                    found[(construct.node.path, rule.split("::", 1)[1])] = reason
    return found


def _findings(report: Any) -> list[tuple[str, str]]:
    return sorted(
        (v.rule_name, r.construct_path) for v in report.violations for r in v.violating_resources
    )


def test_no_unacknowledged_findings(synth: Synth) -> None:
    report = AwsSolutionsChecks().validate_scope(synth.app)
    assert _findings(report) == []
    assert report.success


def test_the_variant_went_through_the_plugin(variant: Synth) -> None:
    # The fixture's app.synth() ran the AwsSolutions plugin and did not raise.
    assert _acknowledgments(variant.app)


@pytest.mark.parametrize("stage", ["default", "variant"])
def test_every_reason_is_specific(stage: str, synth: Synth, variant: Synth) -> None:
    acks = _acknowledgments(synth.app if stage == "default" else variant.app)
    assert acks
    for (path, rule), reason in acks.items():
        assert rule.startswith("AwsSolutions-"), (path, rule)
        assert len(reason) >= infra.nag.MIN_REASON_LENGTH, (path, rule)
        assert len(set(reason.lower().split())) >= 12, (path, rule)
        assert not any(reason.lower().strip(" .") == v for v in VAGUE), (path, rule)
    # Granular findings are acknowledged by their full id, never by a bare rule.
    assert all("[" in rule for (_, rule) in acks if rule.startswith("AwsSolutions-IAM"))


def test_every_acknowledgment_matches_a_real_finding(
    layer_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the acknowledgments the findings are exactly the acknowledged ones: no
    stale acknowledgment, none broader than the finding it answers."""
    recorded: list[tuple[str, str]] = []

    class Recorder:
        @staticmethod
        def of(scope: Any) -> Any:
            class Acks:
                def acknowledge(self, *acks: Any) -> None:
                    recorded.extend((scope.node.path, a.id) for a in acks)

            return Acks()

    monkeypatch.setattr(infra.nag, "Validations", Recorder)
    app = App(context={**cdk_context(), "layer_dir": str(layer_dir)})
    build(app)
    findings = _findings(AwsSolutionsChecks().validate_scope(app))
    assert findings, "the recorder must have disabled the acknowledgments"
    for rule, path in findings:
        assert any(
            rule == ack_rule and (path == ack_path or path.startswith(ack_path + "/"))
            for ack_path, ack_rule in recorded
        ), f"unacknowledged: {rule} at {path}"
    for ack_path, ack_rule in recorded:
        assert any(
            rule == ack_rule and (path == ack_path or path.startswith(ack_path + "/"))
            for rule, path in findings
        ), f"stale acknowledgment: {ack_rule} at {ack_path}"


def test_acknowledge_refuses_thin_reasons() -> None:
    app = App()
    with pytest.raises(ValueError, match="too short"):
        infra.nag.acknowledge(app, "AwsSolutions-SQS3", "DLQ")
    with pytest.raises(ValueError, match="not an AwsSolutions"):
        infra.nag.acknowledge(app, "SQS3", "x" * 100)
