"""Analysis: what-if simulation (role `admin`) and reports (role `viewer`).

Both read the portfolio as a whole and write nothing. They scan the table
(`dunning.store.scan`), so their cost grows with the portfolio: a simulation
covers at most `MAX_SIMULATED_ACCOUNTS` accounts (refused with a 422 above),
and the reports read every case, invoice, payment, suspension and outbox item.
For large portfolios the scheduled reporter's gauges (CloudWatch) carry the
summary without an API call.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import ValidationError

from dunning import reports, simulation
from dunning.api.common import (
    ADMIN,
    NOT_FOUND,
    VIEWER,
    ApiError,
    Services,
    detail,
    ok,
    responses,
    services,
)
from dunning.api.contracts import (
    MAX_SIMULATED_ACCOUNT_DAYS,
    MAX_SIMULATED_ACCOUNTS,
    Instant,
    PolicyDocument,
    SimulationRequest,
    SimulationResponse,
    SummaryResponse,
)
from dunning.model import Policy
from dunning.store import NotFoundError, StoredView
from dunning.store.dynamo import PolicyBook
from dunning.store.scan import ViewFilter, iter_views, scan_items

router = Router()  # type: ignore[no-untyped-call]
TAGS = ["analysis"]
CSV = "text/csv; charset=utf-8"
SCAN_SEGMENTS = 4  # parallel scan segments for the reports
At = Annotated[Instant | None, Query(description="Default: now")]


def _invalid(loc: list[str | int], message: str) -> ApiError:
    return ApiError(422, "validation_error", message, [detail(["body", *loc], message)])


# ---------------------------------------------------------------- simulation


def _draft(s: Services, draft: PolicyDocument) -> Policy:
    """The draft as the engine takes it, numbered as activating it would number it."""
    try:
        policy = Policy.model_validate(draft.model_dump())
    except ValidationError as err:
        raise ApiError(
            422,
            "validation_error",
            "the draft policy is invalid",
            [
                detail(["body", "policy", *[str(p) for p in e["loc"]]], e["msg"], e["type"])
                for e in err.errors()
            ],
        ) from None
    latest = max((v.policy.version for v in s.config.policy_versions(policy.policy_id)), default=0)
    return policy.model_copy(update={"version": latest + 1})


def _override(s: Services, body: SimulationRequest, book: PolicyBook) -> Policy | None:
    if body.policy is not None:
        if body.policy_id is not None and body.policy_id != body.policy.policy_id:
            raise _invalid(["policy_id"], "policy_id differs from the draft's policy_id")
        if body.version is not None:
            raise _invalid(["version"], "version names a stored version: not with a draft")
        return _draft(s, body.policy)
    if body.policy_id is None:
        if body.version is not None:
            raise _invalid(["version"], "version needs a policy_id")
        if body.scope == "all":
            raise _invalid(["scope"], "the scope 'all' needs a policy or a policy_id")
        return None  # the configuration as it is
    if body.version is None:
        current = book.policies.get(body.policy_id)
        if current is None:
            raise NotFoundError(f"policy {body.policy_id} has no current version")
        return current
    return s.store.get_policy_version(body.policy_id, body.version)


def _bounded(views: Iterator[StoredView], days: int) -> list[StoredView]:
    """The selected views; refused as soon as they exceed what one request may simulate."""
    limit = min(MAX_SIMULATED_ACCOUNTS, MAX_SIMULATED_ACCOUNT_DAYS // days)
    out: list[StoredView] = []
    for stored in views:
        out.append(stored)
        if len(out) > limit:
            raise ApiError(
                422,
                "too_many_accounts",
                f"this simulation may cover at most {limit} accounts over {days} days: "
                "narrow it with segment, currency or account_ids, or simulate fewer days",
                [detail(["body"], f"more than {limit} accounts selected")],
            )
    return out


@router.post(
    "/simulations",
    summary="What-if: run a draft or an existing policy over the portfolio for N days",
    description=(
        "Replays what the scheduled evaluator would do, one run a day at `start + k days` "
        "(k = 1..days), on copies of the account views: nothing is written and nothing is "
        "sent. `policy` (a draft) or `policy_id` (+ `version`) is simulated as if activated "
        "now; neither simulates the configuration as it is. With `scope=same_policy` the "
        "accounts are those the policy governs now, with `all` every account the filters "
        "select (`segment`, `currency`, `account_ids`). Payments: `none`, or `observed` "
        "(each day an account in dunning pays its overdue balance with the observed "
        "recovery rate). Not simulated: deliveries and their effects, approvals, actions "
        "already waiting in the outbox, promises and new invoices.\n\n"
        "**Cost**: the account views are read with a table scan (or BatchGetItem for "
        "`account_ids`), then every account is decided once per day it is due, in memory. "
        f"A request is refused (422 `too_many_accounts`) when it selects more than "
        f"{MAX_SIMULATED_ACCOUNTS} accounts or more than {MAX_SIMULATED_ACCOUNT_DAYS:,} "
        "account-days (accounts x days: 1,000 accounts over 365 days); about 7 s of "
        "compute per 1,000 accounts over a year. The response holds one row per day."
    ),
    tags=TAGS,
    middlewares=ADMIN,
    responses=responses(200, SimulationResponse, "What the runs would do, day by day", NOT_FOUND),
)
def post_simulation(body: SimulationRequest) -> Response[Any]:
    s = services(router)
    book = s.store.load_policy_book()
    override = _override(s, body, book)
    scope = simulation.OverrideScope(body.scope)
    policy_ids: frozenset[str] = frozenset()
    if override is not None and scope is simulation.OverrideScope.SAME_POLICY:
        policy_ids = frozenset({override.policy_id})
    view_filter = ViewFilter(
        segments=frozenset({body.segment}) if body.segment else frozenset(),
        currencies=frozenset({body.currency}) if body.currency else frozenset(),
        policy_ids=policy_ids,
        account_ids=frozenset(body.account_ids or ()),
    )
    views = _bounded(iter_views(s.store, view_filter, book=book), body.days)
    start = (body.start or s.clock()).astimezone(UTC)
    model = simulation.PaymentModel(body.payments)
    rate = 0.0
    if model is simulation.PaymentModel.OBSERVED:
        rate = (
            body.observed_payment_rate
            if body.observed_payment_rate is not None
            else simulation.observed_payment_rate(views, start)
        )
    pinned = {
        key: s.store.get_policy_version(*key)
        for key in sorted(simulation.required_policy_versions(views, book, override, scope))
    }
    result = simulation.simulate(
        views,
        book,
        start=start,
        days=body.days,
        override=override,
        override_scope=scope,
        payment_model=model,
        payment_rate=rate,
        seed=body.seed,
        pinned=pinned,
    )
    return ok(SimulationResponse.model_validate_json(result.model_dump_json()))


# ------------------------------------------------------------------- reports


def _instant(s: Services, at: datetime | None) -> datetime:
    return (at or s.clock()).astimezone(UTC)


def _items(s: Services) -> Iterator[dict[str, Any]]:
    return scan_items(s.store, types=reports.REPORT_TYPES, total_segments=SCAN_SEGMENTS)


@router.get(
    "/reports/summary",
    summary="The portfolio at an instant: cases by status and level, outstanding and "
    "recovered amounts, promises, actions by outcome",
    description="Money is rebuilt exactly for a past `at` from the payments; a case closed "
    "after `at` counts as active at its current level. Reads the whole table (a parallel "
    "scan of the report's item types).",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, SummaryResponse, "The summary"),
)
def get_summary(at: At = None) -> Response[Any]:
    s = services(router)
    summary = reports.summarize(_items(s), _instant(s, at))
    return ok(SummaryResponse.model_validate_json(summary.model_dump_json()))


def _csv_responses(description: str) -> dict[int, Any]:
    out = responses(200, None, description)
    out[200] = {
        "description": description,
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "headers": {
            "Content-Disposition": {
                "description": "attachment; filename=...",
                "schema": {"type": "string"},
            }
        },
    }
    return out


def _attachment(s: Services, kind: str, text: str) -> Response[Any]:
    stamp = s.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        status_code=200,
        content_type=CSV,
        body=text,
        headers={"Content-Disposition": f'attachment; filename="dunning-{kind}-{stamp}.csv"'},
    )


@router.get(
    "/reports/cases.csv",
    summary="Every case as CSV: status, level, dates, open amount, invoices",
    description="RFC 4180 with a header row, ISO 8601 UTC times, plain decimals; no e-mail "
    "address or phone number. Reads the whole table.",
    tags=TAGS,
    middlewares=VIEWER,
    responses=_csv_responses("The cases, one row each"),
)
def get_cases_csv() -> Response[Any]:
    s = services(router)
    return _attachment(s, "cases", reports.cases_csv(_items(s)))


@router.get(
    "/reports/actions.csv",
    summary="Every action as CSV: channel, level, times, status and outcome",
    description="One row per action (its outbox record), oldest first; personal data in "
    "provider messages is masked. Reads the whole table.",
    tags=TAGS,
    middlewares=VIEWER,
    responses=_csv_responses("The actions, one row each"),
)
def get_actions_csv() -> Response[Any]:
    s = services(router)
    return _attachment(s, "actions", reports.actions_csv(_items(s)))
