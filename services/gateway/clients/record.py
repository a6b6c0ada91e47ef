"""payments' "To record in Clio" API as the gateway uses it (contract: shared/api/record.py),
on payments' connection."""

from __future__ import annotations

from typing import Any

import httpx

from services.gateway.clients.base import InternalClient, ServiceUnavailable, read
from shared.api.record import MarkBody, MarkOut, RecordListOut


class RecordClient(InternalClient):
    def __init__(self, http: httpx.AsyncClient | None) -> None:
        super().__init__(http)  # type: ignore[arg-type]

    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.http is None:
            raise ServiceUnavailable("payments is not reachable")
        return await super().send(method, url, **kwargs)

    async def items(self, firm_id: str) -> RecordListOut:
        """The items still to record, and the latest recorded ones."""
        resp = await self.call("GET", f"/internal/firms/{firm_id}/record")
        return read(RecordListOut, resp)

    async def mark(self, firm_id: str, ids: list[int], by: str) -> int:
        """Mark items recorded; Refused (404) when one is not the firm's, (422) when the
        request is refused as it is. Nothing changes then."""
        body = MarkBody(ids=ids, by=by)
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/record/mark",
            json=body.model_dump(),
            refuse=(404, 422),
        )
        return read(MarkOut, resp).marked
