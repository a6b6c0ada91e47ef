"""HTTP clients for the other services' internal APIs."""

from __future__ import annotations

from typing import Any

import httpx

from services.gateway.settings import GatewaySettings


class ServiceUnavailable(RuntimeError):
    """Another service did not answer; the page says so instead of failing blank."""


class Upstream:
    def __init__(self, settings: GatewaySettings) -> None:
        headers = {"X-Internal-Token": settings.internal_token}
        timeout = httpx.Timeout(30.0, connect=5.0)
        self.sync = httpx.AsyncClient(base_url=settings.sync_url, headers=headers, timeout=timeout)
        self.envelope = httpx.AsyncClient(
            base_url=settings.envelope_url, headers=headers, timeout=timeout
        )
        self.mailer = httpx.AsyncClient(
            base_url=settings.mailer_url, headers=headers, timeout=timeout
        )
        self.payments = httpx.AsyncClient(
            base_url=settings.payments_url, headers=headers, timeout=timeout
        )

    async def aclose(self) -> None:
        for client in (self.sync, self.envelope, self.mailer, self.payments):
            await client.aclose()

    @staticmethod
    async def call(
        client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
    ) -> httpx.Response:
        try:
            return await client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            name = str(client.base_url)
            raise ServiceUnavailable(f"{name} is not answering ({type(exc).__name__})") from exc
