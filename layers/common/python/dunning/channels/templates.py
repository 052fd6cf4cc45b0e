"""Message templates: sandboxed Jinja, locale fallback, Babel formatting.

One template per (template name, channel, locale). An email template has three
parts, `subject`, `html` and `text` (`subject` and `text` always present,
`html` optional for templates admins upload); an SMS template has `text`.
Templates live in a `TemplateStore` under paths `<channel>/<locale>/<name><suffix>`
(`email/de/reminder.html`, `email/de/reminder.subject.txt`,
`email/de/reminder.txt`, `sms/de/reminder.txt`); names that start with `_` are
layouts the others extend (`email/de/_layout.html`), never templates on their own.

Rendering runs in Jinja's immutable sandbox with `StrictUndefined`: a missing
variable raises `jinja2.exceptions.UndefinedError`, unsafe attribute access
(`''.__class__`) raises `jinja2.exceptions.SecurityError`, and so do huge
repetitions (`'a' * 10**9`). HTML parts are autoescaped; subjects, text parts
and SMS are not (they are not HTML).

The context (`message_context`) lists every open invoice of the action's scope
in one message, with amounts and dates formatted by Babel for the recipient's
locale and currency (JPY without decimals, KWD with three).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final, Protocol
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_timedelta
from babel.numbers import format_currency
from jinja2 import BaseLoader, Environment, StrictUndefined, TemplateNotFound
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dunning.channels import scope_invoices
from dunning.channels.sms import gsm7_safe
from dunning.model import Account, Action, Invoice
from dunning.money import minor_unit

EMAIL: Final = "email"
SMS: Final = "sms"
CHANNEL_PARTS: Final[Mapping[str, tuple[str, ...]]] = {
    EMAIL: ("subject", "html", "text"),
    SMS: ("text",),
}
REQUIRED_PARTS: Final[Mapping[str, tuple[str, ...]]] = {EMAIL: ("subject", "text"), SMS: ("text",)}
PART_SUFFIX: Final[Mapping[str, str]] = {
    "subject": ".subject.txt",
    "html": ".html",
    "text": ".txt",
}
FALLBACK_LOCALE: Final = "en"

_NAME = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,63}", re.ASCII)
_LOCALE = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2})?", re.ASCII)
_MAX_REPEAT = 10_000  # longest string or sequence a template may build with `*`
_MAX_EXPONENT = 64
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_WHITESPACE = re.compile(r"\s+")


class TemplateNotFoundError(LookupError):
    """No template of that name for that channel in the locale or any fallback."""


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    html: str | None  # None for a text-only template
    text: str
    locale: str  # the template locale used after fallback


@dataclass(frozen=True, slots=True, order=True)
class TemplateKey:
    channel: str
    name: str
    locale: str


def template_path(channel: str, locale: str, name: str, part: str) -> str:
    """The store path of one part: `email/de/reminder.subject.txt`."""
    if channel not in CHANNEL_PARTS or part not in CHANNEL_PARTS[channel]:
        raise ValueError(f"unknown template part {channel}/{part}")
    if not _NAME.fullmatch(name):
        raise ValueError("template name must match [a-z0-9_][a-z0-9_.-]{0,63}")
    if not _LOCALE.fullmatch(locale):
        raise ValueError("locale must look like 'de' or 'de_CH'")
    return f"{channel}/{locale}/{name}{PART_SUFFIX[part]}"


def parse_template_path(path: str) -> tuple[TemplateKey, str] | None:
    """(key, part) for a template part's path; None for layouts and other files."""
    segments = path.split("/")
    if len(segments) != 3:
        return None
    channel, locale, filename = segments
    if channel not in CHANNEL_PARTS or not _LOCALE.fullmatch(locale):
        return None
    for part in sorted(CHANNEL_PARTS[channel], key=lambda p: -len(PART_SUFFIX[p])):
        suffix = PART_SUFFIX[part]
        if filename.endswith(suffix):
            name = filename[: -len(suffix)]
            if _NAME.fullmatch(name) and not name.startswith("_"):
                return TemplateKey(channel, name, locale), part
            return None
    return None


# ----------------------------------------------------------------------------- stores


class TemplateStore(Protocol):
    """Where template sources come from (shipped files, admin uploads)."""

    def get_source(self, path: str) -> str | None:
        """The source at `path` (`email/de/reminder.html`), None when absent."""
        ...

    def paths(self) -> Iterable[str]:
        """Every path the store holds, layouts included."""
        ...


class PackageTemplates:
    """The templates shipped in this package (`dunning/channels/templates/`)."""

    def __init__(self, root: Traversable | None = None) -> None:
        self._root = root if root is not None else resources.files("dunning.channels") / "templates"
        self._cache: dict[str, str | None] = {}

    def get_source(self, path: str) -> str | None:
        if path in self._cache:
            return self._cache[path]
        segments = path.split("/")
        source: str | None = None
        if all(seg and seg not in {".", ".."} and "\\" not in seg for seg in segments):
            node = self._root.joinpath(*segments)
            if node.is_file():
                source = node.read_text(encoding="utf-8")
        self._cache[path] = source
        return source

    def paths(self) -> Iterable[str]:
        return sorted(self._walk(self._root, ""))

    def _walk(self, node: Traversable, prefix: str) -> Iterator[str]:
        for child in node.iterdir():
            path = f"{prefix}{child.name}"
            if child.is_dir():
                yield from self._walk(child, f"{path}/")
            elif child.is_file():
                yield path


class InMemoryTemplates:
    """Templates held in memory (admin uploads), over an optional fallback store.

    A path set here hides the same path in the fallback, so an admin can
    override one shipped template and keep the rest.
    """

    def __init__(
        self,
        sources: Mapping[str, str] | None = None,
        fallback: TemplateStore | None = None,
    ) -> None:
        self._sources: dict[str, str] = dict(sources or {})
        self._fallback = fallback

    def put(self, channel: str, locale: str, name: str, part: str, source: str) -> None:
        self._sources[template_path(channel, locale, name, part)] = source

    def put_path(self, path: str, source: str) -> None:
        self._sources[path] = source

    def remove(self, channel: str, locale: str, name: str) -> None:
        for part in CHANNEL_PARTS[channel]:
            self._sources.pop(template_path(channel, locale, name, part), None)

    def get_source(self, path: str) -> str | None:
        found = self._sources.get(path)
        if found is None and self._fallback is not None:
            return self._fallback.get_source(path)
        return found

    def paths(self) -> Iterable[str]:
        own = set(self._sources)
        if self._fallback is not None:
            own.update(self._fallback.paths())
        return sorted(own)


class _StoreLoader(BaseLoader):
    def __init__(self, store: TemplateStore) -> None:
        self._store = store

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source = self._store.get_source(template)
        if source is None:
            raise TemplateNotFound(template)
        store = self._store
        # Reloaded when an admin upsert changes the source.
        return source, None, lambda: store.get_source(template) == source


# ---------------------------------------------------------------------- environment


class _DunningSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with repetition and power bounded."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > _MAX_EXPONENT:
                raise SecurityError("exponent too large in a template")
            return left**right
        sized = (str, bytes, list, tuple)
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(times, int) and len(seq) * times > _MAX_REPEAT:
                raise SecurityError("repetition too large in a template")
        return left * right


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith(PART_SUFFIX["html"])


def _environment(store: TemplateStore) -> ImmutableSandboxedEnvironment:
    env = _DunningSandbox(
        loader=_StoreLoader(store),
        undefined=StrictUndefined,
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=True,
    )
    # Only harmless globals: no lipsum (unbounded text), cycler or joiner.
    env.globals = {"range": env.globals["range"], "dict": dict}
    return env


def _language(locale: str) -> str:
    return locale.partition("_")[0]


def locale_chain(locale: str, default_locale: str = FALLBACK_LOCALE) -> list[str]:
    """Locales to try in order: `de_CH` -> `de` -> policy default -> its language -> `en`."""
    chain: list[str] = []
    for candidate in (
        locale,
        _language(locale),
        default_locale,
        _language(default_locale),
        FALLBACK_LOCALE,
    ):
        if _LOCALE.fullmatch(candidate) and candidate not in chain:
            chain.append(candidate)
    return chain


def _tidy_text(text: str) -> str:
    text = _TRAILING_SPACE.sub("", text.replace("\r\n", "\n"))
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"


def _one_line(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


class Templates:
    """Renders templates from a store in a sandboxed Jinja environment."""

    def __init__(self, store: TemplateStore | None = None) -> None:
        self.store: TemplateStore = store if store is not None else PackageTemplates()
        self._env = _environment(self.store)

    def resolve(
        self, name: str, channel: str, locale: str, default_locale: str = FALLBACK_LOCALE
    ) -> str:
        """The first locale of the fallback chain that has the template, or an error."""
        if channel not in CHANNEL_PARTS:
            raise TemplateNotFoundError(f"unknown channel {channel!r}")
        if not _NAME.fullmatch(name) or name.startswith("_"):
            raise TemplateNotFoundError(f"invalid template name {name!r}")
        chain = locale_chain(locale, default_locale)
        for candidate in chain:
            if self.store.get_source(template_path(channel, candidate, name, "text")) is not None:
                return candidate
        raise TemplateNotFoundError(
            f"no {channel} template {name!r} for locale {locale!r} (tried {', '.join(chain)})"
        )

    def _render(
        self, channel: str, locale: str, name: str, part: str, ctx: Mapping[str, Any]
    ) -> str:
        path = template_path(channel, locale, name, part)
        try:
            template = self._env.get_template(path)
        except TemplateNotFound as err:
            raise TemplateNotFoundError(
                f"{channel} template {name!r} ({locale}) has no {part} part"
            ) from err
        return template.render(ctx)

    def _has(self, channel: str, locale: str, name: str, part: str) -> bool:
        return self.store.get_source(template_path(channel, locale, name, part)) is not None

    def render_email(
        self,
        name: str,
        locale: str,
        context: Mapping[str, Any],
        *,
        default_locale: str = FALLBACK_LOCALE,
    ) -> RenderedEmail:
        used = self.resolve(name, EMAIL, locale, default_locale)
        subject = _one_line(self._render(EMAIL, used, name, "subject", context))
        text = _tidy_text(self._render(EMAIL, used, name, "text", context))
        html = (
            self._render(EMAIL, used, name, "html", context).strip() + "\n"
            if self._has(EMAIL, used, name, "html")
            else None
        )
        if not subject:
            raise ValueError(f"email template {name!r} ({used}) rendered an empty subject")
        return RenderedEmail(subject=subject, html=html, text=text, locale=used)

    def render_sms(
        self,
        name: str,
        locale: str,
        context: Mapping[str, Any],
        *,
        default_locale: str = FALLBACK_LOCALE,
    ) -> str:
        """One line of GSM-7-friendly text (locale spaces and quotes mapped)."""
        used = self.resolve(name, SMS, locale, default_locale)
        return gsm7_safe(_one_line(self._render(SMS, used, name, "text", context)))

    def check_source(self, source: str) -> None:
        """Compile an uploaded source in the sandbox; raises `TemplateSyntaxError`."""
        self._env.parse(source)

    def available(self) -> list[TemplateKey]:
        """Every (channel, name, locale) with a text part, sorted."""
        keys = {
            parsed[0]
            for path in self.store.paths()
            if (parsed := parse_template_path(path)) is not None and parsed[1] == "text"
        }
        return sorted(keys)


@cache
def default_templates() -> Templates:
    """The shipped templates, created on first use (no I/O at import)."""
    return Templates(PackageTemplates())


# -------------------------------------------------------------------------- context


@cache
def babel_locale(locale: str) -> Locale:
    """The Babel locale for `locale`, falling back to its language, then English."""
    for candidate in locale_chain(locale):
        try:
            return Locale.parse(candidate)
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse(FALLBACK_LOCALE)


def format_money(amount: Decimal, currency: str, locale: str | Locale) -> str:
    """An amount with exactly the currency's minor units, in the locale's format."""
    loc = locale if isinstance(locale, Locale) else babel_locale(locale)
    quantized = amount.quantize(minor_unit(currency))
    return format_currency(quantized, currency, locale=loc, currency_digits=True)


def format_day(day: date, locale: str | Locale, fmt: str = "long") -> str:
    loc = locale if isinstance(locale, Locale) else babel_locale(locale)
    return format_date(day, format=fmt, locale=loc)


def format_days(days: int, locale: str | Locale) -> str:
    """`10 days`, `1 Tag`, `10 jours`: a number of days with the right plural."""
    loc = locale if isinstance(locale, Locale) else babel_locale(locale)
    return format_timedelta(
        timedelta(days=days), granularity="day", threshold=10**6, format="long", locale=loc
    )


def _check_link(link: str | None) -> str | None:
    if link is None or link == "":
        return None
    parts = urlsplit(link)
    if parts.scheme != "https" or not parts.netloc or _WHITESPACE.search(link):
        raise ValueError("payment_link must be an absolute https URL without spaces")
    return link


# Keys every context has, so templates can test them under StrictUndefined.
OPTIONAL_CONTEXT: Final[Mapping[str, Any]] = {
    "payment_link": None,
    "company_name": None,
    "support_contact": None,
}


def message_context(
    action: Action,
    account: Account,
    invoices: Iterable[Invoice],
    *,
    as_of: datetime,
    payment_link: str | None = None,
    extra: Mapping[str, Any] | None = None,
    locale: str | None = None,
) -> dict[str, Any]:
    """What a message template sees.

    Every open invoice of the action's scope is listed (one message per
    customer in customer mode), oldest first, with its number, due date and
    open amount, and the total. Days overdue count from the oldest due date to
    `as_of`'s date in the account's time zone (`days_until_due` for reminders
    before the due date). Amounts and dates are formatted for `locale`
    (default: the action's locale, which is the account's).

    `payment_link`, `company_name` and `support_contact` are optional and None
    when not given; `extra` adds keys (it never replaces the computed ones).
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    loc = babel_locale(locale or action.locale or account.locale)
    today = as_of.astimezone(ZoneInfo(account.timezone)).date()
    scope = scope_invoices(action, invoices)

    totals: dict[str, Decimal] = {}
    rows: list[dict[str, Any]] = []
    for inv in scope:
        totals[inv.currency] = totals.get(inv.currency, Decimal(0)) + inv.open_amount
        overdue = max(0, (today - inv.due_date).days)
        rows.append(
            {
                "number": inv.invoice_id,
                "due_date": format_day(inv.due_date, loc),
                "due_date_short": format_day(inv.due_date, loc, "medium"),
                "amount": format_money(inv.amount, inv.currency, loc),
                "open_amount": format_money(inv.open_amount, inv.currency, loc),
                "currency": inv.currency,
                "days_overdue": overdue,
            }
        )
    if not totals:
        totals[account.currency] = Decimal(0)
    # The account's currency first; a mixed scope shows one total per currency.
    ordered = sorted(totals.items(), key=lambda kv: (kv[0] != account.currency, kv[0]))
    total = " + ".join(format_money(amount, cur, loc) for cur, amount in ordered)

    oldest = scope[0].due_date if scope else None
    days_overdue = max(0, (today - oldest).days) if oldest else 0
    days_until_due = max(0, (oldest - today).days) if oldest else 0
    computed: dict[str, Any] = {
        "customer_name": account.name,
        "account_id": account.account_id,
        "case_id": action.case_id,
        "action_id": action.action_id,
        "level": action.level,
        "level_name": action.level_name,
        "lang": loc.language,
        "locale": str(loc),
        "today": format_day(today, loc),
        "invoices": rows,
        "invoice_count": len(rows),
        "total": total,
        "currency": ordered[0][0],
        "due_date": format_day(oldest, loc) if oldest else None,
        "due_date_short": format_day(oldest, loc, "medium") if oldest else None,
        "days_overdue": days_overdue,
        "days_overdue_text": format_days(days_overdue, loc),
        "days_until_due": days_until_due,
        "days_until_due_text": format_days(days_until_due, loc),
    }
    context: dict[str, Any] = dict(OPTIONAL_CONTEXT)
    context.update(extra or {})
    context["payment_link"] = _check_link(payment_link or context.get("payment_link"))
    context.update(computed)
    return context


def _template_name(action: Action) -> str:
    if action.template is None:
        raise TemplateNotFoundError(f"action {action.action_id} names no template")
    return action.template


def _formatting_locale(requested: str, used: str) -> str:
    """Format for the requested locale (`de_CH`) when the template speaks its
    language (`de`); otherwise for the template's locale, so an English fallback
    does not carry French month names."""
    return requested if _language(requested) == _language(used) else used


def render_email(
    action: Action,
    account: Account,
    invoices: Iterable[Invoice],
    *,
    as_of: datetime,
    templates: Templates | None = None,
    default_locale: str = FALLBACK_LOCALE,
    payment_link: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> RenderedEmail:
    """The email for `action` in the account's locale (or the nearest fallback)."""
    renderer = templates or default_templates()
    name = _template_name(action)
    used = renderer.resolve(name, EMAIL, action.locale, default_locale)
    context = message_context(
        action,
        account,
        invoices,
        as_of=as_of,
        payment_link=payment_link,
        extra=extra,
        locale=_formatting_locale(action.locale, used),
    )
    return renderer.render_email(name, used, context, default_locale=default_locale)


def render_sms(
    action: Action,
    account: Account,
    invoices: Iterable[Invoice],
    *,
    as_of: datetime,
    templates: Templates | None = None,
    default_locale: str = FALLBACK_LOCALE,
    payment_link: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The SMS text for `action`, GSM-7-friendly (count it with `sms_segments`)."""
    renderer = templates or default_templates()
    name = _template_name(action)
    used = renderer.resolve(name, SMS, action.locale, default_locale)
    context = message_context(
        action,
        account,
        invoices,
        as_of=as_of,
        payment_link=payment_link,
        extra=extra,
        locale=_formatting_locale(action.locale, used),
    )
    return renderer.render_sms(name, used, context, default_locale=default_locale)


__all__ = [
    "CHANNEL_PARTS",
    "EMAIL",
    "SMS",
    "InMemoryTemplates",
    "PackageTemplates",
    "RenderedEmail",
    "TemplateKey",
    "TemplateNotFoundError",
    "TemplateStore",
    "Templates",
    "babel_locale",
    "default_templates",
    "format_days",
    "format_money",
    "locale_chain",
    "message_context",
    "parse_template_path",
    "render_email",
    "render_sms",
    "template_path",
]
