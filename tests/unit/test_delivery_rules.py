"""The delivery's pure rules: when a queued action is stale, and how long a
transient failure waits before its retry."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunning.delivery import MAX_VISIBILITY_S, backoff_seconds, staleness
from dunning.model import (
    AccountView,
    Action,
    ActionType,
    Case,
    CaseStatus,
    Channel,
    Invoice,
    InvoiceStatus,
    Mode,
)
from tests import builders
from tests.unit.strategies import PROPERTY_SETTINGS

AT = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)

# ------------------------------------------------------------------ staleness


def action(**kw: Any) -> Action:
    return builders.action(
        **{"level": 2, "not_before": AT, "created_at": AT, "invoice_ids": ("inv-1", "inv-2"), **kw}
    )


def invoice(
    invoice_id: str, status: InvoiceStatus = InvoiceStatus.OPEN, open_: str = "50"
) -> Invoice:
    return builders.invoice(invoice_id, open_amount=Decimal(open_), status=status)


def case(**kw: object) -> Case:
    fields: dict[str, object] = {
        "case_id": "case-1",
        "account_id": "acc-1",
        "mode": Mode.CUSTOMER,
        "invoice_ids": ("inv-1", "inv-2"),
        "policy_id": "consumer",
        "policy_version": 1,
        "status": CaseStatus.ACTIVE,
        "level": 2,
        "entries": {1: 1, 2: 1},
        "opened_at": AT,
    }
    fields.update(kw)
    return Case.model_validate(fields)


def view(
    cases: tuple[Case, ...] = (),
    invoices: tuple[Invoice, ...] = (),
    excluded_by: tuple[str, ...] = (),
) -> AccountView:
    return builders.view(*invoices, cases=cases, excluded_by=excluded_by)


OPEN = (invoice("inv-1"), invoice("inv-2"))
PAID = (
    invoice("inv-1", InvoiceStatus.PAID, "0"),
    invoice("inv-2", InvoiceStatus.PAID, "0"),
)

STALENESS = [
    # (what changed since the action was queued, action, view, reason)
    ("nothing", action(), view((case(),), OPEN), None),
    ("one invoice of two still open", action(), view((case(),), (OPEN[0], PAID[1])), None),
    ("the account joined an exclusion list", action(), view((case(),), OPEN, ("vip",)), "excluded"),
    ("the case is gone", action(), view((), OPEN), "recovered"),
    ("the case recovered", action(), view((case(status=CaseStatus.RECOVERED),), PAID), "recovered"),
    ("every invoice was paid", action(), view((case(),), PAID), "recovered"),
    (
        "the invoices were paid down to zero",
        action(),
        view((case(),), (invoice("inv-1", open_="0"), invoice("inv-2", open_="0"))),
        "recovered",
    ),
    (
        "the case was suspended",
        action(),
        view((case(status=CaseStatus.SUSPENDED),), OPEN),
        "suspended",
    ),
    ("the case was stopped", action(), view((case(status=CaseStatus.STOPPED),), OPEN), "stopped"),
    (
        "the case was written off",
        action(),
        view((case(status=CaseStatus.WRITTEN_OFF),), OPEN),
        "written_off",
    ),
    ("the case reached a higher level", action(), view((case(level=3),), OPEN), "moved_on"),
    (
        "the case left the level and entered it again",
        action(),
        view((case(entries={1: 1, 2: 2}),), OPEN),
        "moved_on",
    ),
    (
        "every invoice is disputed",
        action(),
        view((case(),), tuple(invoice(i, InvoiceStatus.DISPUTED) for i in ("inv-1", "inv-2"))),
        "disputed",
    ),
    (
        "every invoice is in a payment plan",
        action(),
        view(
            (case(),), tuple(invoice(i, InvoiceStatus.IN_PAYMENT_PLAN) for i in ("inv-1", "inv-2"))
        ),
        "in_payment_plan",
    ),
    (
        "the action names no invoices: the case's count",
        action(invoice_ids=()),
        view((case(),), PAID),
        "recovered",
    ),
    (
        "a reinstatement goes out after recovery",
        action(level=0, type=ActionType.RESTORE_SERVICE, channel=Channel.WEBHOOK),
        view((case(status=CaseStatus.RECOVERED),), PAID),
        None,
    ),
    (
        "a pre-due reminder for an open invoice",
        action(case_id="R-inv-1", level=-1, invoice_ids=("inv-1",)),
        view((), OPEN),
        None,
    ),
    (
        "a pre-due reminder for an invoice paid since",
        action(case_id="R-inv-1", level=-1, invoice_ids=("inv-1",)),
        view((), PAID),
        "paid",
    ),
    (
        "a pre-due reminder for an invoice gone from the view",
        action(case_id="R-inv-9", level=-1, invoice_ids=("inv-9",)),
        view((), OPEN),
        "paid",
    ),
    (
        "an excluded account gets no pre-due reminder either",
        action(case_id="R-inv-1", level=-1, invoice_ids=("inv-1",)),
        view((), OPEN, ("vip",)),
        "excluded",
    ),
]


@pytest.mark.parametrize(
    ("queued", "view_", "reason"),
    [(a, v, r) for _, a, v, r in STALENESS],
    ids=[name for name, *_ in STALENESS],
)
def test_staleness(queued: Action, view_: AccountView, reason: str | None) -> None:
    assert staleness(queued, view_) == reason


CLOSED_OR_PAUSED = st.sampled_from(
    [CaseStatus.SUSPENDED, CaseStatus.RECOVERED, CaseStatus.STOPPED, CaseStatus.WRITTEN_OFF]
)


@PROPERTY_SETTINGS
@given(status=CLOSED_OR_PAUSED, level=st.integers(1, 9), entry=st.integers(1, 5))
def test_a_level_action_never_goes_out_for_a_case_that_is_not_running(
    status: CaseStatus, level: int, entry: int
) -> None:
    queued = action(level=level, entry=entry)
    current = case(status=status, level=level, entries={level: entry})
    assert staleness(queued, view((current,), OPEN)) is not None


@PROPERTY_SETTINGS
@given(
    level=st.integers(1, 9),
    entry=st.integers(1, 5),
    case_level=st.integers(1, 9),
    case_entry=st.integers(1, 5),
    status=st.sampled_from([CaseStatus.ACTIVE, CaseStatus.AWAITING_APPROVAL]),
)
def test_a_running_case_gets_its_action_unless_it_moved_past_the_level_or_reentered_it(
    level: int, entry: int, case_level: int, case_entry: int, status: CaseStatus
) -> None:
    queued = action(level=level, entry=entry)
    current = case(status=status, level=case_level, entries={level: case_entry})
    still_due = case_level <= level and case_entry == entry
    assert staleness(queued, view((current,), OPEN)) == (None if still_due else "moved_on")


@PROPERTY_SETTINGS
@given(status=st.sampled_from(list(CaseStatus)), level=st.integers(-3, 9))
def test_an_excluded_account_is_never_contacted(status: CaseStatus, level: int) -> None:
    queued = action(level=level)
    assert staleness(queued, view((case(status=status),), OPEN, ("legal",))) == "excluded"


# -------------------------------------------------------------------- backoff


class Highest(random.Random):
    """Jitter at its top: the backoff's ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_the_ceiling_doubles_per_receive_up_to_fifteen_minutes() -> None:
    ceilings = [backoff_seconds(n, 30, Highest()) for n in range(1, 9)]
    assert ceilings == [30, 60, 120, 240, 480, 900, 900, 900]


@PROPERTY_SETTINGS
@given(
    receives=st.integers(0, 10_000),
    base=st.integers(1, 600),
    seed=st.integers(0, 2**32),
)
def test_the_backoff_is_between_one_second_and_its_capped_ceiling(
    receives: int, base: int, seed: int
) -> None:
    ceiling = min(MAX_VISIBILITY_S, base * 2 ** max(0, min(receives, 64) - 1))
    wait = backoff_seconds(receives, base, random.Random(seed))
    assert isinstance(wait, int)
    assert 1 <= wait <= ceiling <= MAX_VISIBILITY_S


@PROPERTY_SETTINGS
@given(receives=st.integers(3, 50), base=st.integers(30, 300), seed=st.integers(0, 2**32))
def test_the_jitter_is_full(receives: int, base: int, seed: int) -> None:
    # Full jitter: waits spread over the whole range below the ceiling, so
    # messages that failed together do not come back together.
    rng = random.Random(seed)
    ceiling = min(MAX_VISIBILITY_S, base * 2 ** (receives - 1))
    waits = [backoff_seconds(receives, base, rng) for _ in range(200)]
    assert min(waits) < ceiling / 4
    assert max(waits) > ceiling * 3 / 4
    assert len(set(waits)) > 20
