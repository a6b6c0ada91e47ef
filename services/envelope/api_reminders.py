"""envelope's internal API for automated bill reminders (shared/api/reminders.py): the
Reminders page's upcoming list and history, the per-client and per-bill switches, Send now,
and the development-only "run as of"."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from services.envelope.reminders import Reminders
from shared.api.reminders import (
    PausedOut,
    ReminderSent,
    RemindersOut,
    ReminderSwitch,
    RunOut,
    RunRequest,
)
from shared.runtime import Service

MAX_ID = 100  # longer than any client or bill id: refused, not looked up


def _check_id(value: str, what: str) -> None:
    if not value or len(value) > MAX_ID:
        raise HTTPException(status_code=404, detail=f"no such {what}")


def router(service: Service, reminders: Reminders) -> APIRouter:
    r = APIRouter(
        prefix="/internal/firms/{firm_id}/reminders",
        dependencies=[Depends(service.require_internal())],
    )

    @r.get("")
    async def overview(firm_id: str, days: int = Query(60, ge=1, le=366)) -> RemindersOut:
        return await reminders.overview(firm_id, days)

    @r.get("/paused")
    async def paused(firm_id: str) -> PausedOut:
        return await reminders.paused(firm_id)

    @r.post("/clients/{client_id}", status_code=204)
    async def switch_client(firm_id: str, client_id: str, body: ReminderSwitch) -> Response:
        _check_id(client_id, "client")
        if not await reminders.switch_client(firm_id, client_id, body.enabled):
            raise HTTPException(status_code=404, detail="no such client")
        return Response(status_code=204)

    @r.post("/invoices/{invoice_id}", status_code=204)
    async def switch_invoice(firm_id: str, invoice_id: str, body: ReminderSwitch) -> Response:
        _check_id(invoice_id, "invoice")
        if not await reminders.switch_invoice(firm_id, invoice_id, body.enabled):
            raise HTTPException(status_code=404, detail="no such invoice")
        return Response(status_code=204)

    @r.post("/clients/{client_id}/send-now")
    async def send_now(firm_id: str, client_id: str) -> ReminderSent:
        _check_id(client_id, "client")
        if not await reminders.client_exists(firm_id, client_id):
            raise HTTPException(status_code=404, detail="no such client")
        return await reminders.send_now(firm_id, client_id)

    @r.post("/run")
    async def run(firm_id: str, body: RunRequest) -> RunOut:
        if service.settings.environment == "production":
            raise HTTPException(
                status_code=403, detail="running reminders as of a chosen date is for development"
            )
        if body.as_of.tzinfo is None:
            raise HTTPException(status_code=422, detail="as_of needs a time zone")
        result = await reminders.run_pass(body.as_of, firm_id=firm_id)
        return RunOut(
            as_of=body.as_of,
            queued=result.queued,
            skipped=result.skipped,
            note=await reminders.idle_reason(firm_id, body.as_of),
        )

    return r
