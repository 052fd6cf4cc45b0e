"""Billing: accounts, invoices, payments, reversals (role `billing`).

Every write re-opens evaluation for the account at once (the next scheduled
run evaluates it). Ingestion is idempotent on the external ids.

The batch routes (`/invoices/batch`, `/payments/batch`) take the items of many
accounts: the whole body is validated first (a 422 writes nothing), then each
item is written as its single route would write it, and answered with the
status and error that route would give.
"""

from __future__ import annotations

from collections import Counter
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
    domain_error,
    field_path,
    ok,
    pydantic_details,
    responses,
    services,
    success,
)
from dunning.api.contracts import (
    MAX_BATCH_ITEMS,
    MAX_BULK_INVOICES,
    AccountRequest,
    BulkInvoicesRequest,
    BulkWriteResponse,
    ErrorDetail,
    ErrorResponse,
    Id,
    InvoiceBatchItemResponse,
    InvoiceBatchRequest,
    InvoiceBatchResponse,
    InvoiceRequest,
    PaymentBatchItemResponse,
    PaymentBatchRequest,
    PaymentBatchResponse,
    PaymentRequest,
    PaymentResponse,
    ReversalRequest,
    WriteResponse,
)
from dunning.api.exclusions import CurrentExclusions
from dunning.api.idempotency import with_idempotency_key
from dunning.model import Account, Invoice, Payment
from dunning.money import check_amount
from dunning.store.dynamo import PaymentWrite, WriteResult, invoice_digest, payment_digest

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
    requests: Sequence[tuple[str, InvoiceRequest, list[str | int]]],
) -> list[Invoice]:
    """The domain invoices of a request, each of its account and with where it is
    in the body (`["body"]`, `["body", "invoices", 3]`); a 422 lists every
    problem of all."""
    problems = [p for _, body, loc in requests for p in _invoice_problems(body, loc)]
    if problems:
        raise ApiError(422, "validation_error", problems[0].msg, problems)
    invoices = []
    for account_id, body, loc in requests:
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
    (invoice,) = _invoices([(account_id, body, ["body"])])
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
        [(account_id, inv, ["body", "invoices", n]) for n, inv in enumerate(body.invoices)]
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


def _payment(account_id: str, body: PaymentRequest) -> Payment:
    """The domain payment of a request (a `ValidationError` names its field)."""
    return Payment.model_validate(
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


@router.post(
    "/accounts/<account_id>/payments",
    summary="Record a payment (201; idempotent on its id: the same body again is a 200)",
    description="It pays the invoices it names (`invoice_ids`, each must exist: else a 422 "
    "on `invoice_ids/<n>`), or the plan it names, then the oldest due open invoices. What "
    "is left (`unallocated`) is kept as the account's credit and pays its next invoices "
    "as they arrive.",
    tags=TAGS,
    middlewares=BILLING,
    status_code=201,
    responses=responses(
        201,
        PaymentResponse,
        "Recorded",
        NOT_FOUND,
        CONFLICT,
        success(200, PaymentResponse, "Recorded already with the same body: nothing changed"),
    ),
)
def post_payment(
    account_id: AccountId,
    body: PaymentRequest,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
) -> Response[Any]:
    s = services(router)

    def record() -> dict[str, Any]:
        payment = _payment(account_id, body)
        written = s.store.write_payment(
            payment, s.clock(), actor_of(router), wake=s.next_evaluation
        )
        return {
            "status": 201 if written.created else 200,
            "payment": shapes.payment(written.payment).model_dump(mode="json"),
        }

    stored = with_idempotency_key(
        s,
        idempotency_key,
        "payment",
        account_id,
        body,
        record,
        router.context.get("lambda_context"),
    )
    # A replay of an Idempotency-Key answers what its first request answered.
    # Keys recorded before the status was kept (up to a day old) held the
    # payment alone, answered with 201.
    if "payment" not in stored:
        stored = {"status": 201, "payment": stored}
    return ok(PaymentResponse.model_validate(stored["payment"]), stored["status"])


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


# ------------------------------------------------------------------ batches


def _repeats(
    keys: Sequence[tuple[str, str]], digests: Sequence[str], kind: str, where: str
) -> tuple[list[int], list[ErrorDetail]]:
    """Where each item's (account, id) first appears in the batch, and a problem
    for each repeat with another body (the same body again is one item sent
    twice: it is answered twice, written once)."""
    first: dict[tuple[str, str], int] = {}
    firsts: list[int] = []
    problems: list[ErrorDetail] = []
    for n, key in enumerate(keys):
        j = first.setdefault(key, n)
        firsts.append(j)
        if digests[j] != digests[n]:
            problems.append(
                detail(
                    ["body", where, n, f"{kind}_id"],
                    f"{kind} {key[1]} of account {key[0]} is also {where}/{j}, with another body",
                )
            )
    return firsts, problems


def _refusal(err: Exception, loc: list[str | int]) -> tuple[int, ErrorResponse]:
    """A batch item's refusal as its single route answers it (the same table),
    located in the batch's body; what is no client's mistake is raised."""
    mapped = domain_error(err, loc, lambda field: [*loc, field_path(field)[-1]])
    if mapped is None:
        raise err
    return mapped.status, ErrorResponse(
        code=mapped.code, message=mapped.message, details=mapped.details
    )


@router.post(
    "/invoices/batch",
    summary=f"Create invoices of many accounts, up to {MAX_BATCH_ITEMS}: one result each",
    description="Each invoice is written as `PUT /accounts/{account_id}/invoices/{invoice_id}` "
    "would write it (exclusion lists, credit, the account's next evaluation), and answered "
    "with that route's status (`results`, in the request's order). The invoices of one account "
    f"(at most {MAX_BULK_INVOICES}) are one transaction; one it refuses (409) is left out, and "
    "one account's refusals never stop another's. The whole body is validated first: a 422 "
    "writes nothing. A 503 may leave part of the batch written: send it all again (the same "
    "invoices answer 200).",
    tags=TAGS,
    middlewares=BILLING,
    responses=responses(200, InvoiceBatchResponse, "One result per invoice"),
)
def post_invoice_batch(body: InvoiceBatchRequest) -> Response[Any]:
    s = services(router)
    invoices = _invoices(
        [(inv.account_id, inv, ["body", "invoices", n]) for n, inv in enumerate(body.invoices)]
    )
    firsts, problems = _repeats(
        [(i.account_id, i.invoice_id) for i in invoices],
        [invoice_digest(i) for i in invoices],
        "invoice",
        "invoices",
    )
    unique = [n for n, j in enumerate(firsts) if j == n]
    per_account = Counter(invoices[n].account_id for n in unique)
    problems += [
        detail(
            ["body", "invoices"],
            f"account {account_id} has {count} invoices: at most {MAX_BULK_INVOICES} of one "
            "account per batch (one transaction)",
        )
        for account_id, count in per_account.items()
        if count > MAX_BULK_INVOICES
    ]
    if problems:
        raise ApiError(422, "validation_error", problems[0].msg, problems)
    now, actor = s.clock(), actor_of(router)
    written = s.store.upsert_invoice_batch(
        [invoices[n] for n in unique],
        now,
        actor,
        also=CurrentExclusions(s.config, now, actor),
        wake=s.next_evaluation,
    )
    outcome = dict(zip(unique, written, strict=True))
    results = []
    for n, (inv, j) in enumerate(zip(invoices, firsts, strict=True)):
        result = outcome[j]
        status, version, error = 0, None, None
        if isinstance(result, WriteResult):
            # A repeat of an invoice earlier in the batch finds it stored.
            status, version = (201 if result.created and j == n else 200), result.version
        else:
            status, error = _refusal(result, ["body", "invoices", n])
        results.append(
            InvoiceBatchItemResponse(
                index=n,
                account_id=inv.account_id,
                invoice_id=inv.invoice_id,
                status=status,
                version=version,
                error=error,
            )
        )
    return ok(InvoiceBatchResponse(results=results))


@router.post(
    "/payments/batch",
    summary=f"Record payments of many accounts, up to {MAX_BATCH_ITEMS}: one result each",
    description="Each payment is recorded as `POST /accounts/{account_id}/payments` would "
    "record it, one by one in the request's order, and answered with that route's status "
    "(`results`, in order: 201 recorded, 200 stored already with the same body). "
    "One payment's refusal never stops the next. The whole body is validated first: "
    "a 422 writes nothing. A 503 may leave part of the batch recorded: send it all again "
    "(the same payments answer 200).",
    tags=TAGS,
    middlewares=BILLING,
    responses=responses(200, PaymentBatchResponse, "One result per payment"),
)
def post_payment_batch(body: PaymentBatchRequest) -> Response[Any]:
    s = services(router)
    payments: list[Payment] = []
    problems: list[ErrorDetail] = []
    for n, item in enumerate(body.payments):
        try:
            payments.append(_payment(item.account_id, item))
        except ValidationError as err:
            problems += pydantic_details(err.errors(), ["body", "payments", n])
    if not problems:
        _, problems = _repeats(
            [(p.account_id, p.payment_id) for p in payments],
            [payment_digest(p) for p in payments],
            "payment",
            "payments",
        )
    if problems:
        raise ApiError(422, "validation_error", "the request is invalid", problems)
    written = s.store.record_payments(payments, s.clock(), actor_of(router), wake=s.next_evaluation)
    results = []
    for n, (payment, result) in enumerate(zip(payments, written, strict=True)):
        status, stored, error = 0, None, None
        if isinstance(result, PaymentWrite):
            status, stored = (201 if result.created else 200), result.payment
        else:
            status, error = _refusal(result, ["body", "payments", n])
        results.append(
            PaymentBatchItemResponse(
                index=n,
                account_id=payment.account_id,
                payment_id=payment.payment_id,
                status=status,
                version=stored.version if stored else None,
                payment=shapes.payment(stored) if stored else None,
                error=error,
            )
        )
    return ok(PaymentBatchResponse(results=results))
