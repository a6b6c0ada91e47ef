"""sync's LEDES 1998B import API as the gateway uses it: upload, read an import back, give a
client the email the format does not carry."""

from __future__ import annotations

import datetime as dt

from services.gateway.clients.base import InternalClient, Refused, read
from shared.api.ledes import ClientEmail, ClientEmailResult, ImportResult, ImportSummary


class LedesClient(InternalClient):
    def _base(self, firm_id: str) -> str:
        return f"/internal/firms/{firm_id}/ledes"

    async def upload(
        self,
        firm_id: str,
        data: bytes,
        filename: str,
        due_days: int,
        due_date: dt.date | None,
    ) -> ImportResult:
        """Refused with 409 (a concurrent import), 413 (too large) or 422 (bad options)."""
        params: dict[str, str | int] = {"filename": filename[:300], "due_days": due_days}
        if due_date is not None:
            params["due_date"] = due_date.isoformat()
        resp = await self.call(
            "POST",
            f"{self._base(firm_id)}/imports",
            params=params,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
            refuse=(409, 413, 422),
        )
        return read(ImportResult, resp)

    async def result(self, firm_id: str, import_id: int) -> ImportResult | None:
        return await self.found(ImportResult, f"{self._base(firm_id)}/imports/{import_id}")

    async def imports(self, firm_id: str) -> list[ImportSummary]:
        resp = await self.send("GET", f"{self._base(firm_id)}/imports")
        return read(list[ImportSummary], resp) if resp.is_success else []

    async def set_client(self, firm_id: str, body: ClientEmail) -> ClientEmailResult:
        """Refused with 404 (no such client), 409 (try again) or 422 (not an email)."""
        resp = await self.call(
            "POST", f"{self._base(firm_id)}/clients", json=body.model_dump(), refuse=(404, 409, 422)
        )
        return read(ClientEmailResult, resp)


__all__ = ["LedesClient", "Refused"]
