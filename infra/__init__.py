"""The CDK app: one stack composed of one construct per runtime folder.

`infra.app` is the entry point (`cdk.json` runs `python -m infra.app`);
`infra.stacks` composes, `infra.constructs` builds; `infra.config` reads the
stage settings from CDK context.
"""
