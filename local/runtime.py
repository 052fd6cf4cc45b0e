"""What Lambda does around our handlers, done locally: contexts, environments,
and the SQS event source mapping.

moto emulates the AWS services but cannot invoke a Lambda function (that needs
Docker) nor run an SQS event source mapping. This module does those two
things the way the Lambda service does, and nothing more: the handlers are the
real ones, called with the events Lambda would build.

- `LocalContext` is the context object: name, request id, a remaining-time
  clock (real or scripted).
- `LocalFunction` is one deployed function: its handler and the environment
  infra gives it, applied at every invocation (settings are re-read, as a
  fresh execution environment would).
- `SqsEventSource` polls a queue like the event source mapping: receives up
  to `batch_size` messages, builds the SQS event, invokes, and deletes what
  the partial batch response does not report as failed. Failed messages stay
  in the queue; moto moves them to the DLQ after `maxReceiveCount` receives.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dunning import settings
from dunning.observability import logger

REGION = "eu-west-1"
ACCOUNT = "123456789012"


@dataclass
class LocalContext:
    """The Lambda context: what Powertools and our handlers read from it."""

    function_name: str = "dunning-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    timeout_ms: int = 300_000
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining: Callable[[], int] | None = None
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local/[$LATEST]0"

    def get_remaining_time_in_millis(self) -> int:
        if self.remaining is not None:
            return self.remaining()
        return max(0, self.timeout_ms - int((time.monotonic() - self._started) * 1000))


# The function folders (`functions/<x>/`) are Lambda assets, not an installed
# package: like Lambda, which puts an asset on the path, the local runtime puts
# the checkout that holds them on the path.
REPOSITORY = Path(__file__).resolve().parents[1]


def _import(module: str) -> Any:
    if str(REPOSITORY) not in sys.path:
        sys.path.insert(0, str(REPOSITORY))
    return importlib.import_module(module)


def _clear_settings() -> None:
    for name in dir(settings):
        factory = getattr(settings, name)
        if callable(factory) and hasattr(factory, "cache_clear") and name.endswith("_settings"):
            factory.cache_clear()


@dataclass
class LocalFunction:
    """A function as infra deploys it: `module:handler` and its environment."""

    name: str
    handler: str  # "functions.actions.mail:handler"
    environment: Mapping[str, str]
    timeout_ms: int = 300_000
    _warm: bool = False

    def _callable(self) -> Callable[[dict[str, Any], Any], Any]:
        module, attr = self.handler.split(":")
        fn: Callable[[dict[str, Any], Any], Any] = getattr(_import(module), attr)
        return fn

    def cold_start(self) -> None:
        """A new execution environment: forget what the module built on first use."""
        module = _import(self.handler.split(":")[0])
        for name in dir(module):
            built = getattr(module, name)
            if name.startswith("build_") and hasattr(built, "cache_clear"):
                built.cache_clear()

    def invoke(self, event: dict[str, Any], remaining: Callable[[], int] | None = None) -> Any:
        if not self._warm:  # the first invocation of this function starts it cold
            self.cold_start()
            self._warm = True
        os.environ.update(self.environment)
        _clear_settings()
        context = LocalContext(self.name, timeout_ms=self.timeout_ms, remaining=remaining)
        return self._callable()(event, context)


def queue_arn(url: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{url.rsplit('/', 1)[-1]}"


def sqs_record(message: Mapping[str, Any], url: str) -> dict[str, Any]:
    """One record of an SQS event, as the event source mapping builds it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            # the event source mapping's shape: camelCase keys
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "dataType": value["DataType"],
                "stringListValues": [],
                "binaryListValues": [],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn(url),
        "awsRegion": REGION,
    }


@dataclass
class PollResult:
    received: int = 0
    failed: int = 0
    invocations: int = 0


@dataclass
class SqsEventSource:
    """An event source mapping from one queue to one function."""

    sqs: Any
    queue_url: str
    function: LocalFunction
    batch_size: int = 10

    def receive(self) -> list[dict[str, Any]]:
        out = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.batch_size, 10),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = out.get("Messages", [])
        return messages

    def invoke_batch(self, messages: list[dict[str, Any]]) -> PollResult:
        """Invoke the function on one batch and delete what succeeded."""
        event = {"Records": [sqs_record(m, self.queue_url) for m in messages]}
        try:
            response = self.function.invoke(event) or {}
        except Exception:  # a function error: Lambda deletes nothing of the batch
            logger.exception("function error", extra={"function": self.function.name})
            return PollResult(len(messages), len(messages), 1)
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for i in range(0, len(done), 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(done[i : i + 10])
                ],
            )
        return PollResult(len(messages), len(failed), 1)

    def poll_once(self) -> PollResult:
        messages = self.receive()
        if not messages:
            return PollResult()
        return self.invoke_batch(messages)

    def drain(self, max_batches: int = 100_000) -> PollResult:
        """Poll until the queue shows nothing visible (failed messages wait out
        their visibility timeout, as they would in AWS)."""
        total = PollResult()
        for _ in range(max_batches):
            result = self.poll_once()
            if not result.received:
                break
            total.received += result.received
            total.failed += result.failed
            total.invocations += result.invocations
        return total
