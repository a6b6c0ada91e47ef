"""The Clio tokens at rest: encrypted with Fernet under CLIO_TOKEN_KEYS (the first key
encrypts, every key decrypts), and re-encrypted under the first key after a rotation.

    python -m services.sync.tokens rekey   # re-encrypt every row under the first key
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select

from services.sync.models import Base, ClioConnection
from services.sync.settings import SyncSettings
from shared.runtime import Service

log = logging.getLogger(__name__)

# Marks an encrypted value; a value without it is a plaintext token from before encryption.
PREFIX = "fernet:"


class TokenKeyError(RuntimeError):
    """A stored token no configured key opens: the firm must connect Clio again."""


class TokenCipher:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one token key is needed")
        self._first = Fernet(keys[0])
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def from_settings(cls, settings: SyncSettings) -> TokenCipher:
        return cls(settings.token_keys())

    def encrypt(self, token: str | None) -> str | None:
        if token is None:
            return None
        return PREFIX + self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, stored: str | None) -> str | None:
        if stored is None:
            return None
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise TokenKeyError("the Clio tokens cannot be read: connect Clio again") from exc

    def current(self, stored: str | None) -> bool:
        """Whether `stored` is None or already encrypted under the first key."""
        if stored is None:
            return True
        if not stored.startswith(PREFIX):
            return False
        try:
            self._first.decrypt(stored[len(PREFIX) :].encode())
        except InvalidToken:
            return False
        return True

    def rekey(self, stored: str | None) -> str | None:
        """`stored` under the first key (a plaintext one encrypted); None stays None."""
        if stored is None:
            return None
        if not stored.startswith(PREFIX):
            return self.encrypt(stored)
        try:
            return PREFIX + self._fernet.rotate(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise TokenKeyError("the Clio tokens cannot be read: connect Clio again") from exc


async def rekey_all(service: Service, cipher: TokenCipher) -> tuple[int, int]:
    """Re-encrypt the connections' tokens that are not under the first key: (rows rekeyed, rows
    no key opens). A row no key opens is left as it is (its firm must connect again)."""
    done = failed = 0
    async with service.sessionmaker() as s:
        firm_ids = list(await s.scalars(select(ClioConnection.firm_id)))
    for firm_id in firm_ids:
        async with service.sessionmaker() as s, s.begin():
            row = await s.get(ClioConnection, firm_id, with_for_update=True)
            if row is None or (
                cipher.current(row.access_token) and cipher.current(row.refresh_token)
            ):
                continue
            try:
                access, refresh = cipher.rekey(row.access_token), cipher.rekey(row.refresh_token)
            except TokenKeyError:
                failed += 1
                log.error("sync: the Clio tokens of firm %s open with no configured key", firm_id)
                continue
            row.access_token = access or ""
            row.refresh_token = refresh
            done += 1
    return done, failed


async def _main() -> int:
    settings = SyncSettings()
    service = Service(settings, Base.metadata, Path(__file__).parent / "migrations")
    try:
        done, failed = await rekey_all(service, TokenCipher.from_settings(settings))
    finally:
        await service.engine.dispose()
    print(f"re-encrypted {done} connection(s); {failed} could not be read")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:] != ["rekey"]:
        sys.exit("usage: python -m services.sync.tokens rekey")
    sys.exit(asyncio.run(_main()))
