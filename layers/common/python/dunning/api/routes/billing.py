"""Billing: accounts, invoices, payments, reversals (role `billing`).

Every write re-opens evaluation for the account at once (the next scheduled
run evaluates it). Ingestion is idempotent on the external ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Path
from pydantic import ValidationError

from dunning.api import shapes
from dunning.api.common import (
    BILLING,
    CONFLICT,
    NOT_FOUND,
    ApiError,
    actor_of,
    detail,
    ok,
    pydantic_details,
    responses,
    services,
    success,
)
from dunning.api.contracts import (
    AccountRequest,
    BulkInvoicesRequest,
    BulkWriteResponse,
    ErrorDetail,
    Id,
    InvoiceRequest,
    PaymentRequest,
    PaymentResponse,
    ReversalRequest,
    WriteResponse,
)
from dunning.api.exclusions import CurrentExclusions
from dunning.api.idempotency import with_idempotency_key
from dunning.model import Account, Invoice, Payment
from dunning.money import check_amount

router = Router()  # type: ignore[no-untyped-call]
TAGS = ["billing"]
AccountId = Annotated[Id, Path(description="The billing system's account id")]


def _invoice_problems(body: InvoiceRequest, loc: list[str | int]) -> list[ErrorDetail]:
    """What the invoice model would refuse, each at its field: amounts finer than
    the currency's minor units, an open amount over the amount, a due date
    before the issue date."""
    problems = []
    amount = Decimal(body.amount)
    for name, value in (("amount", amount), ("open_amount", body.open_amount)):
        if value is None:
            continue
        try:
            check_amount(Decimal(value), body.currency)
        except ValueError as err:
            problems.append(detail([*loc, name], str(err)))
    if body.open_amount is not None and Decimal(body.open_amount) > amount:
        problems.append(detail([*loc, "open_amount"], "must not exceed the amount"))
    if body.due_date < body.issue_date:
        problems.append(detail([*loc, "due_date"], "must not be before the issue date"))
    return problems


def _invoices(
    account_id: str, requests: Sequence[tuple[InvoiceRequest, list[str | int]]]
) -> list[Invoice]:
    """The domain invoices of a request, each with where it is in the body
    (`["body"]`, `["body", "invoices", 3]`); a 422 lists every problem of all."""
    problems = [p for body, loc in requests for p in _invoice_problems(body, loc)]
    if problems:
        raise ApiError(422, "validation_error", problems[0].msg, problems)
    invoices = []
    for body, loc in requests:
        amount = Decimal(body.amount)
        open_amount = Decimal(body.open_amount) if body.open_amount is not None else amount
        try:
            invoices.append(
                Invoice.model_validate(
                    {
                        "invoice_id": body.invoice_id,
                        "account_id": account_id,
                        "type": body.type,
                        "currency": body.currency,
                        "amount": amount,
                        "open_amount": open_amount,
                        "issue_date": body.issue_date,
                        "due_date": body.due_date,
                    }
                )
            )
        except ValidationError as err:  # what the checks above missed, still at its field
            details = pydantic_details(err.errors(), loc)
            raise ApiError(422, "validation_error", details[0].msg, details) from None
    return invoices


@router.put(
    "/accounts/<account_id>",
    summary="Create (201) or update (200) an account",
    description="The exclusion lists that name the account apply at once. The currency of "
    "an account with open invoices or credit does not change (409 on `currency`).",
    tags=TAGS,
    middlewares=BILLING,
    responses=responses(
        200,
        WriteResponse,
        "Updated, or unchanged (`created` is false)",
        CONFLICT,
        success(201, WriteResponse, "Created"),
    ),
)
def put_account(account_id: AccountId, body: AccountRequest) -> Response[Any]:
    s = services(router)
    account = Account.model_validate(
        {**body.model_dump(), "account_id": account_id, "tags": frozenset(body.tags)},
        strict=False,
    )
    now, actor = s.clock(), actor_of(router)
    result = s.store.upsert_account(
        account, now, actor, also=CurrentExclusions(s.config, now, actor)
    )
    return ok(
        WriteResponse(account_id=account_id, created=result.created, version=result.version),
        201 if result.created else 200,
        etag=result.version,
    )


@router.put(
    "/accounts/<account_id>/invoices/<invoice_id>",
    summary="Create an invoice (201; idempotent on its id: the same body again is a 200)",
    description="An exclusion list that names the invoice applies at once; the account's "
    "credit (overpayments) pays it at once.",
    tags=TAGS,
    middlewares=BILLING,
    responses=responses(
        200,
        WriteResponse,
        "Already stored with this body (`created` is false)",
        NOT_FOUND,
        CONFLICT,
        success(201, WriteResponse, "Created"),
    ),
)
def put_invoice(
    account_id: AccountId, invoice_id: Annotated[Id, Path()], body: InvoiceRequest
) -> Response[Any]:
    if body.invoice_id != invoice_id:
        raise ApiError(
            422,
            "validation_error",
            "the body's invoice_id differs from the path",
            [detail(["body", "invoice_id"], "must equal the path's invoice id")],
        )
    s = services(router)
    (invoice,) = _invoices(account_id, [(body, ["body"])])
    now, actor = s.clock(), actor_of(router)
    result = s.store.upsert_invoice(
        invoice,
        now,
        actor,
        also=CurrentExclusions(s.config, now, actor),
        wake=s.next_evaluation,
    )
    return ok(
        WriteResponse(account_id=account_id, created=result.created, version=result.version),
        201 if result.created else 200,
        etag=result.version,
    )


@router.post(
    "/accounts/<account_id>/invoices/bulk",
    summary="Create up to 49 invoices of one account, all or nothing",
    description="Each invoice is idempotent on its id; the request is one transaction: "
    "an invoice whose id exists with another body fails it all, and nothing is written.",
    tags=TAGS,
    middlewares=BILLING,
    responses=responses(200, BulkWriteResponse, "Stored", NOT_FOUND, CONFLICT),
)
def post_invoices(account_id: AccountId, body: BulkInvoicesRequest) -> Response[Any]:
    s = services(router)
    ids = [i.invoice_id for i in body.invoices]
    if len(set(ids)) != len(ids):
        raise ApiError(
            422,
            "validation_error",
            "invoice ids repeat within the request",
            [detail(["body", "invoices"], "duplicate invoice_id")],
        )
    invoices = _invoices(
        account_id, [(inv, ["body", "invoices", n]) for n, inv in enumerate(body.invoices)]
    )
    now, actor = s.clock(), actor_of(router)
    result = s.store.upsert_invoices(
        invoices,
        now,
        actor,
        also=CurrentExclusions(s.config, now, actor),
        wake=s.next_evaluation,
    )
    return ok(
        BulkWriteResponse(
            account_id=account_id,
            created=result.created,
            unchanged_or_updated=len(invoices) - result.created,
            version=result.version,
        ),
        etag=result.version,
    )


@router.post(
    "/accounts/<account_id>/payments",
    summary="Record a payment (idempotent on its id)",
    description="It pays the invoices it names (`invoice_ids`, each must exist: else a 422 "
    "on `invoice_ids/<n>`), or the plan it names, then the oldest due open invoices. What "
    "is left (`unallocated`) is kept as the account's credit and pays its next invoices "
    "as they arrive.",
    tags=TAGS,
    middlewares=BILLING,
    status_code=201,
    responses=responses(201, PaymentResponse, "Recorded", NOT_FOUND, CONFLICT),
)
def post_payment(
    account_id: AccountId,
    body: PaymentRequest,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
) -> Response[Any]:
    s = services(router)

    def record() -> dict[str, Any]:
        payment = Payment.model_validate(
            {
                "payment_id": body.payment_id,
                "account_id": account_id,
                "currency": body.currency,
                "amount": Decimal(body.amount),
                "received_at": body.received_at,
                "invoice_ids": tuple(body.invoice_ids),
                "plan_id": body.plan_id,
            }
        )
        recorded = s.store.record_payment(
            payment, s.clock(), actor_of(router), wake=s.next_evaluation
        )
        return shapes.payment(recorded).model_dump(mode="json")

    stored = with_idempotency_key(
        s,
        idempotency_key,
        "payment",
        account_id,
        body,
        record,
        router.context.get("lambda_context"),
    )
    return ok(PaymentResponse.model_validate(stored), 201)


@router.post(
    "/accounts/<account_id>/payments/<payment_id>/reversal",
    summary="Reverse a payment (a bounced cheque): reopens what it paid",
    tags=TAGS,
    middlewares=BILLING,
    responses=responses(200, PaymentResponse, "Reversed", NOT_FOUND, CONFLICT),
)
def post_reversal(
    account_id: AccountId, payment_id: Annotated[Id, Path()], body: ReversalRequest
) -> Response[Any]:
    s = services(router)
    now, actor = s.clock(), actor_of(router)
    reversed_ = s.store.reverse_payment(
        account_id,
        payment_id,
        body.reason,
        now,
        actor,
        also=CurrentExclusions(s.config, now, actor),
    )
    return ok(shapes.payment(reversed_))
