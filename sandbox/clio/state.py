"""The sandbox's mutable state: the demo firm's data, OAuth grants, rate windows, request log.

Handlers are all `async def` without awaits while they touch this state, so the event loop
serialises them and no lock is needed.
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sandbox.clio.records import World
from sandbox.clio.seed import build_world, firm_today
from sandbox.clio.settings import SandboxSettings

Clock = Callable[[], datetime]

ACCESS_TOKEN_TTL = timedelta(days=30)
# Doorkeeper's default, which Clio's OAuth server is built on.
AUTH_CODE_TTL = timedelta(minutes=10)
RATE_WINDOW_SECONDS = 60
REQUEST_LOG_SIZE = 1000


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
    used: bool = False


@dataclass(slots=True)
class Grant:
    """One user's authorisation of one app: a refresh token and the access tokens it minted."""

    id: int
    client_id: str
    refresh_token: str
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

    def issue_code(self, client_id: str, redirect_uri: str) -> str:
        code = secrets.token_urlsafe(24)
        self._codes[code] = AuthCode(client_id, redirect_uri, self._clock() + AUTH_CODE_TTL)
        return code

    def redeem_code(self, code: str, client_id: str, redirect_uri: str) -> TokenPair:
        entry = self._codes.get(code)
        if entry is None or entry.used or entry.client_id != client_id:
            raise OAuthError("invalid_grant", "The authorization code is invalid or was used.")
        # Burn the code before any other check so a failed attempt cannot be retried.
        entry.used = True
        if self._clock() >= entry.expires_at:
            raise OAuthError("invalid_grant", "The authorization code has expired.")
        if entry.redirect_uri != redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization.")
        return self.mint(client_id)

    def mint(self, client_id: str) -> TokenPair:
        grant = Grant(len(self._grants) + 1, client_id, secrets.token_urlsafe(32))
        self._grants[grant.id] = grant
        self._refresh[grant.refresh_token] = grant.id
        return self._access_token_for(grant)

    def refresh(self, refresh_token: str, client_id: str) -> TokenPair:
        grant_id = self._refresh.get(refresh_token)
        grant = self._grants.get(grant_id) if grant_id is not None else None
        if grant is None or grant.revoked or grant.client_id != client_id:
            raise OAuthError("invalid_grant", "The refresh token is invalid or was revoked.")
        # Clio's refresh tokens live until revoked, so the same one comes back.
        return self._access_token_for(grant)

    def authenticate(self, token: str) -> Grant | None:
        entry = self._access.get(token)
        if entry is None or self._clock() >= entry.expires_at:
            return None
        grant = self._grants[entry.grant_id]
        return None if grant.revoked else grant

    def revoke(self, token: str) -> bool:
        """Revoke the whole grant behind an access or refresh token."""
        entry = self._access.get(token)
        grant_id = entry.grant_id if entry is not None else self._refresh.get(token)
        if grant_id is None or self._grants[grant_id].revoked:
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

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at.isoformat(),
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "params": self.params,
            "status": self.status,
            "authorized": self.authorized,
        }


@dataclass
class SandboxState:
    settings: SandboxSettings = field(default_factory=SandboxSettings.from_env)
    clock: Clock = utc_now
    world: World = field(init=False)
    oauth: OAuthStore = field(init=False)
    limiter: RateLimiter = field(init=False)
    requests: deque[LoggedRequest] = field(init=False)

    def __post_init__(self) -> None:
        self.oauth = OAuthStore(self.clock)
        self.limiter = RateLimiter(self.settings.rate_limit, self.clock)
        self.requests = deque(maxlen=REQUEST_LOG_SIZE)
        self.world = build_world(firm_today(self.clock()))

    def reset(self) -> None:
        """Reseed the firm and forget traffic; OAuth grants survive so connected clients stay so."""
        self.world = build_world(firm_today(self.clock()))
        self.requests.clear()
        self.limiter.clear()
