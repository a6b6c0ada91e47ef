"""The sandbox's mutable state: the demo firm's data, OAuth grants, rate windows, request log.

Handlers are all `async def` without awaits while they touch this state, so the event loop
serialises them and no lock is needed.
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from starlette.requests import HTTPConnection

from sandbox.clio.firms import firm_for
from sandbox.clio.records import World
from sandbox.clio.seed import build_world, firm_today
from sandbox.clio.settings import SandboxSettings
from sandbox.clio.webhooks import WebhookHub

Clock = Callable[[], datetime]

ACCESS_TOKEN_TTL = timedelta(days=30)
# Doorkeeper's default, which Clio's OAuth server is built on.
AUTH_CODE_TTL = timedelta(minutes=10)
RATE_WINDOW_SECONDS = 60
REQUEST_LOG_SIZE = 1000
# With the limit off, the headers still come, with a limit no client will reach.
UNLIMITED = 2_147_483_647

# Clio's regions, each its own host; the sandbox serves them under path prefixes.
REGIONS = ("us", "ca", "eu", "au")
DEFAULT_REGION = "us"
REGION_PREFIXES = {"us": "", "ca": "/ca", "eu": "/eu", "au": "/au"}


def utc_now() -> datetime:
    return datetime.now(UTC)


class OAuthError(Exception):
    """An RFC 6749 error answer from the token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


@dataclass(slots=True)
class AuthCode:
    client_id: str
    redirect_uri: str
    expires_at: datetime
    region: str = DEFAULT_REGION
    used: bool = False


@dataclass(slots=True)
class Grant:
    """One user's authorisation of one app: a refresh token and the access tokens it minted."""

    id: int
    client_id: str
    refresh_token: str
    region: str = DEFAULT_REGION
    revoked: bool = False


@dataclass(slots=True)
class AccessToken:
    grant_id: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def as_json(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


class OAuthStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._codes: dict[str, AuthCode] = {}
        self._grants: dict[int, Grant] = {}
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, int] = {}

    def issue_code(self, client_id: str, redirect_uri: str, region: str = DEFAULT_REGION) -> str:
        code = secrets.token_urlsafe(24)
        expires = self._clock() + AUTH_CODE_TTL
        self._codes[code] = AuthCode(client_id, redirect_uri, expires, region)
        return code

    def redeem_code(
        self, code: str, client_id: str, redirect_uri: str, region: str = DEFAULT_REGION
    ) -> TokenPair:
        entry = self._codes.get(code)
        # A code works only at the region's host that issued it.
        if entry is None or entry.used or entry.client_id != client_id or entry.region != region:
            raise OAuthError("invalid_grant", "The authorization code is invalid or was used.")
        # Burn the code before any other check so a failed attempt cannot be retried.
        entry.used = True
        if self._clock() >= entry.expires_at:
            raise OAuthError("invalid_grant", "The authorization code has expired.")
        if entry.redirect_uri != redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization.")
        return self.mint(client_id, region)

    def mint(self, client_id: str, region: str = DEFAULT_REGION) -> TokenPair:
        grant = Grant(len(self._grants) + 1, client_id, secrets.token_urlsafe(32), region)
        self._grants[grant.id] = grant
        self._refresh[grant.refresh_token] = grant.id
        return self._access_token_for(grant)

    def refresh(
        self, refresh_token: str, client_id: str, region: str = DEFAULT_REGION
    ) -> TokenPair:
        grant_id = self._refresh.get(refresh_token)
        grant = self._grants.get(grant_id) if grant_id is not None else None
        if grant is None or grant.revoked or grant.client_id != client_id or grant.region != region:
            raise OAuthError("invalid_grant", "The refresh token is invalid or was revoked.")
        # Clio's refresh tokens live until revoked, so the same one comes back.
        return self._access_token_for(grant)

    def authenticate(self, token: str) -> Grant | None:
        entry = self._access.get(token)
        if entry is None or self._clock() >= entry.expires_at:
            return None
        grant = self._grants[entry.grant_id]
        return None if grant.revoked else grant

    def revoke(self, token: str, region: str | None = None) -> bool:
        """Revoke the whole grant behind an access or refresh token (of `region`, if given)."""
        entry = self._access.get(token)
        grant_id = entry.grant_id if entry is not None else self._refresh.get(token)
        if grant_id is None or self._grants[grant_id].revoked:
            return False
        if region is not None and self._grants[grant_id].region != region:
            return False
        self._grants[grant_id].revoked = True
        return True

    def _access_token_for(self, grant: Grant) -> TokenPair:
        token = secrets.token_urlsafe(32)
        self._access[token] = AccessToken(grant.id, self._clock() + ACCESS_TOKEN_TTL)
        return TokenPair(token, grant.refresh_token, int(ACCESS_TOKEN_TTL.total_seconds()))


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """Fixed 60-second windows per access token, the way Clio counts."""

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str) -> RateDecision:
        now = self._clock().timestamp()
        if self.limit <= 0:
            reset = math.ceil(now + RATE_WINDOW_SECONDS)
            return RateDecision(True, UNLIMITED, UNLIMITED, reset, 0)
        started, count = self._windows.get(key, (now, 0))
        if now >= started + RATE_WINDOW_SECONDS:
            started, count = now, 0
        reset = started + RATE_WINDOW_SECONDS
        allowed = count < self.limit
        if allowed:
            count += 1
        self._windows[key] = (started, count)
        return RateDecision(
            allowed=allowed,
            limit=self.limit,
            remaining=max(self.limit - count, 0),
            reset=math.ceil(reset),
            retry_after=max(math.ceil(reset - now), 1),
        )

    def clear(self) -> None:
        self._windows.clear()


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    at: datetime
    method: str
    path: str
    query: str
    params: dict[str, list[str]]
    status: int
    authorized: bool
    region: str = DEFAULT_REGION

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "params": self.params,
            "status": self.status,
            "authorized": self.authorized,
            "region": self.region,
        }


class SandboxState:
    """Every region's world, OAuth grants, rate windows, webhooks and the request log.

    `clock` is the time source given (tests pass a fake); `state.clock()` adds the offset
    the `/sandbox/clock` hook moves forward, and everything reads time through it.
    """

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        clock: Clock = utc_now,
        webhook_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings if settings is not None else SandboxSettings.from_env()
        self.base_clock = clock
        self.clock_offset = timedelta(0)
        self.oauth = OAuthStore(self.clock)
        self.limiter = RateLimiter(self.settings.rate_limit, self.clock)
        self.requests: deque[LoggedRequest] = deque(maxlen=REQUEST_LOG_SIZE)
        self.worlds: dict[str, World] = self._seed()
        self.webhooks = WebhookHub(self, transport=webhook_transport)

    def clock(self) -> datetime:
        return self.base_clock() + self.clock_offset

    def _seed(self) -> dict[str, World]:
        today = firm_today(self.clock())
        return {region: build_world(today, firm_for(region)) for region in REGIONS}

    def world_of(self, connection: HTTPConnection) -> World:
        """The world of the region the request was addressed to."""
        return self.worlds[connection.scope.get("clio_region", DEFAULT_REGION)]

    @property
    def world(self) -> World:
        """The US region's world (the demo firm), which the root paths serve."""
        return self.worlds[DEFAULT_REGION]

    @world.setter
    def world(self, value: World) -> None:
        self.worlds[DEFAULT_REGION] = value

    def reset(self) -> None:
        """Reseed the firms and forget traffic and webhooks; OAuth grants survive so
        connected clients stay so."""
        self.worlds = self._seed()
        self.requests.clear()
        self.limiter.clear()
        self.webhooks.clear()
