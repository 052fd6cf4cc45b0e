"""A collector's story through the API: ingest, dunning starts, a promise to
pay, the promise breaks, dunning resumes, and the timeline explains each step."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dunning import aws, clock
from dunning.model import ExclusionList
from dunning.store.config import ConfigStore, ExclusionSnapshot
from local.cloud import LocalCloud
from tests.integration.api_helpers import NOW, Api, account_body, invoice_body, payment_body


def test_a_broken_promise_resumes_dunning_and_the_timeline_explains_it(
    api: Api, stack: LocalCloud
) -> None:
    # Given an account whose invoice is 12 days overdue, ingested by the billing system
    clock.use(lambda: NOW - timedelta(hours=1))
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    # When the scheduler runs, the case opens at the reminder level
    clock.use(lambda: NOW)
    stack.evaluate(NOW)
    clock.use(lambda: NOW + timedelta(hours=1))
    [case] = api.ok("GET", "/accounts/acc-1", "viewer")["cases"]
    reminder_level = case["level"]
    assert case["status"] == "active"
    # When a collector records a promise to pay the whole amount within a week
    promise = api.ok(
        "POST",
        "/accounts/acc-1/promises",
        "collector",
        {
            "promise_id": "pr-1",
            "case_id": case["case_id"],
            "amount": "120.00",
            "promised_date": str((NOW + timedelta(days=7)).date()),
            "note": "customer called",
        },
    )
    assert api.ok("GET", "/accounts/acc-1")["cases"][0]["status"] == "suspended"
    # ... runs during the promise send nothing
    for day in (1, 3, 6):
        at = NOW + timedelta(days=day)

        def instant(at: datetime = at) -> datetime:
            return at

        clock.use(instant)
        stack.evaluate(at)
    assert api.ok("GET", "/accounts/acc-1")["cases"][0]["status"] == "suspended"
    # ... and no payment comes: after the date and the grace days the promise is broken
    after = NOW + timedelta(days=12)
    clock.use(lambda: after)
    stack.evaluate(after)
    [resumed] = api.ok("GET", "/accounts/acc-1", "viewer")["cases"]
    # Then dunning resumed (escalated one level, as the promise profile says)
    assert resumed["status"] == "active"
    assert resumed["broken_promises"] == 1
    assert resumed["level"] == reminder_level + 1
    # ... and the timeline tells the story, each engine step with its explanation
    timeline = api.ok("GET", "/accounts/acc-1/timeline", "viewer", query={"limit": "100"})["items"]
    kinds = [e["kind"] for e in timeline]
    story = ["account_created", "invoice_received", "case_opened", "case_suspended"]
    positions = [kinds.index(k) for k in story]
    positions.append(kinds.index("promise_broken"))
    positions.append(len(kinds) - 1 - kinds[::-1].index("level_entered"))  # the resumed level
    assert positions == sorted(positions), kinds
    suspended = next(e for e in timeline if e["kind"] == "case_suspended")
    assert suspended["actor"] == "collector:local-user"
    assert suspended["data"]["suspension_id"] == promise["suspension_id"]
    broken = next(e for e in timeline if e["kind"] == "promise_broken")
    reasons = {r["code"] for r in broken["data"]["explanation"]["reasons"]}
    assert "promise_broken" in reasons
    opened = next(e for e in timeline if e["kind"] == "case_opened")
    explanation = opened["data"]["explanation"]
    assert explanation["balance"] == "120.00"
    assert explanation["days_overdue"] == 12
    assert explanation["policy_id"] == "consumer"
    # ... and the resumed level's reminder went to the queue (dunning is running again)
    last = [e for e in timeline if e["kind"] == "action_scheduled"]
    assert last and last[-1]["at"] >= broken["at"]


# ------------------------------------------- exclusion lists, in any order

_examples = itertools.count()
# Each step of the story; an account's invoices come after the account.
STEPS = ("list", "account-1", "account-2", "invoices-1", "invoices-2")


def _accounts_first(order: list[str]) -> list[str]:
    """The same order, with each account's step swapped before its invoices' if it
    came after (valid orders by construction: an `assume` rejecting three orders
    in four trips Hypothesis' filter health check now and then)."""
    order = list(order)
    for k in ("1", "2"):
        account, invoices = order.index(f"account-{k}"), order.index(f"invoices-{k}")
        if invoices < account:
            order[account], order[invoices] = order[invoices], order[account]
    return order


def _run_step(api: Api, step: str, n: int) -> None:
    acc1, acc2 = f"x{n}-1", f"x{n}-2"
    if step == "list":
        body = {"name": "Legal hold", "account_ids": [acc1], "invoices": [f"{acc2}/inv-2"]}
        api.ok("PUT", f"/exclusion-lists/legal-{n}", "admin", body)
    elif step == "account-1":
        api.ok("PUT", f"/accounts/{acc1}", "billing", account_body())
    elif step == "account-2":
        api.ok("PUT", f"/accounts/{acc2}", "billing", account_body())
    elif step == "invoices-1":
        api.ok("PUT", f"/accounts/{acc1}/invoices/inv-9", "billing", invoice_body("inv-9", 12))
    else:
        bulk = {"invoices": [invoice_body("inv-1", 12), invoice_body("inv-2", 12)]}
        api.ok("POST", f"/accounts/{acc2}/invoices/bulk", "billing", bulk)


@settings(
    max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.permutations(STEPS).map(_accounts_first))
def test_an_exclusion_list_applies_whatever_the_order_of_the_calls(
    api: Api, stack: LocalCloud, order: list[str]
) -> None:
    n = next(_examples)
    acc1, acc2 = f"x{n}-1", f"x{n}-2"
    # Given the list, the accounts and their invoices arriving in any order
    for step in order:
        _run_step(api, step, n)
    # Then the listed account is excluded, and of the other account only the listed invoice
    assert api.ok("GET", f"/accounts/{acc1}")["excluded_by"] == [f"legal-{n}"]
    assert api.ok("GET", f"/accounts/{acc2}")["excluded_by"] == []
    excluded = {i.invoice_id: i.excluded for i in stack.store().get_view(acc2).view.invoices}
    assert excluded == {"inv-1": False, "inv-2": True}
    # ... and the engine duns neither of them (each example runs the schedule anew)
    stack.evaluate(NOW + timedelta(minutes=n))
    assert api.ok("GET", f"/accounts/{acc1}")["cases"] == []
    cases = api.ok("GET", f"/accounts/{acc2}")["cases"]
    assert [c["invoice_ids"] for c in cases] == [["inv-1"]]


def test_an_invoice_on_two_lists_stays_excluded_until_neither_names_it(
    api: Api, stack: LocalCloud
) -> None:
    # Given an invoice on two exclusion lists
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    for list_id in ("legal", "dispute"):
        api.ok(
            "PUT",
            f"/exclusion-lists/{list_id}",
            "admin",
            {"name": list_id, "invoices": ["acc-1/inv-1"]},
        )

    def excluded() -> bool:
        [inv] = stack.store().get_view("acc-1").view.invoices
        return inv.excluded

    # When one list lets it go, the other still holds it
    api.ok("PUT", "/exclusion-lists/dispute", "admin", {"name": "dispute"})
    assert excluded()
    stack.evaluate(NOW)
    assert api.ok("GET", "/accounts/acc-1")["cases"] == []
    # ... and when the other does too, it is dunned again
    api.ok("PUT", "/exclusion-lists/legal", "admin", {"name": "legal"})
    assert not excluded()
    stack.evaluate(NOW + timedelta(minutes=15))
    assert len(api.ok("GET", "/accounts/acc-1")["cases"]) == 1


def test_a_list_saved_while_an_account_is_created_still_applies(
    api: Api, stack: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an admin saving a list that names acc-1 just after the account's
    # creation read the lists, and before it wrote (the list's own pass finds no
    # account to update)
    original = ConfigStore.exclusion_snapshot
    raced: list[int] = []

    def racing(self: ConfigStore, *, reuse: bool = False) -> ExclusionSnapshot:
        snapshot = original(self, reuse=reuse)
        if not raced:
            raced.append(1)
            body = ExclusionList(list_id="legal", name="Legal", account_ids=frozenset({"acc-1"}))
            self.put_exclusion_list(body, "admin:other", NOW, None)
        return snapshot

    monkeypatch.setattr(ConfigStore, "exclusion_snapshot", racing)
    # When the billing system creates the account
    created = api("PUT", "/accounts/acc-1", "billing", account_body())
    # Then the creation's write was refused once, read the lists again, and applied it
    assert created.status == 201 and raced == [1]
    assert api.ok("GET", "/accounts/acc-1")["excluded_by"] == ["legal"]


def test_ingestion_reads_the_lists_once_and_a_list_saved_elsewhere_still_applies(
    api: Api, stack: LocalCloud
) -> None:
    # Given an API container that has ingested an invoice (and so read the lists)
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 3))
    # When it ingests the next invoice and records a payment
    with aws.RequestCounter() as counter:
        api.ok("PUT", "/accounts/acc-1/invoices/inv-2", "billing", invoice_body("inv-2", 2))
        api.ok("POST", "/accounts/acc-1/payments", "billing", payment_body("pay-1", "10.00"))
    # Then each was one consistent read and one transaction: no read of the lists
    assert counter.counts == {"dynamodb.BatchGetItem": 2, "dynamodb.TransactWriteItems": 2}
    # When another container saves a list naming an invoice yet to come, unseen by this one
    elsewhere = ConfigStore(stack.store())
    body = ExclusionList(list_id="legal", name="Legal", invoice_ids=frozenset({"acc-1/inv-3"}))
    elsewhere.put_exclusion_list(body, "admin:other", NOW, None)
    # ... and this container ingests that invoice
    with aws.RequestCounter() as counter:
        api.ok("PUT", "/accounts/acc-1/invoices/inv-3", "billing", invoice_body("inv-3", 1))
    # Then its first write was refused by the lists' guard, it read them again,
    # and the new invoice is excluded by the new list
    assert counter.counts["dynamodb.TransactWriteItems"] == 2
    assert counter.counts["dynamodb.GetItem"] == 1  # the lists' registry
    [inv3] = [i for i in stack.store().get_view("acc-1").view.invoices if i.invoice_id == "inv-3"]
    assert inv3.excluded


def test_a_reversal_brings_back_an_invoice_a_list_named_while_it_was_paid(
    api: Api, stack: LocalCloud
) -> None:
    # Given an overdue invoice paid in full (it leaves the account's view) ...
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    payment = payment_body("pay-1", "120.00")
    api.ok("POST", "/accounts/acc-1/payments", "billing", payment)
    # ... then put on a list
    api.ok("PUT", "/exclusion-lists/legal", "admin", {"name": "legal", "invoices": ["acc-1/inv-1"]})
    # When the payment bounces, the invoice is open again, and still on the list
    api.ok("POST", "/accounts/acc-1/payments/pay-1/reversal", "billing", {"reason": "bounced"})
    assert api.ok("GET", "/accounts/acc-1")["summary"]["open_amount"] == "120.00"
    stack.evaluate(NOW)
    assert api.ok("GET", "/accounts/acc-1")["cases"] == []
