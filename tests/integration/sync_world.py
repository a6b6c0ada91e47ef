"""A sync service wired to an in-process Clio sandbox, with one firm connected: the set-up the
sync integration tests share. The sandbox counts no requests (the rate limit has its own
tests in test_clio_ratelimit.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from sandbox.clio import SandboxState, create_app
from sandbox.clio.settings import SandboxSettings
from services.sync.app import MIGRATIONS
from services.sync.clio import ClioClient, Tokens
from services.sync.models import Base, ClioConnection
from services.sync.settings import SyncSettings
from services.sync.syncer import Syncer
from shared.migrations import upgrade_async
from shared.runtime import Service

BASE_URL = "http://clio.test"


@dataclass
class Connected:
    sandbox: SandboxState
    http: httpx.AsyncClient
    service: Service
    syncer: Syncer

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.service.engine.dispose()


async def connected(database_url: str, var_dir: Path, firm_id: str) -> Connected:
    """Migrate, start a sandbox and a syncer whose Clio clients talk to it, and connect
    `firm_id` with a token minted there."""
    await upgrade_async(MIGRATIONS, database_url)
    sandbox = SandboxState(settings=SandboxSettings(rate_limit=0))
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(sandbox)), base_url=BASE_URL
    )
    settings = SyncSettings(
        database_url=database_url, environment="test", var_dir=var_dir, clio_base_url=BASE_URL
    )
    service = Service(settings, Base.metadata, MIGRATIONS)
    syncer = Syncer(service, settings)

    def client(conn: ClioConnection | None = None) -> ClioClient:
        tokens = Tokens(conn.access_token, conn.refresh_token, None) if conn else None
        return ClioClient(BASE_URL, "sandbox-client", "sandbox-secret", tokens=tokens, http=http)

    syncer.client = client  # type: ignore[method-assign]
    minted = (await http.post("/sandbox/tokens")).json()
    async with service.sessionmaker() as s, s.begin():
        s.add(
            ClioConnection(
                firm_id=firm_id,
                base_url=BASE_URL,
                access_token=minted["access_token"],
                refresh_token=minted.get("refresh_token"),
                connected_at=datetime.now(UTC),
            )
        )
    return Connected(sandbox, http, service, syncer)
