"""Model validation: every invalid value fails with a ValidationError naming the field."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel, ValidationError

from dunning.model import (
    DEFAULT_MAX_LEVELS,
    ActionSpec,
    ActionType,
    Calendar,
    CatchUp,
    ContactCap,
    Invoice,
    Level,
    PaymentPlan,
    Policy,
    Suspension,
    SuspensionKind,
    SuspensionProfile,
)
from tests.builders import account, calendar, email, gotransverse_levels, invoice, level, policy

M = TypeVar("M", bound=BaseModel)


def _names(exc: ValidationError) -> str:
    """Every location and message of a ValidationError, as one searchable string."""
    return " | ".join(
        ".".join(str(p) for p in err["loc"]) + ": " + err["msg"] for err in exc.errors()
    )


def _plain(value: Any) -> Any:
    """JSON encoding for Decimal, dates, times and sets (what an API client sends)."""
    if isinstance(value, date | time | datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(type(value).__name__)


def _validate(cls: type[M], data: dict[str, Any], context: dict[str, Any] | None = None) -> M:
    """Validate plain data as it arrives at the boundary: JSON, strict models."""
    return cls.model_validate_json(json.dumps(data, default=_plain), context=context)


def _policy_data(**kw: Any) -> dict[str, Any]:
    """A valid policy as plain data (what the API or a config file would send)."""
    data: dict[str, Any] = {
        "policy_id": "pol-1",
        "name": "standard",
        "thresholds": {"EUR": "10.00"},
        "levels": [
            {"name": f"level {i}", "days": d, "actions": [{"type": "webhook", "target": "hook"}]}
            for i, d in enumerate((10, 30, 60), start=1)
        ],
    }
    data.update(kw)
    return data


def _levels(n: int) -> list[dict[str, Any]]:
    return [{"name": f"l{i}", "days": i * 5} for i in range(1, n + 1)]


# ----------------------------------------------------------------------------- Policy


def test_the_plain_data_policy_is_valid() -> None:
    # Given the base data used below / When validated / Then it passes (tests vary one thing)
    assert _validate(Policy, _policy_data()).levels[2].days == 60


@pytest.mark.parametrize(
    ("days", "field", "message"),
    [
        pytest.param((10, 10), "levels", "unique days", id="duplicate-days"),
        pytest.param((30, 10), "levels", "strictly ordered", id="descending"),
        pytest.param((10, 30, 20), "levels", "strictly ordered", id="third-goes-back"),
        pytest.param((-5, -5, 10), "levels", "unique days", id="duplicate-reminders"),
        pytest.param((), "levels", "at least one level", id="no-levels"),
    ],
)
def test_levels_must_be_strictly_ordered_with_unique_days(
    days: tuple[int, ...], field: str, message: str
) -> None:
    # Given levels out of order, with a repeated day, or none at all
    data = _policy_data(levels=[{"name": f"l{i}", "days": d} for i, d in enumerate(days)])
    # When the policy is validated
    with pytest.raises(ValidationError) as caught:
        _validate(Policy, data)
    # Then the error is located at `levels` and says why
    errors = caught.value.errors()
    assert any(err["loc"][:1] == (field,) for err in errors), errors
    assert message in _names(caught.value)


@pytest.mark.parametrize(
    ("days", "valid"),
    [
        pytest.param((-7, 0, 1, 10), True, id="reminders-then-levels"),
        pytest.param((-365, 3650), True, id="bounds"),
        pytest.param((-366, 10), False, id="below-minus-365"),
        pytest.param((10, 3651), False, id="above-3650"),
    ],
)
def test_level_days_bounds(days: tuple[int, ...], valid: bool) -> None:
    # Given levels at the edges of the allowed day range
    data = _policy_data(levels=[{"name": f"l{i}", "days": d} for i, d in enumerate(days)])
    # When validated / Then accepted inside [-365, 3650], rejected outside with loc on days
    if valid:
        assert tuple(lv.days for lv in _validate(Policy, data).levels) == days
    else:
        with pytest.raises(ValidationError) as caught:
            _validate(Policy, data)
        assert any(err["loc"][-1] == "days" for err in caught.value.errors())


@pytest.mark.parametrize(
    ("count", "context", "valid"),
    [
        pytest.param(DEFAULT_MAX_LEVELS, None, True, id="15-by-default-ok"),
        pytest.param(DEFAULT_MAX_LEVELS + 1, None, False, id="16-by-default-rejected"),
        pytest.param(16, {"max_levels": 20}, True, id="16-with-max-20-ok"),
        pytest.param(20, {"max_levels": 20}, True, id="20-with-max-20-ok"),
        pytest.param(21, {"max_levels": 20}, False, id="21-with-max-20-rejected"),
        pytest.param(3, {"max_levels": 3}, True, id="3-with-max-3-ok"),
        pytest.param(4, {"max_levels": 3}, False, id="4-with-max-3-rejected"),
        pytest.param(5, {"other": 1}, True, id="unrelated-context-keeps-default"),
    ],
)
def test_maximum_number_of_levels(count: int, context: dict[str, int] | None, valid: bool) -> None:
    # Given a policy with `count` levels, validated with or without a max_levels context
    data = _policy_data(levels=_levels(count))
    # When validated
    if valid:
        # Then up to the maximum it passes
        assert len(_validate(Policy, data, context).levels) == count
        return
    with pytest.raises(ValidationError) as caught:
        _validate(Policy, data, context)
    # Then above it the error sits on `levels` and gives the maximum
    errors = caught.value.errors()
    assert [err["loc"] for err in errors] == [("levels",)]
    limit = DEFAULT_MAX_LEVELS if context is None else context["max_levels"]
    assert f"at most {limit} levels" in errors[0]["msg"]


@pytest.mark.parametrize(
    ("thresholds", "needle"),
    [
        pytest.param({}, "thresholds", id="empty"),
        pytest.param({"EUR": Decimal("10.001")}, "thresholds", id="finer-than-currency"),
        pytest.param({"XXX": Decimal("10")}, "thresholds", id="unknown-currency"),
        pytest.param({"EUR": Decimal("-1.00")}, "thresholds", id="negative"),
        pytest.param({"JPY": Decimal("10.5")}, "thresholds", id="JPY-with-decimals"),
    ],
)
def test_threshold_per_currency_is_required_and_valid(
    thresholds: dict[str, Decimal], needle: str
) -> None:
    # Given thresholds that are missing, invalid for their currency or negative
    # When the policy is validated
    with pytest.raises(ValidationError) as caught:
        _validate(Policy, _policy_data(thresholds=thresholds))
    # Then the error names `thresholds` (in its loc or its message)
    assert needle in _names(caught.value)


def test_missing_thresholds_field_is_located() -> None:
    # Given a policy without thresholds at all / When validated / Then loc is ('thresholds',)
    data = _policy_data()
    del data["thresholds"]
    with pytest.raises(ValidationError) as caught:
        _validate(Policy, data)
    assert [err["loc"] for err in caught.value.errors()] == [("thresholds",)]


@pytest.mark.parametrize(
    ("action", "loc"),
    [
        pytest.param({"type": "email"}, ("levels", 0, "actions", 0), id="email-no-template"),
        pytest.param({"type": "sms"}, ("levels", 0, "actions", 0), id="sms-no-template"),
        pytest.param(
            {"type": "email", "template": "Bad Name!"},
            ("levels", 0, "actions", 0, "template"),
            id="template-pattern",
        ),
    ],
)
def test_message_actions_need_a_template(action: dict[str, Any], loc: tuple[Any, ...]) -> None:
    # Given a level whose message action has no (valid) template
    data = _policy_data(levels=[{"name": "l1", "days": 10, "actions": [action]}])
    # When validated
    with pytest.raises(ValidationError) as caught:
        _validate(Policy, data)
    # Then the error points at levels.0.actions.0 and names the template
    assert [err["loc"] for err in caught.value.errors()] == [loc]
    assert "template" in _names(caught.value)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"type": ActionType.WEBHOOK, "target": "crm"}, id="webhook"),
        pytest.param({"type": ActionType.SUSPEND_SERVICE, "target": "prov"}, id="suspend"),
        pytest.param({"type": ActionType.CALL}, id="call"),
        pytest.param({"type": ActionType.WRITE_OFF}, id="write-off"),
    ],
)
def test_non_message_actions_need_no_template(spec: dict[str, Any]) -> None:
    # Given an integration or internal action without a template / Then it is valid
    assert ActionSpec(**spec).template is None


@pytest.mark.parametrize(
    ("exits", "valid", "needle"),
    [
        pytest.param({"EUR": Decimal("10.00")}, True, "", id="equal-to-entry-ok"),
        pytest.param({"EUR": Decimal("5.00")}, True, "", id="below-entry-ok"),
        pytest.param({"EUR": Decimal("10.01")}, False, "exit_thresholds.EUR", id="above-entry"),
        pytest.param({"USD": Decimal("1.00")}, False, "exit_thresholds.USD", id="no-entry-in-USD"),
    ],
)
def test_exit_threshold_must_not_exceed_entry(
    exits: dict[str, Decimal], valid: bool, needle: str
) -> None:
    # Given an entry threshold of 10.00 EUR and an exit threshold
    data = _policy_data(exit_thresholds=exits)
    # When validated
    if valid:
        # Then at or below entry it is accepted and used
        p = _validate(Policy, data)
        assert p.exit_threshold("EUR") == exits["EUR"]
        return
    with pytest.raises(ValidationError) as caught:
        _validate(Policy, data)
    # Then above entry (or without entry) the error names exit_thresholds.<currency>
    assert needle in _names(caught.value)


@pytest.mark.parametrize(
    ("currency", "expected"),
    [
        pytest.param("EUR", Decimal("0.01"), id="EUR-cent"),
        pytest.param("JPY", Decimal("1"), id="JPY-yen"),
        pytest.param("KWD", Decimal("0.001"), id="KWD-fils"),
    ],
)
def test_exit_threshold_defaults_to_the_minor_unit(currency: str, expected: Decimal) -> None:
    # Given no exit threshold / When asked / Then it is the currency's minor unit
    p = _validate(Policy, _policy_data(thresholds={currency: Decimal(100)}))
    assert p.exit_threshold(currency) == expected


@pytest.mark.parametrize(
    ("catch_up", "gap", "valid"),
    [
        pytest.param("sequential", 0, False, id="sequential-gap-0-rejected"),
        pytest.param("sequential", 1, True, id="sequential-gap-1-ok"),
        pytest.param("sequential", 7, True, id="sequential-gap-7-ok"),
        pytest.param("latest_only", 0, True, id="latest-only-gap-0-ok"),
    ],
)
def test_sequential_catch_up_needs_a_gap_of_one_day(catch_up: str, gap: int, valid: bool) -> None:
    # Given a catch-up mode and a minimum gap
    data = _policy_data(catch_up=catch_up, min_gap_days=gap)
    # When validated
    if valid:
        assert _validate(Policy, data).catch_up is CatchUp(catch_up)
        return
    # Then sequential with a gap below one day is rejected, naming min_gap_days
    with pytest.raises(ValidationError) as caught:
        _validate(Policy, data)
    assert "min_gap_days" in _names(caught.value)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        pytest.param({"policy_id": "pol#1"}, "policy_id", id="hash-in-id"),
        pytest.param({"version": 0}, "version", id="version-0"),
        pytest.param({"mode": "household"}, "mode", id="unknown-mode"),
        pytest.param({"unknown_field": 1}, "unknown_field", id="extra-forbidden"),
        pytest.param({"min_gap_days": -1}, "min_gap_days", id="negative-gap"),
        pytest.param(
            {
                "contact_caps": [
                    {"channel": "email", "max_messages": 1, "window_days": 1},
                    {"channel": "email", "max_messages": 2, "window_days": 7},
                ]
            },
            "contact_caps",
            id="two-caps-one-channel",
        ),
        pytest.param(
            {"suspension_profiles": {"dispute": {"kind": "fraud_review"}}},
            "suspension_profiles.dispute",
            id="profile-under-wrong-kind",
        ),
        pytest.param({"default_locale": "German"}, "default_locale", id="bad-locale"),
    ],
)
def test_other_policy_fields_name_themselves(kw: dict[str, Any], needle: str) -> None:
    # Given one invalid policy field / When validated / Then the error names it
    with pytest.raises(ValidationError) as caught:
        _validate(Policy, _policy_data(**kw))
    assert needle in _names(caught.value)


def test_policy_is_frozen() -> None:
    # Given a policy / When a field is assigned / Then pydantic refuses
    p = policy()
    with pytest.raises(ValidationError):
        p.name = "changed"  # type: ignore[misc]


def test_builder_policy_is_the_gotransverse_table() -> None:
    # Given the builders' default policy / Then it carries the six Gotransverse levels
    assert [lv.days for lv in policy().levels] == [10, 30, 40, 45, 60, 90]
    assert [lv.days for lv in gotransverse_levels()] == [10, 30, 40, 45, 60, 90]


# --------------------------------------------------------------------- Level & friends


@pytest.mark.parametrize(
    ("days", "pre_due"),
    [
        pytest.param(-10, True, id="ten-days-before"),
        pytest.param(-1, True, id="day-before"),
        pytest.param(0, True, id="on-the-due-date"),
        pytest.param(1, False, id="first-overdue-day"),
        pytest.param(30, False, id="thirty-days"),
    ],
)
def test_levels_at_zero_or_fewer_days_are_pre_due_reminders(days: int, pre_due: bool) -> None:
    # Given a level at `days` (decisions.md: days <= 0 are reminders before or on the due date)
    # When asked whether it is pre-due / Then days <= 0 says yes
    assert level("l", days).is_pre_due is pre_due


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        pytest.param({"max_messages": 0}, "max_messages", id="zero-messages"),
        pytest.param({"window_days": 0}, "window_days", id="zero-window"),
        pytest.param({"channel": "webhook"}, "channel", id="webhook-not-a-contact"),
    ],
)
def test_contact_cap_validation(kw: dict[str, Any], needle: str) -> None:
    # Given one invalid contact cap setting / When validated / Then the error names it
    data: dict[str, Any] = {"channel": "email", "max_messages": 3, "window_days": 7}
    data.update(kw)
    with pytest.raises(ValidationError) as caught:
        ContactCap.model_validate(data)
    assert needle in _names(caught.value)


def test_suspension_profile_default_days_within_max() -> None:
    # Given default_days above max_days / When validated / Then it names both
    with pytest.raises(ValidationError, match="default_days must not exceed max_days"):
        SuspensionProfile(kind=SuspensionKind.DISPUTE, default_days=40, max_days=30)


@pytest.mark.parametrize(
    ("amounts", "valid"),
    [
        pytest.param({"EUR": Decimal("100.00")}, True, id="EUR-ok"),
        pytest.param({"JPY": Decimal("100")}, True, id="JPY-ok"),
        pytest.param({"JPY": Decimal("100.5")}, False, id="JPY-fraction"),
        pytest.param({"KWD": Decimal("1.0001")}, False, id="KWD-four-decimals"),
    ],
)
def test_level_min_amount_fits_its_currency(amounts: dict[str, Decimal], valid: bool) -> None:
    # Given a per-currency minimum amount on a level
    if valid:
        assert Level(name="l", days=10, min_amount=amounts).min_amount == amounts
        return
    # Then amounts finer than the currency are rejected on min_amount
    with pytest.raises(ValidationError) as caught:
        Level(name="l", days=10, min_amount=amounts)
    assert "min_amount" in _names(caught.value)


# ---------------------------------------------------------------------------- Invoice


@pytest.mark.parametrize(
    ("currency", "amount", "open_amount"),
    [
        pytest.param("JPY", "1500.5", "1500.5", id="JPY-half-yen"),
        pytest.param("JPY", "1500", "0.5", id="JPY-open-half-yen"),
        pytest.param("EUR", "10.005", "10.005", id="EUR-three-decimals"),
        pytest.param("EUR", "10.00", "9.999", id="EUR-open-three-decimals"),
        pytest.param("KWD", "1.0005", "1.0005", id="KWD-four-decimals"),
    ],
)
def test_invoice_amounts_finer_than_the_currency_are_rejected(
    currency: str, amount: str, open_amount: str
) -> None:
    # Given an invoice amount (or open amount) with more decimals than its currency allows
    # When the invoice is built
    # Then it is rejected with a ValidationError saying the currency's decimals
    with pytest.raises(ValidationError, match=f"{currency} has"):
        invoice(amount=amount, open_amount=Decimal(open_amount), currency=currency)


@pytest.mark.parametrize(
    ("field", "amount", "open_amount"),
    [
        pytest.param("amount", "10.005", "10.00", id="amount"),
        pytest.param("open_amount", "10.00", "9.999", id="open_amount"),
    ],
)
def test_invoice_amount_error_names_the_field(field: str, amount: str, open_amount: str) -> None:
    # Given exactly one of amount / open_amount finer than EUR cents
    # When the invoice is built
    with pytest.raises(ValidationError) as caught:
        invoice(amount=amount, open_amount=Decimal(open_amount))
    # Then (model.py: "an invalid value raises a ValidationError whose loc names the field")
    # the error says which of the two fields is wrong
    assert re.search(rf"\b{field}\b", _names(caught.value)), _names(caught.value)


def test_invoice_amount_too_large_for_decimal_context_is_a_validation_error() -> None:
    # Given an absurdly large amount (more digits than the decimal context holds)
    # When the invoice is built
    # Then it fails (if at all) with a ValidationError, not a raw decimal exception
    try:
        invoice(amount=Decimal("1E+30"))
    except Exception as exc:
        assert isinstance(exc, ValidationError), type(exc)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        pytest.param({"open_amount": Decimal("100.01")}, "open_amount", id="open-above-amount"),
        pytest.param(
            {"issue_date": date(2026, 1, 3), "due": date(2026, 1, 2)},
            "due_date",
            id="due-before-issue",
        ),
        pytest.param({"amount": "-1.00"}, "amount", id="negative-amount"),
        pytest.param({"currency": "XXX"}, "currency", id="unknown-currency"),
        pytest.param({"invoice_id": "inv#1"}, "invoice_id", id="hash-in-id"),
        pytest.param({"status": "lost"}, "status", id="unknown-status"),
    ],
)
def test_other_invoice_errors(kw: dict[str, Any], needle: str) -> None:
    # Given one inconsistent invoice field / When built / Then the error names it
    with pytest.raises(ValidationError) as caught:
        invoice(**kw)
    assert needle in _names(caught.value)


def test_invoice_is_strict_about_types() -> None:
    # Given an amount passed as float (strict models refuse lossy conversions)
    with pytest.raises(ValidationError) as caught:
        Invoice(
            invoice_id="inv-1",
            account_id="acc-1",
            currency="EUR",
            amount=100.0,  # type: ignore[arg-type]
            open_amount=Decimal("100.00"),
            issue_date=date(2026, 1, 1),
            due_date=date(2026, 1, 2),
        )
    assert [err["loc"] for err in caught.value.errors()] == [("amount",)]


# --------------------------------------------------------------------------- Calendar


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        pytest.param({"business_days": frozenset()}, "business_days", id="no-business-day"),
        pytest.param({"business_days": frozenset({0, 1})}, "business_days", id="weekday-0"),
        pytest.param({"business_days": frozenset({1, 8})}, "business_days", id="weekday-8"),
        pytest.param({"send_from": time(20), "send_until": time(8)}, "send_from", id="reversed"),
        pytest.param({"send_from": time(9), "send_until": time(9)}, "send_from", id="empty-window"),
        pytest.param(
            {"send_from": time(8, tzinfo=UTC), "send_until": time(20, tzinfo=UTC)},
            "local times",
            id="zoned-times",
        ),
        pytest.param({"calendar_id": "cal#1"}, "calendar_id", id="hash-in-id"),
        pytest.param({"exclusion_dates": frozenset({"2026-12-25"})}, "exclusion_dates", id="str"),
    ],
)
def test_calendar_validation(kw: dict[str, Any], needle: str) -> None:
    # Given one invalid calendar setting / When built / Then the error names it
    with pytest.raises(ValidationError) as caught:
        calendar(**kw)
    assert needle in _names(caught.value)


def test_calendar_defaults() -> None:
    # Given a calendar with defaults / Then Monday to Friday, 08:00 to 20:00, no exclusions
    cal = calendar()
    assert cal.business_days == frozenset({1, 2, 3, 4, 5})
    assert (cal.send_from, cal.send_until) == (time(8), time(20))
    assert cal.exclusion_dates == frozenset()


# ---------------------------------------------------------------- Account, plan, suspension


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        pytest.param({"timezone": "Mars/Olympus_Mons"}, "timezone", id="unknown-zone"),
        pytest.param({"timezone": "../etc/passwd"}, "timezone", id="path-as-zone"),
        pytest.param({"currency": "EURO"}, "currency", id="bad-currency"),
        pytest.param({"phone": "0151 123"}, "phone", id="phone-not-e164"),
        pytest.param({"locale": "deu-DE"}, "locale", id="bad-locale"),
        pytest.param({"tags": frozenset({"a b"})}, "tags", id="tag-with-space"),
    ],
)
def test_account_validation(kw: dict[str, Any], needle: str) -> None:
    # Given one invalid account field / When built / Then the error names it
    with pytest.raises(ValidationError) as caught:
        account(**kw)
    assert needle in _names(caught.value)


@pytest.mark.parametrize(
    "zone",
    ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC"],
)
def test_account_accepts_iana_zones(zone: str) -> None:
    # Given an IANA zone name / When an account is built / Then it is accepted as is
    assert account(timezone=zone).timezone == zone


T = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _plan(**kw: Any) -> PaymentPlan:
    data: dict[str, Any] = {
        "plan_id": "plan-1",
        "account_id": "acc-1",
        "currency": "EUR",
        "invoice_ids": ("inv-1",),
        "installments": (
            {"due_date": date(2026, 3, 10), "amount": Decimal("50.00")},
            {"due_date": date(2026, 4, 10), "amount": Decimal("50.00")},
        ),
        "created_at": T,
    }
    data.update(kw)
    return _validate(PaymentPlan, data)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        pytest.param({"installments": ()}, "installments", id="no-installment"),
        pytest.param({"invoice_ids": ()}, "invoice_ids", id="no-invoice"),
        pytest.param(
            {
                "installments": (
                    {"due_date": date(2026, 4, 10), "amount": Decimal("50.00")},
                    {"due_date": date(2026, 3, 10), "amount": Decimal("50.00")},
                )
            },
            "installments.1",
            id="installments-out-of-order",
        ),
        pytest.param(
            {"installments": ({"due_date": date(2026, 4, 10), "amount": Decimal("0.001")},)},
            "EUR has 2 decimal places",
            id="installment-finer-than-EUR",
        ),
        pytest.param({"created_at": datetime(2026, 3, 1, 9)}, "created_at", id="naive-datetime"),
    ],
)
def test_payment_plan_validation(kw: dict[str, Any], needle: str) -> None:
    # Given one invalid payment plan setting / When validated / Then the error names it
    with pytest.raises(ValidationError) as caught:
        _plan(**kw)
    assert needle in _names(caught.value)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        pytest.param({"ends_at": T}, "ends_at", id="ends-at-start"),
        pytest.param({"ends_at": T - timedelta(days=1)}, "ends_at", id="ends-before-start"),
        pytest.param({"promised_amount": None}, "promised_amount", id="promise-without-amount"),
        pytest.param({"promised_date": None}, "promised_date", id="promise-without-date"),
        pytest.param({"currency": None}, "currency", id="promise-without-currency"),
    ],
)
def test_suspension_validation(kw: dict[str, Any], needle: str) -> None:
    # Given a promise to pay with one inconsistent field / When built / Then the error names it
    data: dict[str, Any] = {
        "suspension_id": "s-1",
        "account_id": "acc-1",
        "case_id": "C-inv-1",
        "kind": SuspensionKind.PROMISE_TO_PAY,
        "starts_at": T,
        "ends_at": T + timedelta(days=14),
        "currency": "EUR",
        "promised_amount": Decimal("100.00"),
        "promised_date": date(2026, 3, 10),
    }
    data.update(kw)
    with pytest.raises(ValidationError) as caught:
        Suspension(**data)
    assert needle in _names(caught.value)


def test_aware_datetimes_in_any_zone_are_accepted() -> None:
    # Given a suspension given in a non-UTC offset / Then it is accepted as the same instant
    plus2 = timezone(timedelta(hours=2))
    s = Suspension(
        suspension_id="s-1",
        account_id="acc-1",
        case_id="C-inv-1",
        kind=SuspensionKind.DISPUTE,
        starts_at=T.astimezone(plus2),
        ends_at=T + timedelta(days=1),
    )
    assert s.starts_at == T


def test_builders_make_valid_objects() -> None:
    # Given the shared builders / Then they produce valid, consistent objects
    inv = invoice()
    assert inv.open_amount == inv.amount == Decimal("100.00")
    assert email().template == "reminder"
    assert account().timezone == "Europe/Berlin"
    assert isinstance(calendar(), Calendar)
