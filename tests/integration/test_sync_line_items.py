"""sync against the Clio sandbox (in-process): a bill's line items are fetched when the bill
is new or its etag changed, never on every sync, and travel in the published snapshot."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from sandbox.clio import SandboxState, create_app
from services.sync.app import MIGRATIONS
from services.sync.clio import ClioClient, Tokens
from services.sync.models import Base, ClioConnection
from services.sync.settings import SyncSettings
from services.sync.syncer import Syncer
from shared.events import InvoiceSnapshot
from shared.migrations import upgrade_async
from shared.runtime import Service

FIRM_ID = "firm-lines"
BASE_URL = "http://clio.test"


@dataclass
class World:
    sandbox: SandboxState
    http: httpx.AsyncClient
    service: Service
    syncer: Syncer

    def line_item_requests(self) -> list[dict[str, list[str]]]:
        return [r.params for r in self.sandbox.requests if r.path == "/api/v4/line_items.json"]

    async def published(self) -> list[InvoiceSnapshot]:
        async with self.service.sessionmaker() as s:
            rows = await s.execute(
                select(self.service.outbox.c.payload)
                .where(self.service.outbox.c.routing_key == "invoice.updated")
                .order_by(self.service.outbox.c.id)
            )
            return [InvoiceSnapshot.model_validate(json.loads(r[0])["invoice"]) for r in rows]


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    await upgrade_async(MIGRATIONS, database_url)
    sandbox = SandboxState()
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(sandbox)), base_url=BASE_URL
    )
    settings = SyncSettings(
        database_url=database_url, environment="test", var_dir=tmp_path, clio_base_url=BASE_URL
    )
    service = Service(settings, Base.metadata, MIGRATIONS)
    syncer = Syncer(service, settings)

    def client(conn: ClioConnection | None = None) -> ClioClient:
        tokens = Tokens(conn.access_token, conn.refresh_token, None) if conn else None
        return ClioClient(BASE_URL, "sandbox-client", "sandbox-secret", tokens=tokens, http=http)

    syncer.client = client  # type: ignore[method-assign]
    minted = (await http.post("/sandbox/tokens")).json()
    async with service.sessionmaker() as s, s.begin():
        s.add(
            ClioConnection(
                firm_id=FIRM_ID,
                base_url=BASE_URL,
                access_token=minted["access_token"],
                refresh_token=minted.get("refresh_token"),
                connected_at=datetime.now(UTC),
            )
        )
    try:
        yield World(sandbox, http, service, syncer)
    finally:
        await http.aclose()
        await service.engine.dispose()


async def test_line_items_are_fetched_for_new_and_changed_bills_only(world: World) -> None:
    first = await world.syncer.sync_firm(FIRM_ID)
    assert first.error is None and first.changed > 0
    bills = {b.id: b for b in world.sandbox.world.bills.values()}
    # One request per bill (none past 200 lines), each for that bill with the schema's fields.
    requests = world.line_item_requests()
    assert sorted(int(p["bill_id"][0]) for p in requests) == sorted(bills)
    assert all(
        p["fields"] == ["id,type,kind,date,description,quantity,price,total,group_ordering"]
        for p in requests
    )

    published = {s.source_id: s for s in await world.published()}
    assert len(published) == len(bills)
    for bill_id, bill in bills.items():
        snap = published[str(bill_id)]
        lines = [i for i in world.sandbox.world.line_items.values() if i.bill_id == bill_id]
        assert len(snap.line_items) == len(lines)
        assert sum(i.total_minor for i in snap.line_items) == snap.total_minor
        if bill.kind == "trust_kind":
            assert {i.kind for i in snap.line_items} == {"other"}
    fees = [i for s in published.values() for i in s.line_items if i.kind == "fee"]
    expenses = [i for s in published.values() for i in s.line_items if i.kind == "expense"]
    assert fees and expenses
    assert all(i.date is not None and i.rate_minor > 0 and i.description for i in fees)

    # Nothing changed: a second sync asks for no line items and publishes nothing.
    world.sandbox.requests.clear()
    await world.syncer.sync_firm(FIRM_ID)
    assert world.line_item_requests() == []
    assert len(await world.published()) == len(bills)

    # One bill changes in Clio: only its lines are fetched again, and its snapshot republished
    # keeps them.
    target = next(b for b in bills.values() if b.state == "awaiting_payment")
    changed = await world.http.patch(f"/sandbox/bills/{target.id}", json={"subject": "Revised"})
    assert changed.status_code == 200, changed.text
    world.sandbox.requests.clear()
    await world.syncer.sync_firm(FIRM_ID)
    assert [p["bill_id"] for p in world.line_item_requests()] == [[str(target.id)]]
    newest = (await world.published())[-1]
    assert newest.source_id == str(target.id) and newest.subject == "Revised"
    assert newest.line_items == published[str(target.id)].line_items


async def test_a_new_itemised_bill_arrives_with_its_lines(world: World) -> None:
    await world.syncer.sync_firm(FIRM_ID)
    client_id = next(iter(world.sandbox.world.contacts))
    made = await world.http.post(
        "/sandbox/bills",
        json={
            "client_id": client_id,
            "line_items": [
                {"description": "Research memo", "price": "410.00", "quantity": "2.3"},
                {"description": "Deposition transcript", "price": "312.40", "kind": "Expense"},
            ],
        },
    )
    assert made.status_code == 201, made.text
    world.sandbox.requests.clear()
    await world.syncer.sync_firm(FIRM_ID)
    assert len(world.line_item_requests()) == 1
    snap = (await world.published())[-1]
    assert snap.source_id == str(made.json()["data"]["id"])
    assert [
        (i.kind, i.description, i.quantity, i.rate_minor, i.total_minor) for i in snap.line_items
    ] == [
        ("fee", "Research memo", "2.3", 41_000, 94_300),
        ("expense", "Deposition transcript", "1", 31_240, 31_240),
    ]
