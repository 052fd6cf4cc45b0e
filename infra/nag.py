"""cdk-nag acknowledgments, each with the reason a reviewer reads.

cdk-nag 3 reads CDK's own acknowledgments (`Validations.of(x).acknowledge`),
matched on the full finding id (`AwsSolutions-IAM5[Resource::...]`) on the
flagged construct or one of its ancestors. This helper refuses reasons too
short to explain anything, so a suppression cannot be waved through.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

MIN_REASON_LENGTH = 60


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on `scope` (and everything below it)."""
    if not finding.startswith("AwsSolutions-"):
        raise ValueError(f"not an AwsSolutions finding id: {finding!r}")
    if len(reason.strip()) < MIN_REASON_LENGTH:
        raise ValueError(f"the reason for {finding} is too short to justify it")
    Validations.of(scope).acknowledge(Acknowledgment(id=finding, reason=reason))
