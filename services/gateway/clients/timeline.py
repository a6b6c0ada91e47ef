"""envelope's delivery-tracking API as the gateway uses it (shapes in shared/api/timeline.py):
an envelope's timeline, the bills' latest email states, the firm's suppressed addresses."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request

from services.gateway.clients.base import InternalClient, Refused, read
from shared.api.timeline import (
    EmailStateOut,
    EmailStatesRequest,
    SuppressionCheck,
    SuppressionOut,
    TimelineOut,
)


class TimelineClient(InternalClient):
    async def timeline(self, firm_id: str, envelope_id: str) -> TimelineOut | None:
        """None when the firm has no such envelope."""
        return await self.found(
            TimelineOut,
            f"/internal/firms/{firm_id}/envelopes/{quote(envelope_id, safe='')}/timeline",
        )

    async def email_states(self, firm_id: str, invoice_ids: list[str]) -> dict[str, EmailStateOut]:
        if not invoice_ids:
            return {}
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/invoices/email-states",
            json=EmailStatesRequest(invoice_ids=invoice_ids).model_dump(),
        )
        return read(dict[str, EmailStateOut], resp)

    async def suppressions(self, firm_id: str) -> list[SuppressionOut]:
        resp = await self.call("GET", f"/internal/firms/{firm_id}/suppressions")
        return read(list[SuppressionOut], resp)

    async def suppressed(self, firm_id: str, addresses: list[str]) -> list[SuppressionOut]:
        """Those of `addresses` the firm has suppressed (a hard bounce)."""
        if not addresses:
            return []
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/suppressions/check",
            json=SuppressionCheck(addresses=addresses[:200]).model_dump(),
        )
        return read(list[SuppressionOut], resp)

    async def clear(self, firm_id: str, address: str) -> bool:
        """False when the firm had no such suppressed address."""
        try:
            await self.call(
                "DELETE",
                f"/internal/firms/{firm_id}/suppressions/{quote(address, safe='')}",
                refuse=(404,),
            )
        except Refused:
            return False
        return True


def timeline_client(request: Request) -> TimelineClient:
    """On envelope's connections (the route dependency; swap it in a test)."""
    return TimelineClient(request.app.state.clients.envelope.http)
