"""The demo machinery end to end: a small portfolio for 60 simulated days through
the real handlers, then the story is checked against what the stack holds."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from local.demo import REVISION_DAYS_SOONER, DemoConfig, DemoResult, run_demo
from local.portfolio import standard_calendar

OPEN = {"active", "suspended", "awaiting_approval"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    out = tmp_path_factory.mktemp("report")
    cfg = DemoConfig(accounts=200, days=60, seed=11, out=out, progress=False)
    with contextlib.redirect_stdout(io.StringIO()):
        return run_demo(cfg)


def _of_type(result: DemoResult, kind: str) -> list[dict[str, Any]]:
    return [it for it in result.items if it.get("type", {}).get("S") == kind]


def _account(item: dict[str, Any]) -> str:
    return str(item["PK"]["S"]).removeprefix("ACCOUNT#")


def _bodies(result: DemoResult, kind: str) -> list[dict[str, Any]]:
    return [json.loads(it["body"]["S"]) for it in _of_type(result, kind)]


def _events(result: DemoResult) -> dict[str, list[dict[str, Any]]]:
    by_account: dict[str, list[dict[str, Any]]] = {}
    for it in _of_type(result, "event"):
        by_account.setdefault(_account(it), []).append(
            {"sk": it["SK"]["S"], **json.loads(it["body"]["S"])}
        )
    for rows in by_account.values():
        rows.sort(key=lambda e: e["sk"])
    return by_account


def test_every_account_that_paid_in_full_is_recovered(demo: DemoResult) -> None:
    invoices: dict[str, list[dict[str, Any]]] = {}
    for it in _of_type(demo, "invoice"):
        invoices.setdefault(_account(it), []).append(json.loads(it["body"]["S"]))
    cases: dict[str, list[dict[str, Any]]] = {}
    for it in _of_type(demo, "case"):
        cases.setdefault(_account(it), []).append(json.loads(it["body"]["S"]))
    paid_up = [
        a
        for a, invs in invoices.items()
        if all(float(i.get("open_amount", i["amount"])) == 0 for i in invs)
    ]
    assert len(paid_up) > 20, "the scenario must have customers who paid everything"
    for account in paid_up:
        statuses = {c.get("status", "active") for c in cases.get(account, [])}
        assert not statuses & OPEN, (account, statuses)
    recovered = [a for a in paid_up if cases.get(a)]
    assert recovered, "some of them were dunned before they paid"


def test_every_broken_promise_resumed_dunning(demo: DemoResult) -> None:
    broken = [s for s in _bodies(demo, "suspension") if s.get("status") == "broken"]
    assert broken, "the scenario must break promises"
    cases = {(c["account_id"], c["case_id"]): c for c in _bodies(demo, "case")}
    events = _events(demo)
    for promise in broken:
        case = cases[(promise["account_id"], promise["case_id"])]
        # The case is no longer held by that promise ...
        assert case.get("suspension_id") != promise["suspension_id"]
        # ... and dunning went on after the break (a level entered or the case closed)
        rows = events[promise["account_id"]]
        at = next(
            n
            for n, e in enumerate(rows)
            if e["kind"] == "promise_broken"
            and e["data"]["suspension_id"] == promise["suspension_id"]
        )
        after = {e["kind"] for e in rows[at + 1 :]} | {rows[at]["kind"]}
        assert after & {"level_entered", "case_recovered", "promise_broken"}, after
        assert case.get("status", "active") != "suspended" or case.get("suspension_id")


def test_the_bounced_cheque_reinstated_its_case(demo: DemoResult) -> None:
    assert demo.bounced is not None
    rows = _events(demo)[demo.bounced]
    kinds = [e["kind"] for e in rows]
    reversed_at = kinds.index("payment_reversed")
    # The reversal reopened what it paid: a case comes back (reopened or re-entered)
    later = kinds[reversed_at + 1 :]
    assert {"case_reopened", "case_opened", "level_entered"} & set(later), kinds


def test_no_message_went_out_on_a_holiday_or_outside_sending_hours(demo: DemoResult) -> None:
    calendar = standard_calendar()
    zones = {
        _account(it): json.loads(it["view"]["S"])["account"]["timezone"]
        for it in _of_type(demo, "account")
    }
    checked = 0
    for record in _of_type(demo, "outbox"):
        if record["status"]["S"] != "delivered":
            continue
        action = json.loads(record["action"]["S"])
        if action["level"] == 0:  # restoring service goes at once (docs/decisions.md)
            continue
        sent = datetime.fromisoformat(record["outcome_at"]["S"].replace("Z", "+00:00"))
        local = sent.astimezone(ZoneInfo(zones[action["account_id"]]))
        assert local.date() not in calendar.exclusion_dates, (action["action_id"], local)
        assert local.isoweekday() in calendar.business_days, (action["action_id"], local)
        assert calendar.send_from <= local.time() < calendar.send_until, (action, local)
        assert local.time() >= time(8, 0)
        checked += 1
    assert checked > 50


def test_nothing_was_sent_twice_and_every_action_is_accounted_for(demo: DemoResult) -> None:
    records = _of_type(demo, "outbox")
    statuses = Counter(r["status"]["S"] for r in records)
    assert set(statuses) <= {"pending", "queued", "delivered", "failed", "skipped"}
    assert sum(statuses.values()) == len(records)
    for r in records:
        if r["status"]["S"] in ("failed", "skipped"):
            assert r.get("reason", {}).get("S"), r
    delivered = [json.loads(r["action"]["S"]) for r in records if r["status"]["S"] == "delivered"]
    # One delivery per action id, and the providers saw exactly the delivered ones
    assert len({a["action_id"] for a in delivered}) == len(delivered)
    assert len(demo.emails) == sum(1 for a in delivered if a["type"] == "email")
    assert len(demo.sms) == sum(1 for a in delivered if a["type"] == "sms")
    hook_ids = [w.headers["webhook-id"] for w in demo.webhooks]
    assert len(hook_ids) == len(set(hook_ids))
    assert all(w.verified for w in demo.webhooks)
    outcome_events = Counter(
        e["data"]["action_id"]
        for rows in _events(demo).values()
        for e in rows
        if e["kind"] in ("action_delivered", "action_failed", "action_skipped")
    )
    assert max(outcome_events.values()) == 1
    assert statuses["delivered"] > 50


def test_the_policy_revision_reached_the_customers_already_scheduled(demo: DemoResult) -> None:
    # Half way through, the small-business ladder became two days sooner at every
    # step, for running cases too. The first run after it decides every owing
    # customer again, so no case waits for the time the old version gave it: a
    # level entry of the new version two days late would be the old schedule.
    assert demo.revision is not None
    at, policy_id, version = demo.revision
    lags: Counter[int] = Counter()
    for rows in _events(demo).values():
        for e in rows:
            data = e["data"]
            if e["kind"] != "level_entered" or data["policy_id"] != policy_id:
                continue
            if data["policy_version"] == version:
                assert datetime.fromisoformat(e["at"].replace("Z", "+00:00")) > at
                lags[data["days_overdue"] - data["level_days"]] += 1
    assert sum(lags.values()) >= 10, lags
    assert max(lags) < REVISION_DAYS_SOONER, lags


def test_the_report_folder_has_what_it_promises(demo: DemoResult) -> None:
    from dunning.reports import summarize
    from local.report import write_report

    assert demo.config.out is not None
    summary = summarize(demo.items, demo.end)
    index = write_report(demo, summary, Path(demo.config.out))
    out = index.parent
    for name in ("cases_per_level.png", "recovered.png", "actions.csv", "cases.csv", "sms.txt"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "cases_per_level.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "emails").glob("*.eml"))) == len(demo.emails)
    page = index.read_text()
    assert "cases_per_level.png" in page and "Timelines" in page
    header = (out / "actions.csv").read_text().splitlines()[0]
    assert "action_id" in header
