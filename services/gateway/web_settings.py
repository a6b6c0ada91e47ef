"""Settings: the firm's profile and time zone, Settings > Invoices, Settings > Reminders, and the
Clio connection's card (its routes: web_sync.py)."""

from __future__ import annotations

import zoneinfo
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway import auth
from services.gateway.clients.base import Refused, ServiceUnavailable
from services.gateway.clients.envelope import EnvelopeClient
from services.gateway.deps import (
    DELIVERIES,
    EMAIL_RE,
    CurrentUser,
    EnvelopeClientDep,
    FormUser,
    ServiceDep,
    SessionDep,
    SyncClientDep,
    show,
)
from services.gateway.firms import publish_firm
from services.gateway.models import Firm
from services.gateway.web_templates import set_default_template
from services.gateway.web_timeline import firm_zone, when
from shared.api.envelope import BuiltinOut
from shared.api.sync import REGION_NAMES
from shared.events import Delivery

router = APIRouter()

# The zones most firms here choose, offered first; every other IANA zone follows.
COMMON_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/Puerto_Rico",
    "America/Toronto",
    "America/Vancouver",
    "Europe/London",
    "UTC",
)


@lru_cache(maxsize=1)
def all_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


@lru_cache(maxsize=1)
def zone_choices() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the common zones, then every other one in order) for the Time zone select."""
    common = tuple(z for z in COMMON_ZONES if z in all_zones())
    return common, tuple(sorted(all_zones() - set(common)))


def time_zone_error(name: str) -> str | None:
    if name not in all_zones():
        return "Choose a time zone from the list."
    return None


def profile_errors(name: str, email: str, delivery: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "The firm needs a name: clients see it on every email."
    if email and not EMAIL_RE.match(email):
        errors["email"] = "Not an email address."
    if delivery not in DELIVERIES:
        errors["default_delivery"] = "Choose a delivery."
    return errors


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(
    request: Request,
    user: CurrentUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
    sync: SyncClientDep,
) -> HTMLResponse:
    async with service.sessionmaker() as s:
        firm = await s.get(Firm, user.firm_id)
    return show(
        request,
        "settings.html",
        user,
        firm=firm,
        **await clio_card(service, sync, user.firm_id),
        templates=await envelope.templates(user.firm_id),
        zones=zone_choices(),
        errors={},
    )


async def clio_card(service: Any, sync: Any, firm_id: str) -> dict[str, Any]:
    """The Clio card's context: the connection's health, the regions, times in the firm's zone."""
    zone = await firm_zone(service, firm_id)
    return {
        "clio": await sync.clio(firm_id),
        "regions": REGION_NAMES,
        "at": lambda dt: when(dt, zone),
    }


@router.post("/settings", response_model=None)
async def save_settings(
    request: Request,
    user: FormUser,
    service: ServiceDep,
    s: SessionDep,
    envelope: EnvelopeClientDep,
    sync: SyncClientDep,
) -> Response:
    form = await request.form()
    name = str(form.get("name") or "").strip()
    email = str(form.get("email") or "").strip()
    delivery = str(form.get("default_delivery") or Delivery.link)
    errors = profile_errors(name, email, delivery)
    # An older form without the field keeps the firm's zone.
    time_zone = str(form["time_zone"]).strip() if "time_zone" in form else None
    if time_zone is not None and (problem := time_zone_error(time_zone)):
        errors["time_zone"] = problem
    # Default template: kept by the envelope service with the templates themselves.
    choice = form.get("default_template")
    if choice is not None and not errors:
        if not await set_default_template(envelope, user.firm_id, str(choice)):
            errors["default_template"] = "That template no longer exists. Choose another."
    async with s.begin():
        firm = await s.get(Firm, user.firm_id)
        assert firm is not None
        if errors:
            page: dict[str, Any] = dict(
                firm=firm,
                **await clio_card(service, sync, user.firm_id),
                templates=await envelope.templates(user.firm_id),
                zones=zone_choices(),
                errors=errors,
            )
            return show(request, "settings.html", user, status_code=422, **page)
        firm.name = name
        firm.email = email or None
        firm.phone = str(form.get("phone") or "").strip() or None
        firm.address = str(form.get("address") or "").strip() or None
        firm.website = str(form.get("website") or "").strip() or None
        firm.combine_envelopes = form.get("combine_envelopes") == "on"
        firm.default_delivery = delivery
        if time_zone is not None:
            firm.time_zone = time_zone
        await publish_firm(service, s, firm)
    return RedirectResponse("/settings?notice=settings", status_code=303)


# --- Settings > Reminders --------------------------------------------------------------------

# field: (lowest, highest, how the error names it); ReminderSettings holds the same bounds.
DAY_FIELDS = {
    "first_after_days": (1, 365, "The first reminder"),
    "every_days": (7, 365, "Every"),
    "before_due_days": (1, 60, "Before the due date"),
    "quiet_after_send_days": (0, 60, "Quiet days after a send"),
}
MAX_SUBJECT, MAX_BODY = 300, 20_000


def reminder_form(firm: Firm) -> dict[str, Any]:
    """The form's values as the firm has them saved."""
    r = firm.reminders
    return {
        "enabled": r.enabled,
        "first_after_days": str(r.first_after_days),
        "every_days": str(r.every_days),
        "before_due": r.before_due_days is not None,
        "before_due_days": str(r.before_due_days or 3),
        "quiet_after_send_days": str(r.quiet_after_send_days),
        "business_hours_start": str(r.business_hours_start),
        "business_hours_end": str(r.business_hours_end),
        "subject": r.subject or "",
        "body": r.body or "",
    }


def whole_days(text: str, field: str) -> tuple[int | None, str | None]:
    low, high, label = DAY_FIELDS[field]
    text = text.strip()
    if not text or len(text) > 6 or not text.isascii() or not text.isdigit():
        return None, f"{label}: enter a whole number of days, {low} to {high}."
    value = int(text)
    if not low <= value <= high:
        return None, f"{label} must be between {low} and {high} days."
    return value, None


def hour(text: str, low: int, high: int) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 2:
        return None
    value = int(text)
    return value if low <= value <= high else None


def parse_reminders(form: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(the values as typed, the columns to save, the errors by field)."""
    typed = {
        "enabled": form.get("enabled") == "on",
        "before_due": form.get("before_due") == "on",
        "subject": str(form.get("subject") or ""),
        "body": str(form.get("body") or ""),
    }
    for name in (*DAY_FIELDS, "business_hours_start", "business_hours_end"):
        typed[name] = str(form.get(name) or "")[:50]
    errors: dict[str, str] = {}
    days: dict[str, int | None] = {}
    for name in DAY_FIELDS:
        if name == "before_due_days" and not typed["before_due"]:
            days[name] = None
            continue
        days[name], problem = whole_days(typed[name], name)
        if problem:
            errors[name] = problem
    start = hour(typed["business_hours_start"], 0, 23)
    end = hour(typed["business_hours_end"], 1, 24)
    if start is None:
        errors["business_hours_start"] = "Choose the hour business starts."
    if end is None:
        errors["business_hours_end"] = "Choose the hour business ends."
    elif start is not None and end <= start:
        errors["business_hours_end"] = "Business hours must end after they start."
    subject, body = typed["subject"].strip(), typed["body"].strip()
    if len(subject) > MAX_SUBJECT:
        errors["subject"] = f"The subject is too long: at most {MAX_SUBJECT} characters."
    if "\r" in subject or "\n" in subject:
        errors["subject"] = "The subject must be one line."
    if len(body) > MAX_BODY:
        errors["body"] = f"The message is too long: at most {MAX_BODY:,} characters."
    columns = {
        "reminders_enabled": typed["enabled"],
        "reminder_first_after_days": days.get("first_after_days"),
        "reminder_every_days": days.get("every_days"),
        "reminder_before_due_days": days.get("before_due_days"),
        "reminder_quiet_days": days.get("quiet_after_send_days"),
        "reminder_hours_start": start,
        "reminder_hours_end": end,
        "reminder_subject": subject or None,
        "reminder_body": body or None,
    }
    return typed, columns, errors


async def template_errors(
    envelope: EnvelopeClient, firm_id: str, subject: str, body: str, builtin: BuiltinOut
) -> dict[str, str]:
    """The reminder template checked the way envelope renders sends (unknown autofill fields,
    broken braces); blank parts stand for the built-in reminder's."""
    if not subject.strip() and not body.strip():
        return {}
    try:
        await envelope.preview_template(
            firm_id, subject.strip() or builtin.subject, body.strip() or builtin.body
        )
    except Refused as refused:
        found: dict[str, str] = {}
        detail = refused.detail if isinstance(refused.detail, dict) else {}
        for item in detail.get("errors") or []:
            if isinstance(item, dict) and item.get("field") in ("subject", "body"):
                found.setdefault(item["field"], str(item.get("message") or ""))
        if not found:
            found["subject" if refused.field == "subject" else "body"] = (
                refused.message or "This template cannot be used."
            )
        return found
    except ServiceUnavailable:
        return {"body": "The template could not be checked just now. Try saving again."}
    return {}


async def show_reminder_settings(
    request: Request,
    user: auth.CurrentUser,
    envelope: EnvelopeClient,
    firm: Firm,
    form: dict[str, Any],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    listing = await envelope.templates(user.firm_id)
    return show(
        request,
        "reminder_settings.html",
        user,
        status_code=status_code,
        firm=firm,
        form=form,
        errors=errors,
        autofill_fields=listing.autofill_fields,
        hours=range(0, 25),
    )


@router.get("/settings/reminders", response_class=HTMLResponse)
async def reminder_settings_page(
    request: Request, user: CurrentUser, service: ServiceDep, envelope: EnvelopeClientDep
) -> HTMLResponse:
    async with service.sessionmaker() as s:
        firm = await s.get(Firm, user.firm_id)
    assert firm is not None
    return await show_reminder_settings(request, user, envelope, firm, reminder_form(firm), {})


@router.post("/settings/reminders", response_model=None)
async def save_reminder_settings(
    request: Request,
    user: FormUser,
    service: ServiceDep,
    s: SessionDep,
    envelope: EnvelopeClientDep,
) -> Response:
    typed, columns, errors = parse_reminders(await request.form())
    if not errors:
        builtin = (await envelope.templates(user.firm_id)).builtin
        errors = await template_errors(
            envelope, user.firm_id, typed["subject"], typed["body"], builtin
        )
    async with s.begin():
        firm = await s.get(Firm, user.firm_id)
        assert firm is not None
        if errors:
            return await show_reminder_settings(
                request, user, envelope, firm, typed, errors, status_code=422
            )
        for name, value in columns.items():
            setattr(firm, name, value)
        await publish_firm(service, s, firm)
    return RedirectResponse("/settings/reminders?notice=reminders_saved", status_code=303)
