"""The Outstanding Balances tab: what each client owes, and Send client balance."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services.gateway.batches import new_batch
from services.gateway.clients.base import Refused
from services.gateway.deps import (
    CurrentUser,
    EnvelopeClientDep,
    FormUser,
    RemindersClientDep,
    ServiceDep,
    show,
)
from services.gateway.models import BatchKind
from services.gateway.web_reminders import load_firm, paused_sets

router = APIRouter()


@router.get("/balances", response_class=HTMLResponse)
async def balances(
    request: Request,
    user: CurrentUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
    reminders: RemindersClientDep,
) -> HTMLResponse:
    rows = await envelope.balances(user.firm_id)
    # Each client's reminders on or off (None: envelope cannot say now; no switch shown).
    paused = await paused_sets(reminders, user.firm_id)
    firm = await load_firm(service, user.firm_id)
    return show(
        request,
        "balances.html",
        user,
        rows=rows,
        paused_clients=None if paused is None else paused[0],
        reminders_on=firm.reminders_enabled,
    )


@router.post("/balances/{client_id}/send")
async def send_client_balance(
    client_id: str, user: FormUser, service: ServiceDep, envelope: EnvelopeClientDep
) -> RedirectResponse:
    try:
        draft = await envelope.balance_draft(user.firm_id, client_id, user.id)
    except Refused as refused:
        raise HTTPException(status_code=409, detail="This client owes nothing.") from refused
    batch_id = await new_batch(service, user, [draft.id], BatchKind.balance)
    return RedirectResponse(f"/batches/{batch_id}/0", status_code=303)
