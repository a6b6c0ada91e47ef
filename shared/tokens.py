"""Client link tokens: unguessable, shown once in an email, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def derive_token(secret: str, *parts: str) -> str:
    """A link token that can be made again from its parts (so a redelivered request or a
    re-rendered PDF carries the same link) but not guessed without the secret."""
    import base64
    import hmac

    mac = hmac.new(secret.encode(), "\x1f".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
