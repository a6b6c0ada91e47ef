"""envelope's internal API for many envelopes at once: Send All progress, batch overviews,
Outstanding Balances."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import select

from services.envelope.balances import balance_draft, firm_balances
from services.envelope.desk import Desk
from services.envelope.models import Envelope, EnvelopeSend
from shared.api.envelope import (
    BalanceDraftRequest,
    BalanceOut,
    EnvelopeSummary,
    SendState,
    SendStatusRequest,
    SummaryRequest,
)
from shared.runtime import Service


def router(service: Service, desk: Desk) -> APIRouter:
    r = APIRouter(prefix="/internal", dependencies=[Depends(service.require_internal())])

    @r.post("/firms/{firm_id}/sends/status")
    async def send_status(firm_id: str, body: SendStatusRequest) -> dict[str, SendState]:
        """Sends not known yet are still on their way here: the caller counts them queued."""
        async with service.sessionmaker() as s:
            rows = await s.scalars(
                select(EnvelopeSend).where(
                    EnvelopeSend.firm_id == firm_id, EnvelopeSend.send_id.in_(body.send_ids)
                )
            )
            return {r.send_id: SendState(status=r.status, error=r.error) for r in rows}

    @r.post("/firms/{firm_id}/envelopes/summary")
    async def summary(firm_id: str, body: SummaryRequest) -> list[EnvelopeSummary]:
        async with service.sessionmaker() as s:
            envs = {
                e.id: e
                for e in await s.scalars(
                    select(Envelope).where(Envelope.firm_id == firm_id, Envelope.id.in_(body.ids))
                )
            }
            sends: dict[str, list[EnvelopeSend]] = {}
            for send in await s.scalars(
                select(EnvelopeSend)
                .where(EnvelopeSend.firm_id == firm_id, EnvelopeSend.envelope_id.in_(body.ids))
                .order_by(EnvelopeSend.requested_at)
            ):
                sends.setdefault(send.envelope_id, []).append(send)
        out = []
        for envelope_id in body.ids:
            e = envs.get(envelope_id)
            if e is None:
                continue
            history = sends.get(e.id, [])
            out.append(
                EnvelopeSummary(
                    id=e.id,
                    client_id=e.client_id,
                    client_name=e.client_name,
                    invoice_ids=json.loads(e.invoice_ids),
                    to=json.loads(e.to),
                    subject=e.subject,
                    body=e.body,
                    status=e.status,
                    last_sent_at=e.last_sent_at,
                    sends=len(history),
                    last_error=history[-1].error if history else None,
                )
            )
        return out

    @r.get("/firms/{firm_id}/balances")
    async def balances(firm_id: str) -> list[BalanceOut]:
        return await firm_balances(desk, firm_id)

    @r.post("/firms/{firm_id}/clients/{client_id}/balance-envelope")
    async def balance_envelope(
        firm_id: str, client_id: str, body: BalanceDraftRequest
    ) -> dict[str, str]:
        env = await balance_draft(desk, firm_id, client_id, body.created_by)
        if env is None:
            raise HTTPException(status_code=409, detail="This client owes nothing.")
        return {"id": env.id}

    return r
