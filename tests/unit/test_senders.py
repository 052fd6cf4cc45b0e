"""How the channel adapters classify provider errors: transient (retry) or permanent.

Throttling and 429 never fail an action for good: the message goes back to its
queue with backoff. 5xx and timeouts are transient too; a 4xx that says the
request itself is wrong (a rejected address, an invalid parameter) is permanent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from dunning.channels.templates import default_templates
from dunning.delivery import PermanentSendError, SendError, TransientSendError
from dunning.model import AccountView, Action, ActionType, Channel
from dunning.senders import (
    _SES_PERMANENT,
    _SNS_PERMANENT,
    SesEmailSender,
    SnsSmsSender,
    _provider_error,
)
from tests import builders
from tests.builders import action
from tests.unit.strategies import PROPERTY_SETTINGS

AT = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)


def client_error(code: str, status: int, operation: str = "SendEmail") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "the provider says no to +4915112345678"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


def kind(code: str, status: int, permanent: frozenset[str] = _SES_PERMANENT) -> type[SendError]:
    return type(_provider_error(client_error(code, status), permanent, "ses"))


# ------------------------------------------------------------------ the table

SES_CASES = [
    # throttling, whatever the status says
    ("Throttling", 400, TransientSendError),  # "Maximum sending rate exceeded"
    ("ThrottlingException", 400, TransientSendError),
    ("TooManyRequestsException", 429, TransientSendError),
    # 5xx and unknown failures
    ("ServiceUnavailable", 503, TransientSendError),
    ("InternalFailure", 500, TransientSendError),
    ("RequestTimeout", 408, TransientSendError),
    ("Unknown", 0, TransientSendError),
    # the request itself is wrong
    ("MessageRejected", 400, PermanentSendError),
    ("MailFromDomainNotVerifiedException", 400, PermanentSendError),
    ("ConfigurationSetDoesNotExistException", 400, PermanentSendError),
    ("InvalidParameterValue", 400, PermanentSendError),
    ("ValidationError", 400, PermanentSendError),
    ("AccessDenied", 403, PermanentSendError),
]
SNS_CASES = [
    ("Throttled", 429, TransientSendError),  # SNS's own throttling code
    ("Throttled", 400, TransientSendError),
    ("KMSThrottling", 400, TransientSendError),
    ("KMSThrottlingException", 400, TransientSendError),
    ("ThrottlingException", 400, TransientSendError),
    ("InternalError", 500, TransientSendError),
    ("ServiceUnavailable", 503, TransientSendError),
    ("InvalidParameter", 400, PermanentSendError),  # e.g. an invalid phone number
    ("InvalidParameterValue", 400, PermanentSendError),
    ("OptedOut", 400, PermanentSendError),
    ("AuthorizationError", 403, PermanentSendError),
    ("EndpointDisabled", 400, PermanentSendError),
    ("KMSDisabled", 400, PermanentSendError),
]


@pytest.mark.parametrize(("code", "status", "expected"), SES_CASES)
def test_ses_errors(code: str, status: int, expected: type[SendError]) -> None:
    assert kind(code, status, _SES_PERMANENT) is expected


@pytest.mark.parametrize(("code", "status", "expected"), SNS_CASES)
def test_sns_errors(code: str, status: int, expected: type[SendError]) -> None:
    assert kind(code, status, _SNS_PERMANENT) is expected


def test_the_reason_names_provider_and_code_only() -> None:
    # The provider's message may echo the recipient: the reason never carries it.
    err = _provider_error(client_error("InvalidParameter", 400), _SNS_PERMANENT, "sns")
    assert err.args == ("sns_InvalidParameter",)
    assert "+49" not in str(err)


# --------------------------------------------------------------- the rules

CODES = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=40
)
# Throttling codes whose names do not say "throttl" (AWS's SDKs retry these too).
NAMED_THROTTLING = frozenset(
    {
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "SlowDown",
    }
)


def not_throttling(code: str) -> bool:
    return "throttl" not in code.lower() and code not in NAMED_THROTTLING


PERMANENT_SETS = st.sampled_from([_SES_PERMANENT, _SNS_PERMANENT])


@PROPERTY_SETTINGS
@given(code=CODES, permanent=PERMANENT_SETS)
def test_a_429_is_always_transient(code: str, permanent: frozenset[str]) -> None:
    assert kind(code, 429, permanent) is TransientSendError


@PROPERTY_SETTINGS
@given(
    prefix=CODES | st.just(""),
    word=st.sampled_from(["Throttling", "Throttled", "throttling", "THROTTLED"]),
    suffix=CODES | st.just(""),
    status=st.sampled_from([0, 400, 403, 429, 500, 503]),
    permanent=PERMANENT_SETS,
)
def test_any_throttling_code_is_transient(
    prefix: str, word: str, suffix: str, status: int, permanent: frozenset[str]
) -> None:
    assert kind(prefix + word + suffix, status, permanent) is TransientSendError


@PROPERTY_SETTINGS
@given(code=CODES, status=st.integers(500, 599), permanent=PERMANENT_SETS)
def test_a_5xx_is_transient_unless_the_code_says_the_request_is_wrong(
    code: str, status: int, permanent: frozenset[str]
) -> None:
    expected = PermanentSendError if code in permanent else TransientSendError
    assert kind(code, status, permanent) is expected


@PROPERTY_SETTINGS
@given(
    code=CODES.filter(not_throttling),
    status=st.integers(400, 499).filter(lambda s: s not in (408, 429)),
    permanent=PERMANENT_SETS,
)
def test_any_other_4xx_is_permanent(code: str, status: int, permanent: frozenset[str]) -> None:
    assert kind(code, status, permanent) is PermanentSendError


@pytest.mark.parametrize("code", sorted(_SES_PERMANENT | _SNS_PERMANENT))
def test_no_permanent_code_looks_like_throttling(code: str) -> None:
    assert not_throttling(code)


@pytest.mark.parametrize("code", sorted(NAMED_THROTTLING))
@pytest.mark.parametrize("status", [400, 403, 503])
def test_a_throttling_code_without_the_word_is_transient(code: str, status: int) -> None:
    assert kind(code, status) is TransientSendError


# ------------------------------------------------------- through the senders


class FailingClient:
    """An SES/SNS client whose send raises what it is given."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def send_email(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        raise self.error

    def publish(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        raise self.error


def _action(type_: ActionType, template: str) -> Action:
    channel = Channel.EMAIL if type_ is ActionType.EMAIL else Channel.SMS
    return action(type=type_, channel=channel, template=template, not_before=AT, created_at=AT)


def _view() -> AccountView:
    return builders.view(builders.invoice(due=AT.date()))


SEND_CASES = [
    (client_error("Throttling", 400), TransientSendError, "Throttling"),
    (client_error("Throttled", 429, "Publish"), TransientSendError, "Throttled"),
    (client_error("KMSThrottling", 400, "Publish"), TransientSendError, "KMSThrottling"),
    (client_error("ServiceUnavailable", 503), TransientSendError, "ServiceUnavailable"),
    (client_error("MessageRejected", 400), PermanentSendError, "MessageRejected"),
    (client_error("InvalidParameter", 400, "Publish"), PermanentSendError, "InvalidParameter"),
    (EndpointConnectionError(endpoint_url="https://x"), TransientSendError, "EndpointConnection"),
    (ConnectTimeoutError(endpoint_url="https://x"), TransientSendError, "ConnectTimeout"),
]


@pytest.mark.parametrize(("error", "expected", "code"), SEND_CASES)
def test_the_email_sender_classifies(
    error: Exception, expected: type[SendError], code: str
) -> None:
    client = FailingClient(error)
    sender = SesEmailSender(
        client, "billing@example.com", default_templates(), lambda _a: "en", lambda: AT
    )
    with pytest.raises(SendError) as raised:
        sender.send(_action(ActionType.EMAIL, "reminder"), _view())
    assert type(raised.value) is expected
    assert raised.value.reason.startswith("ses_") and code in raised.value.reason
    assert client.calls == 1


@pytest.mark.parametrize(("error", "expected", "code"), SEND_CASES)
def test_the_sms_sender_classifies(error: Exception, expected: type[SendError], code: str) -> None:
    client = FailingClient(error)
    sender = SnsSmsSender(client, default_templates(), lambda _a: "en", lambda: AT)
    with pytest.raises(SendError) as raised:
        sender.send(_action(ActionType.SMS, "avoid_suspension"), _view())
    assert type(raised.value) is expected
    assert raised.value.reason.startswith("sns_") and code in raised.value.reason
    assert "+49" not in raised.value.reason
