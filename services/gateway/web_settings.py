"""Settings: the firm's profile, Settings > Invoices, and the Clio connection."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway.clients.base import Refused
from services.gateway.deps import (
    DELIVERIES,
    EMAIL_RE,
    CurrentUser,
    EnvelopeClientDep,
    FormUser,
    ServiceDep,
    SessionDep,
    SettingsDep,
    SyncClientDep,
    show,
)
from services.gateway.firms import publish_firm
from services.gateway.models import Firm, OAuthState
from services.gateway.web_templates import set_default_template
from shared.events import Delivery

router = APIRouter()


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
        clio=await sync.clio(user.firm_id),
        quarantine=await sync.quarantine(user.firm_id),
        templates=await envelope.templates(user.firm_id),
        errors={},
    )


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
                clio=await sync.clio(user.firm_id),
                quarantine=[],
                templates=await envelope.templates(user.firm_id),
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
        await publish_firm(service, s, firm)
    return RedirectResponse("/settings?notice=settings", status_code=303)


@router.post("/settings/clio/connect")
async def clio_connect(
    user: FormUser, s: SessionDep, settings: SettingsDep, sync: SyncClientDep
) -> RedirectResponse:
    state = secrets.token_urlsafe(24)
    async with s.begin():
        s.add(
            OAuthState(
                state=state, firm_id=user.firm_id, user_id=user.id, created_at=datetime.now(UTC)
            )
        )
    url = await sync.authorize_url(f"{settings.public_base_url}/clio/callback", state)
    return RedirectResponse(url, status_code=303)


@router.get("/clio/callback", response_model=None)
async def clio_callback(
    user: CurrentUser,
    s: SessionDep,
    settings: SettingsDep,
    sync: SyncClientDep,
    code: str = "",
    state: str = "",
    error: str = "",
) -> Response:
    async with s.begin():
        row = await s.get(OAuthState, state) if state else None
        if row is not None:
            await s.delete(row)
    if row is None or row.firm_id != user.firm_id:
        raise HTTPException(
            status_code=400,
            detail="This Clio authorization was not started here. Connect again from Settings.",
        )
    if error or not code:
        raise HTTPException(
            status_code=400,
            detail=f"Clio did not authorize the connection ({error or 'no code'}).",
        )
    try:
        await sync.connect(user.firm_id, code, f"{settings.public_base_url}/clio/callback")
    except Refused as refused:
        raise HTTPException(
            status_code=502, detail=f"Clio connection failed: {refused.detail}"
        ) from refused
    return RedirectResponse("/invoices?notice=clio", status_code=303)
