"""sync's internal API for the Clio connection: its status (Settings' health card), the
authorize URL of a region's host, the OAuth code exchange, and disconnecting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import func, select

from services.sync.clio import ClioAuthError, ClioError
from services.sync.models import ClioConnection, Quarantined
from services.sync.syncer import Syncer
from shared.api.sync import (
    ClioStatus,
    ConnectRequest,
    DisconnectOutcome,
    Region,
)
from shared.runtime import Service

log = logging.getLogger(__name__)

# More ClioStatus fields for a firm (rate_limit, webhooks, progress), from the parts that
# keep them; each answers a dict of ClioStatus fields.
StatusExtra = Callable[[str], Awaitable[dict[str, Any]]]


# What else happens for a firm when it connects (after the tokens are saved) and before it
# disconnects (while its token still works): its webhooks registered, then deleted at Clio.
FirmHook = Callable[[str], Awaitable[None]]


def router(
    service: Service,
    syncer: Syncer,
    extras: Sequence[StatusExtra] = (),
    *,
    on_connected: Sequence[FirmHook] = (),
    before_disconnect: Sequence[FirmHook] = (),
) -> APIRouter:
    r = APIRouter(prefix="/internal", dependencies=[Depends(service.require_internal())])
    connections = syncer.connections

    async def status(firm_id: str) -> ClioStatus:
        async with service.sessionmaker() as s:
            conn = await s.get(ClioConnection, firm_id)
            count = await s.scalar(
                select(func.count()).select_from(Quarantined).where(Quarantined.firm_id == firm_id)
            )
        fields: dict[str, Any] = {"connected": False, "quarantined": count or 0}
        if conn is not None:
            fields |= {
                "connected": True,
                "region": conn.region if conn.region in ("us", "ca", "eu", "au") else None,
                "app_url": conn.base_url,
                "account_name": conn.account_name,
                "connected_at": conn.connected_at,
                "last_synced_at": conn.last_synced_at,
                "last_success_at": conn.last_success_at,
                "last_error": conn.last_error,
                "last_error_at": conn.last_error_at,
            }
        for extra in extras:
            try:
                fields |= await extra(firm_id)
            except Exception:  # a part that cannot answer leaves its fields unset
                log.exception("sync: a status part failed for firm %s", firm_id)
        return ClioStatus(**fields)

    @r.get("/firms/{firm_id}/clio")
    async def get_status(firm_id: str) -> ClioStatus:
        return await status(firm_id)

    @r.get("/clio/authorize-url")
    async def get_authorize_url(
        redirect_uri: Annotated[str, Query(max_length=2000)],
        state: Annotated[str, Query(max_length=200)],
        region: Region = "us",
    ) -> dict[str, str]:
        return {"url": connections.authorize_url(region, redirect_uri, state)}

    @r.post("/firms/{firm_id}/clio/connect")
    async def connect(firm_id: str, body: ConnectRequest) -> ClioStatus:
        if len(body.code) > 2000 or len(body.redirect_uri) > 2000:
            raise HTTPException(status_code=400, detail="The authorization code is too long.")
        try:
            await connections.connect(firm_id, body.code, body.redirect_uri, body.region)
        except ClioAuthError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        except ClioError as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from exc
        except Exception as exc:  # Clio unreachable or answering nonsense
            log.warning("sync: connecting firm %s failed: %r", firm_id, exc)
            raise HTTPException(
                status_code=502, detail=f"Clio could not be reached ({type(exc).__name__})."
            ) from exc
        # The first sync can take a while on a large firm: let it run behind the response.
        syncer.start(firm_id)
        for hook in on_connected:
            background(hook(firm_id), f"after connecting firm {firm_id}")
        return await status(firm_id)

    @r.post("/firms/{firm_id}/clio/disconnect")
    async def disconnect(firm_id: str) -> DisconnectOutcome:
        for hook in before_disconnect:
            try:
                await hook(firm_id)
            except Exception:  # best effort: the tokens are forgotten whatever happens
                log.exception("sync: before disconnecting firm %s", firm_id)
        done = await connections.disconnect(firm_id)
        return DisconnectOutcome(
            was_connected=done.was_connected, revoked=done.revoked, problem=done.problem
        )

    return r


_running: set[asyncio.Task[None]] = set()


def background(work: Awaitable[None], what: str) -> None:
    """Run `work` behind the response, keeping a reference until it ends; log a failure."""

    async def run() -> None:
        try:
            await work
        except Exception:
            log.exception("sync: %s failed", what)

    task = asyncio.create_task(run())
    _running.add(task)
    task.add_done_callback(_running.discard)
