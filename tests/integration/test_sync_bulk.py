"""sync against the Clio sandbox (in-process), issue 16: a first sync costs a request per 200
records of each listing; a bill voided or deleted in Clio is removed (invoice.removed); a bill
that cannot be shown or paid is quarantined with its reason and picked up once fixed, also when
the fix is to its client's contact; Sync now runs behind a 202 and never twice at once; each
firm polls on its own."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from sandbox.clio import SandboxState
from services.sync import api
from services.sync.mapping import BILL_FIELDS
from services.sync.models import ClioConnection, Quarantined, SyncRun
from services.sync.progress import SyncResult
from services.sync.syncer import Syncer
from shared.events import InvoiceSnapshot
from shared.runtime import Service
from tests.integration.sync_world import BASE_URL, connected

FIRM_ID = "firm-bulk"
INTERNAL = {"X-Internal-Token": "dev-internal-token"}


@dataclass
class World:
    sandbox: SandboxState
    http: httpx.AsyncClient
    service: Service
    syncer: Syncer
    api: httpx.AsyncClient

    def requests_by_path(self) -> Counter[str]:
        return Counter(r.path for r in self.sandbox.requests if r.path.startswith("/api/v4/"))

    async def events(self, routing_key: str) -> list[dict[str, Any]]:
        outbox = self.service.outbox
        async with self.service.sessionmaker() as s:
            rows = await s.execute(
                select(outbox.c.payload)
                .where(outbox.c.routing_key == routing_key)
                .order_by(outbox.c.id)
            )
            return [json.loads(r[0]) for r in rows]

    async def published(self) -> dict[str, InvoiceSnapshot]:
        found = {}
        for payload in await self.events("invoice.updated"):
            snap = InvoiceSnapshot.model_validate(payload["invoice"])
            found[snap.source_id] = snap
        return found

    async def quarantine(self) -> dict[str, dict[str, Any]]:
        resp = await self.api.get(f"/internal/firms/{FIRM_ID}/quarantine", headers=INTERNAL)
        assert resp.status_code == 200, resp.text
        return {item["source_id"]: item for item in resp.json()}

    async def clio_bill(self, bill_id: int) -> dict[str, Any]:
        token = (await self.http.post("/sandbox/tokens")).json()["access_token"]
        resp = await self.http.get(
            f"/api/v4/bills/{bill_id}.json",
            params={"fields": BILL_FIELDS},
            headers={"Authorization": f"Bearer {token}"},
        )
        return dict(resp.json()["data"])


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    c = await connected(database_url, tmp_path, FIRM_ID)
    sandbox, http, service, syncer = c.sandbox, c.http, c.service, c.syncer
    app = FastAPI()
    app.include_router(api.router(service, syncer))
    internal = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sync")
    try:
        yield World(sandbox, http, service, syncer, internal)
    finally:
        await internal.aclose()
        await c.aclose()


async def test_a_first_sync_costs_a_request_per_200_records(world: World) -> None:
    contacts = list(world.sandbox.world.contacts)
    for n in range(230):
        made = await world.http.post(
            "/sandbox/bills",
            json={
                "client_id": contacts[n % len(contacts)],
                "line_items": [
                    {"description": f"Advice {n}", "price": "120.00", "quantity": "1.5"},
                    {"description": f"Filing fee {n}", "price": "45.10", "kind": "Expense"},
                ],
            },
        )
        assert made.status_code == 201, made.text
    sandbox = world.sandbox.world
    n_bills, n_lines = len(sandbox.bills), len(sandbox.line_items)
    assert n_bills > 200 and n_lines > 400

    result = await world.syncer.sync_firm(FIRM_ID)
    assert result.error is None and result.fetched == n_bills
    counted = world.requests_by_path()
    assert counted["/api/v4/bills.json"] == -(-n_bills // 200)
    assert counted["/api/v4/line_items.json"] == -(-n_lines // 200)
    assert counted["/api/v4/contacts.json"] == 1
    assert sum(counted.values()) == 1 + -(-n_lines // 200) + -(-n_bills // 200)
    published = await world.published()
    assert len(published) == n_bills - 1  # the seed's void bill is never published
    assert all(
        sum(i.total_minor for i in s.line_items) == s.total_minor for s in published.values()
    )

    resp = await world.api.get(f"/internal/firms/{FIRM_ID}/sync/progress", headers=INTERNAL)
    assert resp.status_code == 200
    progress = resp.json()
    assert progress["running"] is False and progress["finished_at"] is not None
    assert progress["fetched"] == progress["total"] == n_bills
    assert progress["requests"] == sum(counted.values())
    async with world.service.sessionmaker() as s:
        conn = await s.get(ClioConnection, FIRM_ID)
        assert conn is not None and conn.last_success_at is not None
        assert conn.line_items_cursor is not None and conn.last_error is None


async def test_void_and_deleted_bills_are_removed_not_updated(world: World) -> None:
    await world.syncer.sync_firm(FIRM_ID)
    published = await world.published()
    unpaid = [b for b in world.sandbox.world.bills.values() if b.state == "awaiting_payment"]
    voided, deleted = unpaid[0], unpaid[1]
    client_id = next(iter(world.sandbox.world.contacts))
    never = await world.http.post(
        "/sandbox/bills", json={"client_id": client_id, "total": "90.00", "state": "void"}
    )
    assert never.status_code == 201, never.text
    for bill, state in ((voided, "void"), (deleted, "deleted")):
        resp = await world.http.patch(f"/sandbox/bills/{bill.id}", json={"state": state})
        assert resp.status_code == 200, resp.text
    updated_before = len(await world.events("invoice.updated"))

    await world.syncer.sync_firm(FIRM_ID)
    removed = await world.events("invoice.removed")
    assert {(e["invoice_id"], e["state"]) for e in removed} == {
        (published[str(voided.id)].invoice_id, "void"),
        (published[str(deleted.id)].invoice_id, "deleted"),
    }
    assert len(await world.events("invoice.updated")) == updated_before
    # Once: the next round lists them again (the overlap) and publishes nothing more.
    await world.syncer.sync_firm(FIRM_ID)
    assert len(await world.events("invoice.removed")) == 2
    assert str(never.json()["data"]["id"]) not in await world.published()


async def test_bad_bills_are_quarantined_and_picked_up_once_fixed(world: World) -> None:
    sandbox = world.sandbox.world
    good = next(b for b in sandbox.bills.values() if b.state == "awaiting_payment")
    template = await world.clio_bill(good.id)
    broken = {
        9_000_001: ({"client": None}, "no client"),
        9_000_002: ({"total": -5}, "total is negative"),
        9_000_003: ({"currency": {"code": "XYZ"}}, "unknown currency"),
        9_000_004: ({"issued_at": "31/02/2026"}, "issued_at is not a date"),
    }
    for bill_id, (change, _) in broken.items():
        raw = {**template, "id": bill_id, "number": f"BAD-{bill_id}", **change}
        made = await world.http.post("/sandbox/bills/raw", json=raw)
        assert made.status_code == 201, made.text
    silent = await world.http.post("/sandbox/contacts", json={"name": "Quiet Client LLC"})
    silent_id = silent.json()["data"]["id"]
    noemail = await world.http.post("/sandbox/bills", json={"client_id": silent_id, "total": "75"})
    noemail_id = str(noemail.json()["data"]["id"])

    result = await world.syncer.sync_firm(FIRM_ID)
    assert result.error is None and result.quarantined == 5 and result.changed > 40
    held = await world.quarantine()
    assert set(held) == {str(i) for i in broken} | {noemail_id}
    for bill_id, (_, reason) in broken.items():
        assert reason in held[str(bill_id)]["reason"]
        assert held[str(bill_id)]["source_url"] == f"{BASE_URL}/nc/#/bills/{bill_id}"
    assert "Quiet Client LLC has no email" in held[noemail_id]["reason"]

    # Fixed in Clio: the bills themselves, and the contact (the bill does not change).
    for bill_id in broken:
        fix = {k: template[k] for k in ("client", "total", "currency", "issued_at")}
        resp = await world.http.patch(f"/sandbox/bills/{bill_id}", json=fix)
        assert resp.status_code == 200, resp.text
    resp = await world.http.patch(
        f"/sandbox/contacts/{silent_id}", json={"primary_email_address": "ap@quiet.example"}
    )
    assert resp.status_code == 200, resp.text
    result = await world.syncer.sync_firm(FIRM_ID)
    assert result.quarantined == 0
    assert await world.quarantine() == {}
    published = await world.published()
    assert published[noemail_id].client_email == "ap@quiet.example"
    assert {str(i) for i in broken} <= set(published)


async def test_sync_now_answers_202_and_never_runs_twice(world: World) -> None:
    url = f"/internal/firms/{FIRM_ID}/sync"
    first = await world.api.post(url, headers=INTERNAL)
    second = await world.api.post(url, headers=INTERNAL)
    assert first.status_code == second.status_code == 202
    assert first.json()["running"] is True
    await world.syncer.join(FIRM_ID)
    async with world.service.sessionmaker() as s:
        runs = await s.scalar(select(func.count()).select_from(SyncRun))
    assert runs == 1
    done = (await world.api.get(f"{url}/progress", headers=INTERNAL)).json()
    assert done["running"] is False and done["total"] == done["fetched"] > 0
    refused = await world.api.post("/internal/firms/nobody/sync", headers=INTERNAL)
    assert refused.status_code == 409


async def test_each_firm_polls_on_its_own(world: World) -> None:
    async with world.service.sessionmaker() as s, s.begin():
        s.add(
            ClioConnection(
                firm_id="firm-slow",
                base_url=BASE_URL,
                access_token="x",
                connected_at=datetime.now(UTC),
            )
        )
    world.syncer.settings.sync_interval_seconds = 0.01
    slow_started, release, quick_twice = asyncio.Event(), asyncio.Event(), asyncio.Event()
    quick_rounds = 0

    async def sync_firm(firm_id: str) -> SyncResult:
        nonlocal quick_rounds
        if firm_id == "firm-slow":
            slow_started.set()
            await release.wait()  # a long first sync
        else:
            quick_rounds += 1
            if quick_rounds == 2:
                quick_twice.set()
        return SyncResult()

    world.syncer.sync_firm = sync_firm  # type: ignore[method-assign]
    poller = asyncio.create_task(world.syncer.run_forever())
    try:
        await asyncio.wait_for(slow_started.wait(), 10)
        await asyncio.wait_for(quick_twice.wait(), 10)
        assert not release.is_set()
    finally:
        release.set()
        poller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poller


async def test_quarantine_rows_keep_the_raw_bill(world: World) -> None:
    made = await world.http.post("/sandbox/bills/raw", json={"id": 9_100_001, "number": "X"})
    assert made.status_code == 201
    await world.syncer.sync_firm(FIRM_ID)
    async with world.service.sessionmaker() as s:
        row = await s.scalar(select(Quarantined).where(Quarantined.source_id == "9100001"))
    assert row is not None and json.loads(row.raw)["number"] == "X"


async def test_apply_bill_alone_takes_the_stored_lines(world: World) -> None:
    """One changed bill (as the webhook intake applies it): its lines come from the store."""
    await world.syncer.sync_firm(FIRM_ID)
    published = await world.published()
    bill_id = next(b.id for b in world.sandbox.world.bills.values() if b.state == "paid")
    bill = {**await world.clio_bill(bill_id), "subject": "Changed by hand", "etag": '"new"'}
    result = SyncResult()
    async with world.service.sessionmaker() as s, s.begin():
        contacts = await world.syncer.contacts_map(s, FIRM_ID)
        await world.syncer.apply_bill(s, FIRM_ID, bill, contacts, result)
    assert result.changed == 1
    snap = (await world.published())[str(bill_id)]
    assert snap.subject == "Changed by hand"
    assert snap.line_items == published[str(bill_id)].line_items != []
