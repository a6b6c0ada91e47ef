"""The Outstanding Balances tab: what each client owes, and Send client balance."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services.gateway.batches import new_batch
from services.gateway.clients.base import Refused
from services.gateway.deps import CurrentUser, EnvelopeClientDep, FormUser, ServiceDep, show
from services.gateway.models import BatchKind

router = APIRouter()


@router.get("/balances", response_class=HTMLResponse)
async def balances(
    request: Request, user: CurrentUser, envelope: EnvelopeClientDep
) -> HTMLResponse:
    rows = await envelope.balances(user.firm_id)
    return show(request, "balances.html", user, rows=rows)


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
