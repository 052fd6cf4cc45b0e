"""A change of the policy book reaches the accounts already scheduled.

An account's due time is decided with the book of its moment (by a run, or by
ingestion). When an admin activates a policy version, changes a calendar or the
selection rules through the API, the first run at least `BOOK_SETTLE` later
decides every account of the due index again with the new book, once: one that
must act now acts, one whose next step moved gets its new due time, one that
owes money below the old threshold (parked) is dunned if the new one covers it.

Each due time is checked against the evaluator itself: the account is made due
at once and a run decides it (what `what_the_next_run_writes` does)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dunning import aws
from dunning.evaluation import BOOK_SETTLE
from dunning.store.schema import PARKED, iso
from local.cloud import LocalCloud
from tests.integration.api_helpers import NOW, Api, account_body, invoice_body
from tests.integration.helpers import ReadTracker
from tests.integration.test_ingestion_wake import due_at, what_the_next_run_writes

LATER = NOW + BOOK_SETTLE + timedelta(minutes=1)  # the first run that sees the change
CHECK = LATER + timedelta(hours=1)  # a run that checks a due time (`what_the_next_run_writes`)


def bill(api: Api, account_id: str, days_overdue: int, amount: str = "120.00") -> None:
    api.ok("PUT", f"/accounts/{account_id}", "billing", account_body())
    body = invoice_body(f"inv-{account_id}", days_overdue, amount)
    api.ok("PUT", f"/accounts/{account_id}/invoices/inv-{account_id}", "billing", body)


def activate(api: Api, policy_id: str, change: Any) -> int:
    """A new version of `policy_id`, changed by `change(body)`, made current."""
    body = api.ok("GET", f"/policies/{policy_id}")["policy"]
    body.pop("version", None)
    change(body)
    created = api.ok("POST", f"/policies/{policy_id}/versions", "admin", body)
    api.ok("POST", f"/policies/{policy_id}/activate", "admin", {"version": created["version"]})
    return int(created["version"])


def earlier_pre_due(body: dict[str, Any]) -> None:
    body["levels"][0]["days"] = -8  # the pre-due reminder eight days before, not three


def lower_threshold(body: dict[str, Any]) -> None:
    body["thresholds"]["EUR"] = "2.00"


def cases(api: Api, account_id: str) -> list[dict[str, Any]]:
    return list(api.ok("GET", f"/accounts/{account_id}")["cases"])


def test_a_version_with_an_earlier_step_moves_a_scheduled_account_earlier(
    api: Api, stack: LocalCloud
) -> None:
    bill(api, "acc-1", -10)  # due in ten days: the pre-due reminder three days before
    before = due_at(stack, "acc-1")
    assert before is not None and before > iso(NOW + timedelta(days=6))
    activate(api, "consumer", earlier_pre_due)
    stack.evaluate(LATER)
    moved = due_at(stack, "acc-1")
    assert moved is not None and iso(LATER) < moved < before
    assert what_the_next_run_writes(stack, "acc-1", CHECK) == moved


def test_the_moved_account_is_reminded_at_the_new_time_not_the_old_one(
    api: Api, stack: LocalCloud
) -> None:
    bill(api, "acc-1", -10)
    activate(api, "consumer", earlier_pre_due)
    stack.evaluate(LATER)
    assert stack.deliver()["email"].received == 0
    stack.evaluate(NOW + timedelta(days=3))  # past the new time, long before the old one
    assert stack.deliver()["email"].received == 1  # the pre-due reminder, of version 2
    assert cases(api, "acc-1") == []  # a reminder opens no case


def test_money_owed_below_the_old_threshold_is_dunned_once_a_new_one_covers_it(
    api: Api, stack: LocalCloud
) -> None:
    bill(api, "acc-1", 12, amount="5.00")  # twelve days overdue, under the 10.00 threshold
    stack.evaluate(NOW)
    assert cases(api, "acc-1") == []
    assert due_at(stack, "acc-1") == PARKED  # in the index, after every real instant
    activate(api, "consumer", lower_threshold)
    stack.evaluate(LATER)
    (case,) = cases(api, "acc-1")
    assert case["status"] == "active" and case["level"] == 2  # the reminder of day ten
    assert stack.deliver()["email"].received == 1


def test_a_gentler_version_moves_the_due_time_later_and_the_old_time_reads_nothing(
    api: Api, stack: LocalCloud
) -> None:
    bill(api, "acc-1", -10)
    before = due_at(stack, "acc-1")
    assert before is not None
    activate(api, "consumer", lambda body: body["levels"][0].update(days=-1))
    stack.evaluate(LATER)
    later = due_at(stack, "acc-1")
    assert later is not None and later > before
    assert what_the_next_run_writes(stack, "acc-1", CHECK) == later
    with ReadTracker() as reads:
        stack.evaluate(NOW + timedelta(days=7, hours=12))  # after the old time only
    assert reads.account_items["acc-1"] == 0


def portfolio(api: Api) -> None:
    """Accounts in every state the due index holds: not due yet, due in a case,
    parked under the threshold; and one that owes nothing (not in the index)."""
    bill(api, "not-yet", -10)
    bill(api, "dunned", 12)
    bill(api, "small", 12, amount="5.00")
    api.ok("PUT", "/accounts/paid-up", "billing", account_body())


def test_the_whole_index_is_read_once_after_a_change_then_only_what_is_due(
    api: Api, stack: LocalCloud
) -> None:
    portfolio(api)
    stack.evaluate(NOW)
    activate(api, "consumer", earlier_pre_due)
    with ReadTracker() as reads:
        stack.evaluate(LATER)
    assert set(reads.account_items) == {"not-yet", "dunned", "small"}  # not "paid-up"
    assert stack.store().book_revision().rescheduled == stack.store().book_revision().revision
    with ReadTracker() as reads:
        stack.evaluate(LATER + timedelta(hours=1))
    assert set(reads.account_items) == set()  # nothing due: not one account read


def test_a_change_within_the_settling_time_waits_for_the_next_run(
    api: Api, stack: LocalCloud
) -> None:
    bill(api, "acc-1", -10)
    before = due_at(stack, "acc-1")
    activate(api, "consumer", earlier_pre_due)
    # Ingestion in another container may still hold the old book for BOOK_SETTLE.
    stack.evaluate(NOW + BOOK_SETTLE - timedelta(seconds=1))
    assert due_at(stack, "acc-1") == before
    stack.evaluate(LATER)
    assert due_at(stack, "acc-1") != before


@pytest.mark.parametrize("change", ["calendar", "selection rules", "policy"])
def test_a_change_that_decides_nothing_new_writes_nothing(
    api: Api, stack: LocalCloud, change: str
) -> None:
    portfolio(api)
    stack.evaluate(NOW)
    due = {a: due_at(stack, a) for a in ("not-yet", "dunned", "small", "paid-up")}
    revision = stack.store().book_revision().revision
    if change == "calendar":
        calendar = api.ok("GET", "/calendars/default")["calendar"]
        api.ok("PUT", "/calendars/default", "admin", calendar)
    elif change == "selection rules":
        api.ok("PUT", "/selection-rules", "admin", {"rules": [], "default_policy_id": "consumer"})
    else:  # the same policy again, as a new version
        activate(api, "consumer", lambda body: None)
    assert stack.store().book_revision().revision == revision + 1
    with aws.RequestCounter() as counter, ReadTracker() as reads:
        stack.evaluate(LATER)
    assert set(reads.account_items) == {"not-yet", "dunned", "small"}
    assert counter.total("dynamodb.TransactWriteItems") == 0
    assert counter.counts["dynamodb.UpdateItem"] == 1  # the book's mark, no account
    assert {a: due_at(stack, a) for a in due} == due


def test_a_scheduled_time_fired_twice_reviews_the_index_once(api: Api, stack: LocalCloud) -> None:
    portfolio(api)
    stack.evaluate(NOW)
    activate(api, "consumer", earlier_pre_due)
    stack.evaluate(LATER)
    with ReadTracker() as reads:
        stack.evaluate(LATER)
    assert reads.account_items == {}
