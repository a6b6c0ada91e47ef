"""A small Clio Manage API v4 client: OAuth2 tokens, cursor paging, rate limits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

log = logging.getLogger(__name__)


class ClioError(RuntimeError):
    pass


class ClioAuthError(ClioError):
    """The firm must connect Clio again (the refresh token was revoked or is unknown)."""


@dataclass
class Tokens:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None


def authorize_url(base_url: str, client_id: str, redirect_uri: str, state: str) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
        }
    )
    return f"{base_url.rstrip('/')}/oauth/authorize?{query}"


def _tokens(body: dict[str, Any], previous_refresh: str | None = None) -> Tokens:
    expires_in = body.get("expires_in")
    return Tokens(
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token") or previous_refresh,
        expires_at=datetime.now(UTC) + timedelta(seconds=int(expires_in)) if expires_in else None,
    )


class ClioClient:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        tokens: Tokens | None = None,
        on_tokens: Callable[[Tokens], Awaitable[None]] | None = None,
        http: httpx.AsyncClient | None = None,
        max_retries: int = 5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens = tokens
        self._on_tokens = on_tokens
        self._http = http or httpx.AsyncClient(timeout=30)
        self._own_http = http is None
        self.max_retries = max_retries
        self.requests = 0

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def exchange_code(self, code: str, redirect_uri: str) -> Tokens:
        return await self._token_request(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        )

    async def refresh(self) -> Tokens:
        if not self.tokens or not self.tokens.refresh_token:
            raise ClioAuthError("no refresh token: connect Clio again")
        return await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": self.tokens.refresh_token}
        )

    async def _token_request(self, form: dict[str, str]) -> Tokens:
        form = {**form, "client_id": self.client_id, "client_secret": self.client_secret}
        resp = await self._http.post(f"{self.base_url}/oauth/token", data=form)
        if resp.status_code in (400, 401):
            raise ClioAuthError(
                f"Clio refused the authorization ({resp.status_code}): {resp.text[:200]}"
            )
        resp.raise_for_status()
        previous = self.tokens.refresh_token if self.tokens else None
        self.tokens = _tokens(resp.json(), previous)
        if self._on_tokens:
            await self._on_tokens(self.tokens)
        return self.tokens

    async def get(self, path_or_url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        url = (
            path_or_url
            if path_or_url.startswith("http")
            else f"{self.base_url}/api/v4/{path_or_url}"
        )
        if not self.tokens:
            raise ClioAuthError("Clio is not connected")
        if self.tokens.expires_at and self.tokens.expires_at < datetime.now(UTC) + timedelta(
            minutes=1
        ):
            await self.refresh()
        refreshed = False
        for attempt in range(self.max_retries + 1):
            headers = {"Authorization": f"Bearer {self.tokens.access_token}"}
            self.requests += 1
            try:
                resp = await self._http.get(url, params=params, headers=headers)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ClioError(f"Clio unreachable: {exc}") from exc
                await asyncio.sleep(min(2**attempt, 30))
                continue
            if resp.status_code == 401 and not refreshed:
                refreshed = True
                await self.refresh()
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                if attempt == self.max_retries:
                    raise ClioError(f"Clio answered {resp.status_code} after {attempt + 1} tries")
                wait = float(resp.headers.get("Retry-After") or min(2**attempt, 30))
                log.warning("Clio answered %s; waiting %.0fs", resp.status_code, wait)
                await asyncio.sleep(wait)
                continue
            if resp.status_code == 401:
                raise ClioAuthError("Clio refused the access token: connect Clio again")
            if resp.status_code >= 400:
                raise ClioError(f"Clio answered {resp.status_code} for {url}: {resp.text[:300]}")
            return resp.json()
        raise ClioError("unreachable")

    async def pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield each page's `data`, following `meta.paging.next` (a full URL) to the end."""
        body = await self.get(path, {"limit": 200, **params})
        while True:
            yield list(body.get("data") or [])
            nxt = ((body.get("meta") or {}).get("paging") or {}).get("next")
            if not nxt:
                return
            body = await self.get(nxt)
