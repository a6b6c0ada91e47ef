"""A small Clio Manage API v4 client: OAuth2 tokens, cursor paging, rate limits.

Every API request goes through the client's `Budget` (services/sync/ratelimit.py), shared by
all clients of the same firm: it paces on X-RateLimit-*, waits out a 429's Retry-After and
lets interactive requests ahead of bulk ones. The default priority is BULK: a caller that
does not say is polite (it leaves the window's reserve to others and never starves a
webhook's fetch); one-off fetches a person or a webhook waits on pass
`priority=Priority.INTERACTIVE`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx

from services.sync.ratelimit import Budget, Priority, read_retry_after

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
        budget: Budget | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.tokens = tokens
        self._on_tokens = on_tokens
        self._http = http or httpx.AsyncClient(timeout=30)
        self._own_http = http is None
        self.max_retries = max_retries
        # The firm's shared budget; without one the client paces itself alone.
        self.budget = budget if budget is not None else Budget()
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

    async def get(
        self,
        path_or_url: str,
        params: dict[str, Any] | None = None,
        priority: Priority = Priority.BULK,
    ) -> dict[str, Any]:
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
            try:
                resp = await self._send(url, params, headers, priority)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ClioError(f"Clio unreachable: {exc}") from exc
                await asyncio.sleep(min(2**attempt, 30))
                continue
            if resp.status_code == 429:
                # The budget now holds all the firm's requests back until Retry-After.
                wait = self.budget.throttled(resp.headers)
                log.warning("Clio answered 429; the firm's requests wait %.0fs", wait)
                if attempt == self.max_retries:
                    raise ClioError(f"Clio answered 429 after {attempt + 1} tries")
                continue
            if resp.status_code == 401:
                # Its headers count for a token that is no longer good: not this budget's.
                self.budget.release()
                if not refreshed:
                    refreshed = True
                    await self.refresh()
                    continue
                raise ClioAuthError("Clio refused the access token: connect Clio again")
            self.budget.observe(resp.headers)
            if resp.status_code >= 500:
                if attempt == self.max_retries:
                    raise ClioError(f"Clio answered {resp.status_code} after {attempt + 1} tries")
                after = resp.headers.get("Retry-After")
                wait = read_retry_after(resp.headers, time.time()) if after else min(2**attempt, 30)
                log.warning("Clio answered %s; waiting %.0fs", resp.status_code, wait)
                await asyncio.sleep(wait)
                continue
            if resp.status_code >= 400:
                raise ClioError(f"Clio answered {resp.status_code} for {url}: {resp.text[:300]}")
            return resp.json()
        raise ClioError("unreachable")

    async def _send(
        self,
        url: str,
        params: dict[str, Any] | None,
        headers: dict[str, str],
        priority: Priority,
    ) -> httpx.Response:
        """One request through the budget; the caller reports the answer to the budget,
        which is told here when none comes."""
        await self.budget.acquire(priority)
        self.requests += 1
        try:
            return await self._http.get(url, params=params, headers=headers)
        except BaseException:
            self.budget.release()
            raise

    async def pages(
        self, path: str, params: dict[str, Any], priority: Priority = Priority.BULK
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield each page's `data`, following `meta.paging.next` (a full URL) to the end."""
        body = await self.get(path, {"limit": 200, **params}, priority)
        while True:
            yield list(body.get("data") or [])
            nxt = ((body.get("meta") or {}).get("paging") or {}).get("next")
            if not nxt:
                return
            body = await self.get(nxt, None, priority)
