"""Signed outbound webhooks (the Standard Webhooks scheme) and their HTTP sender.

Every request carries three headers:

- `webhook-id`: the action id, the same on every retry (receivers deduplicate on it);
- `webhook-timestamp`: unix seconds of this attempt;
- `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` of
  `"{id}.{timestamp}.{body}"`, one per active secret, so during a rotation the
  receiver verifies with either the old or the new secret.

Secrets are `whsec_<base64>` strings; the key is the decoded base64 part.

`send_webhook` connects to the address `ssrf.check_url` pinned, with the host
name for SNI, certificate verification and the Host header; it follows no
redirect (a 3xx comes back as it is and the caller treats it as a failure),
bounds the connect time, the whole exchange and the response bytes read.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import http.client
import json
import re
import secrets as _secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

from dunning.channels import scope_invoices
from dunning.channels.ssrf import PinnedTarget, Resolver, check_url
from dunning.model import Account, Action, Invoice, InvoiceStatus
from dunning.money import Money, minor_unit

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SIGNATURE_VERSION: Final = "v1"
DEFAULT_TOLERANCE_S: Final = 300
USER_AGENT: Final = "dunning-webhooks/1"
HEADER_ID: Final = "webhook-id"
HEADER_TIMESTAMP: Final = "webhook-timestamp"
HEADER_SIGNATURE: Final = "webhook-signature"
TRANSIENT_STATUSES: Final = frozenset({408, 409, 429})
_MSG_ID: Final = re.compile(r"[\x21-\x7e]{1,256}", re.ASCII)  # visible ASCII, no space


class InvalidSecretError(ValueError):
    """A webhook secret is not `whsec_<base64>`. The message never echoes it."""


class WebhookVerificationError(Exception):
    """A received webhook failed verification (headers, timestamp or signature)."""


class WebhookSendError(Exception):
    """Sending failed before an HTTP status came back (timeout, refused, TLS)."""

    def __init__(self, reason: str, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


# ---------------------------------------------------------------------------- secrets


def generate_secret(nbytes: int = 32) -> str:
    """A new random secret in `whsec_<base64>` form."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSecretError("webhook secret is not whsec_ followed by base64") from None
    if len(key) < 16:
        raise InvalidSecretError("webhook secret is shorter than 16 bytes")
    return key


# ------------------------------------------------------------------------- signatures


def _unix(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return int(at.timestamp())


def _check_msg_id(msg_id: str) -> str:
    if not _MSG_ID.fullmatch(msg_id):
        raise ValueError("webhook id must be 1 to 256 visible ASCII characters")
    return msg_id


def _mac(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")


def sign(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The `webhook-signature` value: `v1,<sig>` per secret, space-separated."""
    if not secrets:
        raise InvalidSecretError("at least one webhook secret is required")
    _check_msg_id(msg_id)
    return " ".join(
        f"{SIGNATURE_VERSION},{_mac(decode_secret(s), msg_id, timestamp, body)}" for s in secrets
    )


def signed_headers(
    msg_id: str, body: bytes, secrets: Sequence[str], at: datetime
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt at `at`."""
    timestamp = _unix(at)
    return {
        HEADER_ID: _check_msg_id(msg_id),
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(msg_id, timestamp, body, secrets),
    }


def verify(
    payload: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    tolerance_s: int,
    now: datetime,
) -> None:
    """Check a received webhook; raises `WebhookVerificationError` when it fails.

    Header names are matched case-insensitively. The timestamp must be within
    `tolerance_s` of `now` (either side: old messages are replays, future ones
    forged), and one signature of the header must match one of `secrets`.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get(HEADER_ID)
    stamp = lower.get(HEADER_TIMESTAMP)
    header = lower.get(HEADER_SIGNATURE)
    if not msg_id or not stamp or not header:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError("webhook-timestamp is not unix seconds")
    timestamp = int(stamp)
    if abs(_unix(now) - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp outside the tolerance")
    offered = [
        sig
        for version, _, sig in (item.partition(",") for item in header.split())
        if version == SIGNATURE_VERSION and sig
    ]
    for secret in secrets:
        expected = _mac(decode_secret(secret), msg_id, timestamp, payload)
        for sig in offered:
            if hmac.compare_digest(expected.encode(), sig.encode()):
                return
    raise WebhookVerificationError("no matching signature")


# ---------------------------------------------------------------------------- payload


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _amount(amount: Decimal, currency: str) -> str:
    return f"{amount.quantize(minor_unit(currency)):f}"


def _day(day: date) -> str:
    return day.isoformat()


def webhook_body(action: Action, account: Account, invoices: Iterable[Invoice]) -> bytes:
    """The JSON body for `action`: deterministic bytes (sorted keys, compact).

    Amounts are strings with the currency's minor units, dates ISO 8601,
    times UTC. The body names the account by id only: no email, phone or name
    (an integration that needs contact data looks it up by account id).
    """
    scope = scope_invoices(action, invoices, open_only=False)
    open_total = Money.zero(account.currency)
    rows: list[dict[str, Any]] = []
    for inv in scope:
        if inv.status is InvoiceStatus.OPEN:
            open_total = open_total + Money(inv.open_amount, inv.currency)
        rows.append(
            {
                "invoice_id": inv.invoice_id,
                "type": inv.type,
                "status": inv.status.value,
                "currency": inv.currency,
                "amount": _amount(inv.amount, inv.currency),
                "open_amount": _amount(inv.open_amount, inv.currency),
                "issue_date": _day(inv.issue_date),
                "due_date": _day(inv.due_date),
            }
        )
    document = {
        "type": f"dunning.{action.type.value}",
        "timestamp": _iso(action.created_at),
        "data": {
            "action_id": action.action_id,
            "action_type": action.type.value,
            "target": action.target,
            "account_id": action.account_id,
            "case_id": action.case_id,
            "level": action.level,
            "level_name": action.level_name,
            "policy_id": action.policy_id,
            "policy_version": action.policy_version,
            "not_before": _iso(action.not_before),
            "created_at": _iso(action.created_at),
            "currency": account.currency,
            "total_open_amount": _amount(open_total.amount, account.currency),
            "invoice_ids": list(action.invoice_ids),
            "invoices": rows,
        },
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# ----------------------------------------------------------------------------- sender


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status: int
    body_prefix: bytes  # at most max_response_bytes
    location: str | None = None  # a redirect's target, recorded and never followed

    @property
    def ok(self) -> bool:
        return is_success(self.status)

    @property
    def transient(self) -> bool:
        return is_transient(self.status)


def is_success(status: int) -> bool:
    return 200 <= status < 300


def is_transient(status: int) -> bool:
    """Worth retrying: 408, 409, 429 and 5xx. Other 4xx and 3xx are permanent."""
    return status in TRANSIENT_STATUSES or 500 <= status < 600


class _Deadline:
    def __init__(self, total_s: float) -> None:
        self._end = time.monotonic() + total_s

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError("webhook total timeout")
        return left


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: PinnedTarget, connect_timeout: float, deadline: _Deadline) -> None:
        super().__init__(target.host, target.port, timeout=connect_timeout)
        self._target = target
        self._connect_timeout = connect_timeout
        self._deadline = deadline
        # Kept after `close()`: http.client hands a `Connection: close` socket
        # over to the response and forgets it, and the watchdog still needs it.
        self.pinned_sock: socket.socket | None = None

    def _open(self) -> socket.socket:
        timeout = min(self._connect_timeout, self._deadline.remaining())
        sock = socket.create_connection((self._target.ip, self._target.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self._deadline.remaining())
        self.pinned_sock = sock
        return sock

    def connect(self) -> None:
        self.sock = self._open()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    default_port = http.client.HTTPS_PORT

    def __init__(
        self,
        target: PinnedTarget,
        connect_timeout: float,
        deadline: _Deadline,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(target, connect_timeout, deadline)
        self._ssl_context = context

    def connect(self) -> None:
        raw = self._open()
        try:
            self.sock = self._ssl_context.wrap_socket(raw, server_hostname=self._target.host)
            self.pinned_sock = self.sock
        except BaseException:
            raw.close()
            raise


def _read_capped(response: http.client.HTTPResponse, limit: int, deadline: _Deadline) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        deadline.remaining()
        chunk = response.read(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def send_webhook(
    target: PinnedTarget,
    body: bytes,
    headers: Mapping[str, str],
    connect_timeout: float = 3.0,
    total_timeout: float = 10.0,
    max_response_bytes: int = 4096,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> WebhookResponse:
    """POST `body` to the pinned address; any HTTP status comes back as a response.

    Raises `WebhookSendError` when no status comes back: `timeout`,
    `connection_error`, `protocol_error` (transient) or `tls_verification`
    (permanent: a certificate that does not match is not fixed by retrying).
    `total_timeout` bounds the whole exchange: a watchdog shuts the socket down
    when it expires, so a server trickling bytes cannot hold the worker.
    """
    deadline = _Deadline(total_timeout)
    conn: _PinnedHTTPConnection
    if target.scheme == "https":
        context = ssl_context if ssl_context is not None else ssl.create_default_context()
        conn = _PinnedHTTPSConnection(target, connect_timeout, deadline, context)
    else:
        conn = _PinnedHTTPConnection(target, connect_timeout, deadline)
    expired = threading.Event()

    def _abort() -> None:
        expired.set()
        sock = conn.pinned_sock
        if sock is not None:
            # The plain socket's shutdown, also under TLS (SSLSocket.shutdown would
            # unwrap the TLS object under the reading thread's feet).
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    watchdog = threading.Timer(total_timeout, _abort)
    watchdog.daemon = True
    request_headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "connection": "close",
    }
    request_headers.update({k.lower(): v for k, v in headers.items() if k.lower() != "host"})
    watchdog.start()
    try:
        conn.request("POST", target.path, body=body, headers=request_headers)
        response = conn.getresponse()
        prefix = _read_capped(response, max_response_bytes, deadline)
        location = response.getheader("location") if 300 <= response.status < 400 else None
        if expired.is_set():
            raise TimeoutError("webhook total timeout")
        return WebhookResponse(status=response.status, body_prefix=prefix, location=location)
    except ssl.SSLCertVerificationError:
        raise WebhookSendError("tls_verification", transient=False) from None
    except TimeoutError:
        raise WebhookSendError("timeout", transient=True) from None
    except (http.client.HTTPException, ssl.SSLError) as err:
        if expired.is_set():
            raise WebhookSendError("timeout", transient=True) from None
        reason = "tls_error" if isinstance(err, ssl.SSLError) else "protocol_error"
        raise WebhookSendError(reason, transient=True) from None
    except OSError:
        if expired.is_set():
            raise WebhookSendError("timeout", transient=True) from None
        raise WebhookSendError("connection_error", transient=True) from None
    except ValueError:
        if expired.is_set():  # a read on the socket the watchdog shut down
            raise WebhookSendError("timeout", transient=True) from None
        raise
    finally:
        watchdog.cancel()
        conn.close()


def post_webhook(
    url: str,
    body: bytes,
    *,
    msg_id: str,
    secrets: Sequence[str],
    at: datetime,
    allowed_hosts: Iterable[str],
    resolver: Resolver | None = None,
    allow_insecure_loopback: bool = False,
    connect_timeout: float = 3.0,
    total_timeout: float = 10.0,
    max_response_bytes: int = 4096,
    ssl_context: ssl.SSLContext | None = None,
) -> WebhookResponse:
    """Check the URL (SSRF guard), sign and send: the whole outbound path.

    Raises `ssrf.UnsafeUrlError` (permanent) before anything is sent, and
    `WebhookSendError` as `send_webhook` does.
    """
    target = check_url(url, allowed_hosts, resolver, allow_insecure_loopback)
    headers = signed_headers(msg_id, body, secrets, at)
    return send_webhook(
        target,
        body,
        headers,
        connect_timeout,
        total_timeout,
        max_response_bytes,
        ssl_context=ssl_context,
    )


__all__ = [
    "DEFAULT_TOLERANCE_S",
    "InvalidSecretError",
    "WebhookResponse",
    "WebhookSendError",
    "WebhookVerificationError",
    "decode_secret",
    "generate_secret",
    "is_success",
    "is_transient",
    "post_webhook",
    "send_webhook",
    "sign",
    "signed_headers",
    "verify",
    "webhook_body",
]
