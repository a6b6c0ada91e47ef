"""Clio under Settings and the Sync button: connecting (OAuth2 against the region's host, the
state bound to the firm and the region), disconnecting, the Sync progress page with its small
JSON endpoint, and the Sync issues page (the bills sync held back)."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import delete, select

from services.gateway.clients.base import Refused
from services.gateway.deps import (
    CurrentUser,
    FormUser,
    ServiceDep,
    SessionDep,
    SettingsDep,
    SyncClientDep,
    show,
)
from services.gateway.models import OAuthState
from services.gateway.web_timeline import firm_zone, when
from shared.api.sync import REGION_NAMES, Region, SyncProgress

router = APIRouter()

# How long an authorization started under Settings may take to come back.
STATE_TTL = timedelta(minutes=30)
# "<region>.<random>": the state names its region, so the callback connects the region the
# user chose and a state cannot be replayed for another region.
STATE_RE = re.compile(r"^(us|ca|eu|au)\.[A-Za-z0-9_-]{16,64}$")
MAX_CODE = 2000
NOT_STARTED_HERE = "This Clio authorization was not started here. Connect again from Settings."


def region_error(region: str) -> str | None:
    if region not in REGION_NAMES:
        names = ", ".join(REGION_NAMES.values())
        return f"Choose the region of your Clio account: {names}."
    return None


def callback_url(public_base_url: str) -> str:
    return f"{public_base_url}/clio/callback"


@router.post("/settings/clio/connect")
async def clio_connect(
    request: Request, user: FormUser, s: SessionDep, settings: SettingsDep, sync: SyncClientDep
) -> RedirectResponse:
    form = await request.form()
    # A form without the field (an older page) connects the US host, as before regions.
    region = str(form.get("region") or "us").strip()
    if problem := region_error(region):
        raise HTTPException(status_code=400, detail=problem)
    state = f"{region}.{secrets.token_urlsafe(24)}"
    now = datetime.now(UTC)
    async with s.begin():
        # The firm's abandoned attempts go; others' are not this request's to touch.
        await s.execute(
            delete(OAuthState).where(
                OAuthState.firm_id == user.firm_id, OAuthState.created_at < now - STATE_TTL
            )
        )
        s.add(OAuthState(state=state, firm_id=user.firm_id, user_id=user.id, created_at=now))
    url = await sync.authorize_url(callback_url(settings.public_base_url), state, region)
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
    if not STATE_RE.match(state):
        raise HTTPException(status_code=400, detail=NOT_STARTED_HERE)
    mine = (OAuthState.state == state, OAuthState.firm_id == user.firm_id)
    async with s.begin():
        # Consumed only by the firm that started it (another firm's state is left alone),
        # and only once: of two tabs answering together, one deletes the row and wins.
        created = await s.scalar(select(OAuthState.created_at).where(*mine))
        gone = await s.execute(delete(OAuthState).where(*mine))
        consumed = created is not None and getattr(gone, "rowcount", 0) == 1
    if created is None or not consumed:
        raise HTTPException(status_code=400, detail=NOT_STARTED_HERE)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    if created < datetime.now(UTC) - STATE_TTL:
        raise HTTPException(
            status_code=400, detail="This Clio authorization expired. Connect again from Settings."
        )
    if error or not code:
        reason = (error or "no code")[:100]
        raise HTTPException(
            status_code=400, detail=f"Clio did not authorize the connection ({reason})."
        )
    if len(code) > MAX_CODE:
        raise HTTPException(status_code=400, detail="Clio's answer is too long to be genuine.")
    region = cast(Region, state.split(".", 1)[0])  # STATE_RE: one of the regions
    try:
        await sync.connect(user.firm_id, code, callback_url(settings.public_base_url), region)
    except Refused as refused:
        status = 400 if refused.status in (400, 422) else 502
        raise HTTPException(
            status_code=status, detail=f"Clio connection failed: {refused.message}"
        ) from refused
    return RedirectResponse("/invoices?notice=clio", status_code=303)


@router.post("/settings/clio/disconnect", response_class=HTMLResponse)
async def clio_disconnect(request: Request, user: FormUser, sync: SyncClientDep) -> HTMLResponse:
    outcome = await sync.disconnect(user.firm_id)
    return show(request, "sync_disconnected.html", user, outcome=outcome)


# --- Sync now and its progress ----------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """ "about 3 min" for the time left; "" when unknown."""
    if seconds is None or seconds < 0:
        return ""
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def progress_view(
    p: SyncProgress | None, last_synced: datetime | None, zone: Any
) -> dict[str, Any]:
    """What the progress page and its JSON show."""
    if p is None:
        return {
            "known": False,
            "running": False,
            "fetched": 0,
            "total": None,
            "percent": 100,
            "left": "",
            "finished": when(last_synced, zone),
            "error": None,
        }
    percent = min(100, round(100 * p.fetched / p.total)) if p.total else (0 if p.running else 100)
    return {
        "known": True,
        "running": p.running,
        "fetched": p.fetched,
        "total": p.total,
        "percent": percent,
        "left": duration(p.seconds_left) if p.running else "",
        "finished": when(p.finished_at or last_synced, zone),
        "changed": p.changed,
        "quarantined": p.quarantined,
        "error": p.error,
    }


@router.get("/sync", response_class=HTMLResponse)
async def sync_page(
    request: Request, user: CurrentUser, service: ServiceDep, sync: SyncClientDep
) -> HTMLResponse:
    clio = await sync.clio(user.firm_id)
    p = await sync.progress(user.firm_id)
    view = progress_view(p, clio.last_synced_at, await firm_zone(service, user.firm_id))
    return show(request, "sync_progress.html", user, clio=clio, p=view)


@router.get("/sync/progress.json")
async def sync_progress(
    user: CurrentUser, service: ServiceDep, sync: SyncClientDep
) -> JSONResponse:
    clio = await sync.clio(user.firm_id)
    p = await sync.progress(user.firm_id)
    view = progress_view(p, clio.last_synced_at, await firm_zone(service, user.firm_id))
    return JSONResponse(view, headers={"Cache-Control": "no-store"})


# --- Sync issues ------------------------------------------------------------------------------


@router.get("/sync/issues", response_class=HTMLResponse)
async def sync_issues(
    request: Request, user: CurrentUser, service: ServiceDep, sync: SyncClientDep
) -> HTMLResponse:
    zone = await firm_zone(service, user.firm_id)
    items = await sync.quarantine(user.firm_id)
    return show(
        request,
        "sync_issues.html",
        user,
        clio=await sync.clio(user.firm_id),
        items=items,
        at=lambda dt: when(dt, zone),
        safe_url=safe_url,
    )


def safe_url(url: str | None) -> str | None:
    """A link only to an http(s) page (never javascript: or the like)."""
    if url and (url.startswith("https://") or url.startswith("http://")):
        return url
    return None
