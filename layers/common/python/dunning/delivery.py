"""Delivering actions: freshness check, send through a channel, record the outcome.

`Delivery.deliver(action, now)` re-reads the account, skips an action whose
case has recovered, been suspended, excluded, stopped or moved on since it was
queued, sends the rest through the channel's `Sender`, applies what the action
changes on the account (service status, write-off, manual task). Senders raise
`TransientSendError` (throttling, 5xx, timeouts: the message goes back to the
queue with backoff) or `PermanentSendError` (rejected address, invalid number,
4xx: recorded as failed and acknowledged).

`ChannelConsumer` makes that exactly-once per action id on the action's own
outbox record: it reads the batch's accounts and outbox records in one
BatchGetItem, claims the unsent ones in one conditional transaction (`sending`
until the invocation's deadline), sends, and writes every outcome (audit event
and final outbox status, with the provider's message id) before it
acknowledges the message. A duplicate message finds the final status and
replays it without sending; one that arrives while another invocation holds the
claim goes back to the queue; a claim left by a crashed invocation ends at its
deadline, and the retry may claim it again.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from uuid import uuid4

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import TypeAdapter, ValidationError

from dunning.model import (
    AccountView,
    Action,
    ActionType,
    CaseStatus,
    Channel,
    InvoiceStatus,
)
from dunning.observability import count, logger
from dunning.store import DynamoStore, OutboxRecord, StoredView
from dunning.store.dynamo import OUTCOMES

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

    `preload` reads every account and outbox record of the batch in one
    BatchGetItem; `claim` takes the unsent ones in one conditional
    transaction; `deliver` checks freshness against the view, sends, and
    applies the action's effect; `record` writes the outcomes of the batch
    (audit events and final outbox statuses) in one BatchWriteItem. About 0.4
    DynamoDB requests per message in batches of ten.
    """

    def __init__(self, store: DynamoStore, senders: Mapping[ActionType, Sender]) -> None:
        self.store = store
        self.senders = dict(senders)
        self._views: dict[str, StoredView] = {}
        self._outbox: dict[str, OutboxRecord] = {}

    def preload(self, actions: Iterable[Action]) -> None:
        self._views, self._outbox = self.store.delivery_state(list(actions))

    def outbox(self, action_id: str) -> OutboxRecord | None:
        """The action's outbox record as `preload` read it (None: there is none)."""
        return self._outbox.get(action_id)

    def _view(self, account_id: str) -> StoredView:
        stored = self._views.get(account_id)
        if stored is None:
            stored = self.store.get_view(account_id)
            self._views[account_id] = stored
        return stored

    def deliver(self, action: Action, now: datetime) -> DeliveryResult:
        """Deliver once (the caller holds the action's claim and records the result)."""
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
        self,
        outcomes: Iterable[tuple[Action, DeliveryResult, datetime, datetime | None]],
        *,
        transaction: bool = False,
    ) -> None:
        """Write outcomes as audit events and final outbox statuses (idempotent puts).

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
            self.store.record_outcomes(group, at, queued, transaction=transaction)


TIME_MARGIN_MS = 10_000
# What must match between a message and the outbox record of its action id
# for the message to be that action (the rest is its schedule and provenance).
IDENTITY = ("type", "case_id", "level", "entry", "index", "template")


class OutOfTimeError(Exception):
    """Too little time left in the invocation: the record goes back to the queue."""


class InProgressError(Exception):
    """Another invocation holds the action's claim: the record goes back to the queue."""


class RefusedActionError(Exception):
    """A message that is not an action of the outbox: never sent, never acknowledged
    (it ends in the DLQ for a person to look at)."""


def _identity(action: Action) -> tuple[object, ...]:
    return tuple(getattr(action, name) for name in IDENTITY)


def _queued_at(record: SQSRecord) -> datetime | None:
    """The `queued_at` message attribute the evaluator set, if any (and valid)."""
    attribute = record.message_attributes["queued_at"]  # (`.get` skips the wrapper)
    value = attribute.string_value if attribute is not None else None
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _parse(body: str) -> Action:
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("an action message is a JSON object")
    return ACTION.validate_python(message, strict=False)


@dataclass(frozen=True, slots=True)
class _Handled:
    """One record's outcome, waiting to be recorded at the end of the batch."""

    message_id: str
    action: Action
    result: DeliveryResult
    at: datetime
    replayed: bool  # a duplicate message: the saved outcome of an earlier delivery
    queued_at: datetime | None  # when the evaluator queued it (message attribute)


class ChannelConsumer:
    """Consumes one channel queue: partial batch responses, exactly once per
    action id (claims on the outbox records), a remaining-time check per record,
    backoff for transient errors.

    An outcome is durable before its message is acknowledged: the outcomes of
    the batch are written after the records are handled (a BatchWriteItem; when
    that fails, a transaction of the same puts). When both fail, every record
    whose outcome they carried is reported failed; the claims hold until the
    invocation's deadline, so a retry before then sends nothing.
    """

    def __init__(
        self,
        delivery: Delivery,
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
        self.processor = BatchProcessor(
            event_type=EventType.SQS, raise_on_entire_batch_failure=False
        )

    def handle(self, event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
        batch_at = self.clock()
        actions: dict[str, Action] = {}
        for record in event.get("Records", []):
            try:
                actions[record["messageId"]] = _parse(record["body"])
            except (ValueError, KeyError, TypeError, ValidationError):
                continue  # a poison record fails on its own below
        self.delivery.preload(actions.values())
        token = _token(context)
        claimed = self._claim(list(actions.values()), batch_at, context, token)
        handled: dict[str, _Handled] = {}  # by action id: the first message of each
        replays: list[_Handled] = []
        unsent: dict[str, Action] = {}  # claimed, not sent: given back at the end

        def record_handler(record: SQSRecord) -> None:
            action = actions.get(record.message_id) or _parse(record.body)  # poison: raises
            if action.action_id in unsent:  # its first message in this batch went back
                raise InProgressError("an earlier message of this action goes back to the queue")
            first = handled.get(action.action_id)
            if first is not None:  # the same action twice in one batch: one send
                replays.append(replace(first, message_id=record.message_id, replayed=True))
                return
            if context.get_remaining_time_in_millis() < TIME_MARGIN_MS:
                if action.action_id in claimed:
                    unsent[action.action_id] = action
                raise OutOfTimeError("too little time left; the message goes back to the queue")
            handled[action.action_id] = self._handle_one(
                record, action, batch_at, action.action_id in claimed, unsent
            )

        response = process_partial_response(
            event=event,
            record_handler=record_handler,
            processor=self.processor,
            context=context,
        )
        if unsent:
            self._release(list(unsent.values()), token)
        done = [*handled.values(), *replays]
        self._report(done)
        return self._record(response, done)

    def _claim(
        self, actions: list[Action], batch_at: datetime, context: LambdaContext, token: str
    ) -> set[str]:
        """Claim the batch's unsent actions until the invocation's deadline (none
        when too little time is left: every record then goes back unsent)."""
        remaining = context.get_remaining_time_in_millis()
        if remaining < TIME_MARGIN_MS:
            return set()
        wanted: dict[str, Action] = {}
        for action in actions:
            record = self.delivery.outbox(action.action_id)
            if (
                record is not None
                and record.claimable(batch_at)
                and _identity(record.action) == _identity(action)
            ):
                wanted[action.action_id] = action
        until = batch_at + timedelta(milliseconds=remaining)
        got = self.delivery.store.claim(list(wanted.values()), batch_at, until, token)
        return {a.action_id for a in got}

    def _release(self, actions: list[Action], token: str) -> None:
        try:
            self.delivery.store.release(actions, token)
        except Exception:  # the claims end at the deadline anyway
            logger.exception("giving back claims failed", extra={"records": len(actions)})

    def _handle_one(
        self,
        record: SQSRecord,
        action: Action,
        batch_at: datetime,
        claimed: bool,
        unsent: dict[str, Action],
    ) -> _Handled:
        stored = self.delivery.outbox(action.action_id)
        if stored is None:
            logger.error(
                "no outbox record for this action id; not sent",
                extra={"message_id": record.message_id, "action_id": action.action_id},
            )
            raise RefusedActionError("no outbox record for this action id")
        if _identity(stored.action) != _identity(action):
            # The same action id with a different action: never sent, never
            # acknowledged; it ends in the DLQ for a person to look at.
            logger.error(
                "action id reused with a different payload; not sent",
                extra={"message_id": record.message_id, "action_id": action.action_id},
            )
            raise RefusedActionError("action id reused with a different payload")
        if stored.status in OUTCOMES:  # delivered before: its outcome again, no send
            result = DeliveryResult(
                action.action_id,
                DeliveryOutcome(stored.status),
                stored.reason or "",
                stored.provider_id,
            )
            at = stored.outcome_at or batch_at
            return _Handled(record.message_id, action, result, at, True, _queued_at(record))
        if not claimed:
            raise InProgressError("another delivery holds this action's claim")
        try:
            result = self.delivery.deliver(action, self.clock())
        except TransientSendError as err:
            unsent[action.action_id] = action
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
        return _Handled(record.message_id, action, result, batch_at, False, _queued_at(record))

    def _record(
        self, response: PartialItemFailureResponse, done: list[_Handled]
    ) -> PartialItemFailureResponse:
        """Write the batch's outcomes; a record whose outcome is not written fails."""
        outcomes = [(h.action, h.result, h.at, h.queued_at) for h in done]
        try:
            self.delivery.record(outcomes)
            return response
        except Exception:
            logger.exception(
                "recording outcomes failed; writing them in a transaction",
                extra={"records": len(done)},
            )
        try:
            self.delivery.record(outcomes, transaction=True)
            return response
        except Exception:
            logger.exception(
                "recording outcomes failed; their messages go back to the queue",
                extra={"records": len(done)},
            )
            return _failing(response, [h.message_id for h in done])

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


def _token(context: LambdaContext) -> str:
    """The claim's owner: the invocation's request id."""
    return str(getattr(context, "aws_request_id", "") or uuid4().hex)


def _failing(
    response: PartialItemFailureResponse, message_ids: Iterable[str]
) -> PartialItemFailureResponse:
    """`response` with `message_ids` added to its failed items."""
    failures = list(response.get("batchItemFailures", []))
    known = {f["itemIdentifier"] for f in failures}
    failures += [{"itemIdentifier": m} for m in message_ids if m not in known]
    return {"batchItemFailures": failures}
