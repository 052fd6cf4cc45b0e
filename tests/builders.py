"""Small builders for domain objects, shared by every test layer.

Each takes keyword overrides so a test states only what matters to it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from dunning.model import (
    Account,
    AccountView,
    Action,
    ActionSpec,
    ActionType,
    Calendar,
    Case,
    Channel,
    Invoice,
    Level,
    Mode,
    Policy,
)

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def account(**kw: Any) -> Account:
    base: dict[str, Any] = {
        "account_id": "acc-1",
        "currency": "EUR",
        "timezone": "Europe/Berlin",
        "locale": "de",
        "email": "anna@example.com",
        "phone": "+4915112345678",
    }
    base.update(kw)
    return Account(**base)


def invoice(
    invoice_id: str = "inv-1",
    amount: str | Decimal = "100.00",
    due: date = date(2026, 1, 2),
    **kw: Any,
) -> Invoice:
    amt = Decimal(amount)
    base: dict[str, Any] = {
        "invoice_id": invoice_id,
        "account_id": kw.pop("account_id", "acc-1"),
        "currency": kw.pop("currency", "EUR"),
        "amount": amt,
        "open_amount": kw.pop("open_amount", amt),
        "issue_date": kw.pop("issue_date", min(due, date(2025, 12, 1))),
        "due_date": due,
    }
    base.update(kw)
    return Invoice(**base)


def email(template: str = "reminder", **kw: Any) -> ActionSpec:
    return ActionSpec(type=ActionType.EMAIL, template=template, **kw)


def level(name: str, days: int, *actions: ActionSpec, **kw: Any) -> Level:
    return Level(name=name, days=days, actions=actions or (email(name.replace(" ", "_")),), **kw)


def gotransverse_levels() -> tuple[Level, ...]:
    """The Gotransverse tier table: 10, 30, 40, 45, 60, 90 days."""
    return (
        level("reminder", 10, email("reminder")),
        level("important notice", 30, email("important_notice")),
        level("avoid suspension", 40, ActionSpec(type=ActionType.SMS, template="avoid_suspension")),
        level(
            "suspension",
            45,
            ActionSpec(type=ActionType.SUSPEND_SERVICE, target="provisioning"),
            email("suspension"),
        ),
        level(
            "collection agency",
            60,
            ActionSpec(type=ActionType.COLLECTION_AGENCY, target="agency"),
        ),
        level("write-off", 90, ActionSpec(type=ActionType.WRITE_OFF)),
    )


def policy(**kw: Any) -> Policy:
    base: dict[str, Any] = {
        "policy_id": "pol-1",
        "name": "standard",
        "thresholds": {"EUR": Decimal("10.00"), "USD": Decimal("10.00"), "JPY": Decimal("1000")},
        "levels": gotransverse_levels(),
    }
    base.update(kw)
    return Policy(**base)


def calendar(**kw: Any) -> Calendar:
    base: dict[str, Any] = {"calendar_id": "cal-1"}
    base.update(kw)
    return Calendar(**base)


def view(*invoices: Invoice, **kw: Any) -> AccountView:
    acct = kw.pop("account", None) or account()
    return AccountView(account=acct, invoices=invoices, **kw)


def case(**kw: Any) -> Case:
    """A customer-mode case opened on inv-1 of acc-1, at level 0 of pol-1 v1."""
    base: dict[str, Any] = {
        "case_id": "C-inv-1",
        "account_id": "acc-1",
        "mode": Mode.CUSTOMER,
        "invoice_ids": ("inv-1",),
        "policy_id": "pol-1",
        "policy_version": 1,
        "opened_at": T0,
    }
    base.update(kw)
    return Case(**base)


def action(**kw: Any) -> Action:
    """An action as the engine queues it (an email of level 1 of the consumer policy)."""
    base: dict[str, Any] = {
        "action_id": "act-1",
        "account_id": "acc-1",
        "case_id": "case-1",
        "type": ActionType.EMAIL,
        "channel": Channel.EMAIL,
        "level": 1,
        "level_name": "reminder",
        "entry": 1,
        "index": 0,
        "template": "reminder",
        "target": None,
        "locale": "en",
        "not_before": T0,
        "created_at": T0,
        "policy_id": "consumer",
        "policy_version": 1,
        "invoice_ids": ("inv-1",),
    }
    base.update(kw)
    return Action(**base)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """A UTC instant (the tests' shorthand)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
