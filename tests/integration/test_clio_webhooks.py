"""Clio webhooks in sync: registration with the handshake, renewal before expiry, signed
deliveries applied in the background (a changed bill published, a deleted or void one
removed, a contact's new email, a matter's bills), refused signatures changing nothing.

Clio's reads come from the in-process sandbox; its webhook endpoints (POST/PATCH/DELETE
webhooks) from `FakeHooks` below, which follows Clio's documented shapes: the handshake is
posted while the create request is still open, as Clio does right after creation.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from sandbox.clio import SandboxState, create_app
from sandbox.clio.settings import SandboxSettings
from services.sync import api_webhooks
from services.sync.app import MIGRATIONS
from services.sync.clio import ClioClient, Tokens
from services.sync.mapping import BILL_FIELDS, CONTACT_FIELDS
from services.sync.models import Base, ClioConnection, ClioWebhook
from services.sync.settings import SyncSettings
from services.sync.syncer import Syncer
from services.sync.webhooks import Webhooks, sign
from shared.events import InvoiceSnapshot
from shared.migrations import upgrade_async
from shared.runtime import Service

pytestmark = pytest.mark.timeout(60)

FIRM_ID = "firm-hooks"
BASE_URL = "http://clio.test"
PUBLIC = "https://pay.example-firm.test"


@dataclass
class FakeHooks:
    """Clio's /webhooks endpoints."""

    sync: httpx.AsyncClient | None = None
    handshake_on_create: bool = True
    hooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 100

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v4/")
        self.calls.append((request.method, path))
        body = json.loads(request.content) if request.content else {}
        if request.method == "POST" and path == "webhooks.json":
            data = body["data"]
            self.next_id += 1
            hook = {
                **data,
                "id": self.next_id,
                "shared_secret": secrets.token_hex(16),
                "status": "pending",
            }
            self.hooks[hook["id"]] = hook
            if self.handshake_on_create:
                await self.handshake(hook)
            shown = {k: hook[k] for k in ("id", "shared_secret", "expires_at", "status")}
            return httpx.Response(201, json={"data": shown})
        hook_id = int(path.removeprefix("webhooks/").removesuffix(".json"))
        if hook_id not in self.hooks:
            return httpx.Response(404, json={"error": {"message": "not found"}})
        if request.method == "PATCH":
            self.hooks[hook_id].update(body["data"])
            hook = self.hooks[hook_id]
            return httpx.Response(200, json={"data": {k: hook[k] for k in ("id", "expires_at")}})
        if request.method == "DELETE":
            del self.hooks[hook_id]
            return httpx.Response(204)
        return httpx.Response(405)

    async def handshake(self, hook: dict[str, Any], secret: str | None = None) -> httpx.Response:
        assert self.sync is not None
        secret = secret or secrets.token_hex(12)
        resp = await self.sync.post(path_of(hook["url"]), headers={"X-Hook-Secret": secret})
        if resp.status_code == 200 and resp.headers.get("x-hook-secret") == secret:
            hook["status"] = "enabled"
        return resp

    def of(self, model: str) -> dict[str, Any]:
        (hook,) = [h for h in self.hooks.values() if h["model"] == model]
        return hook


def path_of(url: str) -> str:
    key = url.rsplit("/", 1)[1]
    return f"/internal/clio/webhooks/{key}"


@dataclass
class World:
    sandbox: SandboxState
    clio: httpx.AsyncClient
    fake: FakeHooks
    service: Service
    syncer: Syncer
    hooks: Webhooks
    sync: httpx.AsyncClient

    async def events(self, routing_key: str) -> list[dict[str, Any]]:
        outbox = self.service.outbox
        async with self.service.sessionmaker() as s:
            rows = await s.execute(
                select(outbox.c.payload)
                .where(outbox.c.routing_key == routing_key)
                .order_by(outbox.c.id)
            )
            return [json.loads(r[0]) for r in rows]

    async def updated(self) -> list[InvoiceSnapshot]:
        return [
            InvoiceSnapshot.model_validate(e["invoice"])
            for e in await self.events("invoice.updated")
        ]

    async def deliver(
        self, model: str, record_id: int, event: str = "updated", signature: str | None = None
    ) -> httpx.Response:
        hook = self.fake.of(model)
        body = json.dumps(
            {
                "data": {"id": record_id, "etag": secrets.token_hex(4)},
                "meta": {"event": event, "webhook_id": hook["id"]},
            }
        ).encode()
        sig = signature if signature is not None else sign(hook["shared_secret"], body)
        return await self.sync.post(
            path_of(hook["url"]),
            content=body,
            headers={"X-Hook-Signature": sig, "Content-Type": "application/json"},
        )

    async def rows(self) -> dict[str, ClioWebhook]:
        async with self.service.sessionmaker() as s:
            found = await s.scalars(select(ClioWebhook).where(ClioWebhook.firm_id == FIRM_ID))
            return {r.model: r for r in found}


async def make_world(database_url: str, tmp_path: Path, public_url: str) -> World:
    await upgrade_async(MIGRATIONS, database_url)
    # No rate limit here: tests/integration/test_clio_ratelimit.py is about that.
    sandbox = SandboxState(settings=SandboxSettings(rate_limit=1_000_000))
    sandbox_http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(sandbox)), base_url=BASE_URL
    )
    fake = FakeHooks()

    async def route(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/v4/webhooks"):
            return await fake(request)
        resp = await sandbox_http.request(
            request.method, str(request.url), content=request.content, headers=request.headers
        )
        await resp.aread()
        return httpx.Response(resp.status_code, headers=resp.headers, content=resp.content)

    clio = httpx.AsyncClient(transport=httpx.MockTransport(route), base_url=BASE_URL)
    settings = SyncSettings(
        database_url=database_url,
        environment="test",
        var_dir=tmp_path,
        clio_base_url=BASE_URL,
        clio_webhook_url=public_url,
    )
    service = Service(settings, Base.metadata, MIGRATIONS)
    syncer = Syncer(service, settings)

    def client(conn: ClioConnection | None = None) -> ClioClient:
        tokens = Tokens(conn.access_token, conn.refresh_token, None) if conn else None
        return ClioClient(BASE_URL, "sandbox-client", "sandbox-secret", tokens=tokens, http=clio)

    syncer.client = client  # type: ignore[method-assign]
    app = FastAPI()
    hooks = api_webhooks.install(app, service, syncer)
    sync = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://sync",
        headers={"X-Internal-Token": settings.internal_token},
    )
    fake.sync = sync
    minted = (await sandbox_http.post("/sandbox/tokens")).json()
    async with service.sessionmaker() as s, s.begin():
        s.add(
            ClioConnection(
                firm_id=FIRM_ID,
                base_url=BASE_URL,
                access_token=minted["access_token"],
                refresh_token=minted.get("refresh_token"),
                connected_at=datetime.now(UTC) - timedelta(minutes=5),
            )
        )
    world = World(sandbox, sandbox_http, fake, service, syncer, hooks, sync)
    assert (await syncer.sync_firm(FIRM_ID)).error is None
    return world


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(database_url, tmp_path, PUBLIC)
    await w.hooks.ensure_all()
    try:
        yield w
    finally:
        await w.clio.aclose()
        await w.sync.aclose()
        await w.service.engine.dispose()


def a_bill(world: World, state: str = "awaiting_payment") -> int:
    return next(b.id for b in world.sandbox.world.bills.values() if b.state == state)


async def test_registration_with_the_handshake(world: World) -> None:
    assert {h["model"] for h in world.fake.hooks.values()} == {"bill", "contact", "matter"}
    keys = {h["url"].rsplit("/", 1)[1] for h in world.fake.hooks.values()}
    assert len(keys) == 1 and len(keys.pop()) >= 40
    bill, contact = world.fake.of("bill"), world.fake.of("contact")
    assert bill["url"].startswith(f"{PUBLIC}/webhooks/clio/")
    assert bill["fields"] == BILL_FIELDS and contact["fields"] == CONTACT_FIELDS
    assert all(h["events"] == ["created", "updated", "deleted"] for h in world.fake.hooks.values())
    assert all(h["status"] == "enabled" for h in world.fake.hooks.values())
    expires = datetime.fromisoformat(bill["expires_at"])
    assert timedelta(days=30) < expires - datetime.now(UTC) <= timedelta(days=31)
    rows = await world.rows()
    assert {m: r.status for m, r in rows.items()} == dict.fromkeys(rows, "enabled")
    assert rows["bill"].shared_secret == bill["shared_secret"]
    state = await world.hooks.webhook_state(FIRM_ID)
    assert state.mode == "webhooks" and state.active == 3 and state.reason is None
    # Nothing is due: the next check asks Clio nothing.
    world.fake.calls.clear()
    await world.hooks.ensure_all()
    assert world.fake.calls == []


async def test_a_handshake_after_creation_and_for_an_unknown_key(
    database_url: str, tmp_path: Path
) -> None:
    w = await make_world(database_url, tmp_path, PUBLIC)
    try:
        w.fake.handshake_on_create = False
        await w.hooks.ensure_all()
        assert {r.status for r in (await w.rows()).values()} == {"pending"}
        assert (await w.hooks.webhook_state(FIRM_ID)).mode == "polling"
        for hook in list(w.fake.hooks.values()):
            resp = await w.fake.handshake(hook, secret=hook["shared_secret"])
            assert resp.status_code == 200
            assert resp.headers["x-hook-secret"] == hook["shared_secret"]
        assert {r.status for r in (await w.rows()).values()} == {"enabled"}
        unknown = await w.sync.post(
            "/internal/clio/webhooks/" + "x" * 43, headers={"X-Hook-Secret": "s"}
        )
        assert unknown.status_code == 404 and "x-hook-secret" not in unknown.headers
    finally:
        await w.clio.aclose()
        await w.sync.aclose()
        await w.service.engine.dispose()


async def test_without_a_public_url_polling_alone(database_url: str, tmp_path: Path) -> None:
    w = await make_world(database_url, tmp_path, "")
    try:
        await w.hooks.ensure_all()
        await w.hooks.run_forever()  # returns at once: nothing to keep alive
        assert w.fake.calls == []
        state = await w.hooks.webhook_state(FIRM_ID)
        assert state.mode == "polling" and state.active == 0
        assert state.reason and "public URL" in state.reason
        assert state.poll_seconds == 60.0
    finally:
        await w.clio.aclose()
        await w.sync.aclose()
        await w.service.engine.dispose()


async def test_a_changed_bill_is_published_once(world: World) -> None:
    bill_id = a_bill(world)
    before = len(await world.updated())
    patched = await world.clio.patch(f"/sandbox/bills/{bill_id}", json={"subject": "Hooked"})
    assert patched.status_code == 200
    resp = await world.deliver("bill", bill_id)
    assert resp.status_code == 200 and resp.json()["queued"] is True
    await world.hooks.changes.idle(FIRM_ID)
    published = (await world.updated())[before:]
    assert [(s.source_id, s.subject) for s in published] == [(str(bill_id), "Hooked")]
    assert published[0].line_items, "the bill's lines travel with it"
    # Delivered again (Clio retries, or two deliveries race): nothing more is published.
    assert (await world.deliver("bill", bill_id)).status_code == 200
    assert (await world.deliver("bill", bill_id)).status_code == 200
    await world.hooks.changes.idle(FIRM_ID)
    assert len(await world.updated()) == before + 1


async def test_bad_signatures_and_bodies_change_nothing(world: World) -> None:
    bill_id = a_bill(world)
    await world.clio.patch(f"/sandbox/bills/{bill_id}", json={"subject": "Forged"})
    before = len(await world.updated())
    wrong = await world.deliver("bill", bill_id, signature="0" * 64)
    assert wrong.status_code == 401
    hook = world.fake.of("bill")
    body = json.dumps({"data": {"id": bill_id}, "meta": {"event": "updated"}}).encode()
    missing = await world.sync.post(path_of(hook["url"]), content=body)
    assert missing.status_code == 401
    # Signed with another firm's (or a made-up) secret.
    other = await world.sync.post(
        path_of(hook["url"]), content=body, headers={"X-Hook-Signature": sign("nope", body)}
    )
    assert other.status_code == 401
    unknown = await world.sync.post(
        "/internal/clio/webhooks/" + "k" * 43,
        content=body,
        headers={"X-Hook-Signature": sign(hook["shared_secret"], body)},
    )
    assert unknown.status_code == 404
    big = b"{" + b" " * (world.hooks.settings.clio_webhook_max_bytes + 10) + b"}"
    oversize = await world.sync.post(
        path_of(hook["url"]), content=big, headers={"X-Hook-Signature": sign("x", big)}
    )
    assert oversize.status_code == 413
    garbage = b"not json"
    bad = await world.sync.post(
        path_of(hook["url"]),
        content=garbage,
        headers={"X-Hook-Signature": sign(hook["shared_secret"], garbage)},
    )
    assert bad.status_code == 400
    no_token = await world.sync.post(
        path_of(hook["url"]), content=body, headers={"X-Internal-Token": ""}
    )
    assert no_token.status_code == 401
    await world.hooks.changes.idle(FIRM_ID)
    assert world.hooks.changes.applied == 0
    assert len(await world.updated()) == before


async def test_deleted_and_void_bills_are_removed(world: World) -> None:
    deleted, void = [b.id for b in world.sandbox.world.bills.values()][:2]
    assert (await world.deliver("bill", deleted, event="deleted")).status_code == 200
    await world.clio.patch(f"/sandbox/bills/{void}", json={"state": "void"})
    assert (await world.deliver("bill", void)).status_code == 200
    await world.hooks.changes.idle(FIRM_ID)
    removed = {e["invoice_id"]: e["state"] for e in await world.events("invoice.removed")}
    assert removed == {f"clio:{deleted}": "deleted", f"clio:{void}": "void"}
    # Deleted again: removed once only.
    assert (await world.deliver("bill", deleted, event="deleted")).status_code == 200
    await world.hooks.changes.idle(FIRM_ID)
    assert len(await world.events("invoice.removed")) == 2


async def test_a_contacts_new_email_republishes_its_bills(world: World) -> None:
    bill = world.sandbox.world.bills[a_bill(world)]
    ours = {b.id for b in world.sandbox.world.bills.values() if b.client_id == bill.client_id}
    before = len(await world.updated())
    await world.clio.patch(
        f"/sandbox/contacts/{bill.client_id}", json={"primary_email_address": "new@example.com"}
    )
    assert (await world.deliver("contact", bill.client_id)).status_code == 200
    await world.hooks.changes.idle(FIRM_ID)
    published = (await world.updated())[before:]
    assert {s.source_id for s in published} <= {str(i) for i in ours}
    assert str(bill.id) in {s.source_id for s in published}
    assert {s.client_email for s in published} == {"new@example.com"}


async def test_a_matters_change_reaches_its_bills(world: World) -> None:
    bill = next(b for b in world.sandbox.world.bills.values() if b.matter_ids)
    matter_id = bill.matter_ids[0]
    matters = world.sandbox.world.matters
    matters[matter_id] = matters[matter_id].model_copy(update={"description": "Renamed matter"})
    before = len(await world.updated())
    assert (await world.deliver("matter", matter_id)).status_code == 200
    await world.hooks.changes.idle(FIRM_ID)
    published = (await world.updated())[before:]
    assert str(bill.id) in {s.source_id for s in published}
    assert {s.matter_description for s in published} == {"Renamed matter"}


async def test_renewal_before_expiry_and_re_creation(world: World) -> None:
    rows = await world.rows()
    soon = datetime.now(UTC) + timedelta(hours=3)
    async with world.service.sessionmaker() as s, s.begin():
        for row in (await s.scalars(select(ClioWebhook))).all():
            row.expires_at = soon
    # The contact webhook is gone from Clio (expired or deleted there).
    del world.fake.hooks[int(rows["contact"].webhook_id or 0)]
    world.fake.calls.clear()
    await world.hooks.ensure_all()
    methods = sorted(world.fake.calls)
    assert methods == [
        ("PATCH", f"webhooks/{rows['bill'].webhook_id}.json"),
        ("PATCH", f"webhooks/{rows['contact'].webhook_id}.json"),
        ("PATCH", f"webhooks/{rows['matter'].webhook_id}.json"),
        ("POST", "webhooks.json"),
    ]
    after = await world.rows()
    assert all(r.expires_at and r.expires_at > soon + timedelta(days=29) for r in after.values())
    assert after["bill"].webhook_id == rows["bill"].webhook_id
    assert after["contact"].webhook_id != rows["contact"].webhook_id
    assert after["contact"].status == "enabled"
    assert world.fake.of("bill")["expires_at"] == after["bill"].expires_at.isoformat()
    # The new contact webhook delivers with its own secret; the old secret is gone.
    async with world.service.sessionmaker() as s:
        count = await s.scalar(select(func.count()).select_from(ClioWebhook))
    assert count == 3
    assert (await world.deliver("contact", 1)).status_code == 200


async def test_the_state_for_settings_and_a_disconnected_firm(world: World) -> None:
    fields = await world.hooks.status_fields(FIRM_ID)
    assert fields["webhooks"].mode == "webhooks"
    bill_id = a_bill(world)
    # Disconnected without forgetting (the token was already revoked): Clio is told 410,
    # which stops the webhook there.
    async with world.service.sessionmaker() as s, s.begin():
        await s.delete(await s.get(ClioConnection, FIRM_ID))
    assert (await world.deliver("bill", bill_id)).status_code == 410
    state = await world.hooks.webhook_state(FIRM_ID)
    assert state.mode == "polling" and state.reason == "Clio is not connected."


async def test_forgetting_a_firm_deletes_its_webhooks(world: World) -> None:
    hook = world.fake.of("bill")
    await world.hooks.forget_firm(FIRM_ID)
    assert world.fake.hooks == {}
    assert await world.rows() == {}
    body = b'{"data": {"id": 1}, "meta": {"event": "updated"}}'
    resp = await world.sync.post(
        path_of(hook["url"]),
        content=body,
        headers={"X-Hook-Signature": sign(hook["shared_secret"], body)},
    )
    assert resp.status_code == 404
