"""envelope's reminders API as the gateway uses it (the contract: shared/api/reminders.py):
the Reminders page's upcoming list and history, the per-client and per-bill switches, Send now,
and the development-only "run as of" pass."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from services.gateway.clients.base import InternalClient, ServiceUnavailable, read
from shared.api.reminders import (
    PausedOut,
    ReminderSent,
    RemindersOut,
    ReminderSwitch,
    RunOut,
    RunRequest,
)

# What envelope may answer that a page handles: another firm's (or an unknown) id, a state
# that does not allow it, a field it refuses, production refusing a dev-only pass.
REFUSALS = (403, 404, 409, 422)


class RemindersClient(InternalClient):
    def __init__(self, http: httpx.AsyncClient | None) -> None:
        super().__init__(http)  # type: ignore[arg-type]

    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.http is None:
            raise ServiceUnavailable("envelope's reminders are not reachable")
        return await super().send(method, url, **kwargs)

    def _base(self, firm_id: str) -> str:
        return f"/internal/firms/{firm_id}/reminders"

    async def overview(self, firm_id: str, days: int = 60) -> RemindersOut:
        """The upcoming reminders for the next `days`, the history, and what is paused."""
        resp = await self.call("GET", self._base(firm_id), params={"days": days})
        return read(RemindersOut, resp)

    async def paused(self, firm_id: str) -> PausedOut:
        """The clients and bills whose reminders are off."""
        resp = await self.call("GET", f"{self._base(firm_id)}/paused")
        return read(PausedOut, resp)

    async def switch_client(self, firm_id: str, client_id: str, enabled: bool) -> None:
        """Reminders on or off for a client; Refused (404) when the firm has no such client."""
        await self.call(
            "POST",
            f"{self._base(firm_id)}/clients/{client_id}",
            json=ReminderSwitch(enabled=enabled).model_dump(),
            refuse=REFUSALS,
        )

    async def switch_invoice(self, firm_id: str, invoice_id: str, enabled: bool) -> None:
        """Reminders on or off for one bill; Refused (404) when the firm has no such bill."""
        await self.call(
            "POST",
            f"{self._base(firm_id)}/invoices/{invoice_id}",
            json=ReminderSwitch(enabled=enabled).model_dump(),
            refuse=REFUSALS,
        )

    async def send_now(self, firm_id: str, client_id: str) -> ReminderSent:
        """The client's reminder now; `queued` False with the reason when nothing may go."""
        resp = await self.call(
            "POST", f"{self._base(firm_id)}/clients/{client_id}/send-now", refuse=REFUSALS
        )
        return read(ReminderSent, resp)

    async def run(self, firm_id: str, as_of: datetime) -> RunOut:
        """One scheduler pass as of `as_of` (aware); Refused (403) in production."""
        resp = await self.call(
            "POST",
            f"{self._base(firm_id)}/run",
            json=RunRequest(as_of=as_of).model_dump(mode="json"),
            refuse=REFUSALS,
        )
        return read(RunOut, resp)
