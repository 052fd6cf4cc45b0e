"""The engine's ids are `stable_id` of their parts, joined by the engine itself.

`dunning.engine` joins the parts of its hottest ids (actions, audit events) in
one f-string and hashes them with `joined_id`; the ids must stay what
`stable_id(*parts)` gives, since stored actions and events are named by them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from dunning.engine import _KIND, decide
from dunning.ids import joined_id, stable_id
from dunning.model import EventKind, Mode
from tests.builders import invoice, policy, view

DUE = date(2026, 1, 2)


def test_joined_id_is_stable_id_of_the_joined_parts() -> None:
    parts: tuple[object, ...] = ("acc-1", "C-i1", 2, None, ("reopen", 1), (3, 1, "2026-01-02"))
    assert joined_id("|".join(map(str, parts))) == stable_id(*parts)


def test_action_and_event_ids_are_stable_ids_of_their_parts() -> None:
    for mode in Mode:
        v = view(invoice("i1", "100.00", DUE), invoice("i2", "50.00", DUE))
        d = decide(v, policy(mode=mode), None, datetime.combine(DUE + timedelta(45), time(12), UTC))
        assert d.actions
        for a in d.actions:
            assert a.action_id == stable_id(a.account_id, a.case_id, a.level, a.entry, a.index)
        scheduled = [e for e in d.events if e.kind is EventKind.ACTION_SCHEDULED]
        assert len(scheduled) == len(d.actions)
        for e in scheduled:
            key = e.data["action_id"]
            assert e.event_id == stable_id(e.account_id, _KIND[e.kind], e.case_id, key)
        entered = [e for e in d.events if e.kind is EventKind.LEVEL_ENTERED]
        assert entered
        for e in entered:
            key = (e.data["level"], e.data["entry"])
            assert e.event_id == stable_id(e.account_id, _KIND[e.kind], e.case_id, key)
