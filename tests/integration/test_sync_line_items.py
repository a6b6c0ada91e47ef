"""sync against the Clio sandbox (in-process): line items are listed across bills (200 a page,
then only those updated since the cursor), never one request per bill on a first sync; a line
removed from a changed bill does not linger; the lines travel in the published snapshot."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from sandbox.clio import SandboxState
from services.sync.syncer import Syncer
from shared.events import InvoiceSnapshot
from shared.runtime import Service
from tests.integration.sync_world import connected

FIRM_ID = "firm-lines"


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
    c = await connected(database_url, tmp_path, FIRM_ID)
    sandbox, http, service, syncer = c.sandbox, c.http, c.service, c.syncer
    try:
        yield World(sandbox, http, service, syncer)
    finally:
        await c.aclose()


BULK_FIELDS = [
    "id,type,kind,date,description,quantity,price,total,group_ordering,updated_at,bill{id}"
]


async def test_line_items_are_listed_across_bills_never_per_bill(world: World) -> None:
    first = await world.syncer.sync_firm(FIRM_ID)
    assert first.error is None and first.changed > 0
    # A bill void in Clio before it was ever published is not published at all.
    bills = {b.id: b for b in world.sandbox.world.bills.values() if b.state != "void"}
    assert len(bills) < len(world.sandbox.world.bills)
    # One listing across bills, 200 a page, each line saying whose it is: no bill_id request.
    requests = world.line_item_requests()
    pages = -(-len(world.sandbox.world.line_items) // 200)
    assert len(requests) == pages
    assert all("bill_id" not in p and p["fields"] == BULK_FIELDS for p in requests)
    assert all(p["limit"] == ["200"] and "updated_since" not in p for p in requests)

    published = {s.source_id: s for s in await world.published()}
    assert len(published) == len(bills)
    for bill_id, bill in bills.items():
        snap = published[str(bill_id)]
        lines = [i for i in world.sandbox.world.line_items.values() if i.bill_id == bill_id]
        assert len(snap.line_items) == len(lines)
        assert sum(i.total_minor for i in snap.line_items) == snap.total_minor
        if bill.kind == "trust_kind":
            assert snap.kind == "trust_request"
            assert {i.kind for i in snap.line_items} == {"other"}
    assert any(b.kind == "trust_kind" for b in bills.values())
    fees = [i for s in published.values() for i in s.line_items if i.kind == "fee"]
    expenses = [i for s in published.values() for i in s.line_items if i.kind == "expense"]
    assert fees and expenses
    assert all(i.date is not None and i.rate_minor > 0 and i.description for i in fees)

    # Nothing changed: one listing of lines updated since the cursor, nothing published.
    world.sandbox.requests.clear()
    await world.syncer.sync_firm(FIRM_ID)
    again = world.line_item_requests()
    assert len(again) == 1 and "updated_since" in again[0] and "bill_id" not in again[0]
    assert len(await world.published()) == len(bills)

    # A bill changes in Clio but not its lines (they still add up): no request for its lines,
    # and its snapshot, republished, keeps them.
    target = next(b for b in bills.values() if b.state == "awaiting_payment")
    changed = await world.http.patch(f"/sandbox/bills/{target.id}", json={"subject": "Revised"})
    assert changed.status_code == 200, changed.text
    world.sandbox.requests.clear()
    await world.syncer.sync_firm(FIRM_ID)
    assert all("bill_id" not in p for p in world.line_item_requests())
    newest = (await world.published())[-1]
    assert newest.source_id == str(target.id) and newest.subject == "Revised"
    assert newest.line_items == published[str(target.id)].line_items
    # The mirror holds what was published: the next round publishes nothing more.
    count = len(await world.published())
    await world.syncer.sync_firm(FIRM_ID)
    assert len(await world.published()) == count


async def test_a_line_removed_from_a_bill_does_not_linger(world: World) -> None:
    await world.syncer.sync_firm(FIRM_ID)
    sandbox = world.sandbox.world
    target = next(
        b
        for b in sandbox.bills.values()
        if b.state == "awaiting_payment"
        and sum(1 for i in sandbox.line_items.values() if i.bill_id == b.id) >= 2
    )
    lines = sorted((i for i in sandbox.line_items.values() if i.bill_id == target.id), key=id)
    gone = lines[-1]
    # Clio takes the line off the bill and lowers the bill's total: the listing of lines
    # updated since the cursor cannot say so.
    del sandbox.line_items[gone.id]
    total = str(target.total - gone.total)
    changed = await world.http.patch(
        f"/sandbox/bills/{target.id}", json={"total": total, "sub_total": total}
    )
    assert changed.status_code == 200, changed.text
    world.sandbox.requests.clear()
    await world.syncer.sync_firm(FIRM_ID)
    per_bill = [p["bill_id"] for p in world.line_item_requests() if "bill_id" in p]
    assert per_bill == [[str(target.id)]]
    newest = (await world.published())[-1]
    assert newest.source_id == str(target.id)
    assert len(newest.line_items) == len(lines) - 1
    assert gone.description not in [i.description for i in newest.line_items] or len(
        {i.description for i in newest.line_items}
    ) < len(lines)
    assert sum(i.total_minor for i in newest.line_items) == newest.total_minor


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
    # Its lines come with the listing of lines updated since the cursor: nothing per bill.
    assert [("bill_id" in p) for p in world.line_item_requests()] == [False]
    snap = (await world.published())[-1]
    assert snap.source_id == str(made.json()["data"]["id"])
    assert [
        (i.kind, i.description, i.quantity, i.rate_minor, i.total_minor) for i in snap.line_items
    ] == [
        ("fee", "Research memo", "2.3", 41_000, 94_300),
        ("expense", "Deposition transcript", "1", 31_240, 31_240),
    ]
