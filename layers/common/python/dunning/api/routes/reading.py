"""Reading (role `viewer` and above): an account with its overdue summary and
cases, its timeline, cases by status and level, and the preview of what the
next evaluation would do (no side effect)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from dunning.api import shapes
from dunning.api.common import (
    NOT_FOUND,
    VIEWER,
    decode_cursor,
    encode_cursor,
    ok,
    responses,
    services,
)
from dunning.api.contracts import (
    MAX_PAGE,
    AccountResponse,
    CaseListResponse,
    Id,
    Instant,
    PreviewResponse,
    TimelineResponse,
)
from dunning.evaluation import Decider
from dunning.model import Case
from dunning.store.dynamo import EVENT

router = Router()  # type: ignore[no-untyped-call]
TAGS = ["reading"]
AccountId = Annotated[Id, Path(description="The account")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=2000, description="From next_cursor")]


@router.get(
    "/accounts/<account_id>",
    summary="An account: overdue summary, open invoices, cases, suspensions, plans",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, AccountResponse, "The account; ETag is its version", NOT_FOUND),
)
def get_account(account_id: AccountId) -> Response[Any]:
    s = services(router)
    stored, credit = s.store.view_and_credit(account_id)
    return ok(shapes.account(stored, s.clock(), s.store.credit_total(credit)), etag=stored.version)


@router.get(
    "/accounts/<account_id>/timeline",
    summary="The account's audit trail with the engine's explanations, oldest first",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, TimelineResponse, "A page of the timeline", NOT_FOUND),
)
def get_timeline(
    account_id: AccountId,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Annotated[Literal["oldest", "newest"], Query()] = "oldest",
) -> Response[Any]:
    s = services(router)
    s.store.get_view(account_id)  # 404 for an unknown account
    items, last = s.store.page(
        pk=f"ACCOUNT#{account_id}",
        sk_prefix="EVENT#",
        limit=limit,
        start_key=decode_cursor(cursor, pk=f"ACCOUNT#{account_id}"),
        newest_first=order == "newest",
    )
    events = [EVENT.validate_json(it["body"]["S"]) for it in items]
    return ok(
        TimelineResponse(
            account_id=account_id, items=shapes.entries(events), next_cursor=encode_cursor(last)
        )
    )


@router.get(
    "/cases",
    summary="Cases by status (and level), paginated",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, CaseListResponse, "A page of cases"),
)
def get_cases(
    status: Annotated[
        Literal["active", "suspended", "awaiting_approval", "recovered", "written_off", "stopped"],
        Query(),
    ] = "active",
    level: Annotated[int | None, Query(ge=0, le=999)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response[Any]:
    s = services(router)
    items, last = s.store.page(
        list_pk=f"CASE#{status}",
        list_sk_prefix=f"{level:03d}#" if level is not None else "",
        limit=limit,
        start_key=decode_cursor(cursor),
    )
    cases = [Case.model_validate_json(it["body"]["S"]) for it in items]
    return ok(
        CaseListResponse(items=[shapes.case(c) for c in cases], next_cursor=encode_cursor(last))
    )


@router.get(
    "/accounts/<account_id>/preview",
    summary="What the next evaluation would do for this account at an instant, and why",
    description="Runs the engine on the stored account with the current configuration; "
    "writes nothing.",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, PreviewResponse, "The decision it would take", NOT_FOUND),
)
def get_preview(
    account_id: AccountId,
    at: Annotated[Instant | None, Query(description="Default: now")] = None,
) -> Response[Any]:
    s = services(router)
    instant: datetime = at or s.clock()
    stored = s.store.get_view(account_id)
    book = s.store.load_policy_book()
    decider = Decider(s.store)
    policy, _, _ = decider.policy_for(stored.view, book)
    decision, _ = decider.decide_stored(stored, instant, book)
    return ok(
        PreviewResponse(
            account_id=account_id,
            at=instant,
            policy_id=policy.policy_id,
            changed=decision.changed,
            actions=[shapes.planned(a) for a in decision.actions],
            cases=[shapes.case(c) for c in decision.cases],
            events=[e.kind.value for e in decision.events],
            next_evaluation_at=decision.next_evaluation_at,
            explanations=[shapes.explanation(x) for x in decision.explanations],
        )
    )
