"""The engine's `_replace` gives what pydantic's `model_copy(update=...)` gives,
and its `_contact` what validating a `Contact` gives.

`dunning.engine._replace` copies the engine's frozen models on every level
entered; it must give an equal model of the same class, with the same
`model_fields_set`, still frozen, and leave the original untouched.
`dunning.engine._contact` builds the contacts the caps record, without
validating them again; it must give what `Contact(channel=..., at=...)` gives.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from dunning import engine
from dunning.model import (
    Account,
    AccountView,
    ActionType,
    Case,
    CaseStatus,
    Contact,
    Invoice,
    InvoiceStatus,
    Mode,
)

NOW = datetime(2026, 12, 3, 9, tzinfo=UTC)
CASE = Case(
    case_id="C-i1",
    account_id="acc-1",
    mode=Mode.CUSTOMER,
    invoice_ids=("i1",),
    policy_id="p",
    policy_version=1,
    opened_at=NOW,
    entries={1: 1},
)
INVOICE = Invoice(
    invoice_id="i1",
    account_id="acc-1",
    currency="EUR",
    amount=Decimal("10.00"),
    open_amount=Decimal("10.00"),
    issue_date=date(2026, 11, 1),
    due_date=date(2026, 11, 15),
    status=InvoiceStatus.IN_PAYMENT_PLAN,
    plan_id="plan-1",
)
VIEW = AccountView(
    account=Account(account_id="acc-1", name="A", currency="EUR", timezone="Europe/Berlin"),
    invoices=(INVOICE,),
)


@pytest.mark.parametrize(
    ("model", "update"),
    [
        (CASE, {"level": 2, "entries": {1: 1, 2: 1}, "entered_level_at": NOW}),
        (CASE, {"status": CaseStatus.RECOVERED, "closed_at": NOW, "recoveries": 1}),
        (CASE, {}),
        (INVOICE, {"status": InvoiceStatus.OPEN, "plan_id": None}),
        (VIEW, {"cases": (CASE,), "reminded": frozenset({"i1/1"})}),
    ],
)
def test_replace_gives_what_model_copy_gives(model: BaseModel, update: dict[str, Any]) -> None:
    before = model.model_dump()
    expected = model.model_copy(update=update)
    replaced = engine._replace(model, update)
    assert type(replaced) is type(expected)
    assert replaced == expected
    assert replaced.model_fields_set == expected.model_fields_set
    assert replaced.__pydantic_extra__ == expected.__pydantic_extra__
    assert replaced.__pydantic_private__ == expected.__pydantic_private__
    assert repr(replaced) == repr(expected)
    assert model.model_dump() == before
    first = next(iter(type(model).model_fields))
    with pytest.raises(ValidationError):
        setattr(replaced, first, getattr(model, first))


@pytest.mark.parametrize("channel", [ActionType.EMAIL, ActionType.SMS, ActionType.CALL])
def test_contact_gives_what_validation_gives(channel: ActionType) -> None:
    expected = Contact(channel=channel, at=NOW)
    built = engine._contact(channel, NOW)
    assert type(built) is Contact
    assert built == expected
    assert built.model_fields_set == expected.model_fields_set
    assert built.__pydantic_extra__ == expected.__pydantic_extra__
    assert built.__pydantic_private__ == expected.__pydantic_private__
    assert repr(built) == repr(expected)
    assert built.model_dump_json() == expected.model_dump_json()
    assert built.channel is channel and built.at is NOW
    with pytest.raises(ValidationError):
        built.at = NOW  # type: ignore[misc]
