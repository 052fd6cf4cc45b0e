"""The deployment's shape, defined once: functions, queues and their settings.

The CDK app (`infra/`) deploys exactly this, and the local run (`local/`)
emulates exactly this, so a function has the same handler, timeout, settings
and queue wiring in both. Pure data: no AWS, no CDK.
"""

from __future__ import annotations

from dataclasses import dataclass

from dunning.settings import (
    ActionSettings,
    ApiSettings,
    EvaluateSettings,
    ReportSettings,
    _Settings,
)

# Queues: every queue has a DLQ; a message moves there after this many receives.
MAX_RECEIVE_COUNT = 5
DLQ_RETENTION_DAYS = 14
QUEUE_RETENTION_DAYS = 4
# Lambda's event source mapping: visibility at least six times the function timeout.
VISIBILITY_FACTOR = 6
SQS_BATCH_SIZE = 10


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # logical name: dispatch, worker, report, mail, sms, webhook, api
    folder: str  # functions/<folder>/ is the asset
    handler: str  # "<module>.<function>" inside the folder
    timeout_s: int
    memory_mb: int
    settings: type[_Settings]
    queue: str | None = None  # the queue it consumes, if any

    @property
    def module(self) -> str:
        """The import path from the repository root (tests, local run)."""
        return f"functions.{self.folder}.{self.handler.rsplit('.', 1)[0]}"

    @property
    def attribute(self) -> str:
        return self.handler.rsplit(".", 1)[1]


FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec("dispatch", "evaluate", "handler.dispatch", 60, 512, EvaluateSettings),
    FunctionSpec("worker", "evaluate", "handler.worker", 300, 1024, EvaluateSettings, "shards"),
    FunctionSpec("report", "evaluate", "handler.report", 300, 1024, ReportSettings),
    FunctionSpec("mail", "actions", "mail.handler", 60, 512, ActionSettings, "email"),
    FunctionSpec("sms", "actions", "sms.handler", 60, 512, ActionSettings, "sms"),
    FunctionSpec("webhook", "actions", "webhook.handler", 60, 512, ActionSettings, "webhook"),
    FunctionSpec("api", "api", "handler.handler", 29, 1024, ApiSettings),
)
QUEUES = ("shards", "email", "sms", "webhook")


def function(name: str) -> FunctionSpec:
    return next(f for f in FUNCTIONS if f.name == name)


def visibility_timeout_s(queue: str) -> int:
    consumer = next(f for f in FUNCTIONS if f.queue == queue)
    return consumer.timeout_s * VISIBILITY_FACTOR
