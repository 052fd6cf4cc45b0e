"""`dunning serve`: the API on 127.0.0.1, backed by the in-process emulation.

Every `/v1/...` request becomes the API Gateway proxy event the API function
gets in AWS (roles from `Authorization: Bearer local:<role>[:<user>]` or the
`X-Dunning-Role` header, standing in for a Cognito token). Swagger UI is at
`/v1/docs`. Local-only routes, which AWS does not have:

- `POST /local/schedule` `{"at": "<instant>"}`: fire the schedule at that
  instant (the functions' clock moves there), then run the channel functions;
- `POST /local/clock` `{"at": "<instant>"}`: set the functions' clock (what
  API writes are stamped with); `{"at": null}` goes back to the wall clock;
- `POST /local/deliver`: run the channel functions on what their queues hold;
- `GET /local/delivered`: the emails, SMS and webhooks sent so far;
- `POST /local/save`: write the state file now (also written on exit).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends

from dunning import aws, clock
from dunning.store.scan import scan_items
from local.apigw import ApiResponse, wsgi_app
from local.cloud import LOCAL_ENV, LocalCloud
from local.portfolio import standard_calendar, standard_policies, standard_rules
from local.receiver import WebhookReceiver


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")


def _json(status: int, body: Any) -> ApiResponse:
    return ApiResponse(status, {"Content-Type": "application/json"}, json.dumps(body, default=str))


class LocalServer:
    def __init__(self, stack: LocalCloud, receiver: WebhookReceiver, state: Path | None) -> None:
        self.stack = stack
        self.receiver = receiver
        self.state = state
        self.now: datetime | None = None  # None: the wall clock

    # ----------------------------------------------------------------- state

    def seed_configuration(self) -> None:
        store = self.stack.store()
        start = datetime.now(UTC) - timedelta(days=365)
        for policy in standard_policies():
            store.put_policy(policy, "local", start)
            store.activate_policy(policy.policy_id, policy.version)
        store.put_calendar(standard_calendar())
        store.put_rules(standard_rules(), "consumer")

    def save(self) -> int:
        if self.state is None:
            return 0
        items = list(scan_items(self.stack.store()))
        self.state.write_text(json.dumps({"items": items}), encoding="utf-8")
        return len(items)

    def load(self) -> int:
        assert self.state is not None
        items = json.loads(self.state.read_text(encoding="utf-8"))["items"]
        self.stack.store().batch_write([{"PutRequest": {"Item": it}} for it in items])
        return len(items)

    # ---------------------------------------------------------------- routes

    def local_routes(self, method: str, path: str, request: dict[str, Any]) -> ApiResponse | None:
        if not path.startswith("/local/"):
            return None
        body = json.loads(request["body"] or b"{}") if request["body"] else {}
        if (method, path) == ("POST", "/local/schedule"):
            raw = body.get("at") or request["query"].get("at")
            if not isinstance(raw, str):
                return _json(400, {"code": "bad_request", "message": "give {'at': <instant>}"})
            at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if at.tzinfo is None:
                return _json(400, {"code": "bad_request", "message": "the instant needs a zone"})
            self.now = at
            run = self.stack.evaluate(at)
            delivered = self.stack.deliver()
            return _json(
                200,
                {
                    "at": at.isoformat(),
                    "shard_tasks": run.received,
                    "delivered": {q: r.received for q, r in delivered.items()},
                },
            )
        if (method, path) == ("POST", "/local/clock"):
            raw = body.get("at")
            if raw is None:
                self.now = None
                return _json(200, {"clock": "wall"})
            at = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            if at.tzinfo is None:
                return _json(400, {"code": "bad_request", "message": "the instant needs a zone"})
            self.now = at
            return _json(200, {"clock": at.isoformat()})
        if (method, path) == ("POST", "/local/deliver"):
            delivered = self.stack.deliver()
            return _json(200, {"delivered": {q: r.received for q, r in delivered.items()}})
        if (method, path) == ("GET", "/local/delivered"):
            region = os.environ["AWS_DEFAULT_REGION"]
            emails = [
                {
                    "to": m.destinations.get("ToAddresses", []),
                    "subject": m.subject,
                    "body": m.body,
                }
                for m in ses_backends[DEFAULT_ACCOUNT_ID][region].sent_messages
            ]
            sms = [
                {"to": number, "text": text}
                for number, text in sns_backends[DEFAULT_ACCOUNT_ID][region].sms_messages.values()
            ]
            hooks = [
                {"path": w.path, "verified": w.verified, "body": w.json()}
                for w in self.receiver.received
            ]
            return _json(200, {"emails": emails, "sms": sms, "webhooks": hooks})
        if (method, path) == ("POST", "/local/save"):
            return _json(200, {"saved_items": self.save()})
        return _json(404, {"code": "not_found", "message": "no such local route"})


def _serve_until_stopped(httpd: WSGIServer) -> None:
    """Serve until Ctrl-C or SIGTERM (a process manager, `kill`), then return
    once the request in progress is answered.

    The server runs in a thread and the signal only sets an event: an exception
    raised in the middle of a request would be caught by wsgiref's error
    handler and the server would go on. SIGINT is set explicitly: a shell
    without job control starts background commands with SIGINT ignored, and
    Python keeps an inherited SIG_IGN."""
    stopped = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopped.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = threading.Thread(target=httpd.serve_forever, name="dunning-serve", daemon=True)
    worker.start()
    try:
        while not stopped.wait(0.2):
            if not worker.is_alive():
                break
    finally:
        httpd.shutdown()
        worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(port: int, state: Path | None) -> int:
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    aws.reset_clients()
    with mock_aws(), WebhookReceiver(clock=clock.now) as receiver:
        stack = LocalCloud(webhook_base=receiver.url("")).create()
        for endpoint, secret in stack.secrets.items():
            receiver.secrets[f"/{endpoint}"] = [secret]
        server = LocalServer(stack, receiver, state)
        if state is not None and state.exists():
            print(f"loaded {server.load()} items from {state}", file=sys.stderr)
        else:
            server.seed_configuration()
        clock.use(lambda: server.now or datetime.now(UTC))
        app = wsgi_app(stack.functions["api"], server.local_routes)
        httpd: WSGIServer = make_server("127.0.0.1", port, app, handler_class=_Quiet)
        actual = httpd.server_address[1]
        print(
            f"dunning API on http://127.0.0.1:{actual}/v1 (Swagger UI: /v1/docs); "
            f"local routes under /local; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        print(f"listening {actual}", flush=True)
        try:
            _serve_until_stopped(httpd)
        finally:
            httpd.server_close()
            if state is not None:
                print(f"saved {server.save()} items to {state}", file=sys.stderr)
            clock.use(None)
    return 0
