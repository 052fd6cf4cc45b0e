"""`DynamoStore`: the single table, as the domain sees it.

The account item is the aggregate root. It carries the engine's whole view of
the account (`view`, compact JSON), its `version`, and while the account can
become due, the due-index attributes. Every write to an account's partition is
one transaction conditional on that version, so invoices, payments, cases,
suspensions, audit events and outbox records always change together with the
view that summarises them, or not at all.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from dunning.calendars import next_send_time, zone
from dunning.engine import apply_decision
from dunning.ids import stable_id
from dunning.ledger import LedgerError, apply_payment, reverse_payment, spend_credit
from dunning.model import (
    OPEN_CASE_STATUSES,
    Account,
    AccountView,
    Action,
    ActionType,
    Allocation,
    Approval,
    ApprovalStatus,
    AuditEvent,
    Calendar,
    Case,
    CaseStatus,
    Decision,
    EventKind,
    Explanation,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentPlan,
    PlanStatus,
    Policy,
    PolicyRule,
    ServiceStatus,
    Suspension,
    SuspensionStatus,
)
from dunning.money import CurrencyMismatchError
from dunning.store.errors import (
    ConflictError,
    DecisionTooLargeError,
    NotFoundError,
    RetryableError,
)
from dunning.store.schema import (
    DUE_AT,
    DUE_INDEX,
    DUE_PK,
    LIST_PK,
    LIST_SK,
    OUTBOX_AT,
    OUTBOX_INDEX,
    OUTBOX_PK,
    PARKED,
    PK,
    SK,
    due_time,
    iso,
    shard_of,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

M = TypeVar("M", bound=BaseModel)
ACTION = TypeAdapter(Action)
EVENT = TypeAdapter(AuditEvent)
APPROVAL = TypeAdapter(Approval)
MAX_TRANSACTION_ITEMS = 100
# An outbox record a channel function has claimed (`DynamoStore.claim`) and is delivering.
SENDING = "sending"
# The final statuses of an outbox record: the delivery's outcome (`record_outcomes`).
OUTCOMES = frozenset({"delivered", "failed", "skipped"})
TEMPLATES_PK = "TEMPLATES"
# A bulk write is one transaction: the account, then an invoice and its event each.
MAX_BULK_INVOICES = (MAX_TRANSACTION_ITEMS - 1) // 2
CLOSED_CASES_KEPT = 3
_RETRYABLE = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def compact(model: BaseModel) -> str:
    """A model as an item stores it: JSON without the fields at their defaults.

    The text of `model.model_dump_json(exclude_defaults=True)`, from the model's
    serializer itself: that method's keyword handling costs ~0.8 µs a call, and
    a decision writes several documents."""
    return type(model).__pydantic_serializer__.to_json(model, exclude_defaults=True).decode()


def dump(adapter: TypeAdapter[Any], value: object) -> str:
    """An engine output (`ACTION`, `EVENT`, `APPROVAL`) as JSON text: the text of
    `adapter.dump_json(value).decode()`, from the adapter's serializer itself
    (as `compact`, without the method's keyword handling)."""
    return adapter.serializer.to_json(value).decode()


def account_key(account_id: str) -> dict[str, Any]:
    return {PK: _s(f"ACCOUNT#{account_id}"), SK: _s("ACCOUNT")}


def body_hash(model: BaseModel, exclude: set[str] | None = None) -> str:
    canonical = json.dumps(model.model_dump(mode="json", exclude=exclude), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def invoice_digest(invoice: Invoice) -> str:
    """What makes an invoice sent again under its id the same invoice: what the
    billing system sent, not what payments and exclusions changed since."""
    return body_hash(invoice, exclude={"version", "open_amount", "status", "plan_id"})


def payment_digest(payment: Payment) -> str:
    """What makes a payment sent again under its id the same payment."""
    return body_hash(payment, exclude={"version", "allocations", "reversed_at"})


# Items of one account's partition as a write reads them, by sort key
# (`ACCOUNT`, `CREDIT`, `INVOICE#<id>`, `PAYMENT#<id>`).
Read = Mapping[str, Mapping[str, Any]]


# When an account must next be evaluated, given its new view and the write's
# instant (None: only new data can change it); see `evaluation.NextEvaluation`.
Wake = Callable[[AccountView, datetime], datetime | None]


@dataclass(frozen=True, slots=True)
class StoredView:
    """An account's view with the version its next write must be conditional on."""

    view: AccountView
    version: int
    policy_id: str | None = None
    due_at: str | None = None  # the due-index sort key it was read with


BOOK_PK = "CONFIG#book"  # the policy book's change counter

# An account's audit events sort by time, and events of one instant by who
# wrote them: the account's creation or update, then what people and the
# billing system did, then the engine's decision on it, then what the channels
# did with its actions. In AWS each write has its own microsecond; a pinned
# clock (the demo, the local server) stamps them alike, and the timeline still
# reads in the order things happened.
ACCOUNT_PHASE, DATA_PHASE, DECISION_PHASE, DELIVERY_PHASE = 1, 2, 3, 4


def event_sort_key(event: AuditEvent, seq: int = 0, phase: int = DATA_PHASE) -> str:
    """`EVENT#<at>#<phase>#<seq>#<event id>`: the event's sort key."""
    return f"EVENT#{iso(event.at)}#{phase}#{seq:03d}#{event.event_id}"


@dataclass(frozen=True, slots=True)
class BookRevision:
    """Changes of the policy book (policies, calendars, selection rules) made
    through the API, and the last one a run evaluated the whole due index for."""

    revision: int
    changed_at: str | None
    rescheduled: int

    def pending(self, as_of: datetime, settle: timedelta) -> bool:
        """A change no run has evaluated the whole index for, made at least
        `settle` before `as_of` (so that every API container reads the new book
        by then: ingestion keeps it for up to `settle`)."""
        if self.revision <= self.rescheduled or self.changed_at is None:
            return False
        return self.changed_at <= iso(as_of - settle)


@dataclass(frozen=True, slots=True)
class DuePage:
    items: list[StoredView]
    last_key: dict[str, Any] | None
    raw_bytes: int = 0


@dataclass(frozen=True, slots=True)
class PolicyBook:
    """The configuration an evaluation runs with: current policies, rules, calendars."""

    policies: dict[str, Policy]
    rules: tuple[PolicyRule, ...] = ()
    default_policy_id: str | None = None
    calendars: dict[str, Calendar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Mutation:
    """A pure change of an account view, as `DynamoStore.mutate` writes it."""

    view: AccountView
    events: tuple[AuditEvent, ...] = ()
    reevaluate: bool = True  # evaluate the account at the next run
    extra: tuple[dict[str, Any], ...] = ()  # further transaction items (raw)
    result: Any = None  # what the caller wants back (the new suspension, plan ...)


@dataclass(frozen=True, slots=True)
class WriteResult:
    created: bool
    version: int


@dataclass(frozen=True, slots=True)
class BulkWriteResult:
    results: list[WriteResult]
    created: int
    version: int  # the account's version after the write


@dataclass(frozen=True, slots=True)
class PaymentWrite:
    """A payment as it was recorded: `created` False when it was stored already
    with the same body (a resend: nothing written)."""

    payment: Payment
    created: bool


# What a payment of a batch may be refused for, as the single route refuses it
# (404, 409, 422); anything else (throttling, a bug) stops the batch.
PAYMENT_REFUSALS = (
    NotFoundError,
    ConflictError,
    ValidationError,
    CurrencyMismatchError,
    LedgerError,
)


def _map_client_error(err: ClientError, what: str) -> Exception:
    code = err.response.get("Error", {}).get("Code", "")
    if code == "ConditionalCheckFailedException":
        # With ReturnValuesOnConditionCheckFailure the item as it now is comes back.
        current = err.response.get("Item")
        return ConflictError(
            f"{what}: the item changed or exists",
            reasons=[{"Code": "ConditionalCheckFailed", "Item": current}] if current else None,
        )
    if code == "TransactionCanceledException":
        reasons = err.response.get("CancellationReasons", [])
        codes = [r.get("Code", "None") for r in reasons]
        if "ConditionalCheckFailed" in codes:
            return ConflictError(
                f"{what}: condition failed ({codes})", reasons=[dict(r) for r in reasons]
            )
        return RetryableError(f"{what}: transaction cancelled ({codes})")
    if code in _RETRYABLE:
        return RetryableError(f"{what}: {code}")
    return err


_SETTLED = frozenset({InvoiceStatus.PAID, InvoiceStatus.WRITTEN_OFF})
_SUSPENDING = frozenset({SuspensionStatus.ACTIVE, SuspensionStatus.AWAITING_REVIEW})


def _kept(inv: Invoice) -> bool:
    """An invoice the account item keeps: one that is still owed (or disputed)."""
    return (
        inv.status not in _SETTLED and inv.open_amount > 0
    ) or inv.status is InvoiceStatus.DISPUTED


def _kept_suspension(s: Suspension) -> bool:
    return s.status in _SUSPENDING


def _kept_plan(p: PaymentPlan) -> bool:
    return p.status is not PlanStatus.COMPLETED


def owes(view: AccountView) -> bool:
    """The account owes something a policy could dun, now or after a change of
    the policy book: it keeps its place in the due index (PARKED when no
    instant of its own is coming)."""
    return any(_kept(inv) for inv in view.invoices) or any(c.is_open for c in view.cases)


def due_sort_key(view: AccountView, due_at: datetime | None) -> str | None:
    """Where an account sits in the due index: its next evaluation time; PARKED
    when none is coming but it owes something; None (out of the index) else."""
    if due_at is not None:
        return iso(due_at)
    return PARKED if owes(view) else None


def _kept_cases(cases: tuple[Case, ...]) -> tuple[Case, ...]:
    """The open cases, then the latest closed ones (the cases themselves when
    all are open, as they mostly are)."""
    closed = [c for c in cases if c.status not in OPEN_CASE_STATUSES]
    if not closed:
        return cases
    closed.sort(key=lambda c: (c.closed_at or c.opened_at, c.case_id))
    open_cases = [c for c in cases if c.status in OPEN_CASE_STATUSES]
    return (*open_cases, *closed[-CLOSED_CASES_KEPT:])


def prune_view(view: AccountView) -> AccountView:
    """What the account item keeps: open things, and the latest closed cases."""
    cases = _kept_cases(view.cases)
    if (
        view.case_policy is None
        and all(map(_kept, view.invoices))
        and all(map(_kept_suspension, view.suspensions))
        and all(map(_kept_plan, view.plans))
        and len(cases) == len(view.cases)
        and all(map(operator.is_, cases, view.cases))
    ):
        # Nothing to drop and the cases already in order (most decisions):
        # the view itself, without the copy (~8 µs per written decision).
        return view
    return view.model_copy(
        update={
            "invoices": tuple(filter(_kept, view.invoices)),
            "cases": cases,
            "suspensions": tuple(filter(_kept_suspension, view.suspensions)),
            "plans": tuple(filter(_kept_plan, view.plans)),
            "case_policy": None,
        }
    )


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An action's outbox record as the channel functions see it."""

    action: Action
    status: str  # pending, queued, sending, or the outcome: delivered, failed, skipped
    claimed_until: str | None = None  # while `sending`: when the claim ends (iso)
    outcome_at: datetime | None = None
    reason: str | None = None
    provider_id: str | None = None

    def claimable(self, now: datetime) -> bool:
        """Unsent, or claimed by a delivery whose claim has ended."""
        if self.status in ("pending", "queued"):
            return True
        return self.status == SENDING and (self.claimed_until or "") < iso(now)

    @staticmethod
    def parse(item: Mapping[str, Any]) -> OutboxRecord:
        def text(name: str) -> str | None:
            value = item.get(name)
            return str(value["S"]) if value else None

        outcome_at = text("outcome_at")
        return OutboxRecord(
            action=ACTION.validate_json(item["action"]["S"]),
            status=item["status"]["S"],
            claimed_until=text("claimed_until"),
            outcome_at=datetime.fromisoformat(outcome_at) if outcome_at else None,
            reason=text("reason"),
            provider_id=text("provider_id"),
        )


class DynamoStore:
    """The domain's only door to DynamoDB."""

    def __init__(self, client: DynamoDBClient, table_name: str, shards: int) -> None:
        # Low-level items are plain dicts here; the typed stubs' TypedDicts add noise.
        self._db: Any = client
        self.table = table_name
        self.shards = shards

    # ------------------------------------------------------------ primitives

    def _transact(self, items: list[dict[str, Any]], what: str) -> None:
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as err:
            raise _map_client_error(err, what) from err

    @staticmethod
    def _once(what: str, write: Callable[[], object]) -> bool:
        """A conditional write that happens once: False when its condition
        failed (it was done already), other errors mapped and raised."""
        try:
            write()
        except ClientError as err:
            mapped = _map_client_error(err, what)
            if isinstance(mapped, ConflictError):
                return False
            raise mapped from err
        return True

    def _put(self, item: dict[str, Any], condition: str | None = None) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        if condition:
            put["ConditionExpression"] = condition
            put["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Put": put}

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        out = self._db.get_item(
            TableName=self.table, Key={PK: _s(pk), SK: _s(sk)}, ConsistentRead=True
        )
        item: dict[str, Any] | None = out.get("Item")
        return item

    def _query_all(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a query, following pages."""
        while True:
            out = self._db.query(TableName=self.table, **kwargs)
            yield from out.get("Items", [])
            last = out.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def batch_write(self, requests: Sequence[dict[str, Any]]) -> int:
        """BatchWriteItem in chunks of 25, retrying unprocessed items. Returns calls."""
        calls = 0
        for i in range(0, len(requests), 25):
            pending: list[Any] = list(requests[i : i + 25])
            for _attempt in range(8):
                calls += 1
                out = self._db.batch_write_item(RequestItems={self.table: pending})
                pending = list(out.get("UnprocessedItems", {}).get(self.table, []))
                if not pending:
                    break
            if pending:
                raise RetryableError(f"{len(pending)} items left unprocessed after retries")
        return calls

    def batch_get(self, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """BatchGetItem in chunks of 100, retrying unprocessed keys."""
        found: list[dict[str, Any]] = []
        for i in range(0, len(keys), 100):
            pending: list[Any] = list(keys[i : i + 100])
            for _attempt in range(8):
                out = self._db.batch_get_item(
                    RequestItems={self.table: {"Keys": pending, "ConsistentRead": True}}
                )
                found.extend(out.get("Responses", {}).get(self.table, []))
                pending = list(out.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", []))
                if not pending:
                    break
            if pending:
                raise RetryableError(f"{len(pending)} keys left unprocessed after retries")
        return found

    # ---------------------------------------------------------- account item

    def _account_item(
        self, stored: StoredView, due_at: datetime | None, now: datetime
    ) -> dict[str, Any]:
        view = prune_view(stored.view)
        account_id = view.account.account_id
        item: dict[str, Any] = {
            **account_key(account_id),
            "type": _s("account"),
            "version": _n(stored.version + 1),
            "view": _s(compact(view)),
            "updated_at": _s(iso(now)),
        }
        if stored.policy_id:
            item["policy_id"] = _s(stored.policy_id)
        sort_key = due_sort_key(view, due_at)
        if sort_key is not None:
            item[DUE_PK] = _s(self._due_pk(account_id))
            item[DUE_AT] = _s(sort_key)
        return item

    def _due_pk(self, account_id: str) -> str:
        return f"DUE#{shard_of(account_id, self.shards)}"

    def _account_put(
        self, stored: StoredView, due_at: datetime | None, now: datetime
    ) -> dict[str, Any]:
        condition = "attribute_not_exists(PK)" if stored.version == 0 else "version = :v"
        put = self._put(self._account_item(stored, due_at, now), condition)
        if stored.version:
            put["Put"]["ExpressionAttributeValues"] = {":v": _n(stored.version)}
        return put

    def view_after_conflict(self, err: ConflictError, account_id: str) -> StoredView:
        """The account as it is now, after a conditional write on it failed: the
        item DynamoDB returned with the failure (ReturnValuesOnConditionCheckFailure)
        when it is the account's, else one strongly consistent read."""
        key = (f"ACCOUNT#{account_id}", "ACCOUNT")
        for reason in err.reasons:
            item = reason.get("Item") or {}
            found = (item.get(PK, {}).get("S"), item.get(SK, {}).get("S"))
            if found == key and "view" in item and "version" in item:
                return self._stored(item)
        return self.get_view(account_id)

    def get_view(self, account_id: str) -> StoredView:
        item = self._get(f"ACCOUNT#{account_id}", "ACCOUNT")
        if item is None:
            raise NotFoundError(f"account {account_id} does not exist")
        return self._stored(item)

    @staticmethod
    def _stored(item: Mapping[str, Any]) -> StoredView:
        return StoredView(
            view=AccountView.model_validate_json(item["view"]["S"]),
            version=int(item["version"]["N"]),
            policy_id=item["policy_id"]["S"] if "policy_id" in item else None,
            due_at=item["due_at"]["S"] if "due_at" in item else None,
        )

    def _event_put(
        self, event: AuditEvent, seq: int = 0, phase: int = DATA_PHASE
    ) -> dict[str, Any]:
        """An audit event. Events of one instant sort by `phase` (who wrote
        them), then by `seq` (their order within one write)."""
        return self._put(
            {
                PK: _s(f"ACCOUNT#{event.account_id}"),
                SK: _s(event_sort_key(event, seq, phase)),
                "type": _s("event"),
                "body": _s(dump(EVENT, event)),
            }
        )

    def _body_put(
        self,
        account_id: str,
        sk: str,
        kind: str,
        model: BaseModel,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An item of the account's partition holding `model` as its body, with
        `extra` attributes after it."""
        item = {
            PK: _s(f"ACCOUNT#{account_id}"),
            SK: _s(sk),
            "type": _s(kind),
            "body": _s(compact(model)),
        }
        if extra:
            item.update(extra)
        return self._put(item)

    def _case_put(self, case: Case) -> dict[str, Any]:
        return self._body_put(
            case.account_id,
            f"CASE#{case.case_id}",
            "case",
            case,
            {
                LIST_PK: _s(f"CASE#{case.status.value}"),
                LIST_SK: _s(f"{case.level:03d}#{case.account_id}#{case.case_id}"),
                "version": _n(case.version),
            },
        )

    # -------------------------------------------------------------- accounts

    def upsert_account(
        self,
        account: Account,
        now: datetime,
        actor: str,
        *,
        also: Callable[[AccountView], Mutation] | None = None,
    ) -> WriteResult:
        """Create an account, or update its attributes keeping its dunning state.

        `also` changes the new view inside the same transaction (the exclusion
        lists that name the account, `dunning.api.exclusions`): its events follow
        the account's, its `extra` items (a guard) join the transaction. An
        unchanged body whose `also` changes nothing writes nothing. The currency
        of an account with open invoices or credit does not change (a conflict
        on `currency`): their amounts are in the old one.
        """
        for _attempt in range(5):
            try:
                stored = self.get_view(account.account_id)
            except NotFoundError:
                stored = StoredView(AccountView(account=account), 0)
            old = stored.view.account
            same = bool(stored.version) and old.model_dump(
                exclude={"version"}
            ) == account.model_dump(exclude={"version"})
            if stored.version and account.currency != old.currency:
                self._refuse_currency_change(stored, account.currency)
            view = stored.view.model_copy(
                update={"account": account.model_copy(update={"version": stored.version + 1})}
            )
            change = also(view) if also is not None else Mutation(view, reevaluate=False)
            if same and change.view.model_copy(update={"account": old}) == stored.view:
                return WriteResult(created=False, version=stored.version)
            events: list[AuditEvent] = []
            if not same:
                kind = (
                    EventKind.ACCOUNT_CREATED if stored.version == 0 else EventKind.ACCOUNT_UPDATED
                )
                events.append(
                    AuditEvent(
                        event_id=stable_id(account.account_id, kind, stored.version),
                        account_id=account.account_id,
                        at=now,
                        kind=kind,
                        case_id=None,
                        data={"segment": account.segment, "currency": account.currency},
                        actor=actor,
                    )
                )
            events.extend(change.events)
            new = StoredView(change.view, stored.version, stored.policy_id)
            # An account with nothing to dun has nothing to evaluate.
            due = now if new.view.invoices or new.view.cases else None
            try:
                self._transact(
                    [
                        self._account_put(new, due, now),
                        *[self._event_put(e, n, ACCOUNT_PHASE) for n, e in enumerate(events)],
                        *self._changed_children(stored.view, new.view),
                        *change.extra,
                    ],
                    "upsert account",
                )
            except ConflictError:
                continue
            return WriteResult(created=stored.version == 0, version=stored.version + 1)
        raise ConflictError(f"account {account.account_id} keeps changing; try again")

    def _refuse_currency_change(self, stored: StoredView, currency: str) -> None:
        view = stored.view
        was = view.account.currency
        owed = [
            i.invoice_id
            for i in view.invoices
            if i.status is not InvoiceStatus.PAID
            and i.status is not InvoiceStatus.WRITTEN_OFF
            and i.open_amount > 0
        ]
        if owed:
            shown = ", ".join(owed[:5]) + (", ..." if len(owed) > 5 else "")
            raise ConflictError(
                f"account {view.account.account_id} has {len(owed)} open invoice(s) in {was} "
                f"({shown}): its currency cannot change to {currency} until they are paid "
                "or written off",
                field="currency",
            )
        total = self.credit_total(self.credit(view.account.account_id))
        if total > 0:
            raise ConflictError(
                f"account {view.account.account_id} holds a credit of {total:f} {was}: "
                f"its currency cannot change to {currency} while it does",
                field="currency",
            )

    # -------------------------------------------------------------- invoices

    def upsert_invoice(
        self,
        invoice: Invoice,
        now: datetime,
        actor: str,
        *,
        also: Callable[[AccountView], Mutation] | None = None,
        wake: Wake | None = None,
    ) -> WriteResult:
        """Idempotent by invoice id: the same body twice changes nothing; another
        body under the same id is a conflict. The account is due when `wake`
        says (see `upsert_invoices`)."""
        return self.upsert_invoices([invoice], now, actor, also=also, wake=wake).results[0]

    def upsert_invoices(
        self,
        invoices: Sequence[Invoice],
        now: datetime,
        actor: str,
        *,
        also: Callable[[AccountView], Mutation] | None = None,
        wake: Wake | None = None,
        read: Read | None = None,
    ) -> BulkWriteResult:
        """Several invoices of one account in one transaction (at most
        `MAX_BULK_INVOICES`: the account, each invoice and its audit event).

        Each is idempotent by id as in `upsert_invoice`; a different body under
        an existing id fails the whole request before anything is written (the
        conflict's `index` says which invoice).
        `also` changes the view with the new invoices in the same transaction
        (the exclusion lists that name them). The account's credit (overpayments)
        pays the open invoices at once, oldest due first, as the ledger would.
        The account is next due when `wake` says for its new view (the
        evaluator's next run when absent).

        `read` is what the write reads first (the account, its credit and each
        invoice, by sort key; a missing key is an item that does not exist),
        when the caller read it already, strongly consistent, with other
        accounts' (`upsert_invoice_batch`); a retry after a conflict reads again.
        """
        if not invoices:
            raise ValueError("no invoices")
        if len(invoices) > MAX_BULK_INVOICES:
            raise ValueError(f"at most {MAX_BULK_INVOICES} invoices per request")
        account_id = invoices[0].account_id
        if any(i.account_id != account_id for i in invoices):
            raise ValueError("the invoices of one request belong to one account")
        digests = [invoice_digest(inv) for inv in invoices]
        for attempt in range(5):
            found: Read
            if attempt == 0 and read is not None:
                found = read
            else:
                keys = self._invoice_keys(account_id, [i.invoice_id for i in invoices])
                found = {it[SK]["S"]: it for it in self.batch_get(keys)}
            account = found.get("ACCOUNT")
            if account is None:
                raise NotFoundError(f"account {account_id} does not exist")
            stored = self._stored(account)
            results: list[WriteResult] = []
            fresh: list[tuple[Invoice, str]] = []
            for n, (inv, digest) in enumerate(zip(invoices, digests, strict=True)):
                existing = found.get(f"INVOICE#{inv.invoice_id}")
                if existing is None:
                    if inv.currency != stored.view.account.currency:
                        raise ConflictError(
                            f"invoice {inv.invoice_id} in {inv.currency} for an account in "
                            f"{stored.view.account.currency}",
                            field="currency" if len(invoices) == 1 else f"invoices.{n}.currency",
                            index=n,
                        )
                    results.append(WriteResult(created=True, version=1))
                    fresh.append((inv, digest))
                elif existing["body_hash"]["S"] == digest:
                    results.append(
                        WriteResult(created=False, version=int(existing["version"]["N"]))
                    )
                else:
                    raise ConflictError(
                        f"invoice {inv.invoice_id} exists with a different body",
                        field="invoice_id" if len(invoices) == 1 else f"invoices.{n}.invoice_id",
                        index=n,
                    )
            if not fresh:
                return BulkWriteResult(results, 0, stored.version)
            added = tuple(inv.model_copy(update={"version": 1}) for inv, _ in fresh)
            view = stored.view.model_copy(update={"invoices": (*stored.view.invoices, *added)})
            change = also(view) if also is not None else Mutation(view, reevaluate=False)
            credit = self._parse_credit(found.get("CREDIT"))
            view, left, spent, paid_by_credit = spend_credit(change.view, credit)
            final = {i.invoice_id: i for i in view.invoices}
            added_ids = {i.invoice_id for i in added}
            due = wake(view, now) if wake is not None else now
            items = [
                self._account_put(StoredView(view, stored.version, stored.policy_id), due, now)
            ]
            for n, (inv, digest) in enumerate(zip(added, (d for _, d in fresh), strict=True)):
                stored_inv = final[inv.invoice_id]
                items.append(
                    self._put(
                        {
                            PK: _s(f"ACCOUNT#{account_id}"),
                            SK: _s(f"INVOICE#{inv.invoice_id}"),
                            "type": _s("invoice"),
                            "body": _s(compact(stored_inv)),
                            "body_hash": _s(digest),
                            "version": _n(1),
                        },
                        "attribute_not_exists(PK)",
                    )
                )
                data: dict[str, Any] = {
                    "invoice_id": inv.invoice_id,
                    "amount": str(inv.amount),
                    "currency": inv.currency,
                    "due_date": inv.due_date.isoformat(),
                }
                if inv.invoice_id in paid_by_credit:
                    data["paid_by_credit"] = paid_by_credit[inv.invoice_id]
                items.append(
                    self._event_put(
                        AuditEvent(
                            event_id=stable_id(account_id, "invoice_received", inv.invoice_id),
                            account_id=account_id,
                            at=now,
                            kind=EventKind.INVOICE_RECEIVED,
                            case_id=None,
                            data=data,
                            actor=actor,
                        ),
                        n,  # the request's order, at one instant
                    )
                )
            items.extend(self._event_put(e, len(added) + n) for n, e in enumerate(change.events))
            # Invoices that were there already and changed (an exclusion, a credit)
            after = view.model_copy(
                update={
                    "invoices": tuple(i for i in view.invoices if i.invoice_id not in added_ids)
                }
            )
            items.extend(self._changed_children(stored.view, after))
            if spent:
                items.extend(self._credit_writes(view, left, spent, now))
            items.extend(change.extra)
            try:
                self._transact(items, "upsert invoices")
            except ConflictError:
                continue  # the account or an invoice changed meanwhile: read again
            return BulkWriteResult(results, len(fresh), stored.version + 1)
        raise ConflictError(f"account {account_id} keeps changing; try again")

    def _invoice_keys(self, account_id: str, invoice_ids: Iterable[str]) -> list[dict[str, Any]]:
        """What writing invoices of an account reads: the account, its credit, each invoice."""
        return [account_key(account_id), self._credit_key(account_id)] + [
            {PK: _s(f"ACCOUNT#{account_id}"), SK: _s(f"INVOICE#{i}")} for i in invoice_ids
        ]

    def _read_partitions(self, keys: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Items of several accounts, strongly consistent, in one BatchGetItem per
        100 keys (a key named twice is read once): by account id, then sort key."""
        unique = list({(k[PK]["S"], k[SK]["S"]): k for k in keys}.values())
        found: dict[str, dict[str, Any]] = {}
        for item in self.batch_get(unique):
            account_id = item[PK]["S"].removeprefix("ACCOUNT#")
            found.setdefault(account_id, {})[item[SK]["S"]] = item
        return found

    def upsert_invoice_batch(
        self,
        invoices: Sequence[Invoice],
        now: datetime,
        actor: str,
        *,
        also: Callable[[AccountView], Mutation] | None = None,
        wake: Wake | None = None,
    ) -> list[WriteResult | NotFoundError | ConflictError]:
        """Invoices of many accounts: per account, in the order the accounts first
        appear, its invoices in one transaction as `upsert_invoices` writes them
        (at most `MAX_BULK_INVOICES` per account; each (account, invoice id) once).

        Everything the writes read is read first, together: one strongly
        consistent BatchGetItem per 100 keys (each account, its credit, each
        invoice). An invoice its account refuses (another body under its id,
        another currency) is answered with its `ConflictError` and the account's
        other invoices are written without it; an unknown account answers
        `NotFoundError` for each of its invoices; neither stops another account.
        Throttling and the unexpected are raised: what was written stays written
        (each write is idempotent, so the whole batch can be sent again).
        Returns one result per invoice, in the order given.
        """
        by_account: dict[str, list[int]] = {}
        for n, inv in enumerate(invoices):
            by_account.setdefault(inv.account_id, []).append(n)
        read = self._read_partitions(
            key
            for account_id, ns in by_account.items()
            for key in self._invoice_keys(account_id, [invoices[n].invoice_id for n in ns])
        )
        out: dict[int, WriteResult | NotFoundError | ConflictError] = {}
        for account_id, indexes in by_account.items():
            pending = list(indexes)
            while pending:
                try:
                    written = self.upsert_invoices(
                        [invoices[n] for n in pending],
                        now,
                        actor,
                        also=also,
                        wake=wake,
                        read=read.get(account_id, {}),
                    )
                except ConflictError as err:
                    if err.index is None:  # the account kept changing: none was written
                        out.update((n, err) for n in pending)
                        break
                    # That invoice is refused; the others are written without it.
                    out[pending.pop(err.index)] = err
                    continue
                except NotFoundError as err:
                    out.update((n, err) for n in pending)
                    break
                out.update(zip(pending, written.results, strict=True))
                break
        return [out[n] for n in range(len(invoices))]

    def get_invoices(self, account_id: str, invoice_ids: Iterable[str]) -> list[Invoice]:
        keys = [{PK: _s(f"ACCOUNT#{account_id}"), SK: _s(f"INVOICE#{i}")} for i in set(invoice_ids)]
        return [Invoice.model_validate_json(it["body"]["S"]) for it in self.batch_get(keys)]

    # -------------------------------------------------------------- payments

    @staticmethod
    def _credit_key(account_id: str) -> dict[str, Any]:
        return {PK: _s(f"ACCOUNT#{account_id}"), SK: _s("CREDIT")}

    @staticmethod
    def _parse_credit(item: Mapping[str, Any] | None) -> list[tuple[str, Decimal]]:
        if item is None:
            return []
        body = json.loads(item["body"]["S"])
        return [(p["payment_id"], Decimal(p["amount"])) for p in body["payments"]]

    def credit(self, account_id: str) -> list[tuple[str, Decimal]]:
        """The account's credit (in its currency): per payment, oldest first, what
        it brought beyond the open invoices, kept to pay the next ones."""
        return self._parse_credit(self._get(f"ACCOUNT#{account_id}", "CREDIT"))

    @staticmethod
    def credit_total(credit: Iterable[tuple[str, Decimal]]) -> Decimal:
        """The whole of a credit (as `credit` gives it)."""
        return sum((amount for _, amount in credit), Decimal(0))

    def view_and_credit(self, account_id: str) -> tuple[StoredView, list[tuple[str, Decimal]]]:
        """The account and its credit (as `credit`), in one strongly consistent
        BatchGetItem."""
        keys = [account_key(account_id), self._credit_key(account_id)]
        return self._view_and_credit(account_id, {it[SK]["S"]: it for it in self.batch_get(keys)})

    def _view_and_credit(
        self, account_id: str, found: Mapping[str, dict[str, Any]]
    ) -> tuple[StoredView, list[tuple[str, Decimal]]]:
        """The account and its credit from read items keyed by sort key."""
        account = found.get("ACCOUNT")
        if account is None:
            raise NotFoundError(f"account {account_id} does not exist")
        return self._stored(account), self._parse_credit(found.get("CREDIT"))

    def _credit_writes(
        self,
        view: AccountView,
        left: list[tuple[str, Decimal]],
        spent: Mapping[str, list[Allocation]],
        now: datetime,
    ) -> list[dict[str, Any]]:
        """The credit item as `left` says (deleted when nothing is left), and each
        payment whose credit paid invoices: its allocations grow, conditional on
        its version."""
        account_id = view.account.account_id
        items: list[dict[str, Any]] = []
        if spent:
            keys = [
                {PK: _s(f"ACCOUNT#{account_id}"), SK: _s(f"PAYMENT#{payment_id}")}
                for payment_id in spent
            ]
            found = {it[SK]["S"]: it for it in self.batch_get(keys)}
            for payment_id, allocations in spent.items():
                item = found[f"PAYMENT#{payment_id}"]
                payment = Payment.model_validate_json(item["body"]["S"])
                grown = payment.model_copy(
                    update={
                        "allocations": (*payment.allocations, *allocations),
                        "version": payment.version + 1,
                    }
                )
                items.append(self._payment_replace(item, grown, payment.version))
        key = self._credit_key(account_id)
        if not left:
            items.append({"Delete": {"TableName": self.table, "Key": key}})
            return items
        body = {
            "currency": view.account.currency,
            "payments": [{"payment_id": p, "amount": f"{a:f}"} for p, a in left],
        }
        items.append(
            self._put(
                {
                    **key,
                    "type": _s("credit"),
                    "body": _s(json.dumps(body)),
                    "updated_at": _s(iso(now)),
                }
            )
        )
        return items

    def _check_references(self, view: AccountView, payment: Payment) -> None:
        """A payment names invoices and a plan of its account: an unknown one is
        the caller's mistake (a 422 naming the field), never silently ignored."""
        in_view = {i.invoice_id for i in view.invoices}
        elsewhere = [i for i in payment.invoice_ids if i not in in_view]
        known = in_view | {i.invoice_id for i in self.get_invoices(payment.account_id, elsewhere)}
        problems: list[InitErrorDetails] = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "unknown_invoice",
                    "account {account_id} has no invoice {invoice_id}",
                    {"account_id": payment.account_id, "invoice_id": invoice_id},
                ),
                loc=("invoice_ids", n),
                input=invoice_id,
            )
            for n, invoice_id in enumerate(payment.invoice_ids)
            if invoice_id not in known
        ]
        if payment.plan_id is not None and not any(
            p.plan_id == payment.plan_id for p in view.plans
        ):
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "unknown_plan",
                        "account {account_id} has no running payment plan {plan_id}",
                        {"account_id": payment.account_id, "plan_id": payment.plan_id},
                    ),
                    loc=("plan_id",),
                    input=payment.plan_id,
                )
            )
        if problems:
            raise ValidationError.from_exception_data("Payment", problems)

    def record_payment(
        self, payment: Payment, now: datetime, actor: str, *, wake: Wake | None = None
    ) -> Payment:
        """Idempotent by payment id. Allocates, updates the view, and makes the
        account due when `wake` says for its new view (the next run when absent).

        The invoices and the plan it names must exist (else a `ValidationError`
        on `invoice_ids.<n>` / `plan_id`). What it brings beyond the open
        invoices is kept as the account's credit and pays the next invoices."""
        return self.write_payment(payment, now, actor, wake=wake).payment

    def write_payment(
        self, payment: Payment, now: datetime, actor: str, *, wake: Wake | None = None
    ) -> PaymentWrite:
        """`record_payment`, saying whether the payment was new (`created`) or
        stored already with the same body (a resend: nothing written)."""
        written, _ = self._record_payment(payment, now, actor, wake=wake)
        return written

    def _payment_keys(self, payment: Payment) -> list[dict[str, Any]]:
        """What recording a payment reads: the payment (a replay?), the account, its credit."""
        return [
            {PK: _s(f"ACCOUNT#{payment.account_id}"), SK: _s(f"PAYMENT#{payment.payment_id}")},
            account_key(payment.account_id),
            self._credit_key(payment.account_id),
        ]

    def record_payments(
        self, payments: Sequence[Payment], now: datetime, actor: str, *, wake: Wake | None = None
    ) -> list[PaymentWrite | Exception]:
        """Payments of many accounts, one by one in the order given, each as
        `record_payment` records it.

        Everything they read is read first, together: one strongly consistent
        BatchGetItem per 100 keys (each payment, its account, the account's
        credit). A payment that follows another of its account starts from what
        that one wrote, so nothing is read twice. A payment its account refuses
        (`PAYMENT_REFUSALS`: unknown account, another body under its id, an
        unknown invoice or plan, another currency) is answered with its error
        and the next ones go on. Throttling and the unexpected are raised: what
        was written stays written (each payment is idempotent, so the whole
        batch can be sent again). Returns one result per payment, in order.
        """
        read = self._read_partitions(key for p in payments for key in self._payment_keys(p))
        out: list[PaymentWrite | Exception] = []
        for payment in payments:
            try:
                written, after = self._record_payment(
                    payment, now, actor, wake=wake, read=read.get(payment.account_id, {})
                )
            except PAYMENT_REFUSALS as err:
                out.append(err)
                continue
            read[payment.account_id] = after
            out.append(written)
        return out

    def _record_payment(
        self,
        payment: Payment,
        now: datetime,
        actor: str,
        *,
        wake: Wake | None,
        read: Read | None = None,
    ) -> tuple[PaymentWrite, dict[str, Any]]:
        """`record_payment`, starting from `read` (what `_payment_keys` names, and
        maybe more of the account's items, by sort key) when given; a retry after
        a conflict reads again. Returns the payment, and the items read with
        what this write changed (the account, its credit, the payment): what
        the account's next payment of a batch starts from."""
        digest = payment_digest(payment)
        sk = f"PAYMENT#{payment.payment_id}"
        for attempt in range(5):
            # One strongly consistent read: the payment (a replay?), the account, its credit.
            found: dict[str, Any]
            if attempt == 0 and read is not None:
                found = dict(read)
            else:
                found = {it[SK]["S"]: it for it in self.batch_get(self._payment_keys(payment))}
            existing = found.get(sk)
            if existing is not None:
                if existing["body_hash"]["S"] == digest:
                    stored_payment = Payment.model_validate_json(existing["body"]["S"])
                    return PaymentWrite(stored_payment, created=False), found
                raise ConflictError(
                    f"payment {payment.payment_id} exists with a different body",
                    field="payment_id",
                )
            stored, credit = self._view_and_credit(payment.account_id, found)
            self._check_references(stored.view, payment)
            view, recorded = apply_payment(stored.view, payment)
            recorded = recorded.model_copy(update={"version": 1})
            left = payment.amount - sum((a.amount for a in recorded.allocations), Decimal(0))
            data: dict[str, Any] = {
                "payment_id": payment.payment_id,
                "amount": str(payment.amount),
                "currency": payment.currency,
                "allocations": {a.invoice_id: str(a.amount) for a in recorded.allocations},
            }
            credit_items: list[dict[str, Any]] = []
            if left > 0:  # kept as the account's credit
                data["credit"] = f"{left:f}"
                credit_items = self._credit_writes(
                    view, [*credit, (payment.payment_id, left)], {}, now
                )
            event = AuditEvent(
                event_id=stable_id(payment.account_id, "payment_received", payment.payment_id),
                account_id=payment.account_id,
                at=now,
                kind=EventKind.PAYMENT_RECEIVED,
                case_id=None,
                data=data,
                actor=actor,
            )
            due = wake(view, now) if wake is not None else now
            account_put = self._account_put(
                StoredView(view, stored.version, stored.policy_id), due, now
            )
            payment_put = self._put(
                {
                    PK: _s(f"ACCOUNT#{payment.account_id}"),
                    SK: _s(sk),
                    "type": _s("payment"),
                    "body": _s(compact(recorded)),
                    "body_hash": _s(digest),
                    "version": _n(1),
                },
                "attribute_not_exists(PK)",
            )
            items = [
                account_put,
                payment_put,
                self._event_put(event),
                *self._changed_children(stored.view, view),
                *credit_items,
            ]
            try:
                self._transact(items, "record payment")
            except ConflictError:
                continue
            found["ACCOUNT"] = account_put["Put"]["Item"]
            found[sk] = payment_put["Put"]["Item"]
            for credit_item in credit_items:  # the credit as written
                if "Put" in credit_item:
                    found["CREDIT"] = credit_item["Put"]["Item"]
                else:
                    found.pop("CREDIT", None)
            return PaymentWrite(recorded, created=True), found
        raise ConflictError(f"account {payment.account_id} keeps changing; try again")

    def reverse_payment(
        self,
        account_id: str,
        payment_id: str,
        reason: str,
        now: datetime,
        actor: str,
        *,
        also: Callable[[AccountView], Mutation] | None = None,
    ) -> Payment:
        """A bounced payment: reopens exactly what it paid, re-opens evaluation.

        Its credit not yet spent is gone; the credit of other payments pays what
        reopens. `also` changes the view in the same transaction (the exclusion
        lists, for invoices that come back into the view)."""
        for _attempt in range(5):
            item = self._get(f"ACCOUNT#{account_id}", f"PAYMENT#{payment_id}")
            if item is None:
                raise NotFoundError(f"payment {payment_id} does not exist")
            payment = Payment.model_validate_json(item["body"]["S"])
            if payment.reversed_at is not None:
                return payment  # idempotent: already reversed
            stored, credit = self.view_and_credit(account_id)
            # Paid invoices left the view: bring back the ones this payment paid.
            in_view = {inv.invoice_id for inv in stored.view.invoices}
            missing = [a.invoice_id for a in payment.allocations if a.invoice_id not in in_view]
            base = stored.view
            if missing:
                base = base.model_copy(
                    update={"invoices": (*base.invoices, *self.get_invoices(account_id, missing))}
                )
            view, reversed_payment = reverse_payment(base, payment, now, reason)
            change = also(view) if also is not None else Mutation(view, reevaluate=False)
            kept = [(p, a) for p, a in credit if p != payment_id]
            view, left, spent, _ = spend_credit(change.view, kept)
            reversed_payment = reversed_payment.model_copy(update={"version": payment.version + 1})
            event = AuditEvent(
                event_id=stable_id(account_id, "payment_reversed", payment_id),
                account_id=account_id,
                at=now,
                kind=EventKind.PAYMENT_REVERSED,
                case_id=None,
                data={"payment_id": payment_id, "amount": str(payment.amount), "reason": reason},
                actor=actor,
            )
            items = [
                self._account_put(StoredView(view, stored.version, stored.policy_id), now, now),
                self._payment_replace(item, reversed_payment, payment.version),
                self._event_put(event),
                *[self._event_put(e, n + 1) for n, e in enumerate(change.events)],
                *self._changed_children(base, view),
                *(self._credit_writes(view, left, spent, now) if credit != left else ()),
                *change.extra,
            ]
            try:
                self._transact(items, "reverse payment")
            except ConflictError:
                continue
            return reversed_payment
        raise ConflictError(f"account {account_id} keeps changing; try again")

    def _payment_replace(
        self, item: Mapping[str, Any], payment: BaseModel, version: int
    ) -> dict[str, Any]:
        """The payment's stored item with a new body, one version on, written only
        if it is still at `version`."""
        put = self._put(
            {
                **{k: v for k, v in item.items() if k not in ("body", "version")},
                "body": _s(compact(payment)),
                "version": _n(version + 1),
            },
            "version = :pv",
        )
        put["Put"]["ExpressionAttributeValues"] = {":pv": _n(version)}
        return put

    def _changed_children(self, before: AccountView, after: AccountView) -> list[dict[str, Any]]:
        """Updates of invoice, plan and suspension items whose state changed."""
        items: list[dict[str, Any]] = []
        old_inv = {i.invoice_id: i for i in before.invoices}
        for inv in after.invoices:
            if old_inv.get(inv.invoice_id) != inv:
                items.append(self._invoice_update(inv))
        old_plans = {p.plan_id: p for p in before.plans}
        for plan in after.plans:
            if old_plans.get(plan.plan_id) != plan:
                items.append(self._body_put(plan.account_id, f"PLAN#{plan.plan_id}", "plan", plan))
        old_susp = {s.suspension_id: s for s in before.suspensions}
        for s in after.suspensions:
            if old_susp.get(s.suspension_id) != s:
                items.append(
                    self._body_put(s.account_id, f"SUSPENSION#{s.suspension_id}", "suspension", s)
                )
        return items

    def _invoice_update(self, inv: Invoice) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table,
                "Key": {PK: _s(f"ACCOUNT#{inv.account_id}"), SK: _s(f"INVOICE#{inv.invoice_id}")},
                "UpdateExpression": "SET body = :b, version = version + :one",
                "ExpressionAttributeValues": {
                    ":b": _s(compact(inv)),
                    ":one": _n(1),
                },
            }
        }

    # ---------------------------------------------------------- suspensions

    def suspend_case(
        self, suspension: Suspension, now: datetime, actor: str, expected_version: int | None
    ) -> StoredView:
        """Suspend an open case (promise to pay, fraud review, dispute, care)."""
        stored = self.get_view(suspension.account_id)
        if expected_version is not None and expected_version != stored.version:
            raise ConflictError("account version is stale", precondition=True)
        case = next((c for c in stored.view.cases if c.case_id == suspension.case_id), None)
        if case is None or not case.is_open:
            raise NotFoundError(f"no open case {suspension.case_id}")
        suspended = case.model_copy(
            update={"status": CaseStatus.SUSPENDED, "suspension_id": suspension.suspension_id}
        )
        view = stored.view.model_copy(
            update={
                "cases": tuple(suspended if c is case else c for c in stored.view.cases),
                "suspensions": (*stored.view.suspensions, suspension),
            }
        )
        event = AuditEvent(
            event_id=stable_id(suspension.account_id, "suspended", suspension.suspension_id),
            account_id=suspension.account_id,
            at=now,
            kind=EventKind.CASE_SUSPENDED,
            case_id=case.case_id,
            data={
                "suspension_id": suspension.suspension_id,
                "kind": suspension.kind.value,
                "ends_at": suspension.ends_at.isoformat(),
                "reason": suspension.reason,
                "promised_amount": str(suspension.promised_amount)
                if suspension.promised_amount is not None
                else None,
            },
            actor=actor,
        )
        new = StoredView(view, stored.version, stored.policy_id)
        self._transact(
            [
                self._account_put(new, now, now),
                self._put(
                    {
                        PK: _s(f"ACCOUNT#{suspension.account_id}"),
                        SK: _s(f"SUSPENSION#{suspension.suspension_id}"),
                        "type": _s("suspension"),
                        "body": _s(compact(suspension)),
                    },
                    "attribute_not_exists(PK)",
                ),
                self._case_put(suspended),
                self._event_put(event),
            ],
            "suspend case",
        )
        return StoredView(view, stored.version + 1, stored.policy_id)

    # ------------------------------------------------- collector operations

    def mutate(
        self,
        account_id: str,
        change: Callable[[AccountView], Mutation],
        now: datetime,
        *,
        expected_version: int | None = None,
    ) -> tuple[StoredView, Mutation]:
        """Apply a pure change to an account's view, in one transaction.

        `change` gets the current view and returns the new view with the audit
        events that describe the change (it raises to refuse). Changed cases,
        invoices, plans and suspensions are written with it; `reevaluate` puts
        the account in the due index at once. With `expected_version` (an
        If-Match), a stale version is a precondition failure; without it, a
        concurrent write makes the change run again on the new state.
        """
        for _attempt in range(5):
            stored = self.get_view(account_id)
            if expected_version is not None and stored.version != expected_version:
                raise ConflictError(
                    f"account {account_id} is at version {stored.version}, not {expected_version}",
                    precondition=True,
                )
            mutation = change(stored.view)
            due = now if mutation.reevaluate else _due_of(stored)
            new = StoredView(mutation.view, stored.version, stored.policy_id)
            old_cases = {c.case_id: c for c in stored.view.cases}
            items = [
                self._account_put(new, due, now),
                *[self._event_put(e, n) for n, e in enumerate(mutation.events)],
                *[self._case_put(c) for c in mutation.view.cases if old_cases.get(c.case_id) != c],
                *self._changed_children(stored.view, mutation.view),
                *mutation.extra,
            ]
            try:
                self._transact(items, "update account")
            except ConflictError:
                if expected_version is not None:
                    raise ConflictError(
                        f"account {account_id} changed meanwhile", precondition=True
                    ) from None
                continue
            return StoredView(mutation.view, stored.version + 1, stored.policy_id), mutation
        raise ConflictError(f"account {account_id} keeps changing; try again")

    def save_change(
        self,
        account_id: str,
        change: Callable[[StoredView], Decision],
        now: datetime,
        *,
        expected_version: int | None = None,
    ) -> tuple[StoredView, Decision]:
        """Decide with a pure function of the stored account (the engine called
        by a person's request: a moved case) and write the decision like the
        evaluator does, conditional on the account's version."""
        for _attempt in range(5):
            stored = self.get_view(account_id)
            if expected_version is not None and stored.version != expected_version:
                raise ConflictError(
                    f"account {account_id} is at version {stored.version}, not {expected_version}",
                    precondition=True,
                )
            decision = change(stored)
            new_view = apply_decision(stored.view, decision)
            try:
                self.save_decision(stored, new_view, decision, now)
            except ConflictError:
                if expected_version is not None:
                    raise ConflictError(
                        f"account {account_id} changed meanwhile", precondition=True
                    ) from None
                continue
            return StoredView(new_view, stored.version + 1, stored.policy_id), decision
        raise ConflictError(f"account {account_id} keeps changing; try again")

    # ---------------------------------------------------------- configuration

    def put_policy(self, policy: Policy, actor: str, now: datetime) -> Policy:
        """Store a new version of a policy (never overwrites a version)."""
        body = _s(policy.model_dump_json())
        self._transact(
            [
                self._put(
                    {
                        PK: _s(f"POLICY#{policy.policy_id}"),
                        SK: _s(f"V#{policy.version:08d}"),
                        "type": _s("policy"),
                        "body": body,
                        "actor": _s(actor),
                        "created_at": _s(iso(now)),
                        LIST_PK: _s("POLICY"),
                        LIST_SK: _s(f"{policy.policy_id}#{policy.version:08d}"),
                    },
                    "attribute_not_exists(PK)",
                ),
            ],
            "put policy",
        )
        return policy

    def activate_policy(self, policy_id: str, version: int) -> None:
        item = self._get(f"POLICY#{policy_id}", f"V#{version:08d}")
        if item is None:
            raise NotFoundError(f"policy {policy_id} v{version} does not exist")
        # Seeding path (tests, the local run): unconditional, unaudited. The API
        # activates through `ConfigStore.activate_policy` (conditional, audited).
        self._transact(
            [
                self._put(
                    {
                        PK: _s(f"POLICY#{policy_id}"),
                        SK: _s("CURRENT"),
                        "type": _s("policy_current"),
                        "body": item["body"],
                        "version": _n(version),
                        LIST_PK: _s("POLICY#current"),
                        LIST_SK: _s(policy_id),
                    }
                ),
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {PK: _s(f"POLICY#{policy_id}"), SK: _s(f"V#{version:08d}")},
                        "UpdateExpression": "SET activated_at = if_not_exists(activated_at, :t)",
                        "ExpressionAttributeValues": {":t": _s("seeded")},
                    }
                },
            ],
            "activate policy",
        )

    def get_policy_version(self, policy_id: str, version: int) -> Policy:
        item = self._get(f"POLICY#{policy_id}", f"V#{version:08d}")
        if item is None:
            raise NotFoundError(f"policy {policy_id} v{version} does not exist")
        return Policy.model_validate_json(item["body"]["S"])

    def put_calendar(self, calendar: Calendar) -> None:
        self._db.put_item(
            TableName=self.table,
            Item={
                PK: _s(f"CALENDAR#{calendar.calendar_id}"),
                SK: _s("CALENDAR"),
                "type": _s("calendar"),
                "body": _s(calendar.model_dump_json()),
                "version": _n(1),
                LIST_PK: _s("CALENDAR"),
                LIST_SK: _s(calendar.calendar_id),
            },
        )

    def put_rules(self, rules: Sequence[PolicyRule], default_policy_id: str | None) -> None:
        self._db.put_item(
            TableName=self.table,
            Item={
                PK: _s("CONFIG#selection"),
                SK: _s("CONFIG"),
                "type": _s("selection"),
                "version": _n(1),
                "body": _s(
                    json.dumps(
                        {
                            "rules": [r.model_dump(mode="json") for r in rules],
                            "default_policy_id": default_policy_id,
                        }
                    )
                ),
            },
        )

    def load_policy_book(self) -> PolicyBook:
        """Current policies, selection rules and calendars (a handful of reads)."""
        policies = {
            it[LIST_SK]["S"]: Policy.model_validate_json(it["body"]["S"])
            for it in self._query_all(
                IndexName="lists",
                KeyConditionExpression="list_pk = :p",
                ExpressionAttributeValues={":p": _s("POLICY#current")},
            )
        }
        calendars = {
            it[LIST_SK]["S"]: Calendar.model_validate_json(it["body"]["S"])
            for it in self._query_all(
                IndexName="lists",
                KeyConditionExpression="list_pk = :p",
                ExpressionAttributeValues={":p": _s("CALENDAR")},
            )
        }
        # The index is eventually consistent; policy bodies are re-read strongly.
        config = self._get("CONFIG#selection", "CONFIG")
        rules: tuple[PolicyRule, ...] = ()
        default = None
        if config is not None:
            data = json.loads(config["body"]["S"])
            rules = tuple(PolicyRule.model_validate(r, strict=False) for r in data["rules"])
            default = data["default_policy_id"]
        return PolicyBook(policies, rules, default, calendars)

    # ------------------------------------------------------- the book's changes

    def book_changed(self, now: datetime) -> dict[str, Any]:
        """The write (for the transaction of a change of the policy book) that
        counts the change: the next run evaluates the whole due index."""
        return {
            "Update": {
                "TableName": self.table,
                "Key": {PK: _s(BOOK_PK), SK: _s("CONFIG")},
                "UpdateExpression": "SET #t = :t, changed_at = :c ADD revision :one",
                "ExpressionAttributeNames": {"#t": "type"},
                "ExpressionAttributeValues": {
                    ":t": _s("book"),
                    ":c": _s(iso(now)),
                    ":one": _n(1),
                },
            }
        }

    def book_revision(self) -> BookRevision:
        """How often the book changed, when last, and up to which change the due
        index was evaluated whole (one strongly consistent read)."""
        item = self._get(BOOK_PK, "CONFIG") or {}
        return BookRevision(
            revision=int(item.get("revision", {"N": "0"})["N"]),
            changed_at=item["changed_at"]["S"] if "changed_at" in item else None,
            rescheduled=int(item.get("rescheduled", {"N": "0"})["N"]),
        )

    def mark_rescheduled(self, revision: int, as_of: datetime) -> bool:
        """Record that the run at `as_of` evaluates the whole due index for the
        book up to `revision`; False when a run already did it for this one."""
        return self._once(
            "mark rescheduled",
            lambda: self._db.update_item(
                TableName=self.table,
                Key={PK: _s(BOOK_PK), SK: _s("CONFIG")},
                UpdateExpression="SET rescheduled = :r, rescheduled_at = :a",
                ConditionExpression="attribute_not_exists(rescheduled) OR rescheduled < :r",
                ExpressionAttributeValues={":r": _n(revision), ":a": _s(iso(as_of))},
            ),
        )

    # ------------------------------------------------------------ evaluation

    def record_run(self, as_of: datetime, run_id: str, shards: int) -> bool:
        """Record a scheduled run once. False: this scheduled time already ran."""
        return self._once(
            "record run",
            lambda: self._db.put_item(
                TableName=self.table,
                Item={
                    PK: _s(f"RUN#{iso(as_of)}"),
                    SK: _s("RUN"),
                    "type": _s("run"),
                    "run_id": _s(run_id),
                    "shards": _n(shards),
                },
                ConditionExpression="attribute_not_exists(PK)",
            ),
        )

    def query_due(
        self,
        shard: int,
        as_of: datetime,
        start_key: dict[str, Any] | None = None,
        limit: int | None = None,
        *,
        whole: bool = False,
    ) -> DuePage:
        """A page of the shard's accounts due at `as_of`; with `whole`, of every
        account the shard's due index holds (a run after a change of the book)."""
        values = {":p": _s(f"DUE#{shard}")}
        condition = f"{DUE_PK} = :p"
        if not whole:
            values[":t"] = _s(iso(as_of))
            condition += f" AND {DUE_AT} <= :t"
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        if limit:
            kwargs["Limit"] = limit
        out = self._db.query(**kwargs)
        items = [self._stored(it) for it in out.get("Items", [])]
        return DuePage(items, out.get("LastEvaluatedKey"))

    def decision_items(
        self,
        stored: StoredView,
        new_view: AccountView,
        decision: Decision,
        now: datetime,
    ) -> list[dict[str, Any]]:
        """The one transaction that writes a decision with its audit events.

        Raises DecisionTooLargeError if they need more than one transaction
        holds: a decision and its audit trail are written together or not at
        all (the engine keeps decisions inside `engine.WRITE_BUDGET`)."""
        account_id = new_view.account.account_id
        new = StoredView(new_view, stored.version, stored.policy_id)
        items: list[dict[str, Any]] = [self._account_put(new, decision.next_evaluation_at, now)]
        items += [self._case_put(c) for c in decision.cases]
        for approval in decision.approvals:
            items.append(
                self._put(
                    {
                        PK: _s(f"ACCOUNT#{account_id}"),
                        SK: _s(f"APPROVAL#{approval.approval_id}"),
                        "type": _s("approval"),
                        "body": _s(dump(APPROVAL, approval)),
                        "version": _n(1),
                        LIST_PK: _s("APPROVAL#pending"),
                        LIST_SK: _s(f"{iso(approval.created_at)}#{approval.approval_id}"),
                    }
                )
            )
        for approval_id in decision.cancelled_approvals:
            items.append(
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {PK: _s(f"ACCOUNT#{account_id}"), SK: _s(f"APPROVAL#{approval_id}")},
                        "UpdateExpression": "SET #s = :c REMOVE list_pk, list_sk",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":c": _s("cancelled")},
                    }
                }
            )
        items += [
            self._body_put(s.account_id, f"SUSPENSION#{s.suspension_id}", "suspension", s)
            for s in decision.suspensions
        ]
        items += [
            self._body_put(p.account_id, f"PLAN#{p.plan_id}", "plan", p) for p in decision.plans
        ]
        items += [self._invoice_update(inv) for inv in decision.invoices]
        items += [self._put(self.outbox_item(a, pending=True)) for a in decision.actions]
        events = [self._event_put(e, n, DECISION_PHASE) for n, e in enumerate(explained(decision))]
        items += events
        if len(items) > MAX_TRANSACTION_ITEMS:
            raise DecisionTooLargeError(
                f"decision for {account_id} needs {len(items)} writes "
                f"(one transaction holds {MAX_TRANSACTION_ITEMS})"
            )
        return items

    def save_decision(
        self,
        stored: StoredView,
        new_view: AccountView,
        decision: Decision,
        now: datetime,
    ) -> None:
        """Write a decision: account view, cases, approvals, suspensions, plans,
        invoices, audit events and the outbox, in one transaction conditional on
        the account's version. Raises ConflictError if the account moved."""
        self._transact(self.decision_items(stored, new_view, decision, now), "save decision")

    def save_due_only(self, stored: StoredView, due_at: datetime | None, now: datetime) -> bool:
        """Nothing changed but the next evaluation time: move the due entry (to
        PARKED when none is coming and the account owes something, else out of
        the index). No write when it is where it belongs; True when written."""
        account_id = stored.view.account.account_id
        sort_key = due_sort_key(stored.view, due_at)
        if sort_key == stored.due_at:
            return False
        if sort_key is None:
            update = "REMOVE due_pk, due_at"
            values: dict[str, Any] = {":v": _n(stored.version)}
        else:
            update = "SET due_pk = :p, due_at = :d"
            values = {
                ":v": _n(stored.version),
                ":p": _s(self._due_pk(account_id)),
                ":d": _s(sort_key),
            }
        key = account_key(account_id)
        try:
            self._db.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression=update,
                ConditionExpression="version = :v",
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            raise _map_client_error(err, "move due entry") from err
        return True

    # -------------------------------------------------------------- outbox

    def outbox_item(self, action: Action, *, pending: bool) -> dict[str, Any]:
        item: dict[str, Any] = {
            **self._outbox_key(action),
            "type": _s("outbox"),
            "action": _s(dump(ACTION, action)),
            "status": _s("pending" if pending else "queued"),
        }
        if pending:
            item[OUTBOX_PK] = _s(f"OUTBOX#{shard_of(action.account_id, self.shards)}")
            item[OUTBOX_AT] = _s(iso(action.not_before))
        return item

    def query_outbox(self, shard: int, as_of: datetime) -> list[Action]:
        """Unsent actions of a shard whose time has come (deferred or left by a crash)."""
        return [
            ACTION.validate_json(it["action"]["S"])
            for it in self._query_all(
                IndexName=OUTBOX_INDEX,
                KeyConditionExpression=f"{OUTBOX_PK} = :p AND {OUTBOX_AT} <= :t",
                ExpressionAttributeValues={":p": _s(f"OUTBOX#{shard}"), ":t": _s(iso(as_of))},
            )
        ]

    def mark_queued(self, actions: Sequence[Action], now: datetime) -> int:
        """Outbox records of actions SQS accepted leave the outbox index: status
        `queued`, on the condition that it is still `pending`. The channel
        function may already have claimed it or written the outcome (it can run
        before this call returns); that status is kept, never overwritten.
        Returns the calls."""
        _done, calls = self._each_if(actions, lambda a: self._queued_update(a, now), "mark queued")
        return calls

    def _each_if(
        self, actions: Sequence[Action], update: Callable[[Action], dict[str, Any]], what: str
    ) -> tuple[list[Action], int]:
        """One conditional write per action, in transactions of up to 100; a
        cancelled one is retried without the actions whose condition failed.
        Returns the actions written and the calls made."""
        done: list[Action] = []
        calls = 0
        for start in range(0, len(actions), MAX_TRANSACTION_ITEMS):
            pending = list(actions[start : start + MAX_TRANSACTION_ITEMS])
            for _attempt in range(8):
                calls += 1
                try:
                    self._transact([update(a) for a in pending], what)
                    done += pending
                    pending = []
                except ConflictError as err:  # those whose condition failed: out; the rest again
                    pending = [
                        action
                        for action, reason in zip(pending, err.reasons, strict=True)
                        if reason.get("Code") != "ConditionalCheckFailed"
                    ]
                except RetryableError:
                    pass
                if not pending:
                    break
            if pending:
                raise RetryableError(f"{what}: {len(pending)} records left after retries")
        return done, calls

    @staticmethod
    def _outbox_key(action: Action) -> dict[str, Any]:
        return {PK: _s(f"ACCOUNT#{action.account_id}"), SK: _s(f"OUTBOX#{action.action_id}")}

    def _queued_update(self, action: Action, now: datetime) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._outbox_key(action),
                "UpdateExpression": f"SET #s = :q, queued_at = :t REMOVE {OUTBOX_PK}, {OUTBOX_AT}",
                "ConditionExpression": "#s = :p",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {
                    ":q": _s("queued"),
                    ":p": _s("pending"),
                    ":t": _s(iso(now)),
                },
            }
        }

    # -------------------------------------------------------------- delivery

    def get_views(self, account_ids: Iterable[str]) -> dict[str, StoredView]:
        """Several accounts in one BatchGetItem (per 100), strongly consistent."""
        keys = [account_key(a) for a in sorted(set(account_ids))]
        views = [self._stored(item) for item in self.batch_get(keys)]
        return {v.view.account.account_id: v for v in views}

    def delivery_state(
        self, actions: Sequence[Action]
    ) -> tuple[dict[str, StoredView], dict[str, OutboxRecord]]:
        """The accounts and the outbox records of a batch of actions, in one
        BatchGetItem (per 100 keys), strongly consistent: views by account id,
        outbox records by action id (absent when there is none)."""
        accounts = [account_key(a) for a in sorted({x.account_id for x in actions})]
        records = [self._outbox_key(a) for a in {x.action_id: x for x in actions}.values()]
        views: dict[str, StoredView] = {}
        outbox: dict[str, OutboxRecord] = {}
        for item in self.batch_get(accounts + records):
            sk = item[SK]["S"]
            if sk.startswith("OUTBOX#"):
                outbox[sk.removeprefix("OUTBOX#")] = OutboxRecord.parse(item)
            else:
                stored = self._stored(item)
                views[stored.view.account.account_id] = stored
        return views, outbox

    def claim(
        self, actions: Sequence[Action], now: datetime, until: datetime, token: str
    ) -> list[Action]:
        """Claim outbox records for delivery: `sending` until `until`, under
        `token`, on the condition that the action is unsent (`pending` or
        `queued`) or that an earlier claim has ended. Returns the actions claimed;
        the others are someone else's now, or done."""
        claimed, _calls = self._each_if(
            actions, lambda a: self._claim_update(a, now, until, token), "claim actions"
        )
        return claimed

    def _claim_update(
        self, action: Action, now: datetime, until: datetime, token: str
    ) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._outbox_key(action),
                "UpdateExpression": (
                    f"SET #s = :c, claimed_until = :u, claim = :k REMOVE {OUTBOX_PK}, {OUTBOX_AT}"
                ),
                "ConditionExpression": "#s IN (:p, :q) OR (#s = :c AND claimed_until < :n)",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {
                    ":c": _s(SENDING),
                    ":u": _s(iso(until)),
                    ":k": _s(token),
                    ":p": _s("pending"),
                    ":q": _s("queued"),
                    ":n": _s(iso(now)),
                },
            }
        }

    def release(self, actions: Sequence[Action], token: str) -> None:
        """Claims given back unsent (a transient failure, too little time left):
        `queued` again, if the claim is still `token`'s."""
        self._each_if(actions, lambda a: self._release_update(a, token), "release claims")

    def _release_update(self, action: Action, token: str) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table,
                "Key": self._outbox_key(action),
                "UpdateExpression": "SET #s = :q REMOVE claimed_until, claim",
                "ConditionExpression": "#s = :c AND claim = :k",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {
                    ":q": _s("queued"),
                    ":c": _s(SENDING),
                    ":k": _s(token),
                },
            }
        }

    def record_outcomes(
        self,
        outcomes: Sequence[tuple[Action, str, str, str | None]],
        now: datetime,
        queued_at: Mapping[str, datetime] | None = None,
        *,
        transaction: bool = False,
    ) -> int:
        """Audit events for delivery outcomes, and the outbox records' final status
        (with the provider's message id, to replay), in BatchWriteItem calls:
        both are idempotent puts. With `transaction`, in TransactWriteItems of up
        to 100 items instead (the fallback when a batch write failed). Returns the
        calls. `queued_at` (by action id) keeps when each record was queued: the
        put replaces the record `mark_queued` wrote."""
        puts: list[dict[str, Any]] = []
        for action, outcome, reason, provider_id in outcomes:
            data: dict[str, Any] = {
                "action_id": action.action_id,
                "type": action.type.value,
                "channel": action.channel.value,
                "level": action.level,
                "reason": reason,
            }
            if provider_id:
                data["provider_id"] = provider_id
            event = AuditEvent(
                event_id=stable_id(action.account_id, "action", outcome, action.action_id),
                account_id=action.account_id,
                at=now,
                kind=EventKind(f"action_{outcome}"),
                case_id=action.case_id,
                data=data,
                actor=f"channel:{action.channel.value}",
            )
            puts.append(self._event_put(event, phase=DELIVERY_PHASE)["Put"]["Item"])
            record = self.outbox_item(action, pending=False)
            record["status"] = _s(outcome)
            record["outcome_at"] = _s(iso(now))
            record["reason"] = _s(reason)
            if provider_id:
                record["provider_id"] = _s(provider_id)
            if queued_at and action.action_id in queued_at:
                record["queued_at"] = _s(iso(queued_at[action.action_id]))
            puts.append(record)
        if not puts:
            return 0
        if not transaction:
            return self.batch_write([{"PutRequest": {"Item": item}} for item in puts])
        for start in range(0, len(puts), MAX_TRANSACTION_ITEMS):
            chunk = puts[start : start + MAX_TRANSACTION_ITEMS]
            self._transact([self._put(item) for item in chunk], "record outcomes")
        return -(-len(puts) // MAX_TRANSACTION_ITEMS)

    def apply_action_effect(
        self, action: Action, now: datetime, stored: StoredView | None = None
    ) -> bool:
        """What a delivered account action changes on the account: service status,
        written-off invoices and case, a manual task for collectors. `stored` is
        the view the caller already read (re-read only after a conflict). True
        when the account changed."""
        effect = _EFFECTS.get(action.type)
        if effect is None:
            return False
        for _attempt in range(5):
            if stored is None:
                stored = self.get_view(action.account_id)
            view, extra = effect(self, stored.view, action, now)
            if view == stored.view and not extra:
                return False
            event = AuditEvent(
                event_id=stable_id(action.account_id, "effect", action.action_id),
                account_id=action.account_id,
                at=now,
                kind=EventKind.ACCOUNT_UPDATED,
                case_id=action.case_id,
                data={"action_id": action.action_id, "effect": action.type.value},
                actor=f"channel:{action.channel.value}",
            )
            items = [
                self._account_put(
                    StoredView(view, stored.version, stored.policy_id),
                    _due_of(stored),
                    now,
                ),
                self._event_put(event),
                *extra,
                *self._changed_children(stored.view, view),
            ]
            try:
                self._transact(items, f"apply {action.type.value}")
            except ConflictError:
                stored = None
                continue
            return True
        raise ConflictError(f"account {action.account_id} keeps changing; try again")

    def _service(self, view: AccountView, status: ServiceStatus) -> AccountView:
        return view.model_copy(
            update={"account": view.account.model_copy(update={"service_status": status})}
        )

    def _effect_suspend(
        self, view: AccountView, action: Action, now: datetime
    ) -> tuple[AccountView, list[dict[str, Any]]]:
        return self._service(view, ServiceStatus.SUSPENDED), []

    def _effect_restore(
        self, view: AccountView, action: Action, now: datetime
    ) -> tuple[AccountView, list[dict[str, Any]]]:
        return self._service(view, ServiceStatus.ACTIVE), []

    def _effect_deactivate(
        self, view: AccountView, action: Action, now: datetime
    ) -> tuple[AccountView, list[dict[str, Any]]]:
        return self._service(view, ServiceStatus.DEACTIVATED), []

    def _effect_write_off(
        self, view: AccountView, action: Action, now: datetime
    ) -> tuple[AccountView, list[dict[str, Any]]]:
        case = next((c for c in view.cases if c.case_id == action.case_id), None)
        if case is None or not case.is_open:
            return view, []
        ids = set(case.invoice_ids)
        invoices = tuple(
            inv.model_copy(update={"status": InvoiceStatus.WRITTEN_OFF})
            if inv.invoice_id in ids and inv.open_amount > 0
            else inv
            for inv in view.invoices
        )
        closed = case.model_copy(update={"status": CaseStatus.WRITTEN_OFF, "closed_at": now})
        cases = tuple(closed if c is case else c for c in view.cases)
        new = view.model_copy(update={"invoices": invoices, "cases": cases})
        return new, [self._case_put(closed)]

    def _effect_task(
        self, view: AccountView, action: Action, now: datetime
    ) -> tuple[AccountView, list[dict[str, Any]]]:
        task = self._put(
            {
                PK: _s(f"ACCOUNT#{action.account_id}"),
                SK: _s(f"TASK#{action.action_id}"),
                "type": _s("task"),
                "body": _s(dump(ACTION, action)),
                "status": _s("open"),
                LIST_PK: _s("TASK#open"),
                LIST_SK: _s(f"{iso(now)}#{action.account_id}#{action.action_id}"),
            }
        )
        return view, [task]

    # -------------------------------------------------------------- approvals

    def get_approval(self, account_id: str, approval_id: str) -> tuple[Approval, int]:
        item = self._get(f"ACCOUNT#{account_id}", f"APPROVAL#{approval_id}")
        if item is None:
            raise NotFoundError(f"approval {approval_id} does not exist")
        return APPROVAL.validate_json(item["body"]["S"]), int(item["version"]["N"])

    def decide_approval(
        self,
        account_id: str,
        approval_id: str,
        *,
        approve: bool,
        actor: str,
        reason: str,
        on_rejected: str,
        now: datetime,
        calendar: Calendar | None = None,
    ) -> Approval:
        """Approve (the held actions go to the outbox, sent by the next run) or
        reject (recorded with the reason; the case skips the held actions or
        stops, as the policy says). Conditional on the approval being pending.

        Released actions wait for the calendar again: a collector approving on
        a Saturday night does not make the agency's letter go out then."""
        for _attempt in range(5):
            approval, version = self.get_approval(account_id, approval_id)
            if approval.status is not ApprovalStatus.PENDING:
                raise ConflictError(
                    f"approval {approval_id} is {approval.status.value}", field="approval_id"
                )
            stored = self.get_view(account_id)
            case = next((c for c in stored.view.cases if c.case_id == approval.case_id), None)
            # A level's approval holds its case; a pre-due reminder's or a
            # reinstatement's holds no case, and deciding it changes none.
            holds_case = case is not None and case.status is CaseStatus.AWAITING_APPROVAL
            if holds_case and case is not None and case.approval_id not in (approval_id, None):
                raise ConflictError(f"case {approval.case_id} awaits another approval")
            update: dict[str, Any] = {"status": CaseStatus.ACTIVE, "approval_id": None}
            outbox: list[dict[str, Any]] = []
            if approve:
                tz = zone(stored.view.account.timezone)
                for action in approval.actions:
                    earliest = max(action.not_before, now)
                    released = replace(action, not_before=next_send_time(calendar, tz, earliest))
                    outbox.append(self._put(self.outbox_item(released, pending=True)))
                    if action.type is ActionType.SUSPEND_SERVICE:
                        update["service_suspended_by"] = action.level
            elif on_rejected == "stop_case" and holds_case:
                update = {
                    "status": CaseStatus.STOPPED,
                    "approval_id": None,
                    "closed_at": now,
                    "stop_reason": f"approval rejected: {reason}",
                }
            new_case = case.model_copy(update=update) if holds_case and case else None
            view = stored.view
            if new_case is not None:
                view = view.model_copy(
                    update={"cases": tuple(new_case if c is case else c for c in view.cases)}
                )
            status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
            decided = replace(approval, status=status)
            shown = new_case or case
            event = AuditEvent(
                event_id=stable_id(account_id, "approval", approval_id, status.value),
                account_id=account_id,
                at=now,
                kind=EventKind.APPROVAL_DECIDED,
                case_id=approval.case_id,
                data={
                    "approval_id": approval_id,
                    "decision": status.value,
                    "reason": reason,
                    "actions": [a.type.value for a in approval.actions],
                    "case_status": shown.status.value if shown is not None else None,
                },
                actor=actor,
            )
            approval_put = self._put(
                {
                    PK: _s(f"ACCOUNT#{account_id}"),
                    SK: _s(f"APPROVAL#{approval_id}"),
                    "type": _s("approval"),
                    "body": _s(dump(APPROVAL, decided)),
                    "version": _n(version + 1),
                    "decided_by": _s(actor),
                    "reason": _s(reason),
                },
                "version = :av",
            )
            approval_put["Put"]["ExpressionAttributeValues"] = {":av": _n(version)}
            items = [
                self._account_put(StoredView(view, stored.version, stored.policy_id), now, now),
                approval_put,
                *([self._case_put(new_case)] if new_case is not None else []),
                self._event_put(event),
                *outbox,
            ]
            try:
                self._transact(items, "decide approval")
            except ConflictError:
                continue
            return decided
        raise ConflictError(f"account {account_id} keeps changing; try again")

    # ------------------------------------------------------------ templates

    def template_sources(self) -> dict[str, str]:
        """Every uploaded template part, by path (`email/de/reminder.html`).

        They live in one small partition (`TEMPLATES`); the channel functions
        read it once per cold start and lay it over the shipped templates.
        """
        return {
            it[SK]["S"]: it["source"]["S"]
            for it in self._query_all(
                KeyConditionExpression="PK = :p",
                ExpressionAttributeValues={":p": _s(TEMPLATES_PK)},
            )
        }

    # ---------------------------------------------------------- bulk import

    def import_views(
        self, views: Sequence[tuple[AccountView, datetime | None]], now: datetime
    ) -> int:
        """Bulk import of accounts with their invoices and cases (migration from a
        previous system, benchmarks, the local run): unconditional batch writes
        of new accounts. Returns the number of BatchWriteItem calls."""
        requests: list[dict[str, Any]] = []
        for view, due_at in views:
            requests.append(
                {"PutRequest": {"Item": self._account_item(StoredView(view, 0), due_at, now)}}
            )
            for inv in view.invoices:
                digest = invoice_digest(inv)
                requests.append(
                    {
                        "PutRequest": {
                            "Item": {
                                PK: _s(f"ACCOUNT#{inv.account_id}"),
                                SK: _s(f"INVOICE#{inv.invoice_id}"),
                                "type": _s("invoice"),
                                "body": _s(compact(inv)),
                                "body_hash": _s(digest),
                                "version": _n(1),
                            }
                        }
                    }
                )
            for case in view.cases:
                requests.append({"PutRequest": {"Item": self._case_put(case)["Put"]["Item"]}})
        return self.batch_write(requests)

    # -------------------------------------------------------------- reading

    def page(
        self,
        *,
        limit: int,
        start_key: dict[str, Any] | None = None,
        pk: str | None = None,
        sk_prefix: str = "",
        list_pk: str | None = None,
        list_sk_prefix: str = "",
        newest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of a partition (`pk`) or of a list of the lists index (`list_pk`)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Limit": limit,
            "ScanIndexForward": not newest_first,
        }
        if pk is not None:
            kwargs["KeyConditionExpression"] = "PK = :p AND begins_with(SK, :s)"
            kwargs["ExpressionAttributeValues"] = {":p": _s(pk), ":s": _s(sk_prefix)}
        elif list_pk is not None:
            kwargs["IndexName"] = "lists"
            if list_sk_prefix:
                kwargs["KeyConditionExpression"] = "list_pk = :p AND begins_with(list_sk, :s)"
                kwargs["ExpressionAttributeValues"] = {
                    ":p": _s(list_pk),
                    ":s": _s(list_sk_prefix),
                }
            else:
                kwargs["KeyConditionExpression"] = "list_pk = :p"
                kwargs["ExpressionAttributeValues"] = {":p": _s(list_pk)}
        else:
            raise ValueError("page() needs pk or list_pk")
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        try:
            out = self._db.query(**kwargs)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ValidationException":
                raise NotFoundError("the page's start key does not belong to this list") from err
            raise _map_client_error(err, "read page") from err
        return list(out.get("Items", [])), out.get("LastEvaluatedKey")

    def close_task(
        self, account_id: str, task_id: str, note: str, actor: str, now: datetime
    ) -> dict[str, Any]:
        """Close an open manual task (conditional: a task closes once)."""
        item = self._get(f"ACCOUNT#{account_id}", f"TASK#{task_id}")
        if item is None:
            raise NotFoundError(f"task {task_id} does not exist")
        if item.get("status", {}).get("S") != "open":
            raise ConflictError(f"task {task_id} is already closed")
        action = ACTION.validate_json(item["body"]["S"])
        event = AuditEvent(
            event_id=stable_id(account_id, "task_closed", task_id),
            account_id=account_id,
            at=now,
            kind=EventKind.TASK_CLOSED,
            case_id=action.case_id,
            data={"task_id": task_id, "note": note},
            actor=actor,
        )
        self._transact(
            [
                {
                    "Update": {
                        "TableName": self.table,
                        "Key": {PK: _s(f"ACCOUNT#{account_id}"), SK: _s(f"TASK#{task_id}")},
                        "UpdateExpression": (
                            "SET #s = :c, closed_at = :t, closed_by = :a, note = :n "
                            "REMOVE list_pk, list_sk"
                        ),
                        "ConditionExpression": "#s = :o",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {
                            ":c": _s("closed"),
                            ":o": _s("open"),
                            ":t": _s(iso(now)),
                            ":a": _s(actor),
                            ":n": _s(note),
                        },
                    }
                },
                self._event_put(event),
            ],
            "close task",
        )
        return {**item, "status": _s("closed")}

    def list_partition(self, account_id: str, prefix: str) -> list[dict[str, Any]]:
        return list(
            self._query_all(
                KeyConditionExpression="PK = :p AND begins_with(SK, :s)",
                ExpressionAttributeValues={":p": _s(f"ACCOUNT#{account_id}"), ":s": _s(prefix)},
            )
        )

    def events(self, account_id: str) -> list[AuditEvent]:
        return [
            EVENT.validate_json(it["body"]["S"]) for it in self.list_partition(account_id, "EVENT#")
        ]

    def cases(self, account_id: str) -> list[Case]:
        return [
            Case.model_validate_json(it["body"]["S"])
            for it in self.list_partition(account_id, "CASE#")
        ]


def explanation_data(x: Explanation) -> dict[str, Any]:
    return {
        "policy_id": x.policy_id,
        "policy_version": x.policy_version,
        "selected_by": x.selected_by,
        "balance": f"{x.balance:f}",
        "currency": x.currency,
        "days_overdue": x.days_overdue,
        "threshold": f"{x.threshold:f}" if x.threshold is not None else None,
        "level": x.level,
        "target_level": x.target_level,
        "reasons": [{"code": r.code, "message": r.message} for r in x.reasons],
    }


def explained(decision: Decision) -> list[AuditEvent]:
    """The decision's audit events, the first of each case carrying the engine's
    explanation for that case, so the timeline says why as well as what."""
    by_case = {x.case_id: x for x in decision.explanations}
    out = []
    for event in decision.events:
        x = by_case.pop(event.case_id, None)
        if x is None:
            out.append(event)
            continue
        out.append(replace(event, data={**event.data, "explanation": explanation_data(x)}))
    return out


def _due_of(stored: StoredView) -> datetime | None:
    """Keep an account's due entry where it was (PARKED stays parked while the
    account owes something)."""
    return due_time(stored.due_at)


_EFFECTS = {
    ActionType.SUSPEND_SERVICE: DynamoStore._effect_suspend,
    ActionType.RESTORE_SERVICE: DynamoStore._effect_restore,
    ActionType.DEACTIVATE: DynamoStore._effect_deactivate,
    ActionType.WRITE_OFF: DynamoStore._effect_write_off,
    ActionType.MANUAL_TASK: DynamoStore._effect_task,
}


__all__ = [
    "BookRevision",
    "DuePage",
    "DynamoStore",
    "Mutation",
    "PolicyBook",
    "StoredView",
    "WriteResult",
    "prune_view",
]
