"""A firm's Clio connection: building its API client (tokens, region host, rate budget),
connecting through OAuth and disconnecting. The syncer and the webhook intake get their
clients here and never build one themselves."""

from __future__ import annotations

from datetime import UTC, datetime

from services.sync.clio import ClioClient, Tokens
from services.sync.models import ClioConnection
from services.sync.settings import SyncSettings
from shared.runtime import Service


class Connections:
    def __init__(self, service: Service, settings: SyncSettings) -> None:
        self.service = service
        self.settings = settings

    def client(self, conn: ClioConnection | None = None) -> ClioClient:
        """A client for `conn` (None: one for the OAuth code exchange); close it after use.
        New tokens it obtains by refreshing are saved on the connection."""
        tokens = (
            Tokens(conn.access_token, conn.refresh_token, conn.token_expires_at) if conn else None
        )
        firm_id = conn.firm_id if conn else None

        async def save(new: Tokens) -> None:
            if firm_id is None:
                return
            async with self.service.sessionmaker() as s, s.begin():
                row = await s.get(ClioConnection, firm_id)
                if row is not None:
                    row.access_token = new.access_token
                    row.refresh_token = new.refresh_token
                    row.token_expires_at = new.expires_at

        return ClioClient(
            conn.base_url if conn else self.settings.clio_base_url,
            self.settings.clio_client_id,
            self.settings.clio_client_secret,
            tokens=tokens,
            on_tokens=save,
        )

    async def connect(self, firm_id: str, code: str, redirect_uri: str) -> ClioConnection:
        client = self.client()
        try:
            tokens = await client.exchange_code(code, redirect_uri)
            client.tokens = tokens
            me = await client.get("users/who_am_i.json", {"fields": "id,name,account{name}"})
        finally:
            await client.aclose()
        data = me.get("data") or {}
        account = (data.get("account") or {}).get("name") or data.get("name")
        async with self.service.sessionmaker() as s, s.begin():
            conn = await s.get(ClioConnection, firm_id)
            if conn is None:
                conn = ClioConnection(firm_id=firm_id, connected_at=datetime.now(UTC))
                s.add(conn)
            conn.base_url = self.settings.clio_base_url
            conn.access_token = tokens.access_token
            conn.refresh_token = tokens.refresh_token
            conn.token_expires_at = tokens.expires_at
            conn.account_name = account
            conn.connected_at = datetime.now(UTC)
            conn.last_error = None
        return conn
