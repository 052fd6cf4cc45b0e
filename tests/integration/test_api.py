"""The public API through realistic API Gateway proxy events (with authorizer
claims) against moto: success, validation failure, not found, conflict and
forbidden for the routes, and the whole route x role matrix."""

from __future__ import annotations

import io
import json
import random
from datetime import date, timedelta
from typing import Any

import pytest

from dunning import aws
from dunning.api.app import openapi_document
from local.apigw import wsgi_app
from local.cloud import LocalCloud
from tests.integration.api_helpers import (
    NOW,
    ROLES,
    Api,
    account_body,
    invoice_body,
    payment_body,
)

# ------------------------------------------------------------ role matrix

ADMIN = {"admin"}
COLLECT = {"admin", "collector"}
BILL = {"admin", "billing"}
READ = {"admin", "collector", "billing", "viewer"}

# (method, path, roles allowed, a body that passes validation where one is needed)
ROUTES: list[tuple[str, str, set[str], Any]] = [
    ("PUT", "/accounts/acc-1", BILL, account_body()),
    ("PUT", "/accounts/acc-1/invoices/inv-9", BILL, invoice_body("inv-9", 3)),
    ("POST", "/accounts/acc-1/invoices/bulk", BILL, {"invoices": [invoice_body("inv-8", 3)]}),
    (
        "POST",
        "/accounts/acc-1/payments",
        BILL,
        {"payment_id": "p-9", "currency": "EUR", "amount": "1.00", "received_at": NOW.isoformat()},
    ),
    ("POST", "/accounts/acc-1/payments/p-none/reversal", BILL, {"reason": "bounced"}),
    (
        "POST",
        "/invoices/batch",
        BILL,
        {"invoices": [{"account_id": "acc-1", **invoice_body("i", 3)}]},
    ),
    (
        "POST",
        "/payments/batch",
        BILL,
        {"payments": [{"account_id": "acc-1", **payment_body("p-8", "1.00")}]},
    ),
    (
        "POST",
        "/accounts/acc-1/promises",
        COLLECT,
        {"promise_id": "pr-1", "case_id": "C-x", "amount": "1.00", "promised_date": "2026-11-10"},
    ),
    (
        "POST",
        "/accounts/acc-1/suspensions",
        COLLECT,
        {"suspension_id": "s-1", "case_id": "C-x", "kind": "dispute", "reason": "r"},
    ),
    ("POST", "/accounts/acc-1/suspensions/s-x/lift", COLLECT, {"reason": "r"}),
    ("POST", "/accounts/acc-1/cases/C-x/stop", COLLECT, {"reason": "r"}),
    ("POST", "/accounts/acc-1/cases/C-x/move", COLLECT, {"level": 2, "reason": "r"}),
    (
        "POST",
        "/accounts/acc-1/plans",
        COLLECT,
        {
            "plan_id": "pl-1",
            "invoice_ids": ["inv-x"],
            "installments": [{"due_date": "2026-12-01", "amount": "1.00"}],
        },
    ),
    ("GET", "/approvals", COLLECT, None),
    (
        "POST",
        "/accounts/acc-1/approvals/a-x/decision",
        COLLECT,
        {"decision": "approve", "reason": "r"},
    ),
    ("GET", "/tasks", COLLECT, None),
    ("POST", "/accounts/acc-1/tasks/t-x/close", COLLECT, {"note": ""}),
    ("GET", "/accounts/acc-1", READ, None),
    ("GET", "/accounts/acc-1/timeline", READ, None),
    ("GET", "/cases", READ, None),
    ("GET", "/accounts/acc-1/preview", READ, None),
    ("GET", "/config-audit", READ, None),
    ("GET", "/policies", READ, None),
    ("GET", "/policies/consumer", READ, None),
    ("GET", "/policies/consumer/versions", READ, None),
    (
        "POST",
        "/policies/p-new/versions",
        ADMIN,
        {
            "policy_id": "p-new",
            "name": "P",
            "thresholds": {"EUR": "10"},
            "levels": [{"name": "a", "days": 5}],
        },
    ),
    ("POST", "/policies/consumer/activate", ADMIN, {"version": 1}),
    ("POST", "/policies/p-none/deactivate", ADMIN, None),
    ("DELETE", "/policies/p-none/versions/1", ADMIN, None),
    ("PUT", "/calendars/cal-9", ADMIN, {"calendar_id": "cal-9"}),
    ("GET", "/calendars/default", READ, None),
    ("GET", "/calendars", READ, None),
    ("GET", "/selection-rules", READ, None),
    ("PUT", "/selection-rules", ADMIN, {"rules": [], "default_policy_id": "consumer"}),
    ("PUT", "/exclusion-lists/vip", ADMIN, {"name": "VIP"}),
    ("GET", "/exclusion-lists/vip", READ, None),
    ("GET", "/exclusion-lists", READ, None),
    ("PUT", "/templates/sms/en/hello", ADMIN, {"text": "Hello {{ customer_name }}"}),
    ("GET", "/templates/email/en/reminder", READ, None),
    ("POST", "/templates/email/en/reminder/preview", READ, {}),
    ("POST", "/simulations", ADMIN, {"policy_id": "consumer", "days": 2}),
    ("GET", "/reports/summary", READ, None),
    ("GET", "/reports/cases.csv", READ, None),
    ("GET", "/reports/actions.csv", READ, None),
]


@pytest.fixture
def with_account(api: Api) -> Api:
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    return api


def test_every_route_refuses_every_role_it_does_not_allow(with_account: Api) -> None:
    api = with_account
    for method, path, allowed, body in ROUTES:
        # Without credentials: 401 everywhere
        assert api(method, path, None, body).status == 401, (method, path)
        for role in ROLES:
            response = api(method, path, role, body)
            if role in allowed:
                assert response.status not in (401, 403), (method, path, role, response.text)
            else:
                assert response.status == 403, (method, path, role, response.status)
                assert response.json()["code"] == "forbidden"


def test_a_refused_caller_learns_nothing_about_the_body(api: Api) -> None:
    # A viewer sending garbage to a billing route gets 403, not a validation error
    response = api("PUT", "/accounts/acc-1", "viewer", {"nonsense": True})
    assert response.status == 403


def test_machine_clients_get_their_role_from_a_scope(api: Api) -> None:
    claims = {"client_id": "billing-system", "scope": "dunning/billing", "token_use": "access"}
    response = api.client.call("PUT", "/v1/accounts/acc-1", json_body=account_body(), claims=claims)
    assert response.status == 201
    timeline = api.ok("GET", "/accounts/acc-1/timeline")
    assert timeline["items"][0]["actor"] == "billing:billing-system"
    viewer_scope = {"client_id": "bi", "scope": "dunning/viewer"}
    assert (
        api.client.call(
            "PUT", "/v1/accounts/acc-1", json_body=account_body(), claims=viewer_scope
        ).status
        == 403
    )


# ---------------------------------------------------------------- billing


def test_accounts_and_invoices_are_ingested_idempotently(api: Api) -> None:
    first = api("PUT", "/accounts/acc-1", "billing", account_body())
    assert (first.status, first.headers["ETag"]) == (201, '"1"')
    again = api("PUT", "/accounts/acc-1", "billing", account_body())
    assert again.status == 200 and again.json()["created"] is False
    inv = invoice_body("inv-1", 12)
    assert api("PUT", "/accounts/acc-1/invoices/inv-1", "billing", inv).status == 201
    assert api("PUT", "/accounts/acc-1/invoices/inv-1", "billing", inv).status == 200
    # Another body under the same id is a conflict that names the field
    other = api("PUT", "/accounts/acc-1/invoices/inv-1", "billing", {**inv, "amount": "999.00"})
    assert other.status == 409
    assert other.json()["details"][0]["loc"] == ["body", "invoice_id"]
    account = api.ok("GET", "/accounts/acc-1", "viewer")
    assert account["summary"]["overdue_amount"] == "120.00"
    assert account["summary"]["overdue_invoices"] == 1
    assert account["next_evaluation_at"] is not None  # evaluation re-opened at once


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({**invoice_body("inv-1", 3), "amount": 120.5}, ["body", "amount"]),
        ({**invoice_body("inv-1", 3), "amount": "12.345"}, ["body", "amount"]),
        ({**invoice_body("inv-1", 3), "due_date": 0}, ["body", "due_date"]),
        ({**invoice_body("inv-1", 3), "due_date": "2026-13-01"}, ["body", "due_date"]),
        ({**invoice_body("inv-1", 3), "currency": "eur"}, ["body", "currency"]),
        ({**invoice_body("inv-1", 3), "extra": 1}, ["body", "extra"]),
    ],
)
def test_bad_invoices_get_a_422_that_says_where(
    api: Api, body: dict[str, Any], loc: list[Any]
) -> None:
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    response = api("PUT", "/accounts/acc-1/invoices/inv-1", "billing", body)
    assert response.status == 422, response.text
    error = response.json()
    assert error["code"] == "validation_error"
    assert any(d["loc"][: len(loc)] == loc for d in error["details"]), error
    # ... and nothing was written
    assert api.ok("GET", "/accounts/acc-1")["invoices"] == []


def test_an_invoice_for_an_unknown_account_is_a_404(api: Api) -> None:
    response = api("PUT", "/accounts/ghost/invoices/inv-1", "billing", invoice_body("inv-1", 3))
    assert response.status == 404
    assert response.json()["code"] == "not_found"


def test_bulk_invoices_are_all_or_nothing(api: Api) -> None:
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 3))
    bulk = [invoice_body(f"inv-{i}", 3) for i in range(2, 6)]
    # One conflicting invoice fails the request and writes none of the others
    clash = {**invoice_body("inv-1", 3), "amount": "5.00"}
    response = api("POST", "/accounts/acc-1/invoices/bulk", "billing", {"invoices": [*bulk, clash]})
    assert response.status == 409
    assert response.json()["details"][0]["loc"] == ["body", "invoices", 4, "invoice_id"]
    assert len(api.ok("GET", "/accounts/acc-1")["invoices"]) == 1
    done = api.ok("POST", "/accounts/acc-1/invoices/bulk", "billing", {"invoices": bulk})
    assert done["created"] == 4
    assert len(api.ok("GET", "/accounts/acc-1")["invoices"]) == 5
    # The documented limit is enforced by the schema
    too_many = [invoice_body(f"x-{i}", 3) for i in range(50)]
    assert (
        api("POST", "/accounts/acc-1/invoices/bulk", "billing", {"invoices": too_many}).status
        == 422
    )


def test_a_payment_is_idempotent_and_a_reversal_reopens_what_it_paid(api: Api) -> None:
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    payment = payment_body("pay-1", "120.00")
    recorded = api("POST", "/accounts/acc-1/payments", "billing", payment)
    first = recorded.json()
    assert recorded.status == 201
    assert first["allocations"] == [{"invoice_id": "inv-1", "amount": "120.00"}]
    # The same payment sent again changes nothing and says so (200), as an invoice does
    again = api("POST", "/accounts/acc-1/payments", "billing", payment)
    assert (again.status, again.json()) == (200, first)
    assert api.ok("GET", "/accounts/acc-1")["summary"]["open_amount"] == "0"
    # Another body under the same payment id is a conflict
    assert (
        api("POST", "/accounts/acc-1/payments", "billing", {**payment, "amount": "1.00"}).status
        == 409
    )
    reversed_ = api.ok(
        "POST", "/accounts/acc-1/payments/pay-1/reversal", "billing", {"reason": "cheque bounced"}
    )
    assert reversed_["reversal_reason"] == "cheque bounced"
    assert api.ok("GET", "/accounts/acc-1")["summary"]["open_amount"] == "120.00"
    assert (
        api("POST", "/accounts/acc-1/payments/nope/reversal", "billing", {"reason": "x"}).status
        == 404
    )


def test_an_idempotency_key_replays_the_first_answer_and_refuses_another_body(api: Api) -> None:
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    payment = payment_body("pay-1", "5.00")
    key = {"Idempotency-Key": "9f1c-22"}
    first = api("POST", "/accounts/acc-1/payments", "billing", payment, headers=key)
    again = api("POST", "/accounts/acc-1/payments", "billing", payment, headers=key)
    assert first.status == again.status == 201
    assert first.json() == again.json()
    other = api(
        "POST",
        "/accounts/acc-1/payments",
        "billing",
        {**payment, "payment_id": "pay-2"},
        headers=key,
    )
    assert other.status == 422
    assert other.json()["code"] == "idempotency_key_reused"


# ------------------------------------------------------------ collectors


def _dunned(api: Api, stack: LocalCloud, days: int = 12) -> str:
    """An account with a case at the reminder level; returns the case id."""
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", days))
    stack.evaluate(NOW)
    [case] = api.ok("GET", "/accounts/acc-1")["cases"]
    return str(case["case_id"])


def test_a_promise_pauses_the_case_and_a_stale_etag_is_refused(api: Api, stack: LocalCloud) -> None:
    case_id = _dunned(api, stack)
    etag = api("GET", "/accounts/acc-1").headers["ETag"]
    body = {
        "promise_id": "pr-1",
        "case_id": case_id,
        "amount": "120.00",
        "promised_date": "2026-11-10",
    }
    stale = api("POST", "/accounts/acc-1/promises", "collector", body, headers={"If-Match": '"1"'})
    assert stale.status == 412
    made = api("POST", "/accounts/acc-1/promises", "collector", body, headers={"If-Match": etag})
    assert made.status == 201, made.text
    assert made.json()["kind"] == "promise_to_pay"
    assert api.ok("GET", "/accounts/acc-1")["cases"][0]["status"] == "suspended"
    # A second promise on a suspended case is a conflict; a date too far a 422
    again = api("POST", "/accounts/acc-1/promises", "collector", {**body, "promise_id": "pr-2"})
    assert again.status == 409
    far = {**body, "promise_id": "pr-3", "promised_date": str((NOW + timedelta(days=400)).date())}
    assert api("POST", "/accounts/acc-1/promises", "collector", far).status in (409, 422)
    assert api("POST", "/accounts/ghost/promises", "collector", body).status == 404


def test_suspend_lift_and_stop(api: Api, stack: LocalCloud) -> None:
    case_id = _dunned(api, stack)
    body = {"suspension_id": "s-1", "case_id": case_id, "kind": "fraud_review", "reason": "card"}
    made = api.ok("POST", "/accounts/acc-1/suspensions", "collector", body)
    assert made["ends_at"] > made["starts_at"]
    too_long = {**body, "suspension_id": "s-2", "days": 700}
    assert api("POST", "/accounts/acc-1/suspensions", "collector", too_long).status in (409, 422)
    lifted = api.ok("POST", "/accounts/acc-1/suspensions/s-1/lift", "collector", {"reason": "ok"})
    assert lifted["status"] == "lifted"
    assert (
        api("POST", "/accounts/acc-1/suspensions/s-1/lift", "collector", {"reason": "ok"}).status
        == 404
    )
    stopped = api.ok(
        "POST", f"/accounts/acc-1/cases/{case_id}/stop", "collector", {"reason": "deceased"}
    )
    assert stopped["status"] == "stopped"
    assert (
        api("POST", f"/accounts/acc-1/cases/{case_id}/stop", "collector", {"reason": "x"}).status
        == 409
    )
    kinds = [e["kind"] for e in api.ok("GET", "/accounts/acc-1/timeline")["items"]]
    assert {"case_suspended", "suspension_lifted", "case_stopped"} <= set(kinds)


def test_a_payment_plan_takes_invoices_out_of_dunning(api: Api, stack: LocalCloud) -> None:
    _dunned(api, stack)
    body = {
        "plan_id": "pl-1",
        "invoice_ids": ["inv-1"],
        "installments": [
            {"due_date": "2026-11-15", "amount": "60.00"},
            {"due_date": "2026-12-15", "amount": "60.00"},
        ],
    }
    wrong_total = {**body, "installments": body["installments"][:1]}
    response = api("POST", "/accounts/acc-1/plans", "collector", wrong_total)
    assert response.status == 422
    assert response.json()["details"][0]["loc"] == ["body", "installments"]
    plan = api.ok("POST", "/accounts/acc-1/plans", "collector", body)
    assert plan["status"] == "active"
    account = api.ok("GET", "/accounts/acc-1")
    assert account["invoices"][0]["status"] == "in_payment_plan"
    assert api("POST", "/accounts/acc-1/plans", "collector", body).status == 422  # plan exists
    # An installment payment is recorded against the plan
    api.ok(
        "POST",
        "/accounts/acc-1/payments",
        "billing",
        {
            "payment_id": "inst-1",
            "currency": "EUR",
            "amount": "60.00",
            "received_at": NOW.isoformat(),
            "plan_id": "pl-1",
        },
    )
    assert api.ok("GET", "/accounts/acc-1")["plans"][0]["status"] == "active"


def test_cases_list_by_status_and_level_with_cursors(api: Api, stack: LocalCloud) -> None:
    for i in range(5):
        api.ok("PUT", f"/accounts/a-{i}", "billing", account_body())
        api.ok("PUT", f"/accounts/a-{i}/invoices/i-{i}", "billing", invoice_body(f"i-{i}", 12))
    stack.evaluate(NOW)
    first = api.ok("GET", "/cases", "viewer", query={"status": "active", "limit": "2"})
    assert len(first["items"]) == 2 and first["next_cursor"]
    seen = [c["case_id"] for c in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = api.ok(
            "GET", "/cases", "viewer", query={"status": "active", "limit": "2", "cursor": cursor}
        )
        seen += [c["case_id"] for c in page["items"]]
        cursor = page["next_cursor"]
    assert sorted(seen) == sorted(f"C-i-{i}" for i in range(5))
    level = first["items"][0]["level"]  # the reminder level (the pre-due one comes first)
    at_level = api.ok("GET", "/cases", query={"status": "active", "level": str(level)})["items"]
    assert len(at_level) == 5
    assert (
        api.ok("GET", "/cases", query={"status": "active", "level": str(level + 1)})["items"] == []
    )
    bad = api("GET", "/cases", "viewer", query={"cursor": "not-a-cursor"})
    assert bad.status == 400 and bad.json()["details"][0]["loc"] == ["query", "cursor"]


def test_the_preview_explains_and_writes_nothing(api: Api, stack: LocalCloud) -> None:
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    before = api.ok("GET", "/accounts/acc-1")
    preview = api.ok("GET", "/accounts/acc-1/preview", "viewer", query={"at": NOW.isoformat()})
    assert preview["policy_id"] == "consumer"
    assert [a["type"] for a in preview["actions"]] == ["email"]
    reasons = {r["code"] for x in preview["explanations"] for r in x["reasons"]}
    assert "level_entered" in reasons
    assert api.ok("GET", "/accounts/acc-1") == before
    assert api("GET", "/accounts/acc-1/preview", query={"at": "yesterday"}).status == 422


# --------------------------------------------------------- configuration


def test_policy_versions_drafts_activation_and_the_audit(api: Api) -> None:
    doc = {
        "policy_id": "gentle",
        "name": "Gentle",
        "thresholds": {"EUR": "20.00"},
        "levels": [
            {"name": "nudge", "days": 7, "actions": [{"type": "email", "template": "reminder"}]}
        ],
    }
    v1 = api("POST", "/policies/gentle/versions", "admin", doc)
    assert v1.status == 201 and v1.json()["version"] == 1 and v1.json()["draft"]
    v2 = api.ok("POST", "/policies/gentle/versions", "admin", {**doc, "name": "Gentle 2"})
    assert v2["version"] == 2
    assert api("GET", "/policies/gentle").status == 404  # no current version yet
    assert api.ok("POST", "/policies/gentle/activate", "admin", {"version": 1})["current"]
    current = api("GET", "/policies/gentle")
    assert current.json()["version"] == 1 and current.headers["ETag"] == '"1"'
    # Activating with a stale If-Match is refused
    stale = api(
        "POST", "/policies/gentle/activate", "admin", {"version": 2}, headers={"If-Match": '"7"'}
    )
    assert stale.status == 412
    # An activated version is history; a draft may go
    assert api("DELETE", "/policies/gentle/versions/1", "admin").status == 409
    assert api("DELETE", "/policies/gentle/versions/2", "admin").status == 204
    assert api("DELETE", "/policies/gentle/versions/2", "admin").status == 404
    # A policy the engine would reject: 422 naming the field
    bad = api("POST", "/policies/gentle/versions", "admin", {**doc, "thresholds": {}})
    assert bad.status == 422
    mismatch = api("POST", "/policies/other/versions", "admin", doc)
    assert mismatch.status == 422 and mismatch.json()["details"][0]["loc"] == ["body", "policy_id"]
    listed = {p["policy_id"]: p for p in api.ok("GET", "/policies", "viewer")["items"]}
    assert listed["gentle"]["current_version"] == 1
    # The configuration audit tells who changed what, from what to what
    audit = api.ok("GET", "/config-audit", "viewer")["items"]
    actions = [(c["resource"], c["resource_id"], c["action"]) for c in audit]
    assert ("policy", "gentle", "activated") in actions
    assert ("policy", "gentle", "deleted") in actions
    assert all(c["actor"] == "admin:local-user" for c in audit)


def test_a_policy_naming_a_missing_calendar_or_template_is_refused_at_each(api: Api) -> None:
    doc = {
        "policy_id": "gentle",
        "name": "Gentle",
        "thresholds": {"EUR": "20.00"},
        "calendar_id": "mars",
        "levels": [
            {"name": "nudge", "days": 7, "actions": [{"type": "email", "template": "reminder"}]},
            {
                "name": "push",
                "days": 20,
                "actions": [
                    {"type": "webhook", "target": "crm"},
                    {"type": "sms", "template": "no_such_sms"},
                ],
            },
        ],
    }
    # When a policy names a calendar and an SMS template that do not exist
    refused = api("POST", "/policies/gentle/versions", "admin", doc)
    # Then it is a 422 at each of them, and no version is stored
    assert refused.status == 422
    assert sorted(d["loc"] for d in refused.json()["details"]) == [
        ["body", "calendar_id"],
        ["body", "levels", 1, "actions", 1, "template"],
    ]
    assert api("GET", "/policies/gentle/versions", "viewer").status == 404
    # ... and once the calendar exists and the template is uploaded, it is accepted
    api.ok("PUT", "/calendars/mars", "admin", {"calendar_id": "mars"})
    api.ok("PUT", "/templates/sms/en/no_such_sms", "admin", {"text": "Please pay {{ total }}."})
    assert api("POST", "/policies/gentle/versions", "admin", doc).status == 201


def test_deactivating_a_policy_the_rules_name_is_refused(api: Api) -> None:
    assert api("POST", "/policies/consumer/deactivate", "admin").status == 409
    api.ok("PUT", "/selection-rules", "admin", {"rules": [], "default_policy_id": "business"})
    assert api("POST", "/policies/consumer/deactivate", "admin").status == 204
    unknown = api(
        "PUT", "/selection-rules", "admin", {"rules": [], "default_policy_id": "consumer"}
    )
    assert unknown.status == 422


def test_calendars_are_versioned(api: Api) -> None:
    body = {
        "calendar_id": "fr",
        "name": "France",
        "exclusion_dates": ["2026-12-25"],
        "send_from": "09:00:00",
        "send_until": "19:00:00",
    }
    first = api("PUT", "/calendars/fr", "admin", body)
    assert first.status == 200 and first.headers["ETag"] == '"1"'
    second = api(
        "PUT", "/calendars/fr", "admin", {**body, "name": "France 2"}, headers={"If-Match": '"1"'}
    )
    assert second.status == 200 and second.headers["ETag"] == '"2"'
    assert api("PUT", "/calendars/fr", "admin", body, headers={"If-Match": '"1"'}).status == 412
    bad = api("PUT", "/calendars/fr", "admin", {**body, "send_from": "20:00:00"})
    assert bad.status == 422
    assert api.ok("GET", "/calendars/fr")["calendar"]["name"] == "France 2"
    assert api("GET", "/calendars/none").status == 404


def test_an_exclusion_list_keeps_dunning_off_its_accounts(api: Api, stack: LocalCloud) -> None:
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 12))
    listed = api.ok(
        "PUT", "/exclusion-lists/vip", "admin", {"name": "VIP", "account_ids": ["acc-1"]}
    )
    assert listed["accounts_updated"] == 1
    assert api.ok("GET", "/accounts/acc-1")["excluded_by"] == ["vip"]
    stack.evaluate(NOW)
    assert api.ok("GET", "/accounts/acc-1")["cases"] == []
    api.ok("PUT", "/exclusion-lists/vip", "admin", {"name": "VIP", "account_ids": []})
    assert api.ok("GET", "/accounts/acc-1")["excluded_by"] == []
    bad = api("PUT", "/exclusion-lists/vip", "admin", {"name": "VIP", "invoices": ["no-slash"]})
    assert bad.status == 422


def test_templates_upload_preview_and_refuse_what_does_not_render(api: Api) -> None:
    good = {"text": "Bonjour {{ customer_name }}, {{ total }} restent dus."}
    assert api("PUT", "/templates/sms/fr/nudge", "admin", good).status == 200
    assert api.ok("GET", "/templates/sms/fr/nudge")["parts"]["text"] == good["text"]
    preview = api.ok("POST", "/templates/sms/fr/nudge/preview", "viewer", {"amount": "99.50"})
    assert "99,50" in preview["text"] and preview["sms_segments"] == 1
    broken = api("PUT", "/templates/sms/fr/nudge", "admin", {"text": "{{ nope }}"})
    assert broken.status == 422 and broken.json()["code"] == "template_error"
    unsafe = api("PUT", "/templates/sms/fr/nudge", "admin", {"text": "{{ ''.__class__ }}"})
    assert unsafe.status == 422
    no_subject = api("PUT", "/templates/email/fr/nudge", "admin", {"text": "x"})
    assert no_subject.status == 422
    email = api.ok("POST", "/templates/email/de/reminder/preview", "viewer", {"amount": "1234.50"})
    assert "1.234,50" in email["text"] and email["subject"]
    assert api("GET", "/templates/email/en/none").status == 404


def test_errors_share_one_shape_and_no_client_mistake_is_a_5xx(api: Api) -> None:
    cases = [
        api("PUT", "/accounts/acc-1", "billing", body=None),
        api.client.call("PUT", "/v1/accounts/acc-1", role="billing", body="{not json"),
        api("GET", "/nowhere", "viewer"),
        api("GET", "/accounts/%00", "viewer"),
        api("GET", "/cases", "viewer", query={"limit": "0"}),
        api("GET", "/cases", "viewer", query={"status": "lost"}),
        api("PUT", "/accounts/acc-1", "billing", {"currency": "EUR", "timezone": "Mars/Base"}),
        api.client.call(
            "PUT",
            "/v1/accounts/acc-1",
            role="billing",
            body=json.dumps(account_body(name="x" * 5000)),
        ),
        api.client.call("PUT", "/v1/accounts/acc-1", role="billing", body="x" * 1_100_000),
    ]
    for response in cases:
        assert 400 <= response.status < 500, (response.status, response.text)
        body = response.json()
        assert set(body) == {"code", "message", "details"}


def test_a_collector_escalates_a_case_and_its_level_runs(api: Api, stack: LocalCloud) -> None:
    # Given a consumer case at the reminder level
    case_id = _dunned(api, stack)
    [case] = api.ok("GET", "/accounts/acc-1")["cases"]
    level = case["level"]
    stack.deliver()
    # When a collector moves it two levels up with a reason
    moved = api(
        "POST",
        f"/accounts/acc-1/cases/{case_id}/move",
        "collector",
        {"level": level + 2, "reason": "fraud suspected"},
    )
    assert moved.status == 200, moved.text
    assert moved.json()["level"] == level + 2
    # Then that level's action is scheduled and goes out with the next run
    stack.evaluate(NOW + timedelta(minutes=15))
    stack.deliver()
    timeline = api.ok("GET", "/accounts/acc-1/timeline", query={"limit": "100"})["items"]
    kinds = [e["kind"] for e in timeline]
    assert "case_moved" in kinds
    [entered] = [
        e for e in timeline if e["kind"] == "level_entered" and e["data"]["level"] == level + 2
    ]
    assert entered["data"]["why"] == "moved by a person"
    mover = next(e for e in timeline if e["kind"] == "case_moved")
    assert mover["actor"] == "collector:local-user" and mover["data"]["reason"] == "fraud suspected"
    delivered = [e for e in timeline if e["kind"] == "action_delivered"]
    assert any(e["data"]["level"] == level + 2 for e in delivered)
    # ... and a case never goes down, nor past the last level
    down = api(
        "POST",
        f"/accounts/acc-1/cases/{case_id}/move",
        "collector",
        {"level": level, "reason": "x"},
    )
    assert down.status == 422 and down.json()["details"][0]["loc"] == ["body", "level"]
    past = api(
        "POST", f"/accounts/acc-1/cases/{case_id}/move", "collector", {"level": 99, "reason": "x"}
    )
    assert past.status == 422
    assert (
        api(
            "POST", "/accounts/acc-1/cases/C-none/move", "collector", {"level": 3, "reason": "x"}
        ).status
        == 404
    )


# ------------------------------------------------ what documenting it found


def _account_with_invoices(api: Api, *invoices: dict[str, Any]) -> None:
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    for inv in invoices:
        api.ok("PUT", f"/accounts/acc-1/invoices/{inv['invoice_id']}", "billing", inv)


@pytest.mark.parametrize(
    ("invoice", "field", "words"),
    [
        ({"amount": "12.345"}, "amount", "2 decimal places"),
        ({"amount": "10.00", "open_amount": "5.001"}, "open_amount", "2 decimal places"),
        ({"amount": "10.00", "open_amount": "20.00"}, "open_amount", "must not exceed"),
        ({"issue_date": "2026-11-02", "due_date": "2026-11-01"}, "due_date", "issue date"),
        ({"currency": "JPY", "amount": "100.5"}, "amount", "JPY has 0 decimal places"),
    ],
)
def test_an_invalid_invoice_is_refused_at_its_field_with_a_readable_message(
    api: Api, invoice: dict[str, Any], field: str, words: str
) -> None:
    # Given an account
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    body = {**invoice_body("inv-1", 3), **invoice}
    # When the invoice alone, then as the fourth of a bulk request, is sent
    single = api("PUT", "/accounts/acc-1/invoices/inv-1", "billing", body)
    others = [invoice_body(f"ok-{n}", 3) for n in range(3)]
    bulk = api("POST", "/accounts/acc-1/invoices/bulk", "billing", {"invoices": [*others, body]})
    # Then each names the field's path and says what is wrong in words, not a pydantic dump
    for response, loc in ((single, ["body", field]), (bulk, ["body", "invoices", 3, field])):
        assert response.status == 422, response.text
        error = response.json()
        assert error["code"] == "validation_error"
        [problem] = error["details"]
        assert problem["loc"] == loc
        assert words in problem["msg"] and words in error["message"]
        assert "validation error" not in response.text and "Value error" not in response.text
    # ... and nothing was written
    assert api.ok("GET", "/accounts/acc-1")["invoices"] == []


def test_the_currency_of_an_account_with_open_invoices_does_not_change(api: Api) -> None:
    # Given an account with an open invoice in EUR
    _account_with_invoices(api, invoice_body("inv-1", 12))
    before = api.ok("GET", "/accounts/acc-1")
    # When the billing system sends it in USD
    response = api("PUT", "/accounts/acc-1", "billing", account_body(currency="USD"))
    # Then it is refused with a 409 saying what and where, and nothing changed
    assert response.status == 409, response.text
    error = response.json()
    assert error["code"] == "conflict"
    assert error["details"][0]["loc"] == ["body", "currency"]
    assert "inv-1" in error["message"] and "USD" in error["message"]
    assert api.ok("GET", "/accounts/acc-1") == before
    # ... while an account with nothing open may change its currency
    api.ok("PUT", "/accounts/acc-2", "billing", account_body())
    assert api("PUT", "/accounts/acc-2", "billing", account_body(currency="USD")).status == 200
    assert api.ok("GET", "/accounts/acc-2")["currency"] == "USD"


def test_a_payment_naming_an_unknown_invoice_or_plan_is_refused(api: Api) -> None:
    # Given an account with one invoice
    _account_with_invoices(api, invoice_body("inv-1", 12))
    before = api.ok("GET", "/accounts/acc-1")
    # When a payment names an invoice and a plan the account does not have
    response = api(
        "POST",
        "/accounts/acc-1/payments",
        "billing",
        payment_body("pay-1", "50.00", invoice_ids=["inv-1", "inv-404"], plan_id="plan-404"),
    )
    # Then it is a 422 naming each unknown reference, and nothing was written
    assert response.status == 422, response.text
    locs = {tuple(d["loc"]): d["msg"] for d in response.json()["details"]}
    assert set(locs) == {("body", "invoice_ids", 1), ("body", "plan_id")}
    assert "inv-404" in locs[("body", "invoice_ids", 1)]
    assert api.ok("GET", "/accounts/acc-1") == before
    # ... and the same payment id is free for the corrected payment
    fixed = api("POST", "/accounts/acc-1/payments", "billing", payment_body("pay-1", "50.00"))
    assert fixed.status == 201
    # An invoice already paid (no longer in the account's view) is still known
    api.ok("POST", "/accounts/acc-1/payments", "billing", payment_body("pay-2", "70.00"))
    named = payment_body("pay-3", "5.00", invoice_ids=["inv-1"])
    assert api("POST", "/accounts/acc-1/payments", "billing", named).status == 201


def test_an_overpayment_is_kept_as_credit_and_pays_the_next_invoices(api: Api) -> None:
    # Given an account owing 120.00
    _account_with_invoices(api, invoice_body("inv-1", 12))
    # When it pays 200.00
    paid = api.ok("POST", "/accounts/acc-1/payments", "billing", payment_body("pay-1", "200.00"))
    # Then 80.00 is unallocated, kept as the account's credit
    assert paid["allocations"] == [{"invoice_id": "inv-1", "amount": "120.00"}]
    assert paid["unallocated"] == "80.00"
    assert api.ok("GET", "/accounts/acc-1")["summary"]["credit"] == "80.00"
    # ... which no currency change may strand
    assert api("PUT", "/accounts/acc-1", "billing", account_body(currency="USD")).status == 409
    # When the next invoices arrive, the credit pays them, oldest due first
    bulk = [invoice_body("inv-2", 5, "50.00"), invoice_body("inv-3", 10, "50.00")]
    api.ok("POST", "/accounts/acc-1/invoices/bulk", "billing", {"invoices": bulk})
    account = api.ok("GET", "/accounts/acc-1")
    assert account["summary"]["credit"] == "0"
    assert [(i["invoice_id"], i["open_amount"]) for i in account["invoices"]] == [
        ("inv-2", "20.00")
    ]
    timeline = api.ok("GET", "/accounts/acc-1/timeline", query={"limit": "100"})["items"]
    received = {
        e["data"]["invoice_id"]: e["data"] for e in timeline if e["kind"] == "invoice_received"
    }
    assert received["inv-3"]["paid_by_credit"] == {"pay-1": "50.00"}
    assert received["inv-2"]["paid_by_credit"] == {"pay-1": "30.00"}
    # ... and the payment now shows where all of it went (a replay returns it as stored)
    replay = api.ok("POST", "/accounts/acc-1/payments", "billing", payment_body("pay-1", "200.00"))
    assert replay["unallocated"] == "0.00"
    assert [a["invoice_id"] for a in replay["allocations"]] == ["inv-1", "inv-3", "inv-2"]
    # When the payment bounces, everything it paid reopens and no credit is left
    api.ok("POST", "/accounts/acc-1/payments/pay-1/reversal", "billing", {"reason": "bounced"})
    account = api.ok("GET", "/accounts/acc-1")
    assert account["summary"]["open_amount"] == "220.00"
    assert account["summary"]["credit"] == "0"


def test_a_put_that_creates_declares_its_201_next_to_its_200() -> None:
    document = openapi_document()
    for path in ("/v1/accounts/{account_id}", "/v1/accounts/{account_id}/invoices/{invoice_id}"):
        declared = document["paths"][path]["put"]["responses"]
        for status in ("200", "201"):
            schema = declared[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/WriteResponse"}, (path, status)


def test_a_template_preview_falls_back_like_messages_and_says_in_which_locale(
    api: Api,
) -> None:
    # A template no locale has: 404, not 422
    missing = api("POST", "/templates/sms/en/no_such_template/preview", "viewer", {})
    assert missing.status == 404 and missing.json()["code"] == "not_found"
    missing = api("POST", "/templates/email/de/no_such_template/preview", "viewer", {})
    assert missing.status == 404
    # A locale without the template renders its language's, else English, and says so
    for channel in ("sms", "email"):
        swiss = api.ok("POST", f"/templates/{channel}/de_CH/reminder/preview", "viewer", {})
        assert swiss["locale"] == "de", channel
        spanish = api.ok("POST", f"/templates/{channel}/es/reminder/preview", "viewer", {})
        assert spanish["locale"] == "en", channel
        own = api.ok("POST", f"/templates/{channel}/fr/reminder/preview", "viewer", {})
        assert own["locale"] == "fr", channel


def test_a_conflict_on_a_route_without_a_body_points_at_the_path(api: Api) -> None:
    # The default policy cannot be withdrawn: the refusal names the path parameter
    response = api("POST", "/policies/consumer/deactivate", "admin")
    assert response.status == 409
    assert [d["loc"] for d in response.json()["details"]] == [["path", "policy_id"]]
    # A conflict on a route with a body still points into the body
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    api.ok("PUT", "/accounts/acc-1/invoices/inv-1", "billing", invoice_body("inv-1", 3))
    other = {**invoice_body("inv-1", 3), "amount": "1.00"}
    clash = api("PUT", "/accounts/acc-1/invoices/inv-1", "billing", other)
    assert [d["loc"] for d in clash.json()["details"]] == [["body", "invoice_id"]]


def test_a_204_has_no_content_type_and_a_415_its_reason_phrase(api: Api) -> None:
    draft = {
        "policy_id": "p-new",
        "name": "P",
        "thresholds": {"EUR": "10"},
        "levels": [{"name": "a", "days": 5}],
    }
    api.ok("POST", "/policies/p-new/versions", "admin", draft)
    deleted = api("DELETE", "/policies/p-new/versions/1", "admin")
    assert deleted.status == 204 and deleted.text == ""
    assert "content-type" not in {k.lower() for k in deleted.headers}
    # Over HTTP (the local server's WSGI application): the status line names 415
    app = wsgi_app(api.stack.functions["api"])
    body = b"name=x"
    environ = {
        "REQUEST_METHOD": "PUT",
        "PATH_INFO": "/v1/accounts/acc-1",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": "Bearer local:billing",
        "wsgi.input": io.BytesIO(body),
    }
    seen: list[str] = []
    app(environ, lambda status, headers: seen.append(status))
    assert seen == ["415 Unsupported Media Type"]


def test_sets_come_back_sorted(api: Api) -> None:
    # Given a calendar with thirty holidays and a rule with several segments, sent unsorted
    dates = [str(date(2027, 1, 1) + timedelta(days=11 * n)) for n in range(30)]
    random.Random(5).shuffle(dates)
    calendar = {"calendar_id": "fr", "name": "France", "exclusion_dates": dates}
    stored = api.ok("PUT", "/calendars/fr", "admin", calendar)["calendar"]
    # Then every answer lists them sorted, every time
    assert stored["exclusion_dates"] == sorted(dates)
    assert api.ok("GET", "/calendars/fr")["calendar"]["exclusion_dates"] == sorted(dates)
    listed = {
        c["calendar"]["calendar_id"]: c["calendar"] for c in api.ok("GET", "/calendars")["items"]
    }
    assert listed["fr"]["exclusion_dates"] == sorted(dates)
    audit = api.ok("GET", "/config-audit", query={"limit": "1"})["items"][0]
    assert audit["after"]["exclusion_dates"] == sorted(dates)
    segments = [f"seg-{c}" for c in "qwertyuiopasdfgh"]
    rule = {"rule_id": "r1", "priority": 1, "policy_id": "business", "segments": segments}
    rules = api.ok(
        "PUT", "/selection-rules", "admin", {"rules": [rule], "default_policy_id": "consumer"}
    )
    assert rules["rules"][0]["segments"] == sorted(segments)
    assert api.ok("GET", "/selection-rules")["rules"][0]["segments"] == sorted(segments)


def test_same_instant_entries_keep_the_order_they_were_made_in(api: Api) -> None:
    # Given the clock pinned: several configuration changes at one instant ...
    names = [f"list-{c}" for c in "hdjaebgcfi"]
    for name in names:
        api.ok("PUT", f"/exclusion-lists/{name}", "admin", {"name": name})
    # Then the audit, newest first, is the reverse of the order they were made in
    audit = api.ok("GET", "/config-audit", query={"limit": "10"})["items"]
    assert [c["resource_id"] for c in audit] == names[::-1]
    # ... and a bulk request's invoices enter the timeline in the request's order
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    ids = [f"inv-{c}" for c in "hdjaebgcfi"]
    bulk = {"invoices": [invoice_body(i, 3) for i in ids]}
    api.ok("POST", "/accounts/acc-1/invoices/bulk", "billing", bulk)
    timeline = api.ok("GET", "/accounts/acc-1/timeline", query={"limit": "100"})["items"]
    received = [e["data"]["invoice_id"] for e in timeline if e["kind"] == "invoice_received"]
    assert received == ids


def test_events_of_one_instant_read_in_the_order_they_happened(api: Api, stack: LocalCloud) -> None:
    # Given a pinned clock: the account, its invoice, the run and the delivery are all stamped NOW
    _dunned(api, stack)
    stack.deliver()
    # When the timeline is read, oldest first and newest first
    oldest = api.ok("GET", "/accounts/acc-1/timeline", query={"limit": "100"})["items"]
    newest = api.ok("GET", "/accounts/acc-1/timeline", query={"limit": "100", "order": "newest"})[
        "items"
    ]
    # Then it reads as things happened: the billing data, the engine's decision, the delivery
    assert {e["at"] for e in oldest} == {NOW.isoformat().replace("+00:00", "Z")}
    assert [e["kind"] for e in oldest] == [
        "account_created",
        "invoice_received",
        "case_opened",
        "level_entered",
        "action_scheduled",
        "action_delivered",
    ]
    assert newest == oldest[::-1]


def test_an_idempotency_key_recorded_before_the_status_was_kept_still_replays(
    api: Api, stack: LocalCloud
) -> None:
    # Given a payment's Idempotency-Key record in the shape written before the
    # key kept the answer's status (the payment alone)
    api.ok("PUT", "/accounts/acc-1", "billing", account_body())
    payment = payment_body("pay-1", "5.00")
    key = {"Idempotency-Key": "old-1"}
    first = api("POST", "/accounts/acc-1/payments", "billing", payment, headers=key)
    table = aws.dynamodb()
    items = table.scan(TableName=stack.idempotency_table_name)["Items"]
    (record,) = [it for it in items if it.get("status", {}).get("S") == "COMPLETED"]
    stored = json.loads(record["data"]["S"])
    record["data"] = {"S": json.dumps(stored["payment"])}
    table.put_item(TableName=stack.idempotency_table_name, Item=record)
    # When the request is sent again with that key
    again = api("POST", "/accounts/acc-1/payments", "billing", payment, headers=key)
    # Then it answers as the first request did
    assert first.status == 201
    assert (again.status, again.json()) == (first.status, first.json())
