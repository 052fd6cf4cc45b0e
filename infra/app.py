"""The CDK app: `cdk synth` runs `python -m infra.app` from the repository root.

Stage settings come from CDK context (`cdk.json`, `-c key=value`; see
`infra.config`). cdk-nag's AwsSolutions pack runs on every synthesis: an
unacknowledged finding fails it.
"""

from __future__ import annotations

import os

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from infra.config import StageConfig
from infra.stacks.dunning import DunningStack


def build(app: App) -> DunningStack:
    """The stack of the stage the app's context describes."""
    config = StageConfig.from_node(app.node)
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = os.environ.get("CDK_DEFAULT_REGION")
    env = Environment(account=account, region=region) if account and region else None
    stack = DunningStack(
        app,
        f"dunning-{config.stage}",
        config=config,
        env=env,
        description=f"Serverless dunning ({config.stage})",
    )
    Tags.of(stack).add("application", "dunning")
    Tags.of(stack).add("stage", config.stage)
    return stack


def main() -> None:
    app = App()
    build(app)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()


if __name__ == "__main__":
    main()
