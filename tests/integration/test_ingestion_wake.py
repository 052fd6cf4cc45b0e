"""An invoice or a payment makes its account due when the evaluator would next
act on it (`evaluation.NextEvaluation`), not at once when nothing would change.

Each test checks the claim against the evaluator itself: the account is made
due at once (what ingestion did before), the next run evaluates it, and the
due time it writes must be the one ingestion wrote."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from dunning import aws
from dunning.evaluation import Decider, NextEvaluation
from dunning.store import PolicyBook
from dunning.store.config import ConfigStore
from dunning.store.schema import iso
from local.cloud import LocalCloud
from tests.builders import invoice
from tests.integration.api_helpers import (
    NOW,
    Api,
    account_body,
    invoice_body,
    payment_body,
)

NEXT_RUN = NOW + timedelta(hours=6)


def due_at(stack: LocalCloud, account_id: str) -> str | None:
    item: dict[str, Any] = (
        aws.dynamodb()
        .get_item(
            TableName=stack.table_name,
            Key={"PK": {"S": f"ACCOUNT#{account_id}"}, "SK": {"S": "ACCOUNT"}},
            ConsistentRead=True,
        )
        .get("Item", {})
    )
    value = item.get("due_at", {}).get("S")
    return str(value) if value is not None else None


def what_the_next_run_writes(stack: LocalCloud, account_id: str, run_at: datetime) -> str | None:
    """Make the account due now, as ingestion did before, and let a run decide."""
    store = stack.store()
    store.save_due_only(store.get_view(account_id), NOW, NOW)
    assert due_at(stack, account_id) == iso(NOW)
    stack.evaluate(run_at)
    return due_at(stack, account_id)


def billed(api: Api, days_overdue: int) -> None:
    """The account `acc-1` with one invoice of 120.00 EUR, `inv-1`."""
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", days_overdue))


def case_statuses(api: Api) -> list[str]:
    return [c["status"] for c in api.ok("GET", "/accounts/acc-1")["cases"]]


def test_an_invoice_not_yet_due_makes_the_account_due_when_the_next_run_would(
    api: Api, stack: LocalCloud
) -> None:
    billed(api, -10)  # due in ten days
    written = due_at(stack, "acc-1")
    assert written is not None and written > iso(NEXT_RUN), written
    assert what_the_next_run_writes(stack, "acc-1", NEXT_RUN) == written


def test_the_runs_before_that_time_do_not_read_the_account(api: Api, stack: LocalCloud) -> None:
    billed(api, -10)  # due in ten days
    with aws.RequestCounter() as counter:
        stack.evaluate(NEXT_RUN)
    assert counter.counts["dynamodb.UpdateItem"] == 0
    assert counter.total("dynamodb.TransactWriteItems") == 0


def test_an_overdue_invoice_makes_the_account_due_at_once(api: Api, stack: LocalCloud) -> None:
    billed(api, 12)  # twelve days overdue
    assert due_at(stack, "acc-1") == iso(NOW)
    stack.evaluate(NEXT_RUN)
    assert case_statuses(api) == ["active"]


def test_a_payment_that_settles_an_open_case_makes_it_due_at_once(
    api: Api, stack: LocalCloud
) -> None:
    billed(api, 12)  # twelve days overdue
    stack.evaluate(NOW)
    api.ok("POST", "/accounts/acc-1/payments", "billing", payment_body("pay-1", "120.00"))
    assert due_at(stack, "acc-1") == iso(NOW)  # the case recovers at the next run
    stack.evaluate(NEXT_RUN)
    assert case_statuses(api) == ["recovered"]


def test_a_part_payment_before_the_due_date_keeps_the_time_the_run_would_write(
    api: Api, stack: LocalCloud
) -> None:
    billed(api, -10)  # due in ten days
    api.ok("POST", "/accounts/acc-1/payments", "billing", payment_body("pay-1", "20.00"))
    written = due_at(stack, "acc-1")
    assert written is not None and written > iso(NEXT_RUN), written
    assert what_the_next_run_writes(stack, "acc-1", NEXT_RUN) == written


def test_a_policy_change_through_the_api_is_used_by_the_next_ingestion(
    api: Api, stack: LocalCloud
) -> None:
    billed(api, -10)  # due in ten days
    before = due_at(stack, "acc-1")
    # A new current version of the account's policy whose first level comes
    # five days later: the same container's cached book must not hide it.
    body = api.ok("GET", "/policies/consumer")["policy"]
    body.pop("version", None)
    body["levels"][0]["days"] += 5
    created = api.ok("POST", "/policies/consumer/versions", "admin", body)
    api.ok("POST", "/policies/consumer/activate", "admin", {"version": created["version"]})
    api.ok("PUT", "/accounts/acc-1/invoices/inv-2", "billing", invoice_body("inv-2", -11))
    after = due_at(stack, "acc-1")
    assert before is not None and after is not None and after != before
    assert what_the_next_run_writes(stack, "acc-1", NEXT_RUN) == after


def test_the_book_is_read_again_only_when_older_than_its_age_or_after_a_change(
    stack: LocalCloud,
) -> None:
    config = ConfigStore(stack.store())
    first = config.policy_book()
    with aws.RequestCounter() as counter:
        assert config.policy_book() is first
        assert counter.total() == 0
        second = config.policy_book(max_age_s=0)
        assert second is not first
        assert counter.total("dynamodb.") == 3  # two list queries and the selection rules
        counter.reset()
        config.put_selection([], "consumer", "admin", NOW, None)
        changed = counter.total()
        assert config.policy_book() is not second
        assert counter.total() == changed + 3


def test_an_invoice_is_stored_due_at_once_when_its_next_evaluation_cannot_be_decided(
    api: Api, stack: LocalCloud
) -> None:
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    store = stack.store()

    def unreadable() -> PolicyBook:
        raise RuntimeError("the policy book could not be read")

    wake = NextEvaluation(Decider(store), unreadable)
    later = invoice("inv-1", "120.00", (NOW + timedelta(days=10)).date())
    assert store.upsert_invoice(later, NOW, "billing", wake=wake).created
    assert due_at(stack, "acc-1") == iso(NOW)  # as before: the next run decides
