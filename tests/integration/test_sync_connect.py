"""Connecting a firm's Clio: the region's host, the OAuth code exchange against the Clio
sandbox, tokens encrypted at rest (refreshed tokens too), key rotation, disconnecting (the
grant revoked at Clio, the tokens forgotten even when Clio cannot be reached), and sync's
connection API answering bad input with a 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI

from sandbox.clio import SandboxState, create_app
from sandbox.clio.settings import SandboxSettings
from services.sync import api, api_connection
from services.sync.app import MIGRATIONS
from services.sync.clio import ClioAuthError
from services.sync.connection import Connections
from services.sync.models import Base, ClioConnection, Quarantined
from services.sync.settings import PRODUCTION_HOSTS, SyncSettings
from services.sync.syncer import Syncer
from services.sync.tokens import PREFIX, TokenCipher, TokenKeyError, rekey_all
from shared.migrations import upgrade_async
from shared.runtime import Service

FIRM, OTHER = "firm-connect", "firm-other"
CA_HOST = "http://ca.clio.test"
REDIRECT = "http://gateway.test/clio/callback"
KEY_OLD, KEY_NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


class OnlyHost(httpx.AsyncBaseTransport):
    """The sandbox answers on one host; any other host cannot be reached."""

    def __init__(self, host: str, app: FastAPI) -> None:
        self.host = host
        self.inner = httpx.ASGITransport(app=app)
        self.hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        if request.url.host != self.host:
            raise httpx.ConnectError(f"cannot reach {request.url.host}", request=request)
        return await self.inner.handle_async_request(request)


@dataclass
class World:
    sandbox: SandboxState
    transport: OnlyHost
    service: Service
    settings: SyncSettings
    connections: Connections
    api: httpx.AsyncClient

    async def row(self, firm_id: str = FIRM) -> ClioConnection | None:
        async with self.service.sessionmaker() as s:
            return await s.get(ClioConnection, firm_id)

    def code(self) -> str:
        return self.sandbox.oauth.issue_code("sandbox-client", REDIRECT)


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    await upgrade_async(MIGRATIONS, database_url)
    # Not a rate-limit test: the sandbox counts nothing (test_clio_ratelimit.py does).
    sandbox = SandboxState(settings=SandboxSettings(rate_limit=0))
    transport = OnlyHost("ca.clio.test", create_app(sandbox))
    http = httpx.AsyncClient(transport=transport)
    settings = SyncSettings(
        database_url=database_url,
        environment="test",
        var_dir=tmp_path,
        clio_base_url="http://us.clio.test",
        clio_region_urls=f"ca={CA_HOST}",
        clio_token_keys=f"{KEY_NEW},{KEY_OLD}",
    )
    service = Service(settings, Base.metadata, MIGRATIONS)
    connections = Connections(service, settings, http=http)
    syncer = Syncer(service, settings, connections)

    async def no_sync(firm_id: str) -> None:  # connect's first sync is not under test here
        return None

    syncer.sync_firm = no_sync  # type: ignore[assignment,method-assign]
    app = FastAPI()
    app.include_router(api.router(service, syncer))
    app.include_router(api_connection.router(service, syncer))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://sync",
        headers={"X-Internal-Token": settings.internal_token},
    ) as client:
        yield World(sandbox, transport, service, settings, connections, client)
    await http.aclose()
    await service.engine.dispose()


async def connect(world: World, region: str = "ca", firm: str = FIRM) -> httpx.Response:
    body = {"code": world.code(), "redirect_uri": REDIRECT, "region": region}
    return await world.api.post(f"/internal/firms/{firm}/clio/connect", json=body)


# --- settings --------------------------------------------------------------------------------


def test_regions_map_to_the_sandbox_in_development_and_to_clio_in_production() -> None:
    dev = SyncSettings(environment="development")
    assert dev.base_url_for("us") == "http://127.0.0.1:8090"
    assert dev.base_url_for("ca") == "http://127.0.0.1:8090/ca"
    assert dev.base_url_for("au") == "http://127.0.0.1:8090/au"
    prod = SyncSettings(
        environment="production",
        internal_token="t" * 40,
        clio_client_secret="real",
        clio_token_keys=KEY_NEW,
        clio_region_urls="eu=https://eu.example.test/",
    )
    assert prod.base_url_for("us") == PRODUCTION_HOSTS["us"] == "https://app.clio.com"
    assert prod.base_url_for("ca") == "https://ca.app.clio.com"
    assert prod.base_url_for("eu") == "https://eu.example.test"


def test_production_refuses_to_start_without_token_keys() -> None:
    with pytest.raises(ValueError, match="CLIO_TOKEN_KEYS"):
        SyncSettings(environment="production", internal_token="t" * 40, clio_client_secret="x")


def test_the_development_key_is_derived_from_the_internal_token() -> None:
    a = SyncSettings(internal_token="one").token_keys()
    assert a == SyncSettings(internal_token="one").token_keys()
    assert a != SyncSettings(internal_token="two").token_keys()
    assert TokenCipher(a).decrypt(TokenCipher(a).encrypt("x")) == "x"


# --- connecting ------------------------------------------------------------------------------


async def test_connect_uses_the_regions_host_and_stores_tokens_encrypted(world: World) -> None:
    url = (
        await world.api.get(
            "/internal/clio/authorize-url",
            params={"redirect_uri": REDIRECT, "state": "ca.xyz", "region": "ca"},
        )
    ).json()["url"]
    assert url.startswith(f"{CA_HOST}/oauth/authorize?") and "state=ca.xyz" in url

    resp = await connect(world)
    assert resp.status_code == 200, resp.text
    status = resp.json()
    assert status["connected"] is True and status["region"] == "ca"
    assert status["account_name"]
    assert set(world.transport.hosts) == {"ca.clio.test"}

    row = await world.row()
    assert row is not None and row.region == "ca" and row.base_url == CA_HOST
    assert row.access_token.startswith(PREFIX) and row.refresh_token
    assert row.refresh_token.startswith(PREFIX)
    plain = world.connections.tokens(row)
    assert plain.access_token not in row.access_token
    assert world.sandbox.oauth.authenticate(plain.access_token) is not None

    # The client decrypts: a call on the connection works.
    client = world.connections.client(row)
    me = await client.get("users/who_am_i.json")
    assert me["data"]["id"]


async def test_a_refreshed_token_is_saved_encrypted(world: World) -> None:
    await connect(world)
    async with world.service.sessionmaker() as s, s.begin():
        row = await s.get(ClioConnection, FIRM)
        assert row is not None
        row.token_expires_at = datetime.now(UTC) - timedelta(minutes=5)
    before = world.connections.tokens(await world.row())  # type: ignore[arg-type]
    await world.connections.client(await world.row()).get("users/who_am_i.json")
    row = await world.row()
    assert row is not None and row.access_token.startswith(PREFIX)
    after = world.connections.tokens(row)
    assert after.access_token != before.access_token
    assert after.expires_at and after.expires_at > datetime.now(UTC)
    assert world.sandbox.oauth.authenticate(after.access_token) is not None


async def test_connect_answers_bad_input_with_4xx(world: World) -> None:
    bad_region = {"code": "x", "redirect_uri": REDIRECT, "region": "mars"}
    resp = await world.api.post(f"/internal/firms/{FIRM}/clio/connect", json=bad_region)
    assert resp.status_code == 422
    resp = await world.api.get(
        "/internal/clio/authorize-url",
        params={"redirect_uri": REDIRECT, "state": "s", "region": "mars"},
    )
    assert resp.status_code == 422
    forged = {"code": "forged", "redirect_uri": REDIRECT, "region": "ca"}
    resp = await world.api.post(f"/internal/firms/{FIRM}/clio/connect", json=forged)
    assert resp.status_code == 400 and "refused" in resp.json()["detail"]
    huge = {"code": "c" * 100_000, "redirect_uri": REDIRECT, "region": "ca"}
    resp = await world.api.post(f"/internal/firms/{FIRM}/clio/connect", json=huge)
    assert resp.status_code == 400
    # The US host cannot be reached in this world: a clear 502, not a 500.
    resp = await connect(world, region="us")
    assert resp.status_code == 502 and "Clio" in resp.json()["detail"]
    assert await world.row() is None


async def test_status_reports_health_and_quarantine_links_to_the_regions_host(
    world: World,
) -> None:
    assert (await world.api.get(f"/internal/firms/{FIRM}/clio")).json()["connected"] is False
    await connect(world)
    failed_at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    async with world.service.sessionmaker() as s, s.begin():
        row = await s.get(ClioConnection, FIRM)
        assert row is not None
        row.last_error, row.last_error_at = "Clio answered 503", failed_at
        s.add(
            Quarantined(
                firm_id=FIRM,
                source="clio",
                source_id="5100007",
                reason="no client",
                raw="{}",
                received_at=failed_at,
            )
        )
    status = (await world.api.get(f"/internal/firms/{FIRM}/clio")).json()
    assert status["last_error"] == "Clio answered 503"
    assert status["last_error_at"].startswith("2026-12-01T09:30")
    assert status["quarantined"] == 1
    (item,) = (await world.api.get(f"/internal/firms/{FIRM}/quarantine")).json()
    assert item["source_url"] == f"{CA_HOST}/nc/#/bills/5100007"
    # Another firm sees neither the connection nor the quarantine.
    assert (await world.api.get(f"/internal/firms/{OTHER}/clio")).json()["connected"] is False
    assert (await world.api.get(f"/internal/firms/{OTHER}/quarantine")).json() == []


# --- disconnecting ---------------------------------------------------------------------------


async def test_disconnect_revokes_the_grant_and_forgets_the_tokens(world: World) -> None:
    await connect(world)
    row = await world.row()
    assert row is not None
    plain = world.connections.tokens(row)
    resp = await world.api.post(f"/internal/firms/{FIRM}/clio/disconnect")
    assert resp.json() == {"was_connected": True, "revoked": True, "problem": None}
    assert await world.row() is None
    assert world.sandbox.oauth.authenticate(plain.access_token) is None
    # The refresh token is dead too: the whole grant was revoked.
    pair = world.sandbox.oauth
    with pytest.raises(Exception, match="revoked"):
        pair.refresh(plain.refresh_token or "", "sandbox-client")
    again = await world.api.post(f"/internal/firms/{FIRM}/clio/disconnect")
    assert again.json()["was_connected"] is False


async def test_disconnect_forgets_the_tokens_when_clio_cannot_be_reached(world: World) -> None:
    await connect(world)
    async with world.service.sessionmaker() as s, s.begin():
        row = await s.get(ClioConnection, FIRM)
        assert row is not None
        row.base_url = "http://gone.clio.test"
    resp = await world.api.post(f"/internal/firms/{FIRM}/clio/disconnect")
    body = resp.json()
    assert resp.status_code == 200 and body["revoked"] is False
    assert "could not be reached" in body["problem"]
    assert await world.row() is None


# --- key rotation ----------------------------------------------------------------------------


async def test_rotation_reencrypts_rows_under_the_first_key(world: World) -> None:
    old = TokenCipher([KEY_OLD.encode()])
    async with world.service.sessionmaker() as s, s.begin():
        s.add_all(
            [
                ClioConnection(
                    firm_id=FIRM,
                    base_url=CA_HOST,
                    access_token=old.encrypt("access-1") or "",
                    refresh_token=old.encrypt("refresh-1"),
                    connected_at=datetime.now(UTC),
                ),
                # Stored before encryption: plaintext.
                ClioConnection(
                    firm_id=OTHER,
                    base_url=CA_HOST,
                    access_token="access-2",
                    refresh_token=None,
                    connected_at=datetime.now(UTC),
                ),
            ]
        )
    assert await rekey_all(world.service, world.connections.cipher) == (2, 0)
    only_new = TokenCipher([KEY_NEW.encode()])
    first, second = await world.row(FIRM), await world.row(OTHER)
    assert first is not None and second is not None
    assert only_new.decrypt(first.access_token) == "access-1"
    assert only_new.decrypt(first.refresh_token) == "refresh-1"
    assert only_new.decrypt(second.access_token) == "access-2"
    assert second.access_token.startswith(PREFIX) and second.refresh_token is None
    with pytest.raises(TokenKeyError):
        old.decrypt(first.access_token)
    # Rows already under the first key are left alone.
    assert await rekey_all(world.service, world.connections.cipher) == (0, 0)
    assert (await world.row(FIRM)).access_token == first.access_token  # type: ignore[union-attr]


async def test_a_row_no_key_opens_is_left_and_reported(world: World) -> None:
    stranger = TokenCipher([Fernet.generate_key()])
    async with world.service.sessionmaker() as s, s.begin():
        s.add(
            ClioConnection(
                firm_id=FIRM,
                base_url=CA_HOST,
                access_token=stranger.encrypt("a") or "",
                refresh_token=None,
                connected_at=datetime.now(UTC),
            )
        )
    assert await rekey_all(world.service, world.connections.cipher) == (0, 1)
    row = await world.row()
    assert row is not None
    with pytest.raises(ClioAuthError, match="connect Clio again"):
        world.connections.client(row)
