"""Firm users: argon2 password hashes, server-side sessions in an HttpOnly cookie, and a
CSRF token on every form."""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from services.gateway.models import User, WebSession
from shared.tokens import hash_token

SESSION_COOKIE = "ep_session"
ANON_CSRF_COOKIE = "ep_csrf"

_hasher = PasswordHasher()
# Verifying against a real hash when the email is unknown keeps the timing the same.
_DUMMY_HASH = _hasher.hash("not-a-password")


@dataclass(frozen=True)
class CurrentUser:
    id: str
    firm_id: str
    email: str
    name: str
    csrf_token: str


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def authenticate(s: AsyncSession, email: str, password: str) -> User | None:
    user = await s.scalar(select(User).where(User.email == email.strip().lower()))
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


async def start_session(s: AsyncSession, user: User, hours: int) -> str:
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    s.add(
        WebSession(
            token_hash=hash_token(token),
            user_id=user.id,
            firm_id=user.firm_id,
            csrf_token=secrets.token_urlsafe(24),
            created_at=now,
            expires_at=now + timedelta(hours=hours),
        )
    )
    return token


async def load_session(s: AsyncSession, token: str | None) -> CurrentUser | None:
    if not token:
        return None
    row = await s.get(WebSession, hash_token(token))
    if row is None:
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
    if expires < datetime.now(UTC):
        return None
    user = await s.get(User, row.user_id)
    if user is None:
        return None
    return CurrentUser(user.id, user.firm_id, user.email, user.name, row.csrf_token)


async def end_session(s: AsyncSession, token: str | None) -> None:
    if token:
        await s.execute(delete(WebSession).where(WebSession.token_hash == hash_token(token)))


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(str(expected), str(given))


def set_anon_csrf(resp: Response, token: str, secure: bool) -> None:
    """The CSRF token of a form shown to someone not logged in (log in, the client's pages)."""
    resp.set_cookie(ANON_CSRF_COOKIE, token, httponly=True, samesite="lax", secure=secure)


def new_id() -> str:
    return str(uuid.uuid4())
