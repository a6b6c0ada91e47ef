"""sync's internal HTTP API, called by the gateway."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import func, or_, select

from services.sync.models import ClioConnection, Contact, Quarantined
from services.sync.syncer import NOT_CONNECTED, Syncer
from shared.api.sync import (
    ContactMatch,
    QuarantineItem,
    SyncProgress,
)
from shared.runtime import Service


def router(service: Service, syncer: Syncer) -> APIRouter:
    r = APIRouter(prefix="/internal", dependencies=[Depends(service.require_internal())])

    @r.post("/firms/{firm_id}/sync", status_code=202)
    async def sync_now(firm_id: str) -> SyncProgress:
        """Start a sync behind the response (none when one is running for the firm); 409
        when Clio is not connected. Follow it on /sync/progress."""
        async with service.sessionmaker() as s:
            if await s.get(ClioConnection, firm_id) is None:
                raise HTTPException(status_code=409, detail=NOT_CONNECTED)
        syncer.start(firm_id)
        progress = await syncer.progress(firm_id)
        progress.running = True
        return progress

    @r.get("/firms/{firm_id}/sync/progress")
    async def sync_progress(firm_id: str) -> SyncProgress:
        return await syncer.progress(firm_id)

    @r.get("/firms/{firm_id}/contacts")
    async def contacts(
        firm_id: str,
        q: Annotated[str, Query(max_length=200)] = "",
        limit: Annotated[int, Query(ge=1, le=50)] = 8,
    ) -> list[ContactMatch]:
        """The firm's Clio contacts with an email address whose name or email contains `q`
        (any case; `%` and `_` are plain characters), for the review window's contact picker.
        Names that start with `q` come first."""
        needle = q.strip().lower()
        name = func.lower(Contact.name)
        query = select(Contact).where(Contact.firm_id == firm_id, Contact.email.is_not(None))
        if needle:
            query = query.where(
                or_(
                    name.contains(needle, autoescape=True),
                    func.lower(Contact.email).contains(needle, autoescape=True),
                )
            )
        query = query.order_by(name.startswith(needle, autoescape=True).desc(), name)
        async with service.sessionmaker() as s:
            rows = await s.scalars(query.limit(limit))
            return [
                ContactMatch(contact_id=c.contact_id, name=c.name, email=c.email or "")
                for c in rows
            ]

    @r.get("/firms/{firm_id}/quarantine")
    async def quarantine(firm_id: str) -> list[QuarantineItem]:
        async with service.sessionmaker() as s:
            conn = await s.get(ClioConnection, firm_id)
            # A Clio bill's page on the firm's region host (connection's base URL).
            base = conn.base_url.rstrip("/") if conn else None
            rows = await s.scalars(
                select(Quarantined)
                .where(Quarantined.firm_id == firm_id)
                .order_by(Quarantined.received_at.desc())
            )
            return [
                QuarantineItem(
                    source=q.source,
                    source_id=q.source_id,
                    reason=q.reason,
                    received_at=q.received_at,
                    source_url=f"{base}/nc/#/bills/{quote(q.source_id, safe='')}"
                    if base and q.source == "clio"
                    else None,
                )
                for q in rows
            ]

    return r
