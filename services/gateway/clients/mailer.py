"""The mailer's tracking intake as the gateway reports to it: a pixel fetched, a tracked link
followed, a page served after one. Fire-and-forget: the client's image, redirect or page
never waits on it or fails because of it (a short timeout, every error logged and dropped)."""

from __future__ import annotations

import logging
from datetime import datetime

import httpx
from fastapi import Request

from services.gateway.clients.base import InternalClient
from shared.api.timeline import TrackingHit

log = logging.getLogger(__name__)

# A report waits at most this long for the mailer; it is dropped after that.
REPORT_TIMEOUT = httpx.Timeout(2.0, connect=1.0)
KINDS = ("open", "click", "view")


class MailerClient(InternalClient):
    async def report(
        self,
        kind: str,
        email_id: str,
        n: int,
        at: datetime,
        user_agent: str | None,
        path: str | None = None,
    ) -> bool:
        """Tell the mailer; True when it took it. Never raises."""
        assert kind in KINDS
        hit = TrackingHit(
            email_id=email_id,
            n=n,
            at=at,
            user_agent=(user_agent or "")[:1000] or None,
            path=path,
        )
        try:
            resp = await self.http.post(
                f"/internal/tracking/{kind}",
                content=hit.model_dump_json(),
                headers={"Content-Type": "application/json"},
                timeout=REPORT_TIMEOUT,
            )
        except Exception as exc:  # the client's page must never fail for it
            log.warning("gateway: tracking %s of %s.%s not reported: %r", kind, email_id, n, exc)
            return False
        if resp.status_code != 200:
            log.info(
                "gateway: tracking %s of %s.%s answered %s", kind, email_id, n, resp.status_code
            )
            return False
        return True


def mailer_client(request: Request) -> MailerClient:
    """The route dependency (swap it with app.dependency_overrides in a test)."""
    return request.app.state.mailer  # type: ignore[no-any-return]
