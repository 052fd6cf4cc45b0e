"""Signed webhooks: Standard Webhooks signatures, the JSON body, the pinned HTTP sender."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dunning.channels.ssrf import PinnedTarget, StaticResolver, UnsafeUrlError, check_url
from dunning.channels.webhook import (
    InvalidSecretError,
    WebhookSendError,
    WebhookVerificationError,
    decode_secret,
    generate_secret,
    is_success,
    is_transient,
    post_webhook,
    send_webhook,
    sign,
    signed_headers,
    verify,
    webhook_body,
)
from dunning.model import Action, ActionType, Channel, InvoiceStatus
from tests.builders import account, invoice

NOW = datetime(2026, 2, 2, 9, 30, tzinfo=UTC)
OLD = generate_secret()
NEW = generate_secret()
OTHER = generate_secret()


def _action(**kw: Any) -> Action:
    base: dict[str, Any] = {
        "action_id": "3f2a9c0d1e2b4c5d6e7f8091",
        "account_id": "acc-1",
        "case_id": "C-inv-1",
        "type": ActionType.SUSPEND_SERVICE,
        "channel": Channel.WEBHOOK,
        "level": 4,
        "level_name": "suspension",
        "entry": 1,
        "index": 0,
        "template": None,
        "target": "provisioning",
        "locale": "de",
        "not_before": NOW,
        "created_at": NOW - timedelta(minutes=5),
        "policy_id": "consumer",
        "policy_version": 3,
        "invoice_ids": ("inv-1", "inv-2"),
    }
    base.update(kw)
    return Action(**base)


# ------------------------------------------------------------------------- signatures


def test_the_published_standard_webhooks_vector_is_reproduced() -> None:
    # Given the Standard Webhooks reference example
    # When it is signed
    # Then the signature is the published one (a receiver's library will accept ours)
    signature = sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_and_verify_round_trip() -> None:
    body = b'{"hello":"world"}'
    headers = signed_headers("act-1", body, [NEW], NOW)
    assert headers["webhook-id"] == "act-1"
    assert headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    verify(body, headers, [NEW], 300, NOW)


def test_header_names_are_case_insensitive() -> None:
    body = b"{}"
    headers = {k.title(): v for k, v in signed_headers("act-1", body, [NEW], NOW).items()}
    verify(body, headers, [NEW], 300, NOW)


def test_during_rotation_both_secrets_sign_and_either_verifies() -> None:
    # Given a rotation: the sender signs with the old and the new secret
    body = b'{"a":1}'
    headers = signed_headers("act-1", body, [OLD, NEW], NOW)
    # Then there are two signatures, and a receiver with either secret accepts
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(body, headers, [OLD], 300, NOW)
    verify(body, headers, [NEW], 300, NOW)
    # and a receiver already holding both accepts a message signed with the new one only
    verify(body, signed_headers("act-1", body, [NEW], NOW), [OLD, NEW], 300, NOW)
    with pytest.raises(WebhookVerificationError):
        verify(body, headers, [OTHER], 300, NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b, h: (b + b" ", h), id="body"),
        pytest.param(lambda b, h: (b.replace(b"1", b"2"), h), id="amount"),
        pytest.param(lambda b, h: (b, {**h, "webhook-id": "act-2"}), id="id"),
        pytest.param(
            lambda b, h: (b, {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}),
            id="timestamp",
        ),
        pytest.param(
            lambda b, h: (
                b,
                {**h, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()},
            ),
            id="signature",
        ),
        pytest.param(
            lambda b, h: (
                b,
                {**h, "webhook-signature": h["webhook-signature"].replace("v1,", "v2,")},
            ),
            id="version",
        ),
        pytest.param(lambda b, h: (b, {**h, "webhook-signature": ""}), id="empty-signature"),
        pytest.param(
            lambda b, h: (b, {k: v for k, v in h.items() if k != "webhook-id"}), id="missing-id"
        ),
        pytest.param(lambda b, h: (b, {**h, "webhook-timestamp": "12e3"}), id="bad-timestamp"),
    ],
)
def test_tampering_fails_verification(
    tamper: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]],
) -> None:
    body = b'{"amount":"100.00"}'
    headers = signed_headers("act-1", body, [NEW], NOW)
    bad_body, bad_headers = tamper(body, headers)
    with pytest.raises(WebhookVerificationError):
        verify(bad_body, bad_headers, [NEW], 300, NOW)


@pytest.mark.parametrize("offset_s", [-301, 301, -86400])
def test_a_timestamp_outside_the_tolerance_fails(offset_s: int) -> None:
    # Given a message signed at `now + offset` (old: a replay; future: forged)
    body = b"{}"
    headers = signed_headers("act-1", body, [NEW], NOW + timedelta(seconds=offset_s))
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        verify(body, headers, [NEW], 300, NOW)


def test_a_timestamp_inside_the_tolerance_passes() -> None:
    body = b"{}"
    verify(
        body, signed_headers("act-1", body, [NEW], NOW - timedelta(seconds=299)), [NEW], 300, NOW
    )


def test_secrets_are_whsec_base64_and_errors_never_echo_them() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(decode_secret(secret)) == 32
    for bad in ("whsec_not base64!", "whsec_c2hvcnQ=", ""):
        with pytest.raises(InvalidSecretError) as refused:
            decode_secret(bad)
        assert bad.removeprefix("whsec_") not in str(refused.value) or not bad
    with pytest.raises(InvalidSecretError):
        sign("act-1", 1, b"{}", [])


@pytest.mark.parametrize("msg_id", ["", "act 1", "act\r\nX-Evil: 1", "a" * 257])
def test_a_webhook_id_that_could_break_a_header_is_refused(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        signed_headers(msg_id, b"{}", [NEW], NOW)


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        signed_headers("act-1", b"{}", [NEW], datetime(2026, 1, 1))


# ---------------------------------------------------------------------------- payload


def test_the_body_carries_the_action_amounts_as_strings_and_iso_dates() -> None:
    # Given a suspension action over two invoices, one partly paid
    acct = account(name="Anna Müller", email="anna@example.com", phone="+4915112345678")
    invoices = [
        invoice("inv-2", "20.00", date(2026, 1, 10)),
        invoice("inv-1", "1234.56", date(2026, 1, 2), open_amount=Decimal("1000.06")),
        invoice("inv-9", "5.00", date(2026, 1, 3)),  # not in the action's scope
    ]
    # When the body is built
    body = webhook_body(_action(), acct, invoices)
    document = json.loads(body)
    # Then it is a Standard Webhooks envelope with the action's facts
    assert document["type"] == "dunning.suspend_service"
    assert document["timestamp"] == "2026-02-02T09:25:00Z"
    data = document["data"]
    assert data["action_id"] == "3f2a9c0d1e2b4c5d6e7f8091"
    assert data["action_type"] == "suspend_service"
    assert data["target"] == "provisioning"
    assert (data["case_id"], data["level"], data["level_name"]) == ("C-inv-1", 4, "suspension")
    assert data["invoice_ids"] == ["inv-1", "inv-2"]
    assert [i["invoice_id"] for i in data["invoices"]] == ["inv-1", "inv-2"]
    assert data["invoices"][0]["amount"] == "1234.56"
    assert data["invoices"][0]["open_amount"] == "1000.06"
    assert data["invoices"][0]["due_date"] == "2026-01-02"
    assert data["total_open_amount"] == "1020.06"
    assert data["currency"] == "EUR"
    assert data["not_before"] == "2026-02-02T09:30:00Z"


def test_the_body_holds_no_contact_data() -> None:
    acct = account(name="Anna Müller", email="anna@example.com", phone="+4915112345678")
    body = webhook_body(_action(), acct, [invoice("inv-1")]).decode()
    for personal in ("anna@example.com", "+4915112345678", "Anna", "Müller"):
        assert personal not in body


def test_the_body_is_deterministic() -> None:
    acct = account()
    invoices = [invoice("inv-1"), invoice("inv-2", due=date(2026, 1, 9))]
    assert webhook_body(_action(), acct, invoices) == webhook_body(
        _action(), acct, list(reversed(invoices))
    )


@pytest.mark.parametrize(
    ("currency", "amount", "expected"),
    [("JPY", "1235", "1235"), ("KWD", "1.5", "1.500"), ("EUR", "7", "7.00")],
)
def test_amounts_have_the_currency_minor_units(currency: str, amount: str, expected: str) -> None:
    acct = account(currency=currency)
    inv = invoice("inv-1", amount, currency=currency)
    data = json.loads(webhook_body(_action(invoice_ids=("inv-1",)), acct, [inv]))["data"]
    assert data["invoices"][0]["amount"] == expected
    assert data["total_open_amount"] == expected


def test_settled_invoices_are_listed_but_not_totalled() -> None:
    acct = account()
    paid = invoice("inv-1", "50.00", open_amount=Decimal(0), status=InvoiceStatus.PAID)
    data = json.loads(webhook_body(_action(invoice_ids=("inv-1",)), acct, [paid]))["data"]
    assert data["invoices"][0]["status"] == "paid"
    assert data["total_open_amount"] == "0.00"


# ------------------------------------------------------------------------ status rules


@pytest.mark.parametrize(
    ("status", "ok", "transient"),
    [
        (200, True, False),
        (202, True, False),
        (204, True, False),
        (301, False, False),
        (302, False, False),
        (400, False, False),
        (401, False, False),
        (403, False, False),
        (404, False, False),
        (408, False, True),
        (409, False, True),
        (410, False, False),
        (422, False, False),
        (429, False, True),
        (500, False, True),
        (502, False, True),
        (503, False, True),
        (599, False, True),
    ],
)
def test_status_classification(status: int, ok: bool, transient: bool) -> None:
    assert is_success(status) is ok
    assert is_transient(status) is transient


# ---------------------------------------------------------------- a real local receiver


@dataclass
class Receiver:
    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    behaviour: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def target(self, path: str = "/hook") -> PinnedTarget:
        return check_url(self.url(path), ["127.0.0.1"], allow_insecure_loopback=True)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.requests.append({"path": self.path, "headers": headers, "body": body})
            behaviour = receiver.behaviour
            if "sleep" in behaviour:
                time.sleep(behaviour["sleep"])
            secrets = behaviour.get("verify_with")
            status = behaviour.get("status", 204)
            if secrets is not None:
                try:
                    verify(body, headers, secrets, 300, datetime.now(UTC))
                except WebhookVerificationError:
                    status = 401
            payload: bytes = behaviour.get("body", b"")
            self.send_response(status)
            for name, value in behaviour.get("headers", {}).items():
                self.send_header(name, value)
            if "trickle" in behaviour:
                self.send_header("content-length", "1000")
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gives up first
                    for _ in range(1000):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(behaviour["trickle"])
                return
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client stops reading at its cap
                self.wfile.write(payload)

    return Handler


@contextlib.contextmanager
def _serving(context: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    state = Receiver(port=server.server_address[1])
    server.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with _serving() as state:
        yield state


def test_a_signed_webhook_reaches_a_local_receiver_that_verifies_it(receiver: Receiver) -> None:
    # Given a receiver on 127.0.0.1 holding the old and new secrets
    receiver.behaviour = {"verify_with": [OLD, NEW], "status": 200, "body": b'{"ok":true}'}
    body = webhook_body(_action(), account(), [invoice("inv-1"), invoice("inv-2")])
    # When the whole outbound path runs (SSRF check with insecure loopback, sign, send)
    response = post_webhook(
        receiver.url(),
        body,
        msg_id="3f2a9c0d1e2b4c5d6e7f8091",
        secrets=[NEW],
        at=datetime.now(UTC),
        allowed_hosts=["127.0.0.1"],
        allow_insecure_loopback=True,
    )
    # Then the receiver verified the signature and answered 200
    assert response.status == 200
    assert response.ok
    assert response.body_prefix == b'{"ok":true}'
    [request] = receiver.requests
    assert request["path"] == "/hook"
    assert request["body"] == body
    assert request["headers"]["webhook-id"] == "3f2a9c0d1e2b4c5d6e7f8091"
    assert request["headers"]["host"] == f"127.0.0.1:{receiver.port}"
    assert request["headers"]["content-type"] == "application/json"


def test_a_wrong_secret_is_rejected_by_the_receiver(receiver: Receiver) -> None:
    receiver.behaviour = {"verify_with": [OLD]}
    body = b"{}"
    response = send_webhook(
        receiver.target(), body, signed_headers("act-1", body, [OTHER], datetime.now(UTC))
    )
    assert response.status == 401
    assert not response.ok
    assert not response.transient


def test_without_the_insecure_loopback_flag_the_receiver_is_unreachable(receiver: Receiver) -> None:
    with pytest.raises(UnsafeUrlError):
        post_webhook(
            receiver.url(),
            b"{}",
            msg_id="act-1",
            secrets=[NEW],
            at=NOW,
            allowed_hosts=["127.0.0.1"],
        )
    assert receiver.requests == []


def test_a_redirect_to_a_private_address_is_not_followed(receiver: Receiver) -> None:
    # Given a receiver answering 302 to the cloud metadata address
    receiver.behaviour = {
        "status": 302,
        "headers": {"location": "http://169.254.169.254/latest/meta-data/"},
    }
    # When a webhook is sent
    started = time.monotonic()
    response = send_webhook(receiver.target(), b"{}", {"webhook-id": "act-1"})
    # Then the 302 comes back as it is: a failure, not retried, nothing followed
    assert response.status == 302
    assert response.location == "http://169.254.169.254/latest/meta-data/"
    assert not response.ok
    assert not response.transient
    assert len(receiver.requests) == 1
    assert time.monotonic() - started < 2


def test_a_redirect_to_the_same_server_is_not_followed_either(receiver: Receiver) -> None:
    receiver.behaviour = {"status": 307, "headers": {"location": receiver.url("/elsewhere")}}
    response = send_webhook(receiver.target(), b"{}", {})
    assert response.status == 307
    assert [r["path"] for r in receiver.requests] == ["/hook"]


def test_the_response_body_read_is_capped(receiver: Receiver) -> None:
    receiver.behaviour = {"status": 500, "body": b"e" * 1_000_000}
    response = send_webhook(receiver.target(), b"{}", {}, max_response_bytes=100)
    assert response.body_prefix == b"e" * 100
    assert response.transient


def test_a_receiver_that_never_answers_times_out(receiver: Receiver) -> None:
    receiver.behaviour = {"sleep": 3}
    started = time.monotonic()
    with pytest.raises(WebhookSendError) as failed:
        send_webhook(receiver.target(), b"{}", {}, connect_timeout=0.5, total_timeout=0.5)
    assert failed.value.reason == "timeout"
    assert failed.value.transient
    assert time.monotonic() - started < 2


def test_a_receiver_trickling_bytes_cannot_outlast_the_total_timeout(receiver: Receiver) -> None:
    # Each byte arrives well within the socket timeout; only the total deadline stops it.
    receiver.behaviour = {"status": 200, "trickle": 0.05}
    started = time.monotonic()
    with pytest.raises(WebhookSendError) as failed:
        send_webhook(receiver.target(), b"{}", {}, total_timeout=0.6, max_response_bytes=100_000)
    assert failed.value.reason == "timeout"
    assert time.monotonic() - started < 2


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = PinnedTarget("http", "127.0.0.1", port, "127.0.0.1", "/")
    with pytest.raises(WebhookSendError) as failed:
        send_webhook(target, b"{}", {}, connect_timeout=1, total_timeout=2)
    assert failed.value.reason == "connection_error"
    assert failed.value.transient


# ------------------------------------------------------------- HTTPS to a pinned address


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_receiver(certificate: tuple[Path, Path]) -> Iterator[Receiver]:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with _serving(context) as state:
        yield state


def test_https_connects_to_the_pinned_ip_with_the_host_name_for_sni_and_host(
    tls_receiver: Receiver, certificate: tuple[Path, Path]
) -> None:
    # Given "hooks.test" resolving to 127.0.0.1 and a certificate for hooks.test
    client = ssl.create_default_context(cafile=str(certificate[0]))
    tls_receiver.behaviour = {"verify_with": [NEW], "status": 202}
    # When a webhook is posted over https
    response = post_webhook(
        tls_receiver.url(host="hooks.test", scheme="https"),
        b'{"x":1}',
        msg_id="act-1",
        secrets=[NEW],
        at=datetime.now(UTC),
        allowed_hosts=["hooks.test"],
        resolver=StaticResolver({"hooks.test": ["127.0.0.1"]}),
        allow_insecure_loopback=True,
        ssl_context=client,
    )
    # Then the certificate matched the host name and the Host header names it too
    assert response.status == 202
    assert tls_receiver.requests[-1]["headers"]["host"] == f"hooks.test:{tls_receiver.port}"


def test_a_certificate_for_another_name_is_a_permanent_failure(
    tls_receiver: Receiver, certificate: tuple[Path, Path]
) -> None:
    client = ssl.create_default_context(cafile=str(certificate[0]))
    target = PinnedTarget("https", "other.test", tls_receiver.port, "127.0.0.1", "/hook")
    with pytest.raises(WebhookSendError) as failed:
        send_webhook(target, b"{}", {}, ssl_context=client)
    assert failed.value.reason == "tls_verification"
    assert not failed.value.transient
    assert tls_receiver.requests == []


def test_the_default_context_does_not_trust_a_self_signed_receiver(
    tls_receiver: Receiver,
) -> None:
    target = PinnedTarget("https", "hooks.test", tls_receiver.port, "127.0.0.1", "/hook")
    with pytest.raises(WebhookSendError) as failed:
        send_webhook(target, b"{}", {})
    assert failed.value.reason == "tls_verification"
