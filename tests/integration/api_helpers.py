"""Shared setup of the API tests: the local stack, a client, and seed data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dunning import clock
from local.apigw import ApiClient, ApiResponse
from local.cloud import LocalCloud
from local.portfolio import seed_book

# A Tuesday, 10:00 UTC.
NOW = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
ROLES = ("admin", "collector", "billing", "viewer")


class Api:
    def __init__(self, stack: LocalCloud) -> None:
        self.stack = stack
        self.client = ApiClient(stack.functions["api"])

    def __call__(
        self,
        method: str,
        path: str,
        role: str | None = "admin",
        body: Any = None,
        **kw: Any,
    ) -> ApiResponse:
        return self.client.call(method, f"/v1{path}", role=role, json_body=body, **kw)

    def ok(self, method: str, path: str, role: str = "admin", body: Any = None, **kw: Any) -> Any:
        response = self(method, path, role, body, **kw)
        assert response.status < 300, (response.status, response.text)
        return response.json()


def seed_configuration(stack: LocalCloud) -> None:
    seed_book(stack.store(), NOW)


def account_body(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Anna Schmidt",
        "currency": "EUR",
        "locale": "de",
        "timezone": "Europe/Berlin",
        "email": "anna@example.com",
        "phone": "+4915112345678",
    }
    body.update(kw)
    return body


def invoice_body(invoice_id: str, days_overdue: int, amount: str = "120.00") -> dict[str, Any]:
    due = (NOW - timedelta(days=days_overdue)).date()
    return {
        "invoice_id": invoice_id,
        "currency": "EUR",
        "amount": amount,
        "issue_date": str(due - timedelta(days=30)),
        "due_date": str(due),
    }


def payment_body(payment_id: str, amount: str, **kw: Any) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "currency": "EUR",
        "amount": amount,
        "received_at": NOW.isoformat(),
        **kw,
    }


@pytest.fixture
def stack(aws_env: None) -> Iterator[LocalCloud]:
    clock.use(lambda: NOW)
    cloud = LocalCloud(shards=2).create()
    seed_configuration(cloud)
    yield cloud
    clock.use(None)


@pytest.fixture
def api(stack: LocalCloud) -> Api:
    return Api(stack)
