"""envelope's internal API for delivery tracking (shapes and routes in shared/api/timeline.py):
an envelope's timeline, the bills' latest email states, the firm's suppressed addresses.
Everything is scoped to the firm in the path: another firm's envelope or address is a 404."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response

from services.envelope import suppressions, timeline_reads
from services.envelope.models import Suppression
from shared.api.timeline import (
    EmailStateOut,
    EmailStatesRequest,
    SuppressionCheck,
    SuppressionCount,
    SuppressionOut,
    TimelineOut,
)
from shared.runtime import Service


def _out(x: Suppression) -> SuppressionOut:
    return SuppressionOut(
        address=x.address,
        reason=x.reason,
        status=x.status,
        envelope_id=x.envelope_id,
        created_at=x.created_at,
        message=suppressions.message(x),
    )


def router(service: Service) -> APIRouter:
    r = APIRouter(
        prefix="/internal/firms/{firm_id}", dependencies=[Depends(service.require_internal())]
    )

    @r.get("/envelopes/{envelope_id}/timeline")
    async def envelope_timeline(firm_id: str, envelope_id: str) -> TimelineOut:
        async with service.sessionmaker() as s:
            found = await timeline_reads.read(s, firm_id, envelope_id)
        if found is None:
            raise HTTPException(status_code=404, detail="no such envelope")
        return TimelineOut.model_validate(found)

    @r.post("/invoices/email-states")
    async def email_states(firm_id: str, body: EmailStatesRequest) -> dict[str, EmailStateOut]:
        async with service.sessionmaker() as s:
            found = await timeline_reads.email_states(s, firm_id, body.invoice_ids)
        return {k: EmailStateOut.model_validate(v) for k, v in found.items()}

    @r.get("/suppressions")
    async def list_suppressions(firm_id: str) -> list[SuppressionOut]:
        async with service.sessionmaker() as s:
            return [_out(x) for x in await suppressions.of_firm(s, firm_id)]

    @r.get("/suppressions/count")
    async def count_suppressions(firm_id: str) -> SuppressionCount:
        async with service.sessionmaker() as s:
            return SuppressionCount(count=await suppressions.count(s, firm_id))

    @r.post("/suppressions/check")
    async def check_suppressions(firm_id: str, body: SuppressionCheck) -> list[SuppressionOut]:
        async with service.sessionmaker() as s:
            return [_out(x) for x in await suppressions.among(s, firm_id, body.addresses)]

    @r.delete("/suppressions/{address:path}", status_code=204)
    async def clear_suppression(firm_id: str, address: str) -> Response:
        if len(address) > 320:
            raise HTTPException(status_code=404, detail="no such suppressed address")
        async with service.sessionmaker() as s, s.begin():
            cleared = await suppressions.clear(s, firm_id, address)
        if not cleared:
            raise HTTPException(status_code=404, detail="no such suppressed address")
        return Response(status_code=204)

    return r
