"""A firm's Clio connection: building its API client (tokens, region host, rate budget),
connecting through OAuth and disconnecting. The syncer and the webhook intake get their
clients here and never build one themselves.

The tokens are stored encrypted (tokens.py): read them through `client(conn)` only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from services.sync.clio import ClioAuthError, ClioClient, Tokens, authorize_url
from services.sync.models import ClioConnection
from services.sync.ratelimit import Budgets, Priority
from services.sync.settings import SyncSettings
from services.sync.tokens import TokenCipher, TokenKeyError, rekey_all
from shared.runtime import Service

log = logging.getLogger(__name__)


@dataclass
class Disconnected:
    """What a disconnect did: the tokens are always forgotten here; `revoked` says whether
    Clio confirmed it revoked them, and `problem` why not."""

    was_connected: bool
    revoked: bool
    problem: str | None = None


class Connections:
    def __init__(
        self, service: Service, settings: SyncSettings, http: httpx.AsyncClient | None = None
    ) -> None:
        self.service = service
        self.settings = settings
        self.cipher = TokenCipher.from_settings(settings)
        # One HTTP client for every Clio call (tests pass one on the sandbox); None: each
        # client opens its own.
        self.http = http
        self._http: httpx.AsyncClient | None = None
        # One request budget per firm (one token per firm), shared by every client of it in
        # this process: the poll, the Sync button and the webhook fetches together.
        self.budgets = Budgets()

    def _shared_http(self) -> httpx.AsyncClient:
        """One pooled client for every Clio call of this process: a webhook's fetch reuses
        the poll's connection (and TLS setup) instead of opening its own."""
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(timeout=30)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def base_url(self, region: str) -> str:
        return self.settings.base_url_for(region)

    def authorize_url(self, region: str, redirect_uri: str, state: str) -> str:
        return authorize_url(
            self.base_url(region), self.settings.clio_client_id, redirect_uri, state
        )

    def tokens(self, conn: ClioConnection) -> Tokens:
        """The connection's tokens in clear (TokenKeyError when no configured key opens them)."""
        return Tokens(
            self.cipher.decrypt(conn.access_token) or "",
            self.cipher.decrypt(conn.refresh_token),
            conn.token_expires_at,
        )

    def client(self, conn: ClioConnection | None = None, region: str = "us") -> ClioClient:
        """A client for `conn` (None: one for the OAuth code exchange on `region`'s host);
        close it after use. New tokens it obtains by refreshing are saved, encrypted, on the
        connection."""
        try:
            tokens = self.tokens(conn) if conn else None
        except TokenKeyError as exc:
            raise ClioAuthError(str(exc)) from exc
        firm_id = conn.firm_id if conn else None

        async def save(new: Tokens) -> None:
            if firm_id is None:
                return
            async with self.service.sessionmaker() as s, s.begin():
                row = await s.get(ClioConnection, firm_id)
                if row is not None:
                    row.access_token = self.cipher.encrypt(new.access_token) or ""
                    row.refresh_token = self.cipher.encrypt(new.refresh_token)
                    row.token_expires_at = new.expires_at

        return ClioClient(
            conn.base_url if conn else self.base_url(region),
            self.settings.clio_client_id,
            self.settings.clio_client_secret,
            tokens=tokens,
            on_tokens=save,
            http=self.http or self._shared_http(),
            budget=self.budgets.for_firm(firm_id),
        )

    async def connect(
        self, firm_id: str, code: str, redirect_uri: str, region: str = "us"
    ) -> ClioConnection:
        base_url = self.base_url(region)
        client = self.client(region=region)
        try:
            tokens = await client.exchange_code(code, redirect_uri)
            client.tokens = tokens
            me = await client.get(
                "users/who_am_i.json",
                {"fields": "id,name,account{name}"},
                priority=Priority.INTERACTIVE,
            )
        finally:
            await client.aclose()
        data = me.get("data") or {}
        account = (data.get("account") or {}).get("name") or data.get("name")
        now = datetime.now(UTC)
        async with self.service.sessionmaker() as s, s.begin():
            conn = await s.get(ClioConnection, firm_id)
            if conn is None:
                conn = ClioConnection(firm_id=firm_id, connected_at=now)
                s.add(conn)
            elif conn.region != region or conn.base_url != base_url:
                # Another region's account: its cursors mean nothing here.
                conn.bills_cursor = conn.contacts_cursor = conn.line_items_cursor = None
            conn.region = region
            conn.base_url = base_url
            conn.access_token = self.cipher.encrypt(tokens.access_token) or ""
            conn.refresh_token = self.cipher.encrypt(tokens.refresh_token)
            conn.token_expires_at = tokens.expires_at
            conn.account_name = str(account)[:300] if account else None
            conn.connected_at = now
            conn.last_error = None
            conn.last_error_at = None
        return conn

    async def disconnect(self, firm_id: str) -> Disconnected:
        """Revoke the access token at Clio (POST {base}/oauth/deauthorize), then forget the
        connection whatever Clio answered."""
        async with self.service.sessionmaker() as s:
            conn = await s.get(ClioConnection, firm_id)
        if conn is None:
            return Disconnected(was_connected=False, revoked=False)
        revoked, problem = await self._revoke(conn)
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(ClioConnection, firm_id)
            if row is not None:
                await s.delete(row)
        self.budgets.forget(firm_id)  # a new token starts a new count
        if not revoked:
            log.warning("sync: firm %s disconnected without revoking at Clio: %s", firm_id, problem)
        return Disconnected(was_connected=True, revoked=revoked, problem=problem)

    async def _revoke(self, conn: ClioConnection) -> tuple[bool, str | None]:
        try:
            tokens = self.tokens(conn)
        except TokenKeyError:
            return False, "the stored token could not be read, so it was not revoked at Clio"
        own = self.http is None
        http = self.http or httpx.AsyncClient(timeout=15)
        token = tokens.access_token
        try:
            if (
                tokens.expires_at
                and tokens.expires_at <= datetime.now(UTC)
                and tokens.refresh_token
            ):
                # An expired access token cannot be revoked: refresh it first (not saved).
                clio = ClioClient(
                    conn.base_url,
                    self.settings.clio_client_id,
                    self.settings.clio_client_secret,
                    tokens=tokens,
                    http=http,
                )
                token = (await clio.refresh()).access_token
            resp = await http.post(
                f"{conn.base_url.rstrip('/')}/oauth/deauthorize",
                data={"token": token},
                headers={"Authorization": f"Bearer {token}"},
            )
        except ClioAuthError:
            return False, "Clio no longer accepts the stored tokens (revoked already?)"
        except httpx.HTTPError as exc:
            return False, f"Clio could not be reached ({type(exc).__name__})"
        finally:
            if own:
                await http.aclose()
        if resp.is_success:
            return True, None
        if resp.status_code == 401:
            return False, "Clio did not accept the token (revoked already?)"
        return False, f"Clio answered {resp.status_code}"

    async def rekey(self) -> None:
        """Re-encrypt every stored token under the first key (run at start)."""
        done, failed = await rekey_all(self.service, self.cipher)
        if failed:
            log.error("sync: %d connection(s) hold tokens no configured key opens", failed)
        log.info("sync: Clio tokens of %d connection(s) under the current key", done)
