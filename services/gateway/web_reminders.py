"""The Reminders page (upcoming reminders and the history of sent ones), the per-client and
per-bill reminder switches of Outstanding Balances and Invoices, Send now, and the
development-only "Run reminders as of" control. The reminders themselves are envelope's
(shared/api/reminders.py); the firm's reminder settings are the gateway's (Settings > Reminders).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway.clients.base import Refused, ServiceUnavailable
from services.gateway.clients.reminders import RemindersClient
from services.gateway.deps import (
    CurrentUser,
    FormUser,
    RemindersClientDep,
    ServiceDep,
    SettingsDep,
    show,
)
from services.gateway.firms import firm_today, zone_of
from services.gateway.models import Firm
from shared.api.reminders import RemindersOut
from shared.runtime import Service

log = logging.getLogger(__name__)
router = APIRouter()

# A client's or a bill's id as envelope holds them (Clio's ids, UUIDs): no path tricks.
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_:.@-]{0,99}")
# Where a switch may send the user back to: this app's own pages only, printable ASCII (the
# page's own links are percent-encoded), no backslash.
BACK_TO = re.compile(r"/(balances|invoices|reminders)(\?[\x21-\x5b\x5d-\x7e]*)?")
UPCOMING_DAYS = 60
AS_OF_FORMAT = "%Y-%m-%dT%H:%M"


def checked_id(value: str, what: str) -> str:
    if not ID.fullmatch(value):
        raise HTTPException(status_code=404, detail=f"No such {what} in your firm.")
    return value


def back_to(form: Any, default: str) -> str:
    target = str(form.get("next") or "")
    return target if BACK_TO.fullmatch(target) and "//" not in target else default


def refused(exc: Refused, what: str) -> HTTPException:
    """envelope's refusal as a page the user can read (never a 500)."""
    if exc.status == 404:
        message = f"No such {what} in your firm. It may have been removed; reload the page."
    elif exc.status == 403:
        message = "Not allowed."
    else:
        message = exc.message or "That cannot be done now."
    return HTTPException(status_code=exc.status, detail=message)


def switch_value(form: Any) -> bool:
    value = str(form.get("enabled") or "")
    if value not in ("on", "off"):
        raise HTTPException(status_code=400, detail="Choose reminders on or off.")
    return value == "on"


async def load_firm(service: Service, firm_id: str) -> Firm:
    async with service.sessionmaker() as s:
        firm = await s.get(Firm, firm_id)
    if firm is None:
        raise HTTPException(status_code=404, detail="No such firm.")
    return firm


async def paused_sets(reminders: RemindersClient, firm_id: str) -> tuple[set[str], set[str]] | None:
    """(paused clients, paused bills) for the switches on Outstanding Balances and Invoices;
    None when envelope cannot say (the pages then show no switch rather than a wrong one)."""
    try:
        out = await reminders.paused(firm_id)
    except (ServiceUnavailable, httpx.HTTPStatusError, ValueError) as exc:
        log.warning("gateway: reminder switches unavailable: %s", exc)
        return None
    return set(out.clients), set(out.invoices)


async def invoice_page_context(
    service: Service, reminders: RemindersClient, firm_id: str
) -> dict[str, Any]:
    """What the Invoices page adds for reminders: the firm's local date (Overdue) and the
    bills whose reminders are off."""
    firm = await load_firm(service, firm_id)
    paused = await paused_sets(reminders, firm_id)
    return {
        "today": firm_today(firm),
        "reminders_on": firm.reminders_enabled,
        "paused_invoices": None if paused is None else paused[1],
    }


# --- the Reminders page ------------------------------------------------------------------------


def run_result(request: Request) -> dict[str, int] | None:
    """The last run's counts, as its redirect carries them (?ran=3-1)."""
    found = re.fullmatch(r"(\d{1,7})-(\d{1,7})", request.query_params.get("ran", ""))
    return {"queued": int(found[1]), "skipped": int(found[2])} if found else None


@router.get("/reminders", response_class=HTMLResponse)
async def reminders_page(
    request: Request,
    user: CurrentUser,
    service: ServiceDep,
    settings: SettingsDep,
    reminders: RemindersClientDep,
) -> HTMLResponse:
    firm = await load_firm(service, user.firm_id)
    return await render_page(request, user, firm, reminders, settings.environment)


async def render_page(
    request: Request,
    user: Any,
    firm: Firm,
    reminders: RemindersClient,
    environment: str,
    status_code: int = 200,
    problem: str | None = None,
) -> HTMLResponse:
    data: RemindersOut | None
    try:
        data = await reminders.overview(user.firm_id, days=UPCOMING_DAYS)
    except (httpx.HTTPStatusError, ValueError) as exc:
        log.error("gateway: reminders overview failed: %s", exc)
        data = None
    zone = zone_of(firm.time_zone)
    now_local = datetime.now(UTC).astimezone(zone)
    return show(
        request,
        "reminders.html",
        user,
        status_code=status_code,
        firm=firm,
        data=data,
        problem=problem,
        ran=run_result(request),
        dev_tools=environment != "production",
        as_of_default=(now_local + timedelta(days=1))
        .replace(minute=0, second=0, microsecond=0)
        .strftime(AS_OF_FORMAT),
        upcoming_days=UPCOMING_DAYS,
        today=firm_today(firm),
        local=lambda at: at.replace(tzinfo=at.tzinfo or UTC).astimezone(zone),
    )


# --- switches and Send now ---------------------------------------------------------------------


@router.post("/reminders/clients/{client_id}")
async def switch_client(
    client_id: str, request: Request, user: FormUser, reminders: RemindersClientDep
) -> RedirectResponse:
    form = await request.form()
    enabled = switch_value(form)
    try:
        await reminders.switch_client(user.firm_id, checked_id(client_id, "client"), enabled)
    except Refused as exc:
        raise refused(exc, "client") from exc
    target = back_to(form, "/reminders")
    return RedirectResponse(target, status_code=303)


@router.post("/reminders/invoices/{invoice_id}")
async def switch_invoice(
    invoice_id: str, request: Request, user: FormUser, reminders: RemindersClientDep
) -> RedirectResponse:
    form = await request.form()
    enabled = switch_value(form)
    try:
        await reminders.switch_invoice(user.firm_id, checked_id(invoice_id, "bill"), enabled)
    except Refused as exc:
        raise refused(exc, "bill") from exc
    return RedirectResponse(back_to(form, "/invoices"), status_code=303)


@router.post("/reminders/clients/{client_id}/send-now", response_model=None)
async def send_now(
    client_id: str,
    request: Request,
    user: FormUser,
    service: ServiceDep,
    settings: SettingsDep,
    reminders: RemindersClientDep,
) -> Response:
    try:
        sent = await reminders.send_now(user.firm_id, checked_id(client_id, "client"))
    except Refused as exc:
        raise refused(exc, "client") from exc
    if not sent.queued:
        firm = await load_firm(service, user.firm_id)
        why = sent.reason or "nothing may be sent to this client now"
        return await render_page(
            request,
            user,
            firm,
            reminders,
            settings.environment,
            status_code=409,
            problem=f"No reminder was sent: {why}.",
        )
    return RedirectResponse("/reminders?notice=reminder_sent", status_code=303)


# --- development only: run the scheduler "as of" a moment -------------------------------------


@router.post("/reminders/run", response_model=None)
async def run_as_of(
    request: Request,
    user: FormUser,
    service: ServiceDep,
    settings: SettingsDep,
    reminders: RemindersClientDep,
) -> Response:
    if settings.environment == "production":
        raise HTTPException(status_code=404, detail="Not found.")
    firm = await load_firm(service, user.firm_id)
    text = str((await request.form()).get("as_of") or "").strip()[:40]
    try:
        local = datetime.strptime(text, AS_OF_FORMAT)
    except ValueError:
        return await render_page(
            request,
            user,
            firm,
            reminders,
            settings.environment,
            status_code=422,
            problem="Run reminders as of: enter a date and time.",
        )
    as_of = local.replace(tzinfo=zone_of(firm.time_zone)).astimezone(UTC)
    try:
        out = await reminders.run(user.firm_id, as_of)
    except Refused as exc:
        raise refused(exc, "run") from exc
    return RedirectResponse(f"/reminders?ran={out.queued}-{out.skipped}", status_code=303)
