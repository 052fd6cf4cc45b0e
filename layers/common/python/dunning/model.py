"""The domain model: immutable, strictly validated pydantic v2 models.

Configuration (policies, calendars, suspension profiles, selection rules) and
portfolio data (accounts, invoices, payments, plans, suspensions, cases) live
here. Every model is frozen and strict; an invalid value raises a
`pydantic.ValidationError` whose `loc` names the field.

What the engine produces per evaluation (`Action`, `Approval`, `AuditEvent`,
`Explanation`, `Decision`) is built with `model_construct` inside the engine:
the engine only ever creates valid values, and skipping validation there keeps
`decide()` within its per-decision budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dunning.money import MINOR_UNITS, CurrencyCode, check_amount, minor_unit

DEFAULT_MAX_LEVELS = 15
MAX_LEVEL_ACTIONS = 10  # one level's actions fit one decision's transaction

# Ids are embedded in DynamoDB keys joined by '#', so '#' is never allowed.
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
Locale = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")]
NonNegativeAmount = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None
    return name


TimeZoneName = Annotated[str, AfterValidator(_check_timezone)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


# --------------------------------------------------------------------------- enums


class ActionType(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"
    CALL = "call"
    SUSPEND_SERVICE = "suspend_service"
    RESTORE_SERVICE = "restore_service"
    DEACTIVATE = "deactivate"
    COLLECTION_AGENCY = "collection_agency"
    WRITE_OFF = "write_off"
    MANUAL_TASK = "manual_task"


class Channel(StrEnum):
    """The delivery queue an action goes to."""

    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"


# Message actions render a template; the others are integrations or internal steps.
MESSAGE_ACTIONS = frozenset({ActionType.EMAIL, ActionType.SMS})
# Actions that reach the customer count against contact caps.
CONTACT_ACTIONS = frozenset({ActionType.EMAIL, ActionType.SMS, ActionType.CALL})
CHANNEL_OF: dict[ActionType, Channel] = {
    t: (
        Channel.EMAIL
        if t is ActionType.EMAIL
        else Channel.SMS
        if t is ActionType.SMS
        else Channel.WEBHOOK
    )
    for t in ActionType
}


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    DISPUTED = "disputed"
    IN_PAYMENT_PLAN = "in_payment_plan"
    WRITTEN_OFF = "written_off"


class CaseStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    AWAITING_APPROVAL = "awaiting_approval"
    RECOVERED = "recovered"
    WRITTEN_OFF = "written_off"
    STOPPED = "stopped"


OPEN_CASE_STATUSES = frozenset(
    {CaseStatus.ACTIVE, CaseStatus.SUSPENDED, CaseStatus.AWAITING_APPROVAL}
)


class Mode(StrEnum):
    CUSTOMER = "customer"  # one case per account, days from the oldest unpaid due date
    INVOICE = "invoice"  # one case per invoice, days from that invoice's due date


class CatchUp(StrEnum):
    LATEST_ONLY = "latest_only"  # jump to the reached level, run only its actions
    SEQUENTIAL = "sequential"  # one level per evaluation, with a minimum gap


class ServiceStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DEACTIVATED = "deactivated"


class SuspensionKind(StrEnum):
    PROMISE_TO_PAY = "promise_to_pay"
    FRAUD_REVIEW = "fraud_review"
    DISPUTE = "dispute"
    CUSTOMER_CARE = "customer_care"


class SuspensionEnd(StrEnum):
    RESUME = "resume"  # continue at the same level
    ESCALATE = "escalate"  # enter the next level at once
    MANUAL = "manual"  # wait for a person to lift it


class SuspensionStatus(StrEnum):
    ACTIVE = "active"
    KEPT = "kept"  # promise kept
    BROKEN = "broken"  # promise broken
    ENDED = "ended"  # reached its end
    LIFTED = "lifted"  # lifted by a person
    AWAITING_REVIEW = "awaiting_review"  # ended, profile says a person decides


class PlanStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    BROKEN = "broken"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


# --------------------------------------------------------------------- configuration


def _amounts_fit(values: dict[str, Decimal]) -> dict[str, Decimal]:
    for currency, amount in values.items():
        check_amount(amount, currency)
    return values


CurrencyAmounts = Annotated[dict[CurrencyCode, NonNegativeAmount], AfterValidator(_amounts_fit)]


class ActionSpec(Frozen):
    """One action of a level, as configured."""

    type: ActionType
    template: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$")] | None = None
    requires_approval: bool = False
    # Integration endpoint name for webhook-style actions (provisioning, agency, IVR).
    target: Id | None = None

    @model_validator(mode="after")
    def _template_for_messages(self) -> ActionSpec:
        if self.type in MESSAGE_ACTIONS and self.template is None:
            raise ValueError(f"a {self.type.value} action needs a template name")
        return self


class Level(Frozen):
    """One escalation step: fires when days overdue reach `days`."""

    name: Name
    days: Annotated[int, Field(ge=-365, le=3650)]
    # Optional minimum overdue balance, per currency, for this level to fire.
    min_amount: CurrencyAmounts = Field(default_factory=dict)
    actions: Annotated[tuple[ActionSpec, ...], Field(max_length=MAX_LEVEL_ACTIONS)] = ()
    # A level that suspended service may say: do not restore on recovery.
    skip_reinstatement: bool = False

    @property
    def is_pre_due(self) -> bool:
        return self.days <= 0


class ContactCap(Frozen):
    """At most `max_messages` per channel per rolling `window_days` per account."""

    channel: Literal[ActionType.EMAIL, ActionType.SMS, ActionType.CALL]
    max_messages: Annotated[int, Field(ge=1, le=1000)]
    window_days: Annotated[int, Field(ge=1, le=365)]


class SuspensionProfile(Frozen):
    kind: SuspensionKind
    default_days: Annotated[int, Field(ge=1, le=365)] = 14
    max_days: Annotated[int, Field(ge=1, le=730)] = 60
    on_end: SuspensionEnd = SuspensionEnd.RESUME
    # Promise to pay: days after the promised date before it counts as broken.
    grace_days: Annotated[int, Field(ge=0, le=60)] = 0
    # Promise to pay: after this many broken promises no new promise is accepted.
    max_broken_promises: Annotated[int, Field(ge=0, le=100)] | None = None

    @model_validator(mode="after")
    def _days(self) -> SuspensionProfile:
        if self.default_days > self.max_days:
            raise ValueError("default_days must not exceed max_days")
        return self


DEFAULT_SUSPENSION_PROFILES: dict[SuspensionKind, SuspensionProfile] = {
    SuspensionKind.PROMISE_TO_PAY: SuspensionProfile(
        kind=SuspensionKind.PROMISE_TO_PAY,
        default_days=14,
        max_days=45,
        on_end=SuspensionEnd.ESCALATE,
        grace_days=2,
        max_broken_promises=2,
    ),
    SuspensionKind.FRAUD_REVIEW: SuspensionProfile(
        kind=SuspensionKind.FRAUD_REVIEW, default_days=30, max_days=90, on_end=SuspensionEnd.MANUAL
    ),
    SuspensionKind.DISPUTE: SuspensionProfile(
        kind=SuspensionKind.DISPUTE, default_days=30, max_days=120, on_end=SuspensionEnd.RESUME
    ),
    SuspensionKind.CUSTOMER_CARE: SuspensionProfile(
        kind=SuspensionKind.CUSTOMER_CARE,
        default_days=7,
        max_days=30,
        on_end=SuspensionEnd.RESUME,
    ),
}


class Policy(Frozen):
    """A versioned dunning profile. Validates itself; errors name the field.

    The maximum number of levels defaults to 15 and can be set per validation
    with `Policy.model_validate(data, context={"max_levels": n})`.
    """

    policy_id: Id
    version: Annotated[int, Field(ge=1)] = 1
    name: Name
    mode: Mode = Mode.CUSTOMER
    # Invoice types the policy dunns; empty means every type.
    invoice_types: frozenset[Tag] = frozenset()
    # Entry: overdue balance at or above this, per currency.
    thresholds: CurrencyAmounts
    # Exit: balance below this, per currency, recovers the case. Defaults to the
    # currency's minor unit (recovered when nothing is left to pay).
    exit_thresholds: CurrencyAmounts = Field(default_factory=dict)
    levels: tuple[Level, ...]
    catch_up: CatchUp = CatchUp.LATEST_ONLY
    min_gap_days: Annotated[int, Field(ge=0, le=365)] = 0
    calendar_id: Id | None = None
    reinstatement_actions: Annotated[
        tuple[ActionSpec, ...], Field(max_length=MAX_LEVEL_ACTIONS)
    ] = (ActionSpec(type=ActionType.RESTORE_SERVICE, target="provisioning"),)
    contact_caps: tuple[ContactCap, ...] = ()
    suspension_profiles: dict[SuspensionKind, SuspensionProfile] = Field(
        default_factory=lambda: dict(DEFAULT_SUSPENSION_PROFILES)
    )
    default_locale: Locale = "en"
    # A new version applies to new cases; to running ones only when this says so.
    apply_to_running_cases: bool = False
    # What a rejected approval does: skip the held actions, or stop the case.
    on_approval_rejected: Literal["skip_level", "stop_case"] = "skip_level"

    @field_validator("levels")
    @classmethod
    def _levels(cls, levels: tuple[Level, ...], info: ValidationInfo) -> tuple[Level, ...]:
        context = info.context if isinstance(info.context, dict) else {}
        max_levels = int(context.get("max_levels", DEFAULT_MAX_LEVELS))
        if not levels:
            raise ValueError("a policy needs at least one level")
        if len(levels) > max_levels:
            raise ValueError(f"at most {max_levels} levels are allowed, got {len(levels)}")
        for i in range(1, len(levels)):
            if levels[i].days <= levels[i - 1].days:
                raise ValueError(
                    f"levels must be strictly ordered by days with unique days: level {i + 1} "
                    f"({levels[i].name!r}, {levels[i].days} days) does not come after level {i} "
                    f"({levels[i - 1].name!r}, {levels[i - 1].days} days)"
                )
        return levels

    @model_validator(mode="after")
    def _consistency(self) -> Policy:
        if not self.thresholds:
            raise ValueError("thresholds: at least one currency threshold is required")
        for currency, exit_amount in self.exit_thresholds.items():
            entry = self.thresholds.get(currency)
            if entry is None:
                raise ValueError(f"exit_thresholds.{currency}: no entry threshold for {currency}")
            if exit_amount > entry:
                raise ValueError(
                    f"exit_thresholds.{currency}: exit threshold {exit_amount} is above the "
                    f"entry threshold {entry}"
                )
        for kind, profile in self.suspension_profiles.items():
            if profile.kind is not kind:
                raise ValueError(f"suspension_profiles.{kind.value}: profile is for {profile.kind}")
        if self.catch_up is CatchUp.SEQUENTIAL and self.min_gap_days < 1:
            raise ValueError(
                "min_gap_days: sequential catch-up needs a gap of at least one day "
                "(one level per evaluation)"
            )
        channels = [cap.channel for cap in self.contact_caps]
        if len(set(channels)) != len(channels):
            raise ValueError("contact_caps: one cap per channel")
        return self

    def threshold(self, currency: str) -> Decimal | None:
        return self.thresholds.get(currency)

    def exit_threshold(self, currency: str) -> Decimal:
        found = self.exit_thresholds.get(currency)
        return found if found is not None else minor_unit(currency)

    def profile(self, kind: SuspensionKind) -> SuspensionProfile:
        return self.suspension_profiles.get(kind) or DEFAULT_SUSPENSION_PROFILES[kind]


class PolicyRule(Frozen):
    """Selects a policy for accounts that match every condition it sets."""

    rule_id: Id
    policy_id: Id
    priority: int = 0  # higher wins; ties broken by rule_id
    segments: frozenset[Tag] = frozenset()
    bill_cycles: frozenset[Tag] = frozenset()
    tags: frozenset[Tag] = frozenset()  # the account must carry all of them
    currencies: frozenset[CurrencyCode] = frozenset()
    min_balance: CurrencyAmounts = Field(default_factory=dict)
    max_balance: CurrencyAmounts = Field(default_factory=dict)


class Calendar(Frozen):
    """When actions may go out, read in the account's time zone.

    Sending is allowed on business days that are not exclusion dates, between
    `send_from` and `send_until` local time; the rest of the day is quiet hours.
    """

    calendar_id: Id
    name: Name = "default"
    business_days: frozenset[Annotated[int, Field(ge=1, le=7)]] = frozenset({1, 2, 3, 4, 5})
    exclusion_dates: frozenset[date] = frozenset()
    send_from: time = time(8, 0)
    send_until: time = time(20, 0)

    @model_validator(mode="after")
    def _window(self) -> Calendar:
        if not self.business_days:
            raise ValueError("business_days: at least one business day is required")
        if self.send_from >= self.send_until:
            raise ValueError("send_from must be before send_until")
        if self.send_from.tzinfo is not None or self.send_until.tzinfo is not None:
            raise ValueError("send_from and send_until are local times without a zone")
        return self


class ExclusionList(Frozen):
    list_id: Id
    name: Name
    account_ids: frozenset[Id] = frozenset()
    invoice_ids: frozenset[Id] = frozenset()


# ------------------------------------------------------------------------ portfolio


class Account(Frozen):
    account_id: Id
    name: Name = "account"
    segment: Tag = "default"
    currency: CurrencyCode
    locale: Locale = "en"
    timezone: TimeZoneName = "UTC"
    bill_cycle: Tag | None = None
    tags: frozenset[Tag] = frozenset()
    email: Annotated[str, StringConstraints(max_length=254)] | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")] | None = None
    policy_override: Id | None = None
    service_status: ServiceStatus = ServiceStatus.ACTIVE
    version: int = 0


class Invoice(Frozen):
    invoice_id: Id
    account_id: Id
    type: Tag = "standard"
    currency: CurrencyCode
    amount: NonNegativeAmount
    open_amount: NonNegativeAmount
    issue_date: date
    due_date: date
    status: InvoiceStatus = InvoiceStatus.OPEN
    plan_id: Id | None = None
    excluded: bool = False  # member of an exclusion list
    version: int = 0

    @field_validator("amount", "open_amount")
    @classmethod
    def _minor_units(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        currency = info.data.get("currency")
        return check_amount(value, currency) if currency else value

    @model_validator(mode="after")
    def _amounts(self) -> Invoice:
        if self.open_amount > self.amount:
            raise ValueError("open_amount must not exceed amount")
        if self.due_date < self.issue_date:
            raise ValueError("due_date must not be before issue_date")
        return self


class Allocation(Frozen):
    invoice_id: Id
    amount: NonNegativeAmount


class Payment(Frozen):
    payment_id: Id
    account_id: Id
    currency: CurrencyCode
    amount: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    received_at: AwareDatetime
    # Invoices it pays; empty means the ledger allocates oldest due first.
    invoice_ids: tuple[Id, ...] = ()
    plan_id: Id | None = None
    allocations: tuple[Allocation, ...] = ()
    reversed_at: AwareDatetime | None = None
    reversal_reason: str | None = None
    version: int = 0

    @field_validator("amount")
    @classmethod
    def _minor_units(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        currency = info.data.get("currency")
        return check_amount(value, currency) if currency else value


class Installment(Frozen):
    due_date: date
    amount: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]


class PaymentPlan(Frozen):
    plan_id: Id
    account_id: Id
    currency: CurrencyCode
    invoice_ids: tuple[Id, ...]
    installments: tuple[Installment, ...]
    grace_days: Annotated[int, Field(ge=0, le=60)] = 3
    paid_amount: NonNegativeAmount = Decimal(0)
    status: PlanStatus = PlanStatus.ACTIVE
    created_at: AwareDatetime
    version: int = 0

    @model_validator(mode="after")
    def _installments(self) -> PaymentPlan:
        if not self.installments:
            raise ValueError("installments: at least one installment is required")
        if not self.invoice_ids:
            raise ValueError("invoice_ids: at least one invoice is required")
        for i in range(1, len(self.installments)):
            if self.installments[i].due_date <= self.installments[i - 1].due_date:
                raise ValueError(f"installments.{i}: due dates must be strictly increasing")
        for inst in self.installments:
            check_amount(inst.amount, self.currency)
        return self


class Suspension(Frozen):
    """A pause of a case: promise to pay, fraud review, dispute or customer care."""

    suspension_id: Id
    account_id: Id
    case_id: Id
    kind: SuspensionKind
    status: SuspensionStatus = SuspensionStatus.ACTIVE
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    reason: Annotated[str, StringConstraints(max_length=500)] = ""
    # Promise to pay only.
    currency: CurrencyCode | None = None
    promised_amount: NonNegativeAmount | None = None
    promised_date: date | None = None
    paid_amount: NonNegativeAmount = Decimal(0)  # payments received since it started
    resolved_at: AwareDatetime | None = None
    version: int = 0

    @model_validator(mode="after")
    def _promise(self) -> Suspension:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.kind is SuspensionKind.PROMISE_TO_PAY and (
            self.promised_amount is None or self.promised_date is None or self.currency is None
        ):
            raise ValueError("a promise to pay needs promised_amount, promised_date and currency")
        return self


class Case(Frozen):
    """One running collection process (per account or per invoice)."""

    case_id: Id
    account_id: Id
    mode: Mode
    invoice_ids: tuple[Id, ...]
    policy_id: Id
    policy_version: int
    status: CaseStatus = CaseStatus.ACTIVE
    level: int = 0  # 0: opened, no level reached yet; levels count from 1
    entries: dict[int, int] = Field(default_factory=dict)  # level -> times entered
    entered_level_at: AwareDatetime | None = None
    opened_at: AwareDatetime
    closed_at: AwareDatetime | None = None
    service_suspended_by: int | None = None  # the level whose action suspended service
    recoveries: int = 0
    broken_promises: int = 0
    approval_id: Id | None = None
    suspension_id: Id | None = None
    stop_reason: str | None = None
    version: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_CASE_STATUSES


class Contact(Frozen):
    """A customer contact (message or call) counted by contact caps."""

    channel: ActionType
    at: AwareDatetime


# ---------------------------------------------------------------------- engine output
# Engine outputs are frozen, slotted dataclasses: built on every decision, they
# cost 0.6 us each where a pydantic model costs 2-3 us (docs/decisions.md).
# pydantic validates and serialises them at the boundaries (TypeAdapter).


@dataclass(frozen=True, slots=True)
class Action:
    """An action to deliver, with a deterministic id (exactly once)."""

    action_id: str
    account_id: str
    case_id: str
    type: ActionType
    channel: Channel
    level: int  # 0 for reinstatement, <= 0 levels of the policy are pre-due reminders
    level_name: str
    entry: int
    index: int
    template: str | None
    target: str | None
    locale: str
    not_before: datetime
    created_at: datetime
    policy_id: str
    policy_version: int
    invoice_ids: tuple[str, ...]
    requires_approval: bool = False


@dataclass(frozen=True, slots=True)
class Approval:
    approval_id: str
    account_id: str
    case_id: str
    level: int
    level_name: str
    actions: tuple[Action, ...]
    created_at: datetime
    status: ApprovalStatus = ApprovalStatus.PENDING


class EventKind(StrEnum):
    CASE_OPENED = "case_opened"
    CASE_REOPENED = "case_reopened"
    LEVEL_ENTERED = "level_entered"
    LEVEL_SKIPPED = "level_skipped"
    ACTION_SCHEDULED = "action_scheduled"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_CANCELLED = "approval_cancelled"
    CASE_RECOVERED = "case_recovered"
    SUSPENSION_ENDED = "suspension_ended"
    PROMISE_KEPT = "promise_kept"
    PROMISE_BROKEN = "promise_broken"
    PLAN_BROKEN = "plan_broken"
    PLAN_COMPLETED = "plan_completed"
    POLICY_MIGRATED = "policy_migrated"
    REMINDER_SCHEDULED = "reminder_scheduled"
    # Written by the store and the API (people and the billing system).
    ACCOUNT_CREATED = "account_created"
    ACCOUNT_UPDATED = "account_updated"
    INVOICE_RECEIVED = "invoice_received"
    PAYMENT_RECEIVED = "payment_received"
    PAYMENT_REVERSED = "payment_reversed"
    CASE_SUSPENDED = "case_suspended"
    APPROVAL_DECIDED = "approval_decided"
    SUSPENSION_LIFTED = "suspension_lifted"
    CASE_STOPPED = "case_stopped"
    CASE_MOVED = "case_moved"
    PLAN_CREATED = "plan_created"
    EXCLUSION_CHANGED = "exclusion_changed"
    TASK_CLOSED = "task_closed"
    # Written by the channel functions.
    ACTION_DELIVERED = "action_delivered"
    ACTION_FAILED = "action_failed"
    ACTION_SKIPPED = "action_skipped"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """An append-only record of a change or an action, with actor and time."""

    event_id: str
    account_id: str
    at: datetime
    kind: EventKind
    case_id: str | None
    data: dict[str, Any]
    actor: str = "engine"


@dataclass(frozen=True, slots=True)
class Reason:
    """One step of an explanation: a stable code and a sentence for people."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why the engine decided what it decided for one case scope, as data."""

    case_id: str | None
    policy_id: str
    policy_version: int
    selected_by: str | None
    mode: Mode
    currency: str
    balance: Decimal
    days_overdue: int
    threshold: Decimal | None
    exit_threshold: Decimal
    level: int
    target_level: int
    reasons: tuple[Reason, ...]


class AccountView(Frozen):
    """Everything the engine needs to decide for one account at one instant."""

    account: Account
    invoices: tuple[Invoice, ...] = ()
    cases: tuple[Case, ...] = ()  # open cases and the latest closed ones
    suspensions: tuple[Suspension, ...] = ()  # active (and awaiting review) ones
    plans: tuple[PaymentPlan, ...] = ()
    contacts: tuple[Contact, ...] = ()  # recent customer contacts, for caps
    reminded: frozenset[str] = frozenset()  # pre-due reminders sent: "<invoice>/<level>"
    excluded_by: tuple[Id, ...] = ()  # exclusion lists naming the account
    # The policy version a running case is pinned to, when it differs from the
    # current version and that version does not apply to running cases.
    case_policy: Policy | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's output: state changes, actions, audit events, next time."""

    account_id: str
    at: datetime
    cases: tuple[Case, ...] = ()  # new or changed cases only
    actions: tuple[Action, ...] = ()
    approvals: tuple[Approval, ...] = ()  # new pending approvals
    cancelled_approvals: tuple[str, ...] = ()
    suspensions: tuple[Suspension, ...] = ()  # changed suspensions
    plans: tuple[PaymentPlan, ...] = ()  # changed plans
    invoices: tuple[Invoice, ...] = ()  # changed invoices (a broken plan frees them)
    contacts: tuple[Contact, ...] | None = None  # the new contact history, if changed
    reminded: frozenset[str] | None = None  # the new reminder set, if changed
    events: tuple[AuditEvent, ...] = ()
    next_evaluation_at: datetime | None = None
    explanations: tuple[Explanation, ...] = ()
    # The write budget stopped this decision short: decide the account again at
    # the same instant once this one is written (engine.WRITE_BUDGET).
    more: bool = False

    @property
    def changed(self) -> bool:
        return bool(
            self.cases
            or self.actions
            or self.approvals
            or self.cancelled_approvals
            or self.suspensions
            or self.plans
            or self.invoices
            or self.contacts is not None
            or self.reminded is not None
        )


__all__ = [
    "DEFAULT_MAX_LEVELS",
    "MAX_LEVEL_ACTIONS",
    "MINOR_UNITS",
    "Account",
    "AccountView",
    "Action",
    "ActionSpec",
    "ActionType",
    "Approval",
    "AuditEvent",
    "Calendar",
    "Case",
    "CaseStatus",
    "CatchUp",
    "Channel",
    "Contact",
    "Decision",
    "Explanation",
    "Invoice",
    "InvoiceStatus",
    "Level",
    "Mode",
    "Payment",
    "PaymentPlan",
    "Policy",
    "PolicyRule",
    "Reason",
    "Suspension",
    "SuspensionKind",
    "SuspensionProfile",
]
