"""sync's internal API as the gateway uses it: the Clio connection, Sync now and its progress,
the quarantine and the contact search."""

from __future__ import annotations

from services.gateway.clients.base import InternalClient, Refused, detail_of, read
from shared.api.sync import (
    AuthorizeUrl,
    ClioStatus,
    ConnectRequest,
    ContactMatch,
    DisconnectOutcome,
    QuarantineItem,
    Region,
    SyncProgress,
)


class SyncClient(InternalClient):
    async def clio(self, firm_id: str) -> ClioStatus:
        # Read leniently, as the pages always have: a sync that answers an error shows the
        # firm as not connected rather than failing the Invoices or Settings page.
        resp = await self.send("GET", f"/internal/firms/{firm_id}/clio")
        return read(ClioStatus, resp) if resp.is_success else ClioStatus(connected=False)

    async def quarantine(self, firm_id: str) -> list[QuarantineItem]:
        resp = await self.send("GET", f"/internal/firms/{firm_id}/quarantine")
        return read(list[QuarantineItem], resp) if resp.is_success else []

    async def authorize_url(self, redirect_uri: str, state: str, region: Region = "us") -> str:
        resp = await self.call(
            "GET",
            "/internal/clio/authorize-url",
            params={"redirect_uri": redirect_uri, "state": state, "region": region},
        )
        return read(AuthorizeUrl, resp).url

    async def connect(
        self, firm_id: str, code: str, redirect_uri: str, region: Region = "us"
    ) -> ClioStatus:
        """Refused (any error status) with Clio's or sync's reason."""
        body = ConnectRequest(code=code, redirect_uri=redirect_uri, region=region)
        resp = await self.send(
            "POST", f"/internal/firms/{firm_id}/clio/connect", json=body.model_dump()
        )
        if resp.status_code >= 400:
            raise Refused(resp.status_code, detail_of(resp))
        return read(ClioStatus, resp)

    async def disconnect(self, firm_id: str) -> DisconnectOutcome:
        resp = await self.call("POST", f"/internal/firms/{firm_id}/clio/disconnect")
        return read(DisconnectOutcome, resp)

    async def sync_now(self, firm_id: str) -> bool:
        """Start a sync (sync answers 202 with its progress, or 200 when it ran it through);
        False when Clio is not connected (409). The progress is read from `progress`."""
        resp = await self.send("POST", f"/internal/firms/{firm_id}/sync")
        return resp.status_code != 409

    async def progress(self, firm_id: str) -> SyncProgress | None:
        """The running or last sync; None when sync has none to tell (or cannot answer)."""
        resp = await self.send("GET", f"/internal/firms/{firm_id}/sync/progress")
        if resp.status_code != 200:
            return None
        try:
            return read(SyncProgress, resp)
        except ValueError:
            return None

    async def contacts(self, firm_id: str, q: str, limit: int) -> list[ContactMatch]:
        """Refused (any status but 200): the picker then suggests nothing."""
        resp = await self.send(
            "GET", f"/internal/firms/{firm_id}/contacts", params={"q": q, "limit": limit}
        )
        if resp.status_code != 200:
            raise Refused(resp.status_code, None)
        return read(list[ContactMatch], resp)
