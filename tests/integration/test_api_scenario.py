"""A collector's story through the API: ingest, dunning starts, a promise to
pay, the promise breaks, dunning resumes, and the timeline explains each step."""

from __future__ import annotations

from datetime import timedelta

from dunning import clock
from local.cloud import LocalCloud
from tests.integration.api_helpers import NOW, Api, account_body, invoice_body


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
        clock.use(lambda at=at: at)
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
