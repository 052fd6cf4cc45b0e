"""`dunning serve` on a free loopback port, driven over real HTTP: ingest an
overdue account, run the schedule, see the reminder delivered and explained."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _listening(out: Path, proc: subprocess.Popen[bytes], seconds: float = 120) -> int:
    """The port the server prints (`listening <port>`) once it is up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("listening "):
                return int(line.split()[1])
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError("the server did not start")


@pytest.fixture(params=[signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = tmp_path / "stdout.log"
    err = tmp_path / "stderr.log"
    # Its stdout (the port, then the functions' JSON logs) and stderr go to files:
    # a pipe nobody reads fills up and blocks the server.
    with out.open("wb") as sink, err.open("wb") as errors:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local.cli",
                "serve",
                "--port",
                "0",
                "--state",
                str(tmp_path / "s.json"),
            ],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=errors,
        )
    try:
        yield f"http://127.0.0.1:{_listening(out, proc)}"
    finally:
        proc.send_signal(request.param)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert (tmp_path / "s.json").exists(), (
        f"the state is saved on exit (exit code {proc.returncode}); stderr:\n"
        + err.read_text()[-3000:]
    )


def call(
    base: str, method: str, path: str, role: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if role:
        headers["Authorization"] = f"Bearer local:{role}:tester"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode() or "null")


def test_one_flow_over_http(server: str) -> None:
    # The functions' clock: a Tuesday at 10:00 in Paris
    now = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    assert call(server, "POST", "/local/clock", body={"at": now.isoformat()})[0] == 200
    # The role checks apply locally too
    assert call(server, "GET", "/v1/policies")[0] == 401
    assert call(server, "PUT", "/v1/accounts/acc-1", "viewer", {"currency": "EUR"})[0] == 403
    # Given an account whose invoice is 12 days overdue, from the billing system
    status, _ = call(
        server,
        "PUT",
        "/v1/accounts/acc-1",
        "billing",
        {"currency": "EUR", "locale": "fr", "timezone": "Europe/Paris", "email": "lea@example.com"},
    )
    assert status == 201
    due = (now - timedelta(days=12)).date()
    status, _ = call(
        server,
        "PUT",
        "/v1/accounts/acc-1/invoices/inv-1",
        "billing",
        {
            "invoice_id": "inv-1",
            "currency": "EUR",
            "amount": "250.00",
            "issue_date": str(due - timedelta(days=30)),
            "due_date": str(due),
        },
    )
    assert status == 201
    # When the schedule runs at that instant (local-only route)
    status, run = call(server, "POST", "/local/schedule", body={"at": now.isoformat()})
    assert status == 200 and run["delivered"]["email"] == 1
    # Then the reminder went out in French, and the timeline explains the case
    _, sent = call(server, "GET", "/local/delivered")
    [mail] = sent["emails"]
    assert mail["to"] == ["lea@example.com"]
    assert "250,00" in mail["body"]
    status, timeline = call(server, "GET", "/v1/accounts/acc-1/timeline", "viewer")
    kinds = [e["kind"] for e in timeline["items"]]
    assert "case_opened" in kinds and "action_delivered" in kinds
    opened = next(e for e in timeline["items"] if e["kind"] == "case_opened")
    assert opened["data"]["explanation"]["days_overdue"] == 12
    # ... and the Swagger UI is served
    request = urllib.request.Request(f"{server}/v1/docs")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert "swagger" in response.read().decode().lower()
    # Over HTTP, a body that is not JSON gets its status line's reason phrase ...
    form = urllib.request.Request(
        f"{server}/v1/accounts/acc-2",
        data=b"currency=EUR",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "Bearer local:billing",
        },
        method="PUT",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(form, timeout=30)
    assert (refused.value.code, refused.value.reason) == (415, "Unsupported Media Type")
    refused.value.close()
    # ... and a 204 carries no body and no content type
    draft = {
        "policy_id": "p-x",
        "name": "P",
        "thresholds": {"EUR": "10"},
        "levels": [{"name": "a", "days": 5}],
    }
    assert call(server, "POST", "/v1/policies/p-x/versions", "admin", draft)[0] == 201
    delete = urllib.request.Request(
        f"{server}/v1/policies/p-x/versions/1",
        headers={"Authorization": "Bearer local:admin"},
        method="DELETE",
    )
    with urllib.request.urlopen(delete, timeout=30) as response:
        assert response.status == 204 and response.read() == b""
        assert response.headers.get("Content-Type") is None
