"""The Invoices tab: the synced bills, filters, paging, Sync, the firm-side PDF."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway.clients.base import ServiceUnavailable
from services.gateway.clients.timeline import TimelineClient, timeline_client
from services.gateway.deps import (
    CurrentUser,
    EnvelopeClientDep,
    FormUser,
    RemindersClientDep,
    ServiceDep,
    SyncClientDep,
    firm_name,
    show,
)
from services.gateway.web_reminders import invoice_page_context
from services.gateway.web_timeline import email_label, firm_zone, when

PER_PAGE_CHOICES = (10, 25, 50, 100)

router = APIRouter()


@router.get("/invoices", response_class=HTMLResponse)
async def invoices(
    request: Request,
    user: CurrentUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
    sync: SyncClientDep,
    reminders: RemindersClientDep,
    timelines: Annotated[TimelineClient, Depends(timeline_client)],
    q: str = "",
    state: str = "unpaid",
    kind: str = "all",
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: int = 25,
) -> HTMLResponse:
    per_page = per_page if per_page in PER_PAGE_CHOICES else 25
    params: dict[str, Any] = {
        "q": q,
        "state": state,
        "kind": kind,
        "page": page,
        "per_page": per_page,
    }
    data = await envelope.invoices(user.firm_id, **params)
    clio = await sync.clio(user.firm_id)
    # Delivery tracking: each bill's latest email state and the firm's bounced addresses.
    # Both are extras: the list shows without them when envelope cannot answer them.
    states, suppressed, zone = await asyncio.gather(
        timelines.email_states(user.firm_id, [i.invoice_id for i in data.items]),
        timelines.suppressions(user.firm_id),
        firm_zone(service, user.firm_id),
        return_exceptions=True,
    )
    for result in (states, suppressed, zone):
        if isinstance(result, BaseException) and not isinstance(
            result, (httpx.HTTPError, ServiceUnavailable)
        ):
            raise result
    states = {} if isinstance(states, BaseException) else states
    suppressed = [] if isinstance(suppressed, BaseException) else suppressed

    def email_of(inv: Any) -> dict[str, str | None]:
        st = states.get(inv.invoice_id)
        label, at, css = email_label(
            st.event if st else None, st.at if st else None, inv.email_status, zone
        )
        envelope_id = st.envelope_id if st else None
        href = f"/envelopes/{envelope_id}/timeline" if envelope_id else None
        return {"label": label, "at": at, "css": css, "href": href}

    pages = max(1, -(-data.total // per_page))

    def link(**changes: Any) -> str:
        return "/invoices?" + urlencode({**params, **changes})

    return show(
        request,
        "invoices.html",
        user,
        data=data,
        params=params,
        pages=pages,
        link=link,
        per_page_choices=PER_PAGE_CHOICES,
        clio=clio,
        last_sync=when(clio.last_synced_at, zone if not isinstance(zone, BaseException) else UTC),
        firm_name=await firm_name(service, user.firm_id),
        # The firm's local date (Overdue) and the per-bill reminder switches.
        **await invoice_page_context(service, reminders, user.firm_id),
        email_of=email_of,
        suppressed=suppressed,
    )


@router.post("/invoices/sync")
async def sync_now(user: FormUser, sync: SyncClientDep) -> RedirectResponse:
    """Start a sync and show its live progress (web_sync.py); not connected: Settings."""
    if not await sync.sync_now(user.firm_id):
        return RedirectResponse("/settings", status_code=303)
    return RedirectResponse("/sync", status_code=303)


@router.get("/invoices/{invoice_id}/pdf")
async def invoice_pdf(invoice_id: str, user: CurrentUser, envelope: EnvelopeClientDep) -> Response:
    pdf = await envelope.invoice_pdf(user.firm_id, invoice_id)
    if pdf is None:
        raise HTTPException(status_code=404, detail="No such invoice.")
    return Response(
        pdf.content,
        media_type="application/pdf",
        headers={"Content-Disposition": pdf.disposition},
    )
