"""The engine's fast constructors build exactly what the output classes build.

`dunning.engine` creates its frozen, slotted outputs (`Action`, `Approval`,
`AuditEvent`, `Explanation`, `Decision`) through generated constructors that
skip `object.__setattr__` (docs/performance.md). They must take the same
parameters, apply the same defaults and give equal objects.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from dunning import engine
from dunning.model import (
    Action,
    ActionType,
    Approval,
    AuditEvent,
    Channel,
    Decision,
    EventKind,
    Explanation,
    Mode,
    Reason,
)

NOW = datetime(2026, 12, 3, 9, tzinfo=UTC)
ACTION: dict[str, Any] = {
    "action_id": "a1",
    "account_id": "acc-1",
    "case_id": "C-i1",
    "type": ActionType.EMAIL,
    "channel": Channel.EMAIL,
    "level": 1,
    "level_name": "reminder",
    "entry": 1,
    "index": 0,
    "template": "reminder",
    "target": None,
    "locale": "de",
    "not_before": NOW,
    "created_at": NOW,
    "policy_id": "pol-1",
    "policy_version": 1,
    "invoice_ids": ("i1",),
}
CASES = [
    pytest.param(Action, engine._new_action, ACTION, id="action"),
    pytest.param(
        Approval,
        engine._new_approval,
        {
            "approval_id": "ap1",
            "account_id": "acc-1",
            "case_id": "C-i1",
            "level": 2,
            "level_name": "handover",
            "actions": (Action(**ACTION),),
            "created_at": NOW,
        },
        id="approval",
    ),
    pytest.param(
        AuditEvent,
        engine._new_event,
        {
            "event_id": "e1",
            "account_id": "acc-1",
            "at": NOW,
            "kind": EventKind.LEVEL_ENTERED,
            "case_id": "C-i1",
            "data": {"level": 1},
        },
        id="event",
    ),
    pytest.param(
        Explanation,
        engine._new_explanation,
        {
            "case_id": None,
            "policy_id": "pol-1",
            "policy_version": 1,
            "selected_by": "default",
            "mode": Mode.CUSTOMER,
            "currency": "EUR",
            "balance": Decimal("12.50"),
            "days_overdue": 3,
            "threshold": Decimal("10.00"),
            "exit_threshold": Decimal("0.01"),
            "level": 0,
            "target_level": 0,
            "reasons": (Reason("nothing_overdue", "no counting invoice is overdue"),),
        },
        id="explanation",
    ),
    pytest.param(Decision, engine._new_decision, {"account_id": "acc-1", "at": NOW}, id="decision"),
]


@pytest.mark.parametrize(("cls", "build", "kwargs"), CASES)
def test_a_fast_constructor_builds_what_the_class_builds(
    cls: type[Any], build: Any, kwargs: dict[str, Any]
) -> None:
    # Given an output class and the engine's constructor for it
    # Then they take the same parameters with the same defaults
    assert list(inspect.signature(build).parameters) == list(inspect.signature(cls).parameters)
    for name, param in inspect.signature(cls).parameters.items():
        assert inspect.signature(build).parameters[name].default == param.default
    # And give equal objects of the class, by keyword and by position, still frozen
    expected = cls(**kwargs)
    for built in (build(**kwargs), build(*kwargs.values())):
        assert type(built) is cls
        assert built == expected
        assert repr(built) == repr(expected)
    first = next(iter(kwargs))
    with pytest.raises(AttributeError):
        setattr(built, first, "other")
