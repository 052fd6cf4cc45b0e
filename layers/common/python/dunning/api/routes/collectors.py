"""Collectors: promises to pay, payment plans, suspensions, stopping and moving
cases, approvals and manual tasks (role `collector`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from pydantic import BaseModel

from dunning import collect
from dunning.api import shapes
from dunning.api.common import (
    COLLECTOR,
    CONFLICT,
    NOT_FOUND,
    PRECONDITION,
    actor_of,
    decode_cursor,
    encode_cursor,
    if_match,
    ok,
    responses,
    services,
)
from dunning.api.contracts import (
    MAX_PAGE,
    ApprovalDecisionRequest,
    ApprovalListResponse,
    ApprovalResponse,
    CaseResponse,
    Id,
    LiftRequest,
    MoveRequest,
    PlanRequest,
    PlanResponse,
    PromiseRequest,
    StopRequest,
    SuspensionRequest,
    SuspensionResponse,
    TaskCloseRequest,
    TaskListResponse,
    TaskResponse,
)
from dunning.api.idempotency import with_idempotency_key
from dunning.api.policies import policy_for
from dunning.model import AccountView, Decision, Installment, Policy, SuspensionKind
from dunning.queues import ACTION
from dunning.store import Mutation, StoredView
from dunning.store.dynamo import APPROVAL

router = Router()  # type: ignore[no-untyped-call]
TAGS = ["collectors"]
AccountId = Annotated[Id, Path(description="The account")]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", max_length=40, description="The account's ETag; 412 when stale"),
]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]


def _mutate(
    account_id: str,
    change: Callable[[AccountView], Mutation],
    etag: str | None,
) -> tuple[int, Any]:
    s = services(router)
    stored, mutation = s.store.mutate(
        account_id, change, s.clock(), expected_version=if_match(etag)
    )
    return stored.version, mutation.result


def _suspend(
    account_id: str,
    case_id: str,
    body: BaseModel,
    scope: str,
    change: Callable[[AccountView, Policy, datetime, str], Mutation],
    etag: str | None,
    key: str | None,
) -> Response[Any]:
    """Create a suspension (promise or other) once per Idempotency-Key, on the
    policy version the case runs on."""
    s = services(router)
    actor = actor_of(router)

    def create() -> dict[str, Any]:
        policy = policy_for(s, s.store.get_view(account_id).view, case_id)
        now = s.clock()
        version, suspension = _mutate(
            account_id, lambda view: change(view, policy, now, actor), etag
        )
        return {"version": version, "body": shapes.suspension(suspension).model_dump(mode="json")}

    out = with_idempotency_key(
        s, key, scope, account_id, body, create, router.context.get("lambda_context")
    )
    return ok(SuspensionResponse.model_validate(out["body"]), 201, etag=out["version"])


@router.post(
    "/accounts/<account_id>/promises",
    summary="Record a promise to pay: the case pauses until the date (plus grace)",
    description="When the promised amount has not arrived by the date plus the profile's "
    "grace days, the promise is broken and dunning resumes as the profile says. After the "
    "profile's maximum of broken promises no new promise is accepted (409).",
    tags=TAGS,
    middlewares=COLLECTOR,
    status_code=201,
    responses=responses(201, SuspensionResponse, "Recorded", NOT_FOUND, CONFLICT, PRECONDITION),
)
def post_promise(
    account_id: AccountId,
    body: PromiseRequest,
    if_match_header: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[Any]:
    return _suspend(
        account_id,
        body.case_id,
        body,
        "promise",
        lambda view, policy, now, actor: collect.promise_to_pay(
            view,
            policy,
            case_id=body.case_id,
            suspension_id=body.promise_id,
            amount=Decimal(body.amount),
            promised_date=body.promised_date,
            now=now,
            actor=actor,
            reason=body.note,
        ),
        if_match_header,
        idempotency_key,
    )


@router.post(
    "/accounts/<account_id>/suspensions",
    summary="Suspend a case: fraud review, dispute or customer care",
    tags=TAGS,
    middlewares=COLLECTOR,
    status_code=201,
    responses=responses(201, SuspensionResponse, "Suspended", NOT_FOUND, CONFLICT, PRECONDITION),
)
def post_suspension(
    account_id: AccountId,
    body: SuspensionRequest,
    if_match_header: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[Any]:
    return _suspend(
        account_id,
        body.case_id,
        body,
        "suspension",
        lambda view, policy, now, actor: collect.suspend(
            view,
            policy,
            case_id=body.case_id,
            suspension_id=body.suspension_id,
            kind=SuspensionKind(body.kind),
            reason=body.reason,
            days=body.days,
            now=now,
            actor=actor,
        ),
        if_match_header,
        idempotency_key,
    )


@router.post(
    "/accounts/<account_id>/suspensions/<suspension_id>/lift",
    summary="Lift a suspension: dunning resumes at the next run",
    tags=TAGS,
    middlewares=COLLECTOR,
    responses=responses(200, SuspensionResponse, "Lifted", NOT_FOUND, PRECONDITION),
)
def post_lift(
    account_id: AccountId,
    suspension_id: Annotated[Id, Path()],
    body: LiftRequest,
    if_match_header: IfMatch = None,
) -> Response[Any]:
    s = services(router)
    actor = actor_of(router)
    version, lifted = _mutate(
        account_id,
        lambda view: collect.lift_suspension(
            view, suspension_id=suspension_id, reason=body.reason, now=s.clock(), actor=actor
        ),
        if_match_header,
    )
    return ok(shapes.suspension(lifted), etag=version)


@router.post(
    "/accounts/<account_id>/cases/<case_id>/stop",
    summary="Stop a case for good (its invoices are no longer dunned)",
    tags=TAGS,
    middlewares=COLLECTOR,
    responses=responses(200, CaseResponse, "Stopped", NOT_FOUND, CONFLICT, PRECONDITION),
)
def post_stop(
    account_id: AccountId,
    case_id: Annotated[Id, Path()],
    body: StopRequest,
    if_match_header: IfMatch = None,
) -> Response[Any]:
    s = services(router)
    actor = actor_of(router)
    version, stopped = _mutate(
        account_id,
        lambda view: collect.stop_case(
            view, case_id=case_id, reason=body.reason, now=s.clock(), actor=actor
        ),
        if_match_header,
    )
    return ok(shapes.case(stopped), etag=version)


@router.post(
    "/accounts/<account_id>/cases/<case_id>/move",
    summary="Escalate a case to a higher level now, with a reason; that level's actions run",
    description="The level is entered as the engine enters one: its actions are scheduled "
    "by the calendar and contact caps, or held for approval. A case never goes down: a "
    "level at or below the case's is a 422 (suspend, lift or stop it instead).",
    tags=TAGS,
    middlewares=COLLECTOR,
    responses=responses(200, CaseResponse, "Moved", NOT_FOUND, CONFLICT, PRECONDITION),
)
def post_move(
    account_id: AccountId,
    case_id: Annotated[Id, Path()],
    body: MoveRequest,
    if_match_header: IfMatch = None,
) -> Response[Any]:
    s = services(router)
    actor = actor_of(router)
    calendars = s.store.load_policy_book().calendars
    now = s.clock()

    def move(stored: StoredView) -> Decision:
        policy = policy_for(s, stored.view, case_id)
        calendar = calendars.get(policy.calendar_id) if policy.calendar_id else None
        return collect.move_case(
            stored,
            policy,
            calendar,
            case_id=case_id,
            level=body.level,
            reason=body.reason,
            now=now,
            actor=actor,
        )

    stored, decision = s.store.save_change(
        account_id, move, now, expected_version=if_match(if_match_header)
    )
    [moved] = decision.cases
    return ok(shapes.case(moved), etag=stored.version)


@router.post(
    "/accounts/<account_id>/plans",
    summary="Put invoices into a payment plan (installments with amounts and due dates)",
    description="The plan's invoices leave the dunning scope while it runs. Payments for "
    "installments are recorded with `plan_id` on POST /payments. An installment unpaid "
    "past the grace days breaks the plan and its invoices are dunned again.",
    tags=TAGS,
    middlewares=COLLECTOR,
    status_code=201,
    responses=responses(201, PlanResponse, "Created", NOT_FOUND, CONFLICT, PRECONDITION),
)
def post_plan(
    account_id: AccountId,
    body: PlanRequest,
    if_match_header: IfMatch = None,
    idempotency_key: IdempotencyKey = None,
) -> Response[Any]:
    s = services(router)
    actor = actor_of(router)

    def create() -> dict[str, Any]:
        version, plan = _mutate(
            account_id,
            lambda view: collect.create_plan(
                view,
                plan_id=body.plan_id,
                invoice_ids=body.invoice_ids,
                installments=[
                    Installment(due_date=i.due_date, amount=Decimal(i.amount))
                    for i in body.installments
                ],
                grace_days=body.grace_days,
                now=s.clock(),
                actor=actor,
            ),
            if_match_header,
        )
        return {"version": version, "body": shapes.plan(plan).model_dump(mode="json")}

    out = with_idempotency_key(
        s, idempotency_key, "plan", account_id, body, create, router.context.get("lambda_context")
    )
    return ok(PlanResponse.model_validate(out["body"]), 201, etag=out["version"])


@router.get(
    "/approvals",
    summary="Pending approvals, oldest first",
    tags=TAGS,
    middlewares=COLLECTOR,
    responses=responses(200, ApprovalListResponse, "A page of pending approvals"),
)
def get_approvals(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response[Any]:
    s = services(router)
    items, last = s.store.page(
        list_pk="APPROVAL#pending", limit=limit, start_key=decode_cursor(cursor)
    )
    return ok(
        ApprovalListResponse(
            items=[shapes.approval(APPROVAL.validate_json(it["body"]["S"])) for it in items],
            next_cursor=encode_cursor(last),
        )
    )


@router.post(
    "/accounts/<account_id>/approvals/<approval_id>/decision",
    summary="Approve (the held actions go out with the next run) or reject with a reason",
    description="A rejection skips the held actions or stops the case, as the policy's "
    "`on_approval_rejected` says.",
    tags=TAGS,
    middlewares=COLLECTOR,
    responses=responses(200, ApprovalResponse, "Decided", NOT_FOUND, CONFLICT),
)
def post_decision(
    account_id: AccountId, approval_id: Annotated[Id, Path()], body: ApprovalDecisionRequest
) -> Response[Any]:
    s = services(router)
    approval, _ = s.store.get_approval(account_id, approval_id)
    policy = policy_for(s, s.store.get_view(account_id).view, approval.case_id)
    calendars = s.store.load_policy_book().calendars
    decided = s.store.decide_approval(
        account_id,
        approval_id,
        approve=body.decision == "approve",
        actor=actor_of(router),
        reason=body.reason,
        on_rejected=policy.on_approval_rejected,
        now=s.clock(),
        calendar=calendars.get(policy.calendar_id) if policy.calendar_id else None,
    )
    return ok(shapes.approval(decided))


@router.get(
    "/tasks",
    summary="Open manual tasks, oldest first",
    tags=TAGS,
    middlewares=COLLECTOR,
    responses=responses(200, TaskListResponse, "A page of open tasks"),
)
def get_tasks(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response[Any]:
    s = services(router)
    items, last = s.store.page(list_pk="TASK#open", limit=limit, start_key=decode_cursor(cursor))
    return ok(
        TaskListResponse(
            items=[shapes.task(it, ACTION.validate_json(it["body"]["S"])) for it in items],
            next_cursor=encode_cursor(last),
        )
    )


@router.post(
    "/accounts/<account_id>/tasks/<task_id>/close",
    summary="Close a manual task",
    tags=TAGS,
    middlewares=COLLECTOR,
    responses=responses(200, TaskResponse, "Closed", NOT_FOUND, CONFLICT),
)
def post_close_task(
    account_id: AccountId, task_id: Annotated[Id, Path()], body: TaskCloseRequest
) -> Response[Any]:
    s = services(router)
    item = s.store.close_task(account_id, task_id, body.note, actor_of(router), s.clock())
    return ok(shapes.task(item, ACTION.validate_json(item["body"]["S"])))
