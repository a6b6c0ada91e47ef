"""sync's internal API as the gateway uses it: the Clio connection, Sync now, the quarantine
and the contact search."""

from __future__ import annotations

from services.gateway.clients.base import InternalClient, Refused, read
from shared.api.sync import (
    AuthorizeUrl,
    ClioStatus,
    ConnectRequest,
    ContactMatch,
    QuarantineItem,
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

    async def authorize_url(self, redirect_uri: str, state: str) -> str:
        resp = await self.call(
            "GET",
            "/internal/clio/authorize-url",
            params={"redirect_uri": redirect_uri, "state": state},
        )
        return read(AuthorizeUrl, resp).url

    async def connect(self, firm_id: str, code: str, redirect_uri: str) -> ClioStatus:
        """Refused (any error status) with Clio's or sync's reason."""
        body = ConnectRequest(code=code, redirect_uri=redirect_uri)
        resp = await self.send(
            "POST", f"/internal/firms/{firm_id}/clio/connect", json=body.model_dump()
        )
        if resp.status_code >= 400:
            raise Refused(resp.status_code, resp.json().get("detail"))
        return read(ClioStatus, resp)

    async def sync_now(self, firm_id: str) -> bool:
        """False when Clio is not connected (409). The outcome is not read: the sync's
        result shows on the Invoices page."""
        resp = await self.send("POST", f"/internal/firms/{firm_id}/sync")
        return resp.status_code != 409

    async def contacts(self, firm_id: str, q: str, limit: int) -> list[ContactMatch]:
        """Refused (any status but 200): the picker then suggests nothing."""
        resp = await self.send(
            "GET", f"/internal/firms/{firm_id}/contacts", params={"q": q, "limit": limit}
        )
        if resp.status_code != 200:
            raise Refused(resp.status_code, None)
        return read(list[ContactMatch], resp)
