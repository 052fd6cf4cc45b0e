"""Message templates: every shipped template renders, fallback, escaping, sandbox, Babel."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from babel.numbers import get_group_symbol
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError

from dunning.channels.sms import is_gsm7, sms_segments
from dunning.channels.templates import (
    InMemoryTemplates,
    PackageTemplates,
    TemplateKey,
    TemplateNotFoundError,
    Templates,
    default_templates,
    format_money,
    locale_chain,
    message_context,
    render_email,
    render_sms,
    template_path,
)
from dunning.model import Account, Action, ActionType, Channel, Invoice, InvoiceStatus
from tests.builders import account, invoice

AS_OF = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
SHIPPED_LOCALES = ("en", "de", "fr")
EMAIL_TEMPLATES = (
    "pre_due",
    "reminder",
    "important_notice",
    "avoid_suspension",
    "suspension",
    "courtesy",
    "formal_notice",
    "service_restored",
)
SMS_TEMPLATES = ("pre_due", "reminder", "important_notice", "avoid_suspension")
SHIPPED = default_templates().available()


def _action(template: str, locale: str = "en", *, sms: bool = False, **kw: Any) -> Action:
    kind = ActionType.SMS if sms else ActionType.EMAIL
    base: dict[str, Any] = {
        "action_id": "a1b2c3d4e5f6a7b8c9d0e1f2",
        "account_id": "acc-1",
        "case_id": "C-inv-1",
        "type": kind,
        "channel": Channel(kind.value),
        "level": 2,
        "level_name": "reminder",
        "entry": 1,
        "index": 0,
        "template": template,
        "target": None,
        "locale": locale,
        "not_before": AS_OF,
        "created_at": AS_OF,
        "policy_id": "consumer",
        "policy_version": 1,
        "invoice_ids": ("inv-1", "inv-2"),
    }
    base.update(kw)
    return Action(**base)


def _invoices(currency: str = "EUR") -> list[Invoice]:
    big, small = {"JPY": ("123456", "2000"), "KWD": ("1234.567", "20.000")}.get(
        currency, ("1234.56", "20.00")
    )
    return [
        invoice("inv-2", small, date(2026, 1, 10), currency=currency),
        invoice("inv-1", big, date(2026, 1, 2), currency=currency),
    ]


# ------------------------------------------------------------------ shipped templates


def test_every_standard_template_is_shipped_in_english_german_and_french() -> None:
    expected = {TemplateKey("email", n, loc) for n in EMAIL_TEMPLATES for loc in SHIPPED_LOCALES}
    expected |= {TemplateKey("sms", n, loc) for n in SMS_TEMPLATES for loc in SHIPPED_LOCALES}
    assert expected <= set(SHIPPED)


def test_layouts_are_not_templates() -> None:
    assert all(not key.name.startswith("_") for key in SHIPPED)
    assert PackageTemplates().get_source("email/en/_layout.html") is not None


@pytest.mark.parametrize(
    "key", [k for k in SHIPPED if k.channel == "email"], ids=lambda k: f"{k.name}-{k.locale}"
)
@pytest.mark.parametrize("options", [{}, {"link": True}], ids=["plain", "link+brand"])
def test_every_shipped_email_renders(key: TemplateKey, options: dict[str, bool]) -> None:
    # Given an account in the template's locale with two overdue invoices
    acct = account(locale=key.locale, name="Anna Müller")
    link = "https://pay.example.com/p/acc-1?src=email" if options else None
    extra = {"company_name": "Example Energy", "support_contact": "help@example.com"}
    # When the email is rendered
    mail = render_email(
        _action(key.name, key.locale),
        acct,
        _invoices(),
        as_of=AS_OF,
        payment_link=link,
        extra=extra if options else None,
    )
    # Then subject, HTML and text are complete, in the template's locale
    assert mail.locale == key.locale
    assert mail.subject and "\n" not in mail.subject and "{" not in mail.subject
    assert mail.html is not None
    assert f'<html lang="{key.locale}">' in mail.html
    for part in (mail.html, mail.text):
        assert "Anna Müller" in part
        assert "{{" not in part and "{%" not in part
        assert ("Example Energy" in part) is bool(options)
    if key.name != "service_restored":  # the thank-you lists nothing and asks nothing
        total = format_money(Decimal("1254.56"), "EUR", key.locale)
        assert total in mail.text and total in mail.html
        for number in ("inv-1", "inv-2"):
            assert number in mail.text and number in mail.html
        assert mail.text.index("inv-1") < mail.text.index("inv-2")  # oldest first
        if link:
            assert link in mail.text
            assert link.replace("&", "&amp;") in mail.html


@pytest.mark.parametrize(
    "key", [k for k in SHIPPED if k.channel == "sms"], ids=lambda k: f"{k.name}-{k.locale}"
)
def test_every_shipped_sms_renders_as_one_gsm7_segment(key: TemplateKey) -> None:
    acct = account(locale=key.locale)
    text = render_sms(_action(key.name, key.locale, sms=True), acct, _invoices(), as_of=AS_OF)
    assert (
        format_money(Decimal("1254.56"), "EUR", key.locale)
        .replace("\u202f", " ")
        .replace("\u00a0", " ")
        in text
    )
    assert is_gsm7(text)
    assert sms_segments(text).segments == 1
    # With a brand and a payment link it still fits two segments.
    longer = render_sms(
        _action(key.name, key.locale, sms=True),
        acct,
        _invoices(),
        as_of=AS_OF,
        payment_link="https://pay.example.com/p/acc-1",
        extra={"company_name": "Example Energy"},
    )
    assert longer.startswith("Example Energy: ")
    assert longer.endswith("https://pay.example.com/p/acc-1")
    assert is_gsm7(longer)
    assert sms_segments(longer).segments <= 2


def test_without_a_payment_link_there_is_no_call_to_action() -> None:
    mail = render_email(_action("reminder"), account(locale="en"), _invoices(), as_of=AS_OF)
    assert mail.html is not None
    assert "Pay now" not in mail.text and "Pay now" not in mail.html
    assert "href" not in mail.html


def test_a_payment_link_must_be_https() -> None:
    with pytest.raises(ValueError, match="https"):
        render_email(
            _action("reminder"),
            account(locale="en"),
            _invoices(),
            as_of=AS_OF,
            payment_link="javascript:alert(1)",
        )


# --------------------------------------------------------------------------- fallback


def test_locale_chain() -> None:
    assert locale_chain("de_CH", "fr") == ["de_CH", "de", "fr", "en"]
    assert locale_chain("en_GB") == ["en_GB", "en"]
    assert locale_chain("pt_BR", "de_AT") == ["pt_BR", "pt", "de_AT", "de", "en"]


@pytest.mark.parametrize(
    ("requested", "default", "used"),
    [
        ("de_CH", "en", "de"),  # region -> language
        ("fr_BE", "de", "fr"),
        ("it", "fr", "fr"),  # unknown language -> the policy's default
        ("it_CH", "de_CH", "de"),  # -> the default's language
        ("pt_BR", "es", "en"),  # nothing else -> English
    ],
)
def test_locale_fallback(requested: str, default: str, used: str) -> None:
    assert default_templates().resolve("reminder", "email", requested, default) == used


def test_a_regional_account_gets_the_language_template_with_regional_formatting() -> None:
    # Given a Swiss German account billed in CHF
    acct = account(locale="de_CH", currency="CHF")
    invs = [invoice("inv-1", "1234.56", date(2026, 1, 2), currency="CHF")]
    # When it is reminded
    mail = render_email(_action("reminder", "de_CH"), acct, invs, as_of=AS_OF)
    # Then the German template is used with Swiss number formatting
    assert mail.locale == "de"
    assert "Guten Tag" in mail.text
    # (CLDR's Swiss grouping sign has changed between releases: ’ then ')
    swiss = get_group_symbol("de_CH")
    assert swiss != get_group_symbol("de")
    assert f"CHF\u00a01{swiss}234.56" in mail.text


def test_a_fallback_to_another_language_formats_in_that_language() -> None:
    # An Italian account gets the English template, and English dates with it.
    mail = render_email(_action("reminder", "it"), account(locale="it"), _invoices(), as_of=AS_OF)
    assert mail.locale == "en"
    assert "January 2, 2026" in mail.text
    assert "gennaio" not in mail.text


def test_a_missing_template_is_a_clear_error() -> None:
    with pytest.raises(TemplateNotFoundError, match=r"no email template 'nope'.*de_CH, de, en"):
        default_templates().resolve("nope", "email", "de_CH")
    with pytest.raises(TemplateNotFoundError):
        render_sms(_action("suspension", sms=True), account(), _invoices(), as_of=AS_OF)
    with pytest.raises(TemplateNotFoundError):
        default_templates().resolve("../../etc/passwd", "email", "en")
    with pytest.raises(TemplateNotFoundError):
        render_email(replace(_action("reminder"), template=None), account(), [], as_of=AS_OF)


def test_an_email_template_without_a_subject_is_reported() -> None:
    store = InMemoryTemplates({"email/en/odd.txt": "Hello"})
    with pytest.raises(TemplateNotFoundError, match="subject"):
        render_email(
            _action("odd"), account(locale="en"), [], as_of=AS_OF, templates=Templates(store)
        )


# ------------------------------------------------------------------- admin templates


def _store(**parts: str) -> Templates:
    store = InMemoryTemplates(fallback=PackageTemplates())
    for part, source in parts.items():
        store.put("email", "en", "custom", part, source)
    return Templates(store)


def test_an_uploaded_template_overrides_and_updates_take_effect() -> None:
    # Given an admin override of the English reminder subject
    store = InMemoryTemplates(fallback=PackageTemplates())
    templates = Templates(store)
    store.put("email", "en", "reminder", "subject", "First: {{ total }}")
    acct = account(locale="en")
    first = render_email(_action("reminder"), acct, _invoices(), as_of=AS_OF, templates=templates)
    # When the admin changes it again
    store.put("email", "en", "reminder", "subject", "Second: {{ total }}")
    second = render_email(_action("reminder"), acct, _invoices(), as_of=AS_OF, templates=templates)
    # Then the new source is used, and the other parts still come from the package
    assert first.subject == "First: €1,254.56"
    assert second.subject == "Second: €1,254.56"
    assert "Dear" in second.text


def test_a_text_only_template_has_no_html() -> None:
    templates = _store(subject="Hi", text="Total {{ total }}")
    mail = render_email(
        _action("custom"), account(locale="en"), _invoices(), as_of=AS_OF, templates=templates
    )
    assert mail.html is None
    assert mail.text == "Total €1,254.56\n"


def test_a_missing_variable_fails_loudly() -> None:
    templates = _store(subject="Hi", text="Hello {{ customer_nmae }}")
    with pytest.raises(UndefinedError, match="customer_nmae"):
        render_email(
            _action("custom"), account(locale="en"), _invoices(), as_of=AS_OF, templates=templates
        )
    templates = _store(subject="Hi", text="{% if vip %}VIP{% endif %}")
    with pytest.raises(UndefinedError):
        render_email(
            _action("custom"), account(locale="en"), _invoices(), as_of=AS_OF, templates=templates
        )


def test_check_source_reports_syntax_errors() -> None:
    default_templates().check_source("Hello {{ customer_name }}")
    with pytest.raises(TemplateSyntaxError):
        default_templates().check_source("{% if %}")


def test_template_paths() -> None:
    assert template_path("email", "de", "reminder", "subject") == "email/de/reminder.subject.txt"
    assert template_path("sms", "fr_CH", "reminder", "text") == "sms/fr_CH/reminder.txt"
    with pytest.raises(ValueError):
        template_path("sms", "de", "reminder", "html")
    with pytest.raises(ValueError):
        template_path("email", "de", "../x", "text")


# --------------------------------------------------------------------- escaping, sandbox


def test_html_escapes_the_customer_name_and_text_does_not() -> None:
    # Given a customer whose name carries markup
    acct = account(locale="en", name='<script>alert("x")</script> & Co')
    # When an email is rendered
    mail = render_email(_action("reminder"), acct, _invoices(), as_of=AS_OF)
    # Then the HTML part escapes it and the text part keeps it verbatim
    assert mail.html is not None
    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in mail.html
    assert '<script>alert("x")</script> & Co' in mail.text


def test_subjects_are_one_line_whatever_the_data() -> None:
    templates = _store(subject="Hello {{ customer_name }}", text="x")
    acct = account(locale="en", name="Anna\r\nBcc: victim@example.com")
    mail = render_email(_action("custom"), acct, [], as_of=AS_OF, templates=templates)
    assert mail.subject == "Hello Anna Bcc: victim@example.com"


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("{{ ''.__class__ }}", SecurityError),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", SecurityError),
        ("{{ customer_name.__class__.__init__.__globals__ }}", SecurityError),
        ("{{ invoices.append(1) }}", SecurityError),  # immutable sandbox
        ("{{ invoices[0].update(number='x') }}", SecurityError),
        ("{{ 'a' * 1000000 }}", SecurityError),
        ("{{ [1] * 1000000 }}", SecurityError),
        ("{{ 9 ** 9999 }}", SecurityError),
        ("{{ lipsum(1000) }}", UndefinedError),  # not among the globals
        ("{{ cycler }}", UndefinedError),
        ("{{ self.__init__ }}", SecurityError),
    ],
)
def test_the_sandbox_refuses_unsafe_templates(source: str, error: type[Exception]) -> None:
    templates = _store(subject="x", text=source)
    with pytest.raises(error):
        render_email(
            _action("custom"), account(locale="en"), _invoices(), as_of=AS_OF, templates=templates
        )


def test_small_repetitions_are_fine() -> None:
    templates = _store(subject="x", text="{{ '=' * 20 }} {{ 2 ** 10 }}")
    mail = render_email(
        _action("custom"), account(locale="en"), [], as_of=AS_OF, templates=templates
    )
    assert mail.text == "==================== 1024\n"


# ------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        ("1234.56", "EUR", "de", "1.234,56\u00a0€"),
        ("1234.56", "EUR", "de_DE", "1.234,56\u00a0€"),
        ("7", "EUR", "de", "7,00\u00a0€"),
        ("1234.56", "EUR", "fr", "1\u202f234,56\u00a0€"),
        ("1234.56", "EUR", "en", "€1,234.56"),
        ("1234.56", "USD", "en_US", "$1,234.56"),
        ("1235", "JPY", "en", "¥1,235"),  # no decimals
        ("1235", "JPY", "de", "1.235\u00a0¥"),
        ("1234.567", "KWD", "en", "KWD1,234.567"),  # three decimals
        ("1.5", "KWD", "en", "KWD1.500"),
        ("1234.567", "KWD", "de", "1.234,567\u00a0KWD"),
    ],
)
def test_money_is_formatted_for_the_locale_with_the_currency_minor_units(
    amount: str, currency: str, locale: str, expected: str
) -> None:
    formatted = format_money(Decimal(amount), currency, locale)
    # CLDR releases differ on the space between a currency code and the number.
    assert formatted.replace("\u00a0", "") == expected.replace("\u00a0", "")
    assert formatted.replace("KWD\u00a0", "KWD") == expected


def test_german_email_shows_german_amounts_and_dates() -> None:
    mail = render_email(_action("reminder", "de"), account(locale="de"), _invoices(), as_of=AS_OF)
    assert "1.234,56\u00a0€" in mail.text
    assert "1.254,56\u00a0€" in mail.text
    assert "2. Januar 2026" in mail.text


def test_yen_amounts_have_no_decimals_in_messages() -> None:
    acct = account(locale="en", currency="JPY")
    mail = render_email(_action("reminder"), acct, _invoices("JPY"), as_of=AS_OF)
    assert "¥123,456" in mail.text
    assert "¥125,456" in mail.text
    assert "¥2,000.00" not in mail.text and ".00" not in mail.text


def test_dinar_amounts_have_three_decimals_in_messages() -> None:
    acct = account(locale="en", currency="KWD")
    mail = render_email(_action("reminder"), acct, _invoices("KWD"), as_of=AS_OF)
    assert "1,234.567" in mail.text
    assert "20.000" in mail.text
    assert "1,254.567" in mail.text


# ---------------------------------------------------------------------------- context


def _context(acct: Account | None = None, **kw: Any) -> dict[str, Any]:
    action = kw.pop("action", None) or _action("reminder")
    return message_context(
        action,
        acct or account(locale="en"),
        kw.pop("invoices", _invoices()),
        as_of=kw.pop("as_of", AS_OF),
        **kw,
    )


def test_the_context_lists_every_open_invoice_of_the_scope_oldest_first() -> None:
    invs = [
        *_invoices(),
        invoice(
            "inv-3", "5.00", date(2026, 1, 20), open_amount=Decimal(0), status=InvoiceStatus.PAID
        ),
        invoice("inv-9", "99.00", date(2025, 12, 1)),  # another case's invoice
    ]
    ctx = _context(
        action=_action("reminder", invoice_ids=("inv-1", "inv-2", "inv-3")), invoices=invs
    )
    assert [row["number"] for row in ctx["invoices"]] == ["inv-1", "inv-2"]
    assert ctx["invoice_count"] == 2
    assert ctx["total"] == "€1,254.56"
    assert ctx["invoices"][0]["open_amount"] == "€1,234.56"
    assert ctx["invoices"][0]["due_date"] == "January 2, 2026"
    assert ctx["days_overdue"] == 30
    assert ctx["days_overdue_text"] == "30 days"
    assert ctx["level_name"] == "reminder"
    assert ctx["customer_name"] == "account"
    assert ctx["payment_link"] is None
    assert ctx["company_name"] is None


def test_days_overdue_count_in_the_account_time_zone() -> None:
    # 23:30 UTC on 11 January is already 12 January in Tokyo.
    late = datetime(2026, 1, 11, 23, 30, tzinfo=UTC)
    invs = [invoice("inv-1", due=date(2026, 1, 2))]
    action = _action("reminder", invoice_ids=("inv-1",))
    assert (
        _context(account(timezone="UTC"), action=action, invoices=invs, as_of=late)["days_overdue"]
        == 9
    )
    tokyo = account(timezone="Asia/Tokyo")
    assert _context(tokyo, action=action, invoices=invs, as_of=late)["days_overdue"] == 10


def test_before_the_due_date_the_context_counts_days_until_due() -> None:
    invs = [invoice("inv-1", due=date(2026, 2, 4))]
    ctx = _context(action=_action("pre_due", invoice_ids=("inv-1",)), invoices=invs)
    assert (ctx["days_overdue"], ctx["days_until_due"], ctx["days_until_due_text"]) == (
        0,
        3,
        "3 days",
    )


def test_extra_keys_are_added_but_never_replace_computed_ones() -> None:
    ctx = _context(extra={"company_name": "Example", "total": "free!"})
    assert ctx["company_name"] == "Example"
    assert ctx["total"] == "€1,254.56"


def test_an_empty_scope_has_a_zero_total() -> None:
    ctx = _context(invoices=[])
    assert (ctx["invoices"], ctx["total"], ctx["due_date"]) == ([], "€0.00", None)


def test_a_naive_as_of_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        _context(as_of=datetime(2026, 1, 1))
