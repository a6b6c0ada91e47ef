"""What every internal client shares: one connection pool per service with the internal token
and the timeouts, a service that does not answer as ServiceUnavailable, and the statuses a
caller handles as Refused."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter

from services.gateway.settings import GatewaySettings

T = TypeVar("T")
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_adapters: dict[Any, TypeAdapter[Any]] = {}


class ServiceUnavailable(RuntimeError):
    """Another service did not answer; the page says so instead of failing blank."""


class Refused(Exception):
    """The service answered one of the statuses the caller asked to handle (a 404, a 409, a
    422...), with its `detail`: a message, or {"field", "message", ...}."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail

    @property
    def message(self) -> str:
        if isinstance(self.detail, dict):
            return str(self.detail.get("message") or "")
        return str(self.detail)

    @property
    def field(self) -> str | None:
        return self.detail.get("field") if isinstance(self.detail, dict) else None


@dataclass(frozen=True)
class Pdf:
    content: bytes
    disposition: str


class Upstream:
    """The connections to the other services, one pool each."""

    def __init__(self, settings: GatewaySettings) -> None:
        def client(url: str) -> httpx.AsyncClient:
            headers = {"X-Internal-Token": settings.internal_token}
            return httpx.AsyncClient(base_url=url, headers=headers, timeout=TIMEOUT)

        self.sync = client(settings.sync_url)
        self.envelope = client(settings.envelope_url)
        self.payments = client(settings.payments_url)
        self.mailer = client(settings.mailer_url)

    async def aclose(self) -> None:
        for http in (self.sync, self.envelope, self.payments, self.mailer):
            await http.aclose()

    @staticmethod
    async def call(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request on one of these connections; a service that does not answer is
        ServiceUnavailable."""
        try:
            return await http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            name = str(http.base_url)
            raise ServiceUnavailable(f"{name} is not answering ({type(exc).__name__})") from exc


def read(into: type[T] | Any, resp: httpx.Response) -> T:
    """The response's JSON as the contract's type (a model, or a list or dict of them)."""
    adapter = _adapters.get(into)
    if adapter is None:
        adapter = _adapters[into] = TypeAdapter(into)
    return adapter.validate_json(resp.content)  # type: ignore[no-any-return]


class InternalClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """The raw response; a service that does not answer is ServiceUnavailable."""
        return await Upstream.call(self.http, method, url, **kwargs)

    async def call(
        self, method: str, url: str, *, refuse: Collection[int] = (), **kwargs: Any
    ) -> httpx.Response:
        """A response the caller can read: the statuses in `refuse` raise Refused with the
        service's detail, any other error status raises httpx.HTTPStatusError (a 500 page)."""
        resp = await self.send(method, url, **kwargs)
        if resp.status_code in refuse:
            raise Refused(resp.status_code, detail_of(resp))
        resp.raise_for_status()
        return resp

    async def found(self, into: type[T], url: str) -> T | None:
        """GET a thing by its URL; None when the service answers 404."""
        try:
            resp = await self.call("GET", url, refuse=(404,))
        except Refused:
            return None
        return read(into, resp)

    async def pdf(self, url: str) -> Pdf | None:
        """A PDF the service serves; None when it answers 404."""
        try:
            resp = await self.call("GET", url, refuse=(404,))
        except Refused:
            return None
        return Pdf(resp.content, resp.headers.get("Content-Disposition", "inline"))


def detail_of(resp: httpx.Response) -> Any:
    try:
        return resp.json().get("detail")
    except (ValueError, AttributeError):
        return resp.text
