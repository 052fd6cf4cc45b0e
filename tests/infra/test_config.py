"""Stage settings from context: strings from `-c key=value`, defaults, refusals."""

from __future__ import annotations

import pytest
from aws_cdk import App
from pydantic import ValidationError

from dunning.model import Channel
from infra.config import StageConfig
from tests.infra.conftest import VARIANT, cdk_context


def test_cdk_json_context_is_valid_and_has_no_unknown_keys() -> None:
    context = cdk_context()
    StageConfig.from_node(App(context=context).node)
    # Every key is a stage setting or a CDK feature flag: a typo would be ignored silently.
    unknown = {k for k in context if not k.startswith("@aws-cdk")} - set(StageConfig.model_fields)
    assert not unknown


def test_command_line_strings_are_parsed() -> None:
    config = StageConfig.from_node(App(context=VARIANT).node)
    assert config.schedule_rate_minutes == 10
    assert config.deletion_protection is False
    assert config.send_concurrency == {Channel.EMAIL: 20, Channel.SMS: 3, Channel.WEBHOOK: 7}
    assert config.webhook_endpoints == {"crm": "https://crm.example.org/hooks"}
    assert config.sender_identity == "mail.example.org"


def test_explicit_ses_identity_wins() -> None:
    config = StageConfig(sender_email="a@b.example.com", ses_identity="a@b.example.com")
    assert config.sender_identity == "a@b.example.com"


@pytest.mark.parametrize(
    "values",
    [
        {"webhook_endpoints": {"crm": "http://crm.example.com"}},
        {"send_concurrency": {"email": 10, "sms": 5}},
        {"send_concurrency": {"email": 1, "sms": 5, "webhook": 5}},
        {"log_retention_days": 31},
        {"schedule_rate_minutes": 1440},
        {"stage": "Prod"},
        {"sender_email": "not-an-address"},
    ],
)
def test_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        StageConfig.model_validate(values)
