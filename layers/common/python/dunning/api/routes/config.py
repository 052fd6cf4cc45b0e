"""Configuration (role `admin` to write, `viewer` to read): versioned policies,
calendars, selection rules, exclusion lists, message templates, and the
configuration audit. Every change is recorded with who, when, from and to."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from jinja2 import TemplateError
from pydantic import ValidationError

from dunning.api.common import (
    ADMIN,
    CONFLICT,
    NOT_FOUND,
    PRECONDITION,
    VIEWER,
    ApiError,
    actor_of,
    decode_cursor,
    detail,
    encode_cursor,
    if_match,
    no_content,
    ok,
    pydantic_details,
    responses,
    services,
)
from dunning.api.contracts import (
    MAX_PAGE,
    ActivateRequest,
    CalendarDocument,
    CalendarListResponse,
    CalendarResponse,
    ConfigAuditResponse,
    ConfigChangeResponse,
    ErrorDetail,
    ExclusionListRequest,
    ExclusionListResponse,
    ExclusionListsResponse,
    Id,
    PolicyDocument,
    PolicyListItem,
    PolicyListResponse,
    PolicyVersionResponse,
    SelectionRequest,
    SelectionResponse,
    TemplatePreviewRequest,
    TemplatePreviewResponse,
    TemplateRequest,
    TemplateResponse,
)
from dunning.api.exclusions import CurrentExclusions
from dunning.channels.sms import sms_segments
from dunning.channels.templates import (
    CHANNEL_PARTS,
    InMemoryTemplates,
    PackageTemplates,
    TemplateNotFoundError,
    Templates,
    render_email,
    render_sms,
    template_path,
)
from dunning.model import (
    MESSAGE_ACTIONS,
    Account,
    Action,
    ActionSpec,
    ActionType,
    Calendar,
    Channel,
    ExclusionList,
    Invoice,
    Policy,
    PolicyRule,
)
from dunning.store import NotFoundError
from dunning.store.config import PolicyVersionInfo, plain

router = Router()  # type: ignore[no-untyped-call]
TAGS = ["configuration"]
IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", max_length=40, description="The resource's ETag; 412 when stale"),
]
Channelname = Literal["email", "sms"]
TemplateName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
LocaleName = Annotated[str, Path(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")]


# ------------------------------------------------------------------ policies


def _version_response(info: PolicyVersionInfo) -> PolicyVersionResponse:
    return PolicyVersionResponse(
        policy=plain(info.policy),
        policy_id=info.policy.policy_id,
        version=info.policy.version,
        created_at=info.created_at,
        created_by=info.created_by,
        draft=not info.activated,
        current=info.current,
    )


def _check_references(s: Any, policy: Policy) -> None:
    """A policy names only a calendar and message templates that exist: a 422 at
    each missing one, instead of a policy that fails on its first message. A
    template exists when the shipped set or an upload has it somewhere on the
    policy's default locale's fallback chain (as rendering looks it up)."""
    problems: list[ErrorDetail] = []
    if policy.calendar_id is not None:
        try:
            s.config.calendar(policy.calendar_id)
        except NotFoundError:
            problems.append(
                detail(["body", "calendar_id"], f"no calendar {policy.calendar_id} exists")
            )
    templates = _renderer(s, {})
    specs: list[tuple[list[str | int], ActionSpec]] = [
        (["levels", i, "actions", j], spec)
        for i, lvl in enumerate(policy.levels)
        for j, spec in enumerate(lvl.actions)
    ]
    specs += [(["reinstatement_actions", j], a) for j, a in enumerate(policy.reinstatement_actions)]
    for where, spec in specs:
        if spec.type not in MESSAGE_ACTIONS or spec.template is None:
            continue  # (a message action always names a template: ActionSpec checks)
        try:
            templates.resolve(spec.template, spec.type.value, policy.default_locale)
        except TemplateNotFoundError as err:
            problems.append(detail(["body", *where, "template"], str(err)))
    if problems:
        raise ApiError(422, "validation_error", "the policy names what does not exist", problems)


@router.post(
    "/policies/<policy_id>/versions",
    summary="Create a new version of a policy (a draft until activated)",
    description="The server numbers versions: 1 for a new policy, then one more than the "
    "latest. A body the engine would reject is a 422 that names the field, as is a "
    "calendar or message template the policy names that does not exist.",
    tags=TAGS,
    middlewares=ADMIN,
    status_code=201,
    responses=responses(201, PolicyVersionResponse, "Created"),
)
def post_policy_version(policy_id: Annotated[Id, Path()], body: PolicyDocument) -> Response[Any]:
    if body.policy_id != policy_id:
        raise ApiError(
            422,
            "validation_error",
            "the body's policy_id differs from the path",
            [detail(["body", "policy_id"], "must equal the path's policy id")],
        )
    s = services(router)
    policy = Policy.model_validate(body.model_dump())
    _check_references(s, policy)
    created = s.config.create_policy_version(policy, actor_of(router), s.clock())
    info = next(
        v for v in s.config.policy_versions(policy_id) if v.policy.version == created.version
    )
    return ok(_version_response(info), 201, etag=created.version)


@router.get(
    "/policies",
    summary="List policies with their current and latest versions",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, PolicyListResponse, "Policies"),
)
def get_policies() -> Response[Any]:
    s = services(router)
    items = []
    for policy_id in s.config.policy_ids():
        versions = s.config.policy_versions(policy_id)
        if not versions:
            continue
        latest = max(versions, key=lambda v: v.policy.version)
        current = next((v for v in versions if v.current), None)
        items.append(
            PolicyListItem(
                policy_id=policy_id,
                name=latest.policy.name,
                current_version=current.policy.version if current else None,
                latest_version=latest.policy.version,
                versions=len(versions),
            )
        )
    return ok(PolicyListResponse(items=items))


@router.get(
    "/policies/<policy_id>",
    summary="A policy: its current version, or the version asked for",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, PolicyVersionResponse, "The policy version", NOT_FOUND),
)
def get_policy(
    policy_id: Annotated[Id, Path()],
    version: Annotated[int | None, Query(ge=1, le=10**8)] = None,
) -> Response[Any]:
    s = services(router)
    versions = s.config.policy_versions(policy_id)
    wanted = (
        next((v for v in versions if v.current), None)
        if version is None
        else next((v for v in versions if v.policy.version == version), None)
    )
    if wanted is None:
        what = "has no current version" if version is None else f"has no version {version}"
        raise NotFoundError(f"policy {policy_id} {what}")
    return ok(_version_response(wanted), etag=wanted.policy.version)


@router.get(
    "/policies/<policy_id>/versions",
    summary="Every version of a policy",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, PolicyListResponse, "Versions", NOT_FOUND),
)
def get_policy_versions(policy_id: Annotated[Id, Path()]) -> Response[Any]:
    s = services(router)
    versions = s.config.policy_versions(policy_id)
    if not versions:
        raise NotFoundError(f"policy {policy_id} does not exist")
    return ok(
        PolicyListResponse(
            items=[
                PolicyListItem(
                    policy_id=policy_id,
                    name=v.policy.name,
                    current_version=v.policy.version if v.current else None,
                    latest_version=v.policy.version,
                    versions=len(versions),
                )
                for v in versions
            ]
        )
    )


@router.post(
    "/policies/<policy_id>/activate",
    summary="Make a version current: new cases run on it",
    description="Running cases keep their version unless the new one says "
    "`apply_to_running_cases`. If-Match takes the current version's ETag.",
    tags=TAGS,
    middlewares=ADMIN,
    responses=responses(200, PolicyVersionResponse, "Activated", NOT_FOUND, PRECONDITION),
)
def post_activate(
    policy_id: Annotated[Id, Path()], body: ActivateRequest, if_match_header: IfMatch = None
) -> Response[Any]:
    s = services(router)
    s.config.activate_policy(
        policy_id, body.version, actor_of(router), s.clock(), if_match(if_match_header)
    )
    info = next(v for v in s.config.policy_versions(policy_id) if v.policy.version == body.version)
    return ok(_version_response(info), etag=body.version)


@router.post(
    "/policies/<policy_id>/deactivate",
    summary="Withdraw a policy: no account selects it any more",
    description="Refused (409) while the selection rules or the default name it.",
    tags=TAGS,
    middlewares=ADMIN,
    responses=responses(204, None, "Deactivated", NOT_FOUND, CONFLICT, PRECONDITION),
)
def post_deactivate(
    policy_id: Annotated[Id, Path()], if_match_header: IfMatch = None
) -> Response[Any]:
    s = services(router)
    s.config.deactivate_policy(policy_id, actor_of(router), s.clock(), if_match(if_match_header))
    return no_content()


@router.delete(
    "/policies/<policy_id>/versions/<version>",
    summary="Delete a draft (a version never activated)",
    tags=TAGS,
    middlewares=ADMIN,
    responses=responses(204, None, "Deleted", NOT_FOUND, CONFLICT),
)
def delete_draft(
    policy_id: Annotated[Id, Path()], version: Annotated[int, Path(ge=1, le=10**8)]
) -> Response[Any]:
    s = services(router)
    s.config.delete_draft(policy_id, version, actor_of(router), s.clock())
    return no_content()


# ----------------------------------------------------------------- calendars


@router.put(
    "/calendars/<calendar_id>",
    summary="Create or replace a calendar: business days, exclusion dates, sending hours",
    tags=TAGS,
    middlewares=ADMIN,
    responses=responses(200, CalendarResponse, "Stored", PRECONDITION),
)
def put_calendar(
    calendar_id: Annotated[Id, Path()], body: CalendarDocument, if_match_header: IfMatch = None
) -> Response[Any]:
    if body.calendar_id != calendar_id:
        raise ApiError(
            422,
            "validation_error",
            "the body's calendar_id differs from the path",
            [detail(["body", "calendar_id"], "must equal the path's calendar id")],
        )
    s = services(router)
    calendar = Calendar.model_validate(body.model_dump())
    stored = s.config.put_calendar(calendar, actor_of(router), s.clock(), if_match(if_match_header))
    return ok(
        CalendarResponse(calendar=plain(calendar), version=stored.version),
        etag=stored.version,
    )


@router.get(
    "/calendars/<calendar_id>",
    summary="A calendar",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, CalendarResponse, "The calendar", NOT_FOUND),
)
def get_calendar(calendar_id: Annotated[Id, Path()]) -> Response[Any]:
    stored = services(router).config.calendar(calendar_id)
    return ok(
        CalendarResponse(calendar=plain(stored.body), version=stored.version),
        etag=stored.version,
    )


@router.get(
    "/calendars",
    summary="Every calendar",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, CalendarListResponse, "Calendars"),
)
def get_calendars() -> Response[Any]:
    return ok(
        CalendarListResponse(
            items=[
                CalendarResponse(calendar=plain(c.body), version=c.version)
                for c in services(router).config.calendars()
            ]
        )
    )


# ----------------------------------------------------------- selection rules


@router.get(
    "/selection-rules",
    summary="The rules that choose a policy per account (segment, cycle, tags, currency, amount)",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, SelectionResponse, "The rules"),
)
def get_selection() -> Response[Any]:
    stored = services(router).config.selection()
    return ok(
        SelectionResponse(
            rules=[plain(r) for r in stored.body["rules"]],
            default_policy_id=stored.body["default_policy_id"],
            version=stored.version,
        ),
        etag=stored.version,
    )


@router.put(
    "/selection-rules",
    summary="Replace the selection rules and the default policy",
    tags=TAGS,
    middlewares=ADMIN,
    responses=responses(200, SelectionResponse, "Stored", PRECONDITION),
)
def put_selection(body: SelectionRequest, if_match_header: IfMatch = None) -> Response[Any]:
    s = services(router)
    book = s.store.load_policy_book()
    named = {r.policy_id for r in body.rules} | (
        {body.default_policy_id} if body.default_policy_id else set()
    )
    unknown = sorted(p for p in named if p not in book.policies)
    if unknown:
        raise ApiError(
            422,
            "validation_error",
            f"no current policy {unknown[0]}",
            [detail(["body", "rules"], f"policy {p} has no current version") for p in unknown],
        )
    rules = [PolicyRule.model_validate(r.model_dump()) for r in body.rules]
    stored = s.config.put_selection(
        rules, body.default_policy_id, actor_of(router), s.clock(), if_match(if_match_header)
    )
    return ok(
        SelectionResponse(
            rules=[plain(r) for r in rules],
            default_policy_id=body.default_policy_id,
            version=stored.version,
        ),
        etag=stored.version,
    )


# ----------------------------------------------------------- exclusion lists


def _exclusion_response(
    exclusion: ExclusionList, version: int, updated: int = 0
) -> ExclusionListResponse:
    return ExclusionListResponse(
        list_id=exclusion.list_id,
        name=exclusion.name,
        account_ids=sorted(exclusion.account_ids),
        invoices=sorted(exclusion.invoice_ids),
        version=version,
        accounts_updated=updated,
    )


@router.put(
    "/exclusion-lists/<list_id>",
    summary="Create or replace a named exclusion list (accounts, or invoices as account/invoice)",
    description="Dunning never touches a listed account or invoice. The accounts the change "
    "concerns are updated at once and evaluated again at the next run; an account or "
    "invoice the billing system creates later is excluded from its creation on.",
    tags=TAGS,
    middlewares=ADMIN,
    responses=responses(200, ExclusionListResponse, "Stored", PRECONDITION),
)
def put_exclusion_list(
    list_id: Annotated[Id, Path()], body: ExclusionListRequest, if_match_header: IfMatch = None
) -> Response[Any]:
    s = services(router)
    bad = [n for n, ref in enumerate(body.invoices) if ref.count("/") != 1]
    if bad:
        raise ApiError(
            422,
            "validation_error",
            "an excluded invoice is named '<account_id>/<invoice_id>'",
            [detail(["body", "invoices", n], "expected '<account_id>/<invoice_id>'") for n in bad],
        )
    exclusion = ExclusionList(
        list_id=list_id,
        name=body.name,
        account_ids=frozenset(body.account_ids),
        invoice_ids=frozenset(body.invoices),
    )
    actor = actor_of(router)
    now = s.clock()
    stored, before = s.config.put_exclusion_list(exclusion, actor, now, if_match(if_match_header))
    touched = set(exclusion.account_ids) | {ref.split("/")[0] for ref in exclusion.invoice_ids}
    if before is not None:
        touched |= set(before.account_ids) | {ref.split("/")[0] for ref in before.invoice_ids}
    # Every stored list applies (an invoice on two lists stays excluded while one
    # names it); an account that does not exist yet gets them when it is created.
    apply = CurrentExclusions(s.config, now, actor, cause=list_id)
    updated = 0
    for account_id in sorted(touched):
        try:
            _, mutation = s.store.mutate(account_id, apply, now)
        except NotFoundError:
            continue
        updated += 1 if mutation.result else 0
    return ok(_exclusion_response(exclusion, stored.version, updated), etag=stored.version)


@router.get(
    "/exclusion-lists/<list_id>",
    summary="An exclusion list",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, ExclusionListResponse, "The list", NOT_FOUND),
)
def get_exclusion_list(list_id: Annotated[Id, Path()]) -> Response[Any]:
    stored = services(router).config.exclusion_list(list_id)
    return ok(_exclusion_response(stored.body, stored.version), etag=stored.version)


@router.get(
    "/exclusion-lists",
    summary="Every exclusion list",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, ExclusionListsResponse, "Lists"),
)
def get_exclusion_lists() -> Response[Any]:
    return ok(
        ExclusionListsResponse(
            items=[
                _exclusion_response(x.body, x.version)
                for x in services(router).config.exclusion_lists()
            ]
        )
    )


# ----------------------------------------------------------------- templates


def _parts(channel: str, body: TemplateRequest) -> dict[str, str]:
    given = {"subject": body.subject, "text": body.text, "html": body.html}
    allowed = CHANNEL_PARTS[channel]
    extra = [p for p, v in given.items() if v is not None and p not in allowed]
    if extra:
        raise ApiError(
            422,
            "validation_error",
            f"an {channel} template has no {extra[0]} part",
            [detail(["body", p], f"not a part of an {channel} template") for p in extra],
        )
    if channel == "email" and not body.subject:
        raise ApiError(
            422,
            "validation_error",
            "an email template needs a subject",
            [detail(["body", "subject"], "required for email")],
        )
    return {p: v for p, v in given.items() if v is not None}


def _renderer(s: Any, overrides: dict[str, str]) -> Templates:
    uploads = InMemoryTemplates(s.store.template_sources(), PackageTemplates())
    return Templates(InMemoryTemplates(overrides, uploads))


@router.put(
    "/templates/<channel>/<locale>/<name>",
    summary="Upload a message template for a locale (overrides the shipped one)",
    description="Templates are Jinja, rendered in a sandbox with strict variables; HTML is "
    "autoescaped. A template that does not compile or does not render with sample data "
    "is refused with a 422.",
    tags=TAGS,
    middlewares=ADMIN,
    responses=responses(200, TemplateResponse, "Stored"),
)
def put_template(
    channel: Annotated[Channelname, Path()],
    locale: LocaleName,
    name: TemplateName,
    body: TemplateRequest,
) -> Response[Any]:
    s = services(router)
    parts = _parts(channel, body)
    paths = {template_path(channel, locale, name, p): src for p, src in parts.items()}
    _preview(s, channel, locale, name, TemplatePreviewRequest(), paths)  # refuses what fails
    s.config.put_template(paths, f"{channel}/{locale}/{name}", actor_of(router), s.clock())
    return ok(TemplateResponse(channel=channel, locale=locale, name=name, parts=parts))


@router.get(
    "/templates/<channel>/<locale>/<name>",
    summary="A template's parts: the upload if any, else the shipped one",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, TemplateResponse, "The template", NOT_FOUND),
)
def get_template(
    channel: Annotated[Channelname, Path()], locale: LocaleName, name: TemplateName
) -> Response[Any]:
    s = services(router)
    store = InMemoryTemplates(s.store.template_sources(), PackageTemplates())
    parts = {
        p: src
        for p in CHANNEL_PARTS[channel]
        if (src := store.get_source(template_path(channel, locale, name, p))) is not None
    }
    if "text" not in parts:
        raise NotFoundError(f"no {channel} template {name} for {locale}")
    return ok(TemplateResponse(channel=channel, locale=locale, name=name, parts=parts))


def _preview(
    s: Any,
    channel: str,
    locale: str,
    name: str,
    sample: TemplatePreviewRequest,
    overrides: dict[str, str],
) -> TemplatePreviewResponse:
    renderer = _renderer(s, overrides)
    try:  # the locale it renders in: the one asked for, else its language, else English
        used = renderer.resolve(name, channel, locale)
    except TemplateNotFoundError as err:
        raise NotFoundError(str(err)) from None
    now = s.clock()
    today = now.date()
    due = today - timedelta(days=sample.days_overdue)
    try:
        account = Account(
            account_id="sample",
            name=sample.customer_name or "customer",
            currency=sample.currency,
            locale=locale,
        )
        invoices = [
            Invoice(
                invoice_id="INV-1001",
                account_id="sample",
                currency=sample.currency,
                amount=Decimal(sample.amount),
                open_amount=Decimal(sample.amount),
                issue_date=due - timedelta(days=30),
                due_date=due,
            )
        ]
    except ValidationError as err:
        details = pydantic_details(err.errors(), ["body"])
        raise ApiError(422, "validation_error", details[0].msg, details) from None
    action = Action(
        action_id="preview",
        account_id="sample",
        case_id="C-INV-1001",
        type=ActionType(channel),
        channel=Channel(channel),
        level=1,
        level_name="preview",
        entry=1,
        index=0,
        template=name,
        target=None,
        locale=locale,
        not_before=now,
        created_at=now,
        policy_id="preview",
        policy_version=1,
        invoice_ids=("INV-1001",),
    )
    try:
        if channel == "email":
            mail = render_email(action, account, invoices, as_of=now, templates=renderer)
            return TemplatePreviewResponse(
                channel=channel,
                locale=mail.locale,
                name=name,
                subject=mail.subject,
                text=mail.text,
                html=mail.html,
            )
        text = render_sms(action, account, invoices, as_of=now, templates=renderer)
        return TemplatePreviewResponse(
            channel=channel,
            locale=used,
            name=name,
            text=text,
            sms_segments=sms_segments(text).segments,
        )
    except (TemplateError, LookupError, ValueError) as err:
        raise ApiError(
            422,
            "template_error",
            f"the template does not render: {err}",
            [detail(["body"], str(err), "template_error")],
        ) from None


@router.post(
    "/templates/<channel>/<locale>/<name>/preview",
    summary="Render a template with sample data (no side effect)",
    description="A locale without the template falls back to its language, then to English "
    "(as messages do); `locale` in the answer is the one rendered. No template in any of "
    "them: 404.",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, TemplatePreviewResponse, "Rendered", NOT_FOUND),
)
def post_preview_template(
    channel: Annotated[Channelname, Path()],
    locale: LocaleName,
    name: TemplateName,
    body: TemplatePreviewRequest,
) -> Response[Any]:
    s = services(router)
    return ok(_preview(s, channel, locale, name, body, {}))


# ---------------------------------------------------------------- the audit


@router.get(
    "/config-audit",
    summary="Who changed which policy, calendar, list, rule or template, when, from what to what",
    tags=TAGS,
    middlewares=VIEWER,
    responses=responses(200, ConfigAuditResponse, "A page of changes, newest first"),
)
def get_config_audit(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response[Any]:
    s = services(router)
    changes, last = s.config.changes(limit, decode_cursor(cursor, pk="AUDIT#config"))
    return ok(
        ConfigAuditResponse(
            items=[
                ConfigChangeResponse(
                    at=c.at,
                    actor=c.actor,
                    resource=c.resource,
                    resource_id=c.resource_id,
                    action=c.action,
                    before=c.before,
                    after=c.after,
                )
                for c in changes
            ],
            next_cursor=encode_cursor(last),
        )
    )
