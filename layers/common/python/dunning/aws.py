"""AWS clients from cached factories (no I/O at import) and request accounting.

Clients are created on first use, so moto can patch them in tests and tools can
import the package without credentials. `RequestCounter` counts AWS requests
per service and operation through botocore's event hooks, for tests and
benchmarks.
"""

from __future__ import annotations

import threading
from collections import Counter
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_ses import SESClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sqs import SQSClient

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=10
)
_created: list[Any] = []
_counters: list[RequestCounter] = []
_lock = threading.Lock()


def _track(client: Any) -> Any:
    with _lock:
        _created.append(client)
        for counter in _counters:
            counter.attach(client)
    return client


@cache
def dynamodb() -> DynamoDBClient:
    return _track(boto3.client("dynamodb", config=_CONFIG))  # type: ignore[no-any-return]


@cache
def sqs() -> SQSClient:
    return _track(boto3.client("sqs", config=_CONFIG))  # type: ignore[no-any-return]


@cache
def ses() -> SESClient:
    return _track(boto3.client("ses", config=_CONFIG))  # type: ignore[no-any-return]


@cache
def sns() -> SNSClient:
    return _track(boto3.client("sns", config=_CONFIG))  # type: ignore[no-any-return]


@cache
def secretsmanager() -> SecretsManagerClient:
    return _track(boto3.client("secretsmanager", config=_CONFIG))  # type: ignore[no-any-return]


def reset_clients() -> None:
    """Forget cached clients (tests start a fresh moto backend per test)."""
    for factory in (dynamodb, sqs, ses, sns, secretsmanager):
        factory.cache_clear()
    with _lock:
        _created.clear()


class RequestCounter:
    """Counts AWS requests per `service.Operation` on every client it watches."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def _on_call(self, model: Any, **_: Any) -> None:
        self.counts[f"{model.service_model.service_name}.{model.name}"] += 1

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call.*.*", self._on_call, unique_id=f"count-{id(self)}")

    def __enter__(self) -> RequestCounter:
        with _lock:
            _counters.append(self)
            for client in _created:
                self.attach(client)
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _counters.remove(self)
            for client in _created:
                client.meta.events.unregister("before-call.*.*", unique_id=f"count-{id(self)}")

    def total(self, prefix: str = "") -> int:
        return sum(n for op, n in self.counts.items() if op.startswith(prefix))

    def reset(self) -> None:
        self.counts.clear()
