"""A webhook receiver on 127.0.0.1 for the local run and the tests.

It plays the integration endpoints (provisioning, contact centre, agency,
CRM): records every request with its headers and body, verifies the Standard
Webhooks signature with the endpoint's secrets, and answers with the status
scripted for that path (200 by default).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dunning.channels.webhook import DEFAULT_TOLERANCE_S, WebhookVerificationError, verify


@dataclass
class ReceivedWebhook:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """`with WebhookReceiver(secrets) as r:` serves on a free loopback port."""

    secrets: dict[str, list[str]] = field(default_factory=dict)  # path -> secrets
    statuses: dict[str, list[int]] = field(default_factory=dict)  # path -> scripted statuses
    received: list[ReceivedWebhook] = field(default_factory=list)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # the senders' clock
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        secrets = self.secrets.get(path, [])
        try:
            verify(body, headers, secrets, DEFAULT_TOLERANCE_S, self.clock())
            verified = bool(secrets)
        except WebhookVerificationError:
            verified = False
        with self._lock:
            self.received.append(ReceivedWebhook(path, headers, body, verified))
            scripted = self.statuses.get(path)
            return scripted.pop(0) if scripted else 200

    def __enter__(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._handle(self.path, headers, body)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
