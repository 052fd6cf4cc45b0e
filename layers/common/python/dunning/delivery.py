"""Delivering actions: freshness check, send through a channel, record the outcome.

`Delivery.deliver(action, now)` re-reads the account, skips an action whose
case has recovered, been suspended, excluded, stopped or moved on since it was
queued, sends the rest through the channel's `Sender`, applies what the action
changes on the account (service status, write-off, manual task). Senders raise
`TransientSendError` (throttling, 5xx, timeouts: the message goes back to the
queue with backoff) or `PermanentSendError` (rejected address, invalid number,
4xx: recorded as failed and acknowledged).

`ChannelConsumer` makes that exactly-once per action id (Powertools
idempotency) and records every outcome as an audit event before it
acknowledges the message: a record whose outcome could not be written is
reported failed, and its retry replays the saved result (no second send) and
writes the outcome then.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    BasePersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyValidationError
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import TypeAdapter

from dunning.model import (
    AccountView,
    Action,
    ActionType,
    CaseStatus,
    Channel,
    InvoiceStatus,
)
from dunning.observability import count, logger
from dunning.store import DynamoStore, StoredView

ACTION = TypeAdapter(Action)

MAX_VISIBILITY_S = 900


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"


class SendError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientSendError(SendError):
    """Worth retrying later: throttling, 5xx, timeouts."""


class PermanentSendError(SendError):
    """Retrying will not help: rejected address, invalid number, 4xx."""


class Sender(Protocol):
    def send(self, action: Action, view: AccountView) -> str:
        """Deliver `action`; returns the provider's message id."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    action_id: str
    outcome: DeliveryOutcome
    reason: str
    provider_id: str | None = None


def staleness(action: Action, view: AccountView) -> str | None:
    """Why `action` must not go out any more, or None when it still should."""
    if view.excluded_by:
        return "excluded"
    if action.case_id.startswith("R-"):  # pre-due reminder: the invoice must still be open
        invoice_id = action.case_id[2:]
        invoice = next((i for i in view.invoices if i.invoice_id == invoice_id), None)
        if invoice is None or invoice.open_amount == 0 or invoice.status is InvoiceStatus.PAID:
            return "paid"
        return None
    case = next((c for c in view.cases if c.case_id == action.case_id), None)
    if action.level == 0:  # reinstatement after recovery: always wanted
        return None
    if case is None or case.status is CaseStatus.RECOVERED:
        return "recovered"
    if case.status is CaseStatus.SUSPENDED:
        return "suspended"
    if case.status in (CaseStatus.STOPPED, CaseStatus.WRITTEN_OFF):
        return case.status.value
    if case.level > action.level or case.entries.get(action.level, 0) != action.entry:
        return "moved_on"
    # Money that arrived since the decision: the engine has not closed the case
    # yet, but nothing the action is about is still owed.
    wanted = set(action.invoice_ids) or set(case.invoice_ids)
    scope = [i for i in view.invoices if i.invoice_id in wanted]
    if not any(i.status is InvoiceStatus.OPEN and i.open_amount > 0 for i in scope):
        statuses = {i.status for i in scope if i.open_amount > 0}
        if statuses == {InvoiceStatus.DISPUTED}:
            return "disputed"
        if statuses == {InvoiceStatus.IN_PAYMENT_PLAN}:
            return "in_payment_plan"
        return "recovered"
    return None


def backoff_seconds(receive_count: int, base: int = 30, rng: random.Random | None = None) -> int:
    """Exponential backoff with full jitter, capped at SQS's 15 minutes."""
    ceiling = min(MAX_VISIBILITY_S, base * 2 ** max(0, receive_count - 1))
    return int((rng or random.Random()).uniform(1, ceiling))  # noqa: S311 (jitter, not crypto)


class Delivery:
    """Delivers the actions of one SQS batch.

    `preload` reads every account of the batch in one BatchGetItem; `deliver`
    checks freshness against that view, sends, and applies the action's effect;
    `record` writes the outcomes of the batch (audit events and outbox
    statuses) in one BatchWriteItem. With Powertools idempotency (two writes)
    that is about 2.2 DynamoDB requests per message.
    """

    def __init__(self, store: DynamoStore, senders: Mapping[ActionType, Sender]) -> None:
        self.store = store
        self.senders = dict(senders)
        self._views: dict[str, StoredView] = {}

    def preload(self, account_ids: Iterable[str]) -> None:
        self._views = self.store.get_views(account_ids)

    def _view(self, account_id: str) -> StoredView:
        stored = self._views.get(account_id)
        if stored is None:
            stored = self.store.get_view(account_id)
            self._views[account_id] = stored
        return stored

    def deliver(self, action: Action, now: datetime) -> DeliveryResult:
        """Deliver once (the caller makes this idempotent on the action id and
        records the result)."""
        stored = self._view(action.account_id)
        reason = staleness(action, stored.view)
        if reason is not None:
            return DeliveryResult(action.action_id, DeliveryOutcome.SKIPPED, reason)
        sender = self.senders.get(action.type)
        if sender is None:
            reason = f"no sender configured for {action.type.value}"
            return DeliveryResult(action.action_id, DeliveryOutcome.FAILED, reason)
        try:
            provider_id = sender.send(action, stored.view)
        except PermanentSendError as err:
            return DeliveryResult(action.action_id, DeliveryOutcome.FAILED, err.reason)
        if self.store.apply_action_effect(action, now, stored):
            self._views.pop(action.account_id, None)  # changed: a later action re-reads it
        return DeliveryResult(action.action_id, DeliveryOutcome.DELIVERED, "sent", provider_id)

    def record(
        self, outcomes: Iterable[tuple[Action, DeliveryResult, datetime, datetime | None]]
    ) -> None:
        """Write outcomes as audit events and outbox statuses (idempotent puts).

        An action's events are keyed by the time given with it (the time of its
        delivery), so writing the same outcome again overwrites it. One write
        per distinct time: the outcomes of one batch share one. The last time
        is when the action was queued, if known: the outbox record keeps it.
        """
        by_time: dict[datetime, list[tuple[Action, str, str, str | None]]] = {}
        queued: dict[str, datetime] = {}
        seen: set[str] = set()
        for action, result, at, queued_at in outcomes:
            if action.action_id in seen:  # a duplicate message in the same batch
                continue
            seen.add(action.action_id)
            by_time.setdefault(at, []).append(
                (action, result.outcome.value, result.reason, result.provider_id)
            )
            if queued_at is not None:
                queued[action.action_id] = queued_at
        for at, group in by_time.items():
            self.store.record_outcomes(group, at, queued)


IDEMPOTENCY_TTL_S = 15 * 24 * 3600  # longer than the DLQ's 14 days of retention
TIME_MARGIN_MS = 10_000


class OutOfTimeError(Exception):
    """Too little time left in the invocation: the record goes back to the queue."""


def _queued_at(record: SQSRecord) -> datetime | None:
    """The `queued_at` message attribute the evaluator set, if any (and valid)."""
    attribute = record.message_attributes["queued_at"]  # (`.get` skips the wrapper)
    value = attribute.string_value if attribute is not None else None
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Handled:
    """One record's outcome, waiting to be recorded at the end of the batch."""

    message_id: str
    action: Action
    result: DeliveryResult
    at: datetime
    replayed: bool  # a duplicate message: the saved result of an earlier delivery
    queued_at: datetime | None  # when the evaluator queued it (message attribute)


class ChannelConsumer:
    """Consumes one channel queue: partial batch responses, idempotency on the
    action id, a remaining-time check per record, backoff for transient errors.

    An outcome is durable before its message is acknowledged: the outcomes of
    the batch are written after the records are handled, and when that write
    fails every record whose outcome it carried is reported failed. Its retry
    finds the idempotency record completed, gets the saved result back without
    sending again, and writes the outcome with the time saved in that result,
    so a rewrite overwrites rather than duplicates.
    """

    def __init__(
        self,
        delivery: Delivery,
        persistence: BasePersistenceLayer,
        sqs: Any,
        queue_url: str,
        clock: Callable[[], datetime],
        channel: Channel,
        retry_base_s: int = 30,
    ) -> None:
        self.channel = channel
        self.retry_base_s = retry_base_s
        self.delivery = delivery
        self.sqs = sqs
        self.queue_url = queue_url
        self.clock = clock
        self.config = IdempotencyConfig(
            event_key_jmespath="action_id",
            payload_validation_jmespath="[type, case_id, level, entry, index, template]",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=IDEMPOTENCY_TTL_S,
            response_hook=_mark_replayed,
        )
        self.processor = BatchProcessor(
            event_type=EventType.SQS, raise_on_entire_batch_failure=False
        )

        def deliver_once(message: dict[str, Any], action: Action, at: datetime) -> dict[str, Any]:
            # `message` is the idempotency payload; `action` is that message, validated.
            result = self.delivery.deliver(action, self.clock())
            return {
                "outcome": result.outcome.value,
                "reason": result.reason,
                "provider_id": result.provider_id,
                "at": at.isoformat(),
            }

        self._deliver_once: Callable[..., dict[str, Any]] = idempotent_function(
            deliver_once,
            data_keyword_argument="message",
            persistence_store=persistence,
            config=self.config,
        )

    def handle(self, event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        self.config.register_lambda_context(context)
        batch_at = self.clock()
        account_ids = set()
        for record in event.get("Records", []):
            try:
                account_ids.add(json.loads(record["body"])["account_id"])
            except (ValueError, KeyError, TypeError):
                continue  # a poison record fails on its own below
        self.delivery.preload(account_ids)
        handled: list[_Handled] = []

        def record_handler(record: SQSRecord) -> None:
            if context.get_remaining_time_in_millis() < TIME_MARGIN_MS:
                raise OutOfTimeError("too little time left; the message goes back to the queue")
            message = json.loads(record.body)
            if not isinstance(message, dict):
                raise ValueError("an action message is a JSON object")
            action = ACTION.validate_python(message, strict=False)
            handled.append(self._handle_one(record, message, action, batch_at))

        response = process_partial_response(
            event=event,
            record_handler=record_handler,
            processor=self.processor,
            context=context,
        )
        self._report(handled)
        try:
            self.delivery.record((h.action, h.result, h.at, h.queued_at) for h in handled)
        except Exception:
            logger.exception(
                "recording outcomes failed; their messages go back to the queue",
                extra={"records": len(handled)},
            )
            return _failing(response, [h.message_id for h in handled])
        return response

    def _handle_one(
        self, record: SQSRecord, message: dict[str, Any], action: Action, batch_at: datetime
    ) -> _Handled:
        try:
            saved = self._deliver_once(message=message, action=action, at=batch_at)
        except TransientSendError as err:
            receives = int(record.attributes.approximate_receive_count or 1)
            count(
                "ActionOutcomes",
                channel=self.channel.value,
                level=str(action.level),
                outcome="retried",
            )
            logger.warning(
                "transient delivery failure",
                extra={
                    "message_id": record.message_id,
                    "action_id": action.action_id,
                    "reason": err.reason,
                },
            )
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=backoff_seconds(receives, self.retry_base_s),
            )
            raise
        except IdempotencyValidationError:
            # The same action id with a different action: never sent, never
            # acknowledged; it ends in the DLQ for a person to look at.
            logger.error(
                "action id reused with a different payload; not sent",
                extra={"message_id": record.message_id, "action_id": action.action_id},
            )
            raise
        at = saved.get("at")
        return _Handled(
            message_id=record.message_id,
            action=action,
            result=DeliveryResult(
                action.action_id,
                DeliveryOutcome(saved["outcome"]),
                str(saved["reason"]),
                saved.get("provider_id"),
            ),
            at=datetime.fromisoformat(at) if at else batch_at,
            replayed=bool(saved.get("replayed")),
            queued_at=_queued_at(record),
        )

    def _report(self, handled: Iterable[_Handled]) -> None:
        """Log and count each outcome once: when it happened, not when replayed."""
        tally: Counter[tuple[str, str]] = Counter()
        for h in handled:
            if h.replayed:
                logger.info(
                    "duplicate action message; saved outcome recorded again",
                    extra={"action_id": h.action.action_id, "message_id": h.message_id},
                )
                continue
            tally[(str(h.action.level), h.result.outcome.value)] += 1
            logger.info(
                "action outcome",
                extra={
                    "action_id": h.action.action_id,
                    "account_id": h.action.account_id,
                    "channel": h.action.channel.value,
                    "type": h.action.type.value,
                    "level": h.action.level,
                    "outcome": h.result.outcome.value,
                    "reason": h.result.reason,
                },
            )
        for (level, outcome), n in sorted(tally.items()):
            count("ActionOutcomes", n, channel=self.channel.value, level=level, outcome=outcome)


def _mark_replayed(response: Any, idempotent_data: DataRecord) -> Any:
    """Idempotency response hook: a saved result is flagged as a replay."""
    if isinstance(response, dict):
        return {**response, "replayed": True}
    return response


def _failing(
    response: PartialItemFailureResponse, message_ids: Iterable[str]
) -> PartialItemFailureResponse:
    """`response` with `message_ids` added to its failed items."""
    failures = list(response.get("batchItemFailures", []))
    known = {f["itemIdentifier"] for f in failures}
    failures += [{"itemIdentifier": m} for m in message_ids if m not in known]
    return {"batchItemFailures": failures}
