"""The API's contract: `*Request` and `*Response` models.

Money is a decimal string (`"1234.50"`, the currency's minor units at most)
next to its ISO 4217 code; instants are ISO 8601 with a zone; dates are
`YYYY-MM-DD`. Inputs are validated strictly enough that a number never passes
for a date and a float never passes for money. Every string and list is
bounded; the limits are in the schema.

Configuration documents (policies, calendars, rules, exclusion lists) are the
domain models themselves, read leniently (amounts as strings or numbers);
the domain's own validators give errors that name the field.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from dunning.model import (
    DEFAULT_SUSPENSION_PROFILES,
    ActionSpec,
    ActionType,
    Calendar,
    ContactCap,
    CurrencyAmounts,
    ExclusionList,
    Level,
    Policy,
    PolicyRule,
    SuspensionKind,
    SuspensionProfile,
)

MAX_BULK_INVOICES = 49  # one transaction (dunning.store.dynamo.MAX_BULK_INVOICES)
MAX_BATCH_ITEMS = 100  # the accounts one BatchGetItem reads
MAX_PAGE = 100
MAX_LIST_MEMBERS = 1000

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
MONEY_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,4})?$"
MoneyString = Annotated[
    str,
    StringConstraints(pattern=MONEY_PATTERN),
    Field(description="A non-negative decimal amount as a string, e.g. '1234.50'"),
]
Text = Annotated[str, StringConstraints(max_length=500)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500)]


def _iso_date(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("a date is a string YYYY-MM-DD")
    return date.fromisoformat(value)


def _iso_instant(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _INSTANT.fullmatch(value):
        raise ValueError("an instant is an ISO 8601 string with a zone, e.g. 2026-11-03T10:00:00Z")
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))


def _local_time(value: Any) -> Any:
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise ValueError("a local time is a string HH:MM or HH:MM:SS, without a zone")
    return time.fromisoformat(value)


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"[0-9]{2}:[0-9]{2}(:[0-9]{2})?")
_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|z|[+-][0-9]{2}:[0-9]{2})"
)
# Strict where JSON is ambiguous: a date or an instant is a string, never a number.
StrictDate = Annotated[
    date,
    BeforeValidator(_iso_date),
    WithJsonSchema({"type": "string", "format": "date"}),
]
LocalTime = Annotated[
    time,
    BeforeValidator(_local_time),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]{2}:[0-9]{2}(:[0-9]{2})?$",
            "description": "A wall-clock time in the account's zone, HH:MM[:SS]",
        }
    ),
]
Instant = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_instant),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def money(amount: Decimal) -> str:
    return f"{amount:f}"


# ------------------------------------------------------------------ errors


class ErrorDetail(Contract):
    loc: list[str | int] = Field(description="Where the problem is: body, field names, indexes")
    msg: str
    type: str


class ErrorResponse(Contract):
    code: str = Field(description="A stable error code, e.g. validation_error, not_found")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


# ----------------------------------------------------------------- billing


class AccountRequest(Contract):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "account"
    segment: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")] = "default"
    currency: Currency
    locale: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")] = "en"
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
    bill_cycle: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")] | None = None
    tags: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]],
        Field(max_length=50),
    ] = Field(default_factory=list)
    email: Annotated[str, StringConstraints(max_length=254)] | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")] | None = None
    policy_override: Id | None = None


class InvoiceRequest(Contract):
    invoice_id: Id
    type: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")] = "standard"
    currency: Currency
    amount: MoneyString
    open_amount: MoneyString | None = Field(
        default=None, description="What is still owed; defaults to the amount"
    )
    issue_date: StrictDate
    due_date: StrictDate


class BulkInvoicesRequest(Contract):
    invoices: Annotated[list[InvoiceRequest], Field(min_length=1, max_length=MAX_BULK_INVOICES)]


class PaymentRequest(Contract):
    payment_id: Id
    currency: Currency
    amount: MoneyString
    received_at: Instant
    invoice_ids: Annotated[list[Id], Field(max_length=MAX_BULK_INVOICES)] = Field(
        default_factory=list, description="Invoices it pays; empty: oldest due first"
    )
    plan_id: Id | None = Field(default=None, description="The payment plan it pays into")


class ReversalRequest(Contract):
    reason: Reason


class BatchInvoiceRequest(InvoiceRequest):
    account_id: Id = Field(description="The billing system's account id")


class InvoiceBatchRequest(Contract):
    invoices: Annotated[
        list[BatchInvoiceRequest], Field(min_length=1, max_length=MAX_BATCH_ITEMS)
    ] = Field(description=f"At most {MAX_BULK_INVOICES} of one account")


class BatchPaymentRequest(PaymentRequest):
    account_id: Id = Field(description="The billing system's account id")


class PaymentBatchRequest(Contract):
    payments: Annotated[list[BatchPaymentRequest], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]


class InvoiceResponse(Contract):
    invoice_id: str
    type: str
    currency: Currency
    amount: MoneyString
    open_amount: MoneyString
    issue_date: date
    due_date: date
    status: str
    plan_id: str | None = None


class WriteResponse(Contract):
    account_id: str
    created: bool
    version: int


class BulkWriteResponse(Contract):
    account_id: str
    created: int
    unchanged_or_updated: int
    version: int


class AllocationResponse(Contract):
    invoice_id: str
    amount: MoneyString


class PaymentResponse(Contract):
    payment_id: str
    account_id: str
    currency: Currency
    amount: MoneyString
    received_at: datetime
    allocations: list[AllocationResponse]
    unallocated: MoneyString = Field(
        description="What no invoice took: kept as the account's credit, it pays the next "
        "invoices as they arrive (those then appear in `allocations`); 0 once reversed"
    )
    reversed_at: datetime | None = None
    reversal_reason: str | None = None


class InvoiceBatchItemResponse(Contract):
    index: int = Field(description="The invoice's place in the request, from 0")
    account_id: str
    invoice_id: str
    status: Literal[200, 201, 404, 409] = Field(
        description="As the single route would answer: 201 created, 200 stored already with "
        "this body, 404 unknown account, 409 refused (another body under the id, another "
        "currency)"
    )
    version: int | None = Field(description="The invoice's version; null when refused")
    error: ErrorResponse | None = Field(description="Why it was refused; null when stored")


class InvoiceBatchResponse(Contract):
    results: list[InvoiceBatchItemResponse] = Field(description="One per invoice, in order")


class PaymentBatchItemResponse(Contract):
    index: int = Field(description="The payment's place in the request, from 0")
    account_id: str
    payment_id: str
    status: Literal[200, 201, 404, 409, 422] = Field(
        description="As the single route would answer: 201 recorded, 200 recorded already with "
        "this body, 404 unknown account, 409 another body under the id, 422 what the account "
        "refuses (an invoice or plan it does not have, another currency)"
    )
    version: int | None = Field(description="The payment's version; null when refused")
    payment: PaymentResponse | None = Field(
        description="The payment as stored (its allocations); null when refused"
    )
    error: ErrorResponse | None = Field(description="Why it was refused; null when recorded")


class PaymentBatchResponse(Contract):
    results: list[PaymentBatchItemResponse] = Field(description="One per payment, in order")


# --------------------------------------------------------------- collectors


class PromiseRequest(Contract):
    promise_id: Id
    case_id: Id
    amount: MoneyString
    promised_date: StrictDate
    note: Text = ""


class SuspensionRequest(Contract):
    suspension_id: Id
    case_id: Id
    kind: Literal["fraud_review", "dispute", "customer_care"]
    reason: Reason
    days: Annotated[int, Field(ge=1, le=730, strict=True)] | None = Field(
        default=None, description="Length in days; default from the policy's profile"
    )


class LiftRequest(Contract):
    reason: Reason


class StopRequest(Contract):
    reason: Reason


class MoveRequest(Contract):
    level: Annotated[int, Field(ge=1, le=100, strict=True)]
    reason: Reason


class InstallmentRequest(Contract):
    due_date: StrictDate
    amount: MoneyString


class PlanRequest(Contract):
    plan_id: Id
    invoice_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_BULK_INVOICES)]
    installments: Annotated[list[InstallmentRequest], Field(min_length=1, max_length=120)]
    grace_days: Annotated[int, Field(ge=0, le=60, strict=True)] = 3


class ApprovalDecisionRequest(Contract):
    decision: Literal["approve", "reject"]
    reason: Reason


class TaskCloseRequest(Contract):
    note: Text = ""


class SuspensionResponse(Contract):
    suspension_id: str
    account_id: str
    case_id: str
    kind: SuspensionKind
    status: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    promised_amount: MoneyString | None = None
    promised_date: date | None = None
    currency: Currency | None = None


class PlanResponse(Contract):
    plan_id: str
    account_id: str
    currency: Currency
    invoice_ids: list[str]
    installments: list[InstallmentRequest]
    grace_days: int
    status: str


class ApprovalResponse(Contract):
    approval_id: str
    account_id: str
    case_id: str
    level: int
    level_name: str
    status: str
    actions: list[str]
    created_at: datetime


class ApprovalListResponse(Contract):
    items: list[ApprovalResponse]
    next_cursor: str | None = None


class TaskResponse(Contract):
    task_id: str
    account_id: str
    case_id: str
    level: int
    level_name: str
    status: str
    created_at: datetime


class TaskListResponse(Contract):
    items: list[TaskResponse]
    next_cursor: str | None = None


# ------------------------------------------------------------------ reading


class CaseResponse(Contract):
    case_id: str
    account_id: str
    mode: str
    status: str
    level: int
    invoice_ids: list[str]
    policy_id: str
    policy_version: int
    opened_at: datetime
    closed_at: datetime | None = None
    entered_level_at: datetime | None = None
    broken_promises: int = 0
    suspension_id: str | None = None
    approval_id: str | None = None
    stop_reason: str | None = None


class OverdueSummary(Contract):
    currency: Currency
    open_amount: MoneyString
    overdue_amount: MoneyString
    open_invoices: int
    overdue_invoices: int
    oldest_due_date: date | None = None
    credit: MoneyString = Field(
        description="Payments beyond the open invoices, kept to pay the next ones"
    )


class AccountResponse(Contract):
    account_id: str
    name: str
    segment: str
    currency: Currency
    locale: str
    timezone: str
    bill_cycle: str | None = None
    tags: list[str]
    policy_override: str | None = None
    service_status: str
    excluded_by: list[str]
    version: int
    summary: OverdueSummary
    invoices: list[InvoiceResponse]
    cases: list[CaseResponse]
    suspensions: list[SuspensionResponse]
    plans: list[PlanResponse]
    next_evaluation_at: datetime | None = None


class TimelineEntry(Contract):
    at: datetime
    kind: str
    case_id: str | None = None
    actor: str
    data: dict[str, Any]


class TimelineResponse(Contract):
    account_id: str
    items: list[TimelineEntry]
    next_cursor: str | None = None


class CaseListResponse(Contract):
    items: list[CaseResponse]
    next_cursor: str | None = None


class ConfigChangeResponse(Contract):
    at: datetime
    actor: str
    resource: str
    resource_id: str
    action: str
    before: Any = None
    after: Any = None


class ConfigAuditResponse(Contract):
    items: list[ConfigChangeResponse]
    next_cursor: str | None = None


class ReasonResponse(Contract):
    code: str
    message: str


class ExplanationResponse(Contract):
    case_id: str | None = None
    policy_id: str
    policy_version: int
    selected_by: str | None = None
    mode: str
    currency: Currency
    balance: MoneyString
    days_overdue: int
    threshold: MoneyString | None = None
    exit_threshold: MoneyString
    level: int
    target_level: int
    reasons: list[ReasonResponse]


class PlannedAction(Contract):
    action_id: str
    case_id: str
    type: str
    channel: str
    level: int
    level_name: str
    template: str | None = None
    target: str | None = None
    not_before: datetime
    requires_approval: bool


class PreviewResponse(Contract):
    account_id: str
    at: datetime
    policy_id: str
    changed: bool
    actions: list[PlannedAction]
    cases: list[CaseResponse]
    events: list[str]
    next_evaluation_at: datetime | None = None
    explanations: list[ExplanationResponse]


# ------------------------------------------------------------ configuration


# Configuration documents read JSON leniently where JSON has no type (tuples
# from arrays, decimals and dates from strings); the domain's validators apply.
LENIENT = ConfigDict(frozen=True, strict=False, extra="forbid")
# Amounts per currency in a document: declared as decimal strings (a JSON number is
# still read, for documents written before); the domain checks the minor units.
DocumentAmounts = Annotated[
    CurrencyAmounts,
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Z]{3}$"},
            "additionalProperties": {
                "type": "string",
                "pattern": MONEY_PATTERN,
                "description": "A non-negative decimal amount in the currency's minor units",
            },
            "description": 'Amounts per ISO 4217 currency, e.g. {"EUR": "50.00"}',
        }
    ),
]


class ActionSpecDocument(ActionSpec):
    model_config = LENIENT


class LevelDocument(Level):
    model_config = LENIENT
    min_amount: DocumentAmounts = Field(default_factory=dict)
    actions: tuple[ActionSpecDocument, ...] = ()


class ContactCapDocument(ContactCap):
    model_config = LENIENT


class SuspensionProfileDocument(SuspensionProfile):
    model_config = LENIENT


class PolicyDocument(Policy):
    """A policy as an admin writes it (amounts as strings or numbers)."""

    model_config = LENIENT
    version: Annotated[int, Field(ge=1, description="Ignored on create: the server numbers")] = 1
    thresholds: DocumentAmounts
    exit_thresholds: DocumentAmounts = Field(default_factory=dict)
    levels: tuple[LevelDocument, ...]
    reinstatement_actions: tuple[ActionSpecDocument, ...] = (
        ActionSpecDocument(type=ActionType.RESTORE_SERVICE, target="provisioning"),
    )
    contact_caps: tuple[ContactCapDocument, ...] = ()
    suspension_profiles: dict[SuspensionKind, SuspensionProfileDocument] = Field(  # type: ignore[assignment]
        default_factory=lambda: {
            k: SuspensionProfileDocument.model_validate(v.model_dump())
            for k, v in DEFAULT_SUSPENSION_PROFILES.items()
        }
    )


class PolicyVersionResponse(Contract):
    policy: dict[str, Any] = Field(description="The policy document as stored")
    policy_id: str
    version: int
    created_at: str
    created_by: str
    draft: bool = Field(description="Never activated: may be deleted")
    current: bool


class PolicyListItem(Contract):
    policy_id: str
    name: str
    current_version: int | None = None
    latest_version: int
    versions: int


class PolicyListResponse(Contract):
    items: list[PolicyListItem]


class ActivateRequest(Contract):
    version: Annotated[int, Field(ge=1, strict=True)]


class CalendarDocument(Calendar):
    model_config = ConfigDict(frozen=True, strict=False, extra="forbid")
    exclusion_dates: Annotated[frozenset[StrictDate], Field(max_length=3660)] = frozenset()
    send_from: LocalTime = time(8, 0)
    send_until: LocalTime = time(20, 0)


class CalendarResponse(Contract):
    calendar: dict[str, Any]
    version: int


class CalendarListResponse(Contract):
    items: list[CalendarResponse]


class RuleDocument(PolicyRule):
    model_config = ConfigDict(frozen=True, strict=False, extra="forbid")
    min_balance: DocumentAmounts = Field(default_factory=dict)
    max_balance: DocumentAmounts = Field(default_factory=dict)


class SelectionRequest(Contract):
    rules: Annotated[list[RuleDocument], Field(max_length=200)]
    default_policy_id: Id | None = None


class SelectionResponse(Contract):
    rules: list[dict[str, Any]]
    default_policy_id: str | None = None
    version: int


class ExclusionListRequest(Contract):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    account_ids: Annotated[list[Id], Field(max_length=MAX_LIST_MEMBERS)] = Field(
        default_factory=list
    )
    invoices: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")]],
        Field(max_length=MAX_LIST_MEMBERS),
    ] = Field(default_factory=list, description="'<account_id>/<invoice_id>' of excluded invoices")


class ExclusionListResponse(Contract):
    list_id: str
    name: str
    account_ids: list[str]
    invoices: list[str]
    version: int
    accounts_updated: int = 0


class ExclusionListsResponse(Contract):
    items: list[ExclusionListResponse]


class TemplateRequest(Contract):
    subject: Annotated[str, StringConstraints(max_length=1000)] | None = Field(
        default=None, description="Email only"
    )
    text: Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
    html: Annotated[str, StringConstraints(max_length=200_000)] | None = Field(
        default=None, description="Email only"
    )


class TemplatePreviewRequest(Contract):
    currency: Currency = "EUR"
    amount: MoneyString = "120.00"
    days_overdue: Annotated[int, Field(ge=-365, le=3650, strict=True)] = 14
    customer_name: Annotated[str, StringConstraints(max_length=200)] = "Alex Example"


class TemplateResponse(Contract):
    channel: str
    locale: str
    name: str
    parts: dict[str, str]


class TemplatePreviewResponse(Contract):
    channel: str
    locale: str
    name: str
    subject: str | None = None
    text: str
    html: str | None = None
    sms_segments: int | None = None


# ------------------------------------------------------------------ analysis


# What one simulation may cover within the API's 29 s: accounts, and accounts x days
# (measured: ~6.5 s in memory for 1,000 accounts over 365 days, plus the scan).
MAX_SIMULATED_ACCOUNTS = 2000
MAX_SIMULATED_ACCOUNT_DAYS = 365_000
Segment = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
AmountOut = Annotated[
    str,
    StringConstraints(pattern=r"^-?[0-9]+(\.[0-9]+)?$"),
    Field(description="A decimal amount as a string in the currency's minor units"),
]


class SimulationRequest(Contract):
    policy: PolicyDocument | None = Field(
        default=None,
        description="A draft to test: it is simulated as if activated now (numbered as the "
        "policy's next version), in place of the current policy with its id",
    )
    policy_id: Id | None = Field(
        default=None,
        description="Or an existing policy: its current version, or `version`, simulated as "
        "if activated now",
    )
    version: Annotated[int, Field(ge=1, le=10**8, strict=True)] | None = Field(
        default=None, description="With policy_id: the stored version to simulate"
    )
    scope: Literal["same_policy", "all"] = Field(
        default="same_policy",
        description="same_policy: the accounts the named policy governs now (running cases "
        "keep their pinned version unless it applies to running cases); all: the policy "
        "decides for every account selected by the filters and adopts running cases",
    )
    days: Annotated[int, Field(ge=1, le=365, strict=True)] = 30
    start: Instant | None = Field(default=None, description="Default: now")
    payments: Literal["none", "observed"] = Field(
        default="none",
        description="observed: each day an account in dunning pays its overdue balance with "
        "`observed_payment_rate` (default: the rate observed over the last 90 days)",
    )
    observed_payment_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    segment: Segment | None = None
    currency: Currency | None = None
    account_ids: (
        Annotated[list[Id], Field(min_length=1, max_length=MAX_SIMULATED_ACCOUNTS)] | None
    ) = None
    seed: Annotated[int, Field(ge=0, le=2**31, strict=True)] = 0


class LevelCountResponse(Contract):
    policy_id: str
    level: int
    name: str
    count: int


class LevelAmountResponse(Contract):
    policy_id: str
    level: int = Field(description="0: opened, no level reached yet")
    name: str
    currency: Currency
    cases: int
    amount: AmountOut


class DayCountsResponse(Contract):
    evaluated: int = Field(description="Accounts due and decided")
    not_covered: int = Field(description="Accounts no policy selects")
    failed: int = Field(description="Accounts the engine refused")
    payments: int = Field(description="Simulated payments (observed model)")
    paid: dict[str, AmountOut] = Field(description="Their amounts per currency")
    cases_opened: int
    cases_reopened: int
    cases_recovered: int
    promises_kept: int
    promises_broken: int
    approvals_requested: int
    level_entries: list[LevelCountResponse]
    actions_by_channel: dict[str, int] = Field(description="Scheduled by the decisions")
    actions_by_type: dict[str, int]
    actions_sent: dict[str, int] = Field(description="Per channel, released to the queues")
    actions_deferred: int = Field(description="Scheduled with a later not_before")


class SimulatedDayResponse(DayCountsResponse):
    day: int
    at: datetime
    open_cases: int
    open_by_level: list[LevelAmountResponse]
    open_amounts: dict[str, AmountOut]


class SimulationResponse(Contract):
    """`dunning.simulation.SimulationResult` as the API returns it."""

    start: datetime
    instants: int
    accounts: int
    policy_override: str | None = Field(description="'<policy id> v<version>' simulated")
    override_scope: Literal["same_policy", "all"]
    payment_model: Literal["none", "observed"]
    payment_rate: float
    seed: int
    adopted_cases: int
    dropped_cases: int
    failed_accounts: list[str]
    days: list[SimulatedDayResponse]
    totals: DayCountsResponse
    final_open_by_level: list[LevelAmountResponse]
    final_open_amounts: dict[str, AmountOut]


class CaseCountResponse(Contract):
    status: str
    level: int
    count: int


class ActionCountResponse(Contract):
    channel: str
    outcome: Literal["pending", "queued", "delivered", "failed", "skipped"]
    count: int


class SummaryResponse(Contract):
    """`dunning.reports.PortfolioSummary` as the API returns it."""

    at: datetime
    cases: list[CaseCountResponse] = Field(description="By status and level")
    cases_by_status: dict[str, int]
    open_cases: int
    outstanding: dict[str, AmountOut] = Field(
        description="Per currency: what the open invoices of open cases still owe"
    )
    recovered_cases: int
    recovered_amount: dict[str, AmountOut] = Field(
        description="Per currency: collected on dunned invoices"
    )
    recovered_payments: int
    promises_kept: int
    promises_broken: int
    actions: list[ActionCountResponse] = Field(description="By channel and outcome")


class PreviewRequest(Contract):
    at: Instant | None = Field(default=None, description="Default: now")


ExclusionDoc = ExclusionList
