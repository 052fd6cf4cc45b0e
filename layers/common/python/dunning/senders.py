"""Channel adapters: the `Sender`s that reach SES, SNS and HTTP endpoints.

Each maps its provider's failures to the delivery's two kinds: transient
(throttling, 5xx, timeouts: the message goes back to its queue with backoff)
and permanent (rejected address, invalid number, 4xx, an unsafe URL, a broken
template: recorded as failed and acknowledged). Messages are rendered here,
from the account view the delivery read for its freshness check.

`build_channel_consumer` is the production wiring of one channel function.
Nothing in this module logs an email address or a phone number.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, TypeAdapter

from dunning import aws
from dunning.channels.sms import (
    MAX_SMS_CHARACTERS,
    InvalidPhoneNumberError,
    sms_segments,
    validate_e164,
)
from dunning.channels.ssrf import UnsafeUrlError
from dunning.channels.templates import (
    InMemoryTemplates,
    PackageTemplates,
    TemplateNotFoundError,
    Templates,
    render_email,
    render_sms,
)
from dunning.channels.webhook import (
    InvalidSecretError,
    WebhookSendError,
    post_webhook,
    webhook_body,
)
from dunning.clock import now as current_time
from dunning.delivery import (
    ChannelConsumer,
    Delivery,
    PermanentSendError,
    Sender,
    SendError,
    TransientSendError,
)
from dunning.model import AccountView, Action, ActionType, Channel
from dunning.observability import logger
from dunning.settings import ActionSettings
from dunning.store import DynamoStore, NotFoundError

# Error codes a provider returns for a request that will never succeed.
_SES_PERMANENT = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "ConfigurationSetDoesNotExistException",
        "ConfigurationSetSendingPausedException",
        "AccountSendingPausedException",
        "InvalidParameterValue",
        "ValidationError",
    }
)
_SNS_PERMANENT = frozenset(
    {
        "InvalidParameter",
        "InvalidParameterValue",
        "OptedOut",
        "AuthorizationError",
        "EndpointDisabled",
        "ValidationError",
    }
)
SECRET_CACHE_S = 300


def _provider_error(err: ClientError, permanent: frozenset[str], provider: str) -> SendError:
    """Transient or permanent, from the provider's error code and HTTP status.

    In order: throttling (any code that says so, SNS's `Throttled` and
    `KMSThrottling` included, and any 429) and a request timeout (408) are
    transient; a code known to mean "this request will never succeed" is
    permanent; 5xx and an error without a status are transient; any other 4xx
    is permanent. The reason names the provider and the code only: the
    provider's message may echo the recipient.
    """
    code = str(err.response.get("Error", {}).get("Code") or "Unknown")
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    reason = f"{provider}_{code}"
    if _is_throttling(code) or status in _TRANSIENT_STATUSES:
        return TransientSendError(reason)
    if code in permanent or 400 <= status < 500:
        return PermanentSendError(reason)
    return TransientSendError(reason)


# Throttling codes that do not contain "throttl" (those that do are all throttling).
_THROTTLING = frozenset(
    {
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "SlowDown",
    }
)
_TRANSIENT_STATUSES = frozenset({408, 429})


def _is_throttling(code: str) -> bool:
    return code in _THROTTLING or "throttl" in code.lower()


class PolicyLocales:
    """The default language of the policy an action runs on (cached per version)."""

    def __init__(self, store: DynamoStore, fallback: str) -> None:
        self.store = store
        self.fallback = fallback
        self._cache: dict[tuple[str, int], str] = {}

    def __call__(self, action: Action) -> str:
        key = (action.policy_id, action.policy_version)
        if key not in self._cache:
            try:
                locale = self.store.get_policy_version(*key).default_locale
            except NotFoundError:
                locale = self.fallback
            self._cache[key] = locale
        return self._cache[key]


R = TypeVar("R")


def _rendered(
    render: Callable[..., R],
    action: Action,
    view: AccountView,
    templates: Templates,
    default_locale: Callable[[Action], str],
    clock: Callable[[], datetime],
) -> R:
    """A message rendered for the account; a template that fails is permanent."""
    try:
        return render(
            action,
            view.account,
            view.invoices,
            as_of=clock(),
            templates=templates,
            default_locale=default_locale(action),
        )
    except (TemplateNotFoundError, TemplateError, ValueError) as err:
        raise PermanentSendError(f"template_error: {err}") from None


@dataclass
class SesEmailSender:
    """One email per action through SES (v1 `SendEmail`): subject, text and HTML."""

    ses: Any
    sender: str
    templates: Templates
    default_locale: Callable[[Action], str]
    clock: Callable[[], datetime]
    configuration_set: str = ""

    def send(self, action: Action, view: AccountView) -> str:
        account = view.account
        if not account.email:
            raise PermanentSendError("no_email_address")
        mail = _rendered(
            render_email, action, view, self.templates, self.default_locale, self.clock
        )
        body: dict[str, Any] = {"Text": {"Data": mail.text, "Charset": "UTF-8"}}
        if mail.html is not None:
            body["Html"] = {"Data": mail.html, "Charset": "UTF-8"}
        kwargs: dict[str, Any] = {
            "Source": self.sender,
            "Destination": {"ToAddresses": [account.email]},
            "Message": {"Subject": {"Data": mail.subject, "Charset": "UTF-8"}, "Body": body},
            "Tags": [
                {"Name": "level", "Value": str(max(action.level, 0))},
                {"Name": "template", "Value": action.template or "none"},
            ],
        }
        if self.configuration_set:
            kwargs["ConfigurationSetName"] = self.configuration_set
        try:
            out = self.ses.send_email(**kwargs)
        except ClientError as err:
            raise _provider_error(err, _SES_PERMANENT, "ses") from None
        except BotoCoreError as err:
            raise TransientSendError(f"ses_{type(err).__name__}") from None
        return str(out["MessageId"])


@dataclass
class SnsSmsSender:
    """One transactional SMS per action through SNS `Publish` to a phone number."""

    sns: Any
    templates: Templates
    default_locale: Callable[[Action], str]
    clock: Callable[[], datetime]
    sender_id: str = ""

    def send(self, action: Action, view: AccountView) -> str:
        account = view.account
        if not account.phone:
            raise PermanentSendError("no_phone_number")
        try:
            number = validate_e164(account.phone)
        except InvalidPhoneNumberError:
            raise PermanentSendError("invalid_phone_number") from None
        text = _rendered(render_sms, action, view, self.templates, self.default_locale, self.clock)
        segments = sms_segments(text)
        logger.info(
            "sms rendered",
            extra={
                "action_id": action.action_id,
                "encoding": segments.encoding.value,
                "characters": len(text),
                "segments": segments.segments,
            },
        )
        if len(text) > MAX_SMS_CHARACTERS:
            # SNS would refuse it; no retry makes the template shorter.
            raise PermanentSendError(
                f"sms_too_long: {len(text)} characters, at most {MAX_SMS_CHARACTERS}"
            )
        attributes: dict[str, Any] = {
            "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
        }
        if self.sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {
                "DataType": "String",
                "StringValue": self.sender_id,
            }
        try:
            out = self.sns.publish(PhoneNumber=number, Message=text, MessageAttributes=attributes)
        except ClientError as err:
            raise _provider_error(err, _SNS_PERMANENT, "sns") from None
        except BotoCoreError as err:
            raise TransientSendError(f"sns_{type(err).__name__}") from None
        return str(out["MessageId"])


class Endpoint(BaseModel):
    """An integration endpoint: where an action type's webhook goes, and its secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    secret_id: str


ENDPOINTS = TypeAdapter(dict[str, Endpoint])

# Which endpoint an action goes to when its spec names no target.
DEFAULT_TARGETS: Mapping[ActionType, str] = {
    ActionType.SUSPEND_SERVICE: "provisioning",
    ActionType.RESTORE_SERVICE: "provisioning",
    ActionType.DEACTIVATE: "provisioning",
    ActionType.CALL: "contact-centre",
    ActionType.COLLECTION_AGENCY: "agency",
    ActionType.WEBHOOK: "crm",
}
# Steps the store carries out itself (no HTTP): the delivery applies their effect.
INTERNAL_ACTIONS = frozenset({ActionType.WRITE_OFF, ActionType.MANUAL_TASK})


class SecretsCache:
    """Webhook signing secrets from Secrets Manager, cached for a few minutes.

    A secret's value is either one `whsec_...` string or JSON
    `{"current": "whsec_...", "previous": "whsec_..."}`: during a rotation both
    sign, so receivers verify with whichever they hold.
    """

    def __init__(self, client: Any, ttl_s: float = SECRET_CACHE_S) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, list[str]]] = {}

    def __call__(self, secret_id: str) -> list[str]:
        hit = self._cache.get(secret_id)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        try:
            raw = str(self.client.get_secret_value(SecretId=secret_id)["SecretString"])
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "Unknown")
            if code in ("ResourceNotFoundException", "AccessDeniedException"):
                raise PermanentSendError(f"secret_{code}") from None
            raise TransientSendError(f"secret_{code}") from None
        secrets = _parse_secret(raw)
        self._cache[secret_id] = (time.monotonic(), secrets)
        return secrets


def _parse_secret(raw: str) -> list[str]:
    """The signing secrets of a secret value, current first.

    A secret that is neither a non-empty string nor JSON with a non-empty
    `current` is a configuration error: permanent, and the error never quotes it.
    """
    text = raw.strip()
    if not text.startswith("{"):
        if not text:
            raise PermanentSendError("secret_malformed: empty")
        return [text]
    try:
        data = json.loads(text)
    except ValueError:
        raise PermanentSendError("secret_malformed: not JSON") from None
    current = data.get("current") if isinstance(data, dict) else None
    if not isinstance(current, str) or not current.strip():
        raise PermanentSendError("secret_malformed: no current secret")
    previous = data.get("previous")
    values = [current.strip()]
    if isinstance(previous, str) and previous.strip() and previous.strip() != values[0]:
        values.append(previous.strip())
    return values


@dataclass
class WebhookSender:
    """Signed webhooks to registered integration endpoints (SSRF-guarded).

    The allow-list is the set of hosts of the registered endpoints: an action
    can only ever reach a host that an operator configured.
    """

    endpoints: Mapping[str, Endpoint]
    secrets: Callable[[str], list[str]]
    clock: Callable[[], datetime]
    allow_insecure_loopback: bool = False
    resolver: Any = None

    @property
    def allowed_hosts(self) -> set[str]:
        return {(urlsplit(e.url).hostname or "").lower() for e in self.endpoints.values()}

    def send(self, action: Action, view: AccountView) -> str:
        if action.type in INTERNAL_ACTIONS:
            return f"internal:{action.type.value}"
        name = action.target or DEFAULT_TARGETS.get(action.type, "")
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise PermanentSendError(f"no_endpoint: {name or action.type.value}")
        body = webhook_body(action, view.account, view.invoices)
        try:
            response = post_webhook(
                endpoint.url,
                body,
                msg_id=action.action_id,
                secrets=self.secrets(endpoint.secret_id),
                at=self.clock(),
                allowed_hosts=self.allowed_hosts,
                resolver=self.resolver,
                allow_insecure_loopback=self.allow_insecure_loopback,
            )
        except UnsafeUrlError as err:
            raise PermanentSendError(f"unsafe_url: {err.reason}") from None
        except InvalidSecretError:
            raise PermanentSendError("secret_malformed: not whsec_ and base64") from None
        except WebhookSendError as err:
            error = TransientSendError if err.transient else PermanentSendError
            raise error(f"webhook_{err.reason}") from None
        if response.ok:
            return f"{name}:http_{response.status}"
        if response.transient:
            raise TransientSendError(f"webhook_http_{response.status}")
        raise PermanentSendError(f"webhook_http_{response.status}")


def build_templates(store: DynamoStore) -> Templates:
    """The shipped templates with the admins' uploads laid over them."""
    return Templates(InMemoryTemplates(store.template_sources(), PackageTemplates()))


def build_senders(
    channel: Channel,
    settings: ActionSettings,
    store: DynamoStore,
    clock: Callable[[], datetime] = current_time,
) -> dict[ActionType, Sender]:
    """The senders of one channel function."""
    if channel is Channel.EMAIL:
        locales = PolicyLocales(store, settings.DEFAULT_LOCALE)
        mail = SesEmailSender(
            aws.ses(),
            settings.SENDER_EMAIL,
            build_templates(store),
            locales,
            clock,
            settings.SES_CONFIGURATION_SET,
        )
        return {ActionType.EMAIL: mail}
    if channel is Channel.SMS:
        locales = PolicyLocales(store, settings.DEFAULT_LOCALE)
        return {ActionType.SMS: SnsSmsSender(aws.sns(), build_templates(store), locales, clock)}
    hook = WebhookSender(
        ENDPOINTS.validate_json(settings.WEBHOOK_ENDPOINTS),
        SecretsCache(aws.secretsmanager()),
        clock,
        allow_insecure_loopback=settings.ALLOW_INSECURE_LOOPBACK,
    )
    return {t: hook for t in ActionType if t not in (ActionType.EMAIL, ActionType.SMS)}


def build_channel_consumer(
    channel: Channel,
    settings: ActionSettings,
    clock: Callable[[], datetime] = current_time,
) -> ChannelConsumer:
    """Production wiring of one channel function (built on first use)."""
    store = DynamoStore(aws.dynamodb(), settings.TABLE_NAME, settings.SHARD_COUNT)
    delivery = Delivery(store, build_senders(channel, settings, store, clock))
    return ChannelConsumer(
        delivery,
        aws.sqs(),
        settings.QUEUE_URL,
        clock,
        channel,
        settings.RETRY_BASE_S,
    )
