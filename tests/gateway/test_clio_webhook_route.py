"""Clio's webhooks through the gateway's public route to the real sync app: the handshake's
X-Hook-Secret comes back, a signed delivery is applied, a forged one is refused (401) and
changes nothing, an unknown or malformed key is 404, an oversize body 413, sync down 503."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.sync.webhooks import sign
from tests.gateway.conftest import Gateway
from tests.integration.test_clio_webhooks import FIRM_ID, World, make_world

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def world(gateway: Gateway, tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(f"sqlite+aiosqlite:///{tmp_path / 'sync.db'}", tmp_path, "https://x")
    assert gateway.app is not None
    gateway.app.state.clients.sync.http = w.sync
    try:
        yield w
    finally:
        await w.clio.aclose()
        await w.sync.aclose()
        await w.service.engine.dispose()


def public_path(url: str) -> str:
    return "/webhooks/clio/" + url.rsplit("/", 1)[1]


async def test_the_handshake_is_echoed(gateway: Gateway, world: World) -> None:
    world.fake.handshake_on_create = False
    await world.hooks.ensure_all()
    for hook in world.fake.hooks.values():
        resp = await gateway.client.http.post(
            public_path(hook["url"]), headers={"X-Hook-Secret": "hs-" + str(hook["id"])}
        )
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-hook-secret"] == "hs-" + str(hook["id"])
    assert {r.status for r in (await world.rows()).values()} == {"enabled"}


async def test_signed_deliveries_pass_and_forged_ones_do_not(
    gateway: Gateway, world: World
) -> None:
    await world.hooks.ensure_all()
    hook = world.fake.of("bill")
    bill_id = next(iter(world.sandbox.world.bills))
    await world.clio.patch(f"/sandbox/bills/{bill_id}", json={"subject": "Via the gateway"})
    body = json.dumps({"data": {"id": bill_id, "etag": "e"}, "meta": {"event": "updated"}})
    before = len(await world.updated())

    forged = await gateway.client.http.post(
        public_path(hook["url"]), content=body, headers={"X-Hook-Signature": "ab" * 32}
    )
    assert forged.status_code == 401
    unsigned = await gateway.client.http.post(public_path(hook["url"]), content=body)
    assert unsigned.status_code == 401
    await world.hooks.changes.idle(FIRM_ID)
    assert len(await world.updated()) == before

    signed = await gateway.client.http.post(
        public_path(hook["url"]),
        content=body,
        headers={"X-Hook-Signature": sign(hook["shared_secret"], body.encode())},
    )
    assert signed.status_code == 200, signed.text
    await world.hooks.changes.idle(FIRM_ID)
    assert [s.subject for s in (await world.updated())[before:]] == ["Via the gateway"]


async def test_unknown_keys_oversize_bodies_and_sync_down(gateway: Gateway, world: World) -> None:
    await world.hooks.ensure_all()
    http = gateway.client.http
    assert (await http.post("/webhooks/clio/" + "a" * 43, content=b"{}")).status_code == 404
    assert (await http.post("/webhooks/clio/short", content=b"{}")).status_code == 404
    assert (await http.post("/webhooks/clio/bad%20key%21" + "a" * 30)).status_code == 404
    path = public_path(world.fake.of("bill")["url"])
    big = await http.post(path, content=b"x" * (65 * 1024), headers={"X-Hook-Signature": "0"})
    assert big.status_code == 413

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert gateway.app is not None
    gateway.app.state.clients.sync.http = httpx.AsyncClient(
        transport=httpx.MockTransport(down), base_url="http://sync"
    )
    resp = await http.post(path, content=b"{}", headers={"X-Hook-Signature": "0"})
    assert resp.status_code == 503
