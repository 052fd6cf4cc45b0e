"""The reporter function (`functions/evaluate/handler.py:report`) as the schedule
invokes it on the local stack: after a small seeded run, its EMF output carries
the portfolio's gauges with the values the stored account views give."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from dunning.model import OPEN_CASE_STATUSES
from dunning.store.scan import iter_views
from local.cloud import LocalCloud
from tests.integration.api_helpers import NOW, Api, account_body, invoice_body


def _emf(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def _values(blob: dict[str, Any], name: str) -> float:
    value = blob[name]
    return float(sum(value) if isinstance(value, list) else value)


def test_the_reporter_publishes_open_cases_outstanding_and_the_due_backlog(
    stack: LocalCloud, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a few accounts, overdue by different lengths, evaluated by a real run
    for n, (days, amount) in enumerate(
        [(12, "120.00"), (40, "80.50"), (75, "300.00"), (2, "9.99")]
    ):
        api.ok("PUT", f"/accounts/acc-{n}", "billing", account_body(name=f"Customer {n}"))
        api.ok(
            "PUT",
            f"/accounts/acc-{n}/invoices/inv-{n}",
            "billing",
            invoice_body(f"inv-{n}", days, amount),
        )
    api.ok("PUT", "/accounts/acc-usd", "billing", account_body(currency="USD"))
    stack.evaluate(NOW)
    # ... and one more invoice after the run: its account is due again at once
    api.ok("PUT", "/accounts/acc-0/invoices/inv-late", "billing", invoice_body("inv-late", 20))

    # The expectation, from the stored views
    views = list(iter_views(stack.store()))
    open_cases: Counter[tuple[str, str]] = Counter()
    outstanding: dict[str, Decimal] = {}
    for stored in views:
        for case in stored.view.cases:
            if case.status not in OPEN_CASE_STATUSES:
                continue
            open_cases[(case.status.value, str(case.level))] += 1
            ids = set(case.invoice_ids)
            owed = sum(
                (i.open_amount for i in stored.view.invoices if i.invoice_id in ids), Decimal(0)
            )
            currency = stored.view.account.currency
            outstanding[currency] = outstanding.get(currency, Decimal(0)) + owed
    at = NOW + timedelta(hours=1)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    backlog = sum(1 for s in views if s.due_at is not None and s.due_at <= stamp)
    assert sum(open_cases.values()) >= 3
    assert backlog >= 1

    # When the schedule invokes the reporter
    capsys.readouterr()
    result = stack.functions["report"].invoke({"scheduled_time": "2026-11-03T11:00:00Z"})
    blobs = _emf(capsys.readouterr().out)

    # Then it answers with the instant and its open cases
    assert result == {"at": at.isoformat(), "open_cases": sum(open_cases.values())}
    # ... and publishes one OpenCases gauge per status and level, with the counts
    published = {
        (b["status"], b["level"]): _values(b, "OpenCases") for b in blobs if "OpenCases" in b
    }
    assert published == {key: float(n) for key, n in open_cases.items()}
    # ... the outstanding amount per currency
    amounts = {
        b["currency"]: _values(b, "OutstandingAmount") for b in blobs if "OutstandingAmount" in b
    }
    assert amounts == {c: float(a) for c, a in outstanding.items()}
    # ... and the due backlog, once
    backlogs = [_values(b, "DueBacklog") for b in blobs if "DueBacklog" in b]
    assert backlogs == [float(backlog)]
    for blob in blobs:
        assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Dunning"
