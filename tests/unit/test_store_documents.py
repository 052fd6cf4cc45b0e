"""The documents a decision writes are pydantic's own JSON: `compact` and `dump`
call the serializers behind `model_dump_json(exclude_defaults=True)` and
`TypeAdapter.dump_json`, without those methods' keyword handling. Should a
pydantic release make the two answer differently, these fail."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from dunning.engine import apply_decision, decide
from dunning.model import AccountView, ActionSpec, ActionType, Decision
from dunning.store.dynamo import ACTION, APPROVAL, EVENT, compact, dump, explained
from tests.builders import email, invoice, level, policy, view

DUE = date(2026, 1, 2)


def on_day(n: int) -> datetime:
    return datetime.combine(DUE + timedelta(days=n), time(12), UTC)


def decisions() -> list[tuple[Decision, AccountView]]:
    """A case opened at level 1, then level 2 with an action held for approval;
    each decision with the view it leaves."""
    p = policy(
        levels=(
            level("first", 10),
            level(
                "second",
                30,
                email("final"),
                ActionSpec(type=ActionType.CALL, requires_approval=True),
            ),
        )
    )
    v = view(invoice(), invoice("inv-2", "40.00"))
    out = []
    for day in (11, 31):
        d = decide(v, p, None, on_day(day))
        v = apply_decision(v, d)
        out.append((d, v))
    return out


def test_models_are_written_as_model_dump_json_without_defaults() -> None:
    for d, v in decisions():
        assert compact(v) == v.model_dump_json(exclude_defaults=True)
        assert d.cases
        for c in d.cases:
            assert compact(c) == c.model_dump_json(exclude_defaults=True)


def test_engine_outputs_are_written_as_their_adapters_dump_them() -> None:
    ds = [d for d, _ in decisions()]
    assert any(d.approvals for d in ds)
    for d in ds:
        assert d.actions and d.events
        for a in d.actions:
            assert dump(ACTION, a) == ACTION.dump_json(a).decode()
        for approval in d.approvals:
            assert dump(APPROVAL, approval) == APPROVAL.dump_json(approval).decode()
        events = explained(d)
        assert any("explanation" in e.data for e in events)
        for e in events:
            assert dump(EVENT, e) == EVENT.dump_json(e).decode()
