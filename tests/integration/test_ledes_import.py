"""LEDES 1998B import, in process: the gateway's Import LEDES page, the real sync service (on
both backends) and the real envelope service. A file goes in; its good invoices are imported
and its bad ones reported by line; once the client has an email, sync's outbox holds
`invoice.updated` (source "ledes"), which, delivered to envelope as the bus would, puts the
invoice on the Invoices page. Then re-imports, payments made here, and hostile files."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

import services.gateway.app as gateway_app
from services.envelope.app import MIGRATIONS as ENVELOPE_MIGRATIONS
from services.envelope.app import create_app as create_envelope
from services.envelope.settings import EnvelopeSettings
from services.gateway.app import MIGRATIONS as GATEWAY_MIGRATIONS
from services.gateway.firms import ensure_firm_user
from services.gateway.settings import GatewaySettings
from services.sync import ledes
from services.sync.app import MIGRATIONS as SYNC_MIGRATIONS
from services.sync.app import create_app as create_sync
from services.sync.ledes_import import LedesImporter, invoice_id_for
from services.sync.models import LedesInvoice
from services.sync.settings import SyncSettings
from shared.api.ledes import ClientEmail, ImportOptions
from shared.events import (
    Allocation,
    FirmProfile,
    FirmUpdated,
    InvoiceState,
    InvoiceUpdated,
    PaymentFailed,
    PaymentMethod,
    PaymentRefunded,
    PaymentSucceeded,
)
from shared.migrations import upgrade_async
from shared.runtime import Service
from tests.unit.test_ledes import line, two_lines

pytestmark = pytest.mark.timeout(120)

FIRM, OTHER_FIRM = "9a1d3c55-0000-4e2f-8b7a-1c2d3e4f5a60", "other-firm"
EMAIL, PASSWORD = "staff@hartwell.test", "a-long-password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def ledes_file() -> bytes:
    """INV-1 (ACME, two lines, good), INV-2 (ACME, one bad line: line 6), INV-3 (GLOBEX)."""
    rows = two_lines() + [
        line(INVOICE_NUMBER="INV-2", INVOICE_TOTAL="80.00", LINE_ITEM_TOTAL="75.00"),
        line(
            INVOICE_NUMBER="INV-2",
            INVOICE_TOTAL="80.00",
            LINE_ITEM_NUMBER="2",
            LINE_ITEM_TOTAL="5.00",
            LINE_ITEM_DATE="2026-11-05",
        ),
        line(CLIENT_ID="GLOBEX", INVOICE_NUMBER="G-1", INVOICE_TOTAL="20.00", LINE_ITEM_TOTAL="20"),
    ]
    return ledes.render(rows).encode()


@dataclass
class World:
    http: httpx.AsyncClient
    sync: FastAPI
    envelope: FastAPI
    csrf: str = ""

    @property
    def sync_service(self) -> Service:
        return self.sync.state.service  # type: ignore[no-any-return]

    async def get(self, url: str) -> httpx.Response:
        resp = await self.http.get(url)
        found = CSRF.search(resp.text)
        if found:
            self.csrf = found[1]
        return resp

    async def upload(
        self, data: bytes, name: str = "november.txt", **fields: str
    ) -> httpx.Response:
        await self.get("/invoices/import")
        return await self.http.post(
            "/invoices/import",
            data={"csrf_token": self.csrf, **fields},
            files={"file": (name, data, "text/plain")},
        )

    async def post(self, url: str, data: dict[str, Any]) -> httpx.Response:
        return await self.http.post(url, data={"csrf_token": self.csrf, **data})

    async def published(self) -> list[InvoiceUpdated]:
        outbox = self.sync_service.outbox
        async with self.sync_service.sessionmaker() as s:
            rows = await s.execute(
                select(outbox.c.payload)
                .where(outbox.c.routing_key == "invoice.updated")
                .order_by(outbox.c.id)
            )
            return [InvoiceUpdated.model_validate(json.loads(r[0])) for r in rows]

    async def deliver(self, events: list[InvoiceUpdated]) -> None:
        """To envelope, as the bus delivers sync's outbox."""
        desk = self.envelope.state.desk
        for ev in events:
            async with desk.service.sessionmaker() as s, s.begin():
                await desk.on_invoice_updated(s, ev)


@pytest.fixture
async def world(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    envelope_url = f"sqlite+aiosqlite:///{tmp_path / 'envelope.db'}"
    gateway_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await upgrade_async(SYNC_MIGRATIONS, database_url)
    await upgrade_async(ENVELOPE_MIGRATIONS, envelope_url)
    await upgrade_async(GATEWAY_MIGRATIONS, gateway_url)
    sync = create_sync(SyncSettings(database_url=database_url, environment="test"))
    envelope = create_envelope(EnvelopeSettings(database_url=envelope_url, environment="test"))
    async with envelope.state.service.sessionmaker() as s, s.begin():
        firm = FirmProfile(name="Hartwell & Moreno", email="billing@hartwell.test")
        await envelope.state.desk.on_firm_updated(s, FirmUpdated(firm_id=FIRM, firm=firm))
    settings = GatewaySettings(database_url=gateway_url, environment="test")
    token = {"X-Internal-Token": settings.internal_token}

    class InProcess:
        def __init__(self, settings: GatewaySettings) -> None:
            def client(app: FastAPI, name: str) -> httpx.AsyncClient:
                return httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url=f"http://{name}", headers=token
                )

            self.sync = client(sync, "sync")
            self.envelope = client(envelope, "envelope")
            self.payments = self.mailer = client(FastAPI(), "other")

        call = staticmethod(gateway_app.Upstream.call)

    monkeypatch.setattr(gateway_app, "Upstream", InProcess)
    gateway = gateway_app.create_app(settings)
    service = gateway.state.service
    async with service.sessionmaker() as s, s.begin():
        await ensure_firm_user(
            service,
            s,
            firm_id=FIRM,
            firm_name="Hartwell & Moreno",
            email=EMAIL,
            password=PASSWORD,
            user_name="Sam Staff",
        )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://gateway"
    ) as http:
        w = World(http, sync, envelope)
        await w.get("/login")
        resp = await w.post("/login", {"email": EMAIL, "password": PASSWORD})
        assert resp.status_code == 303, resp.text
        yield w
    for app in (gateway, sync, envelope):
        await app.state.service.engine.dispose()


def rows_of(page: str, css: str) -> list[str]:
    return [
        re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", m))).strip()
        for m in re.findall(rf'<tr class="{css}"[^>]*>(.*?)</tr>', page, re.S)
    ]


async def test_import_publish_and_the_invoices_page(world: World) -> None:
    invoices = await world.get("/invoices")
    assert 'href="/invoices/import"' in invoices.text and "Import LEDES" in invoices.text

    resp = await world.upload(ledes_file())
    assert resp.status_code == 303, resp.text
    page = (await world.get(resp.headers["location"])).text
    assert rows_of(page, "imported") == [
        "INV-1 ACME $1,500.50 New Needs client email",
        "G-1 GLOBEX $20.00 New Needs client email",
    ]
    assert rows_of(page, "skipped") == [
        "INV-2 ACME 6 LINE_ITEM_DATE is not a date (YYYYMMDD)",
    ]
    assert 'data-client="ACME"' in page and 'data-client="GLOBEX"' in page
    # Nothing is published for a client without an email.
    assert await world.published() == []

    bad = await world.post(
        resp.headers["location"] + "/clients", {"client_ref": "ACME", "email": "not-an-email"}
    )
    assert bad.status_code == 422
    assert "Enter an email address" in bad.text and await world.published() == []
    saved = await world.post(
        resp.headers["location"] + "/clients",
        {"client_ref": "ACME", "email": "ap@acme.test", "name": "Acme <Corp>"},
    )
    assert saved.status_code == 303
    page = (await world.get(saved.headers["location"])).text
    assert 'data-client="ACME"' not in page and 'data-client="GLOBEX"' in page
    assert "Acme &lt;Corp&gt;" in page and "Acme <Corp>" not in page

    (event,) = await world.published()
    snap = event.invoice
    assert (snap.source, snap.number, snap.client_email, snap.client_name) == (
        "ledes",
        "INV-1",
        "ap@acme.test",
        "Acme <Corp>",
    )
    assert (snap.total_minor, snap.balance_minor, snap.state) == (
        150050,
        150050,
        InvoiceState.awaiting_payment,
    )
    assert str(snap.due_at) == "2026-12-30"  # 30 days after 2026-11-30
    await world.deliver([event])
    listing = await world.get("/invoices?state=all")
    assert listing.status_code == 200
    assert "INV-1" in listing.text and "Acme &lt;Corp&gt;" in listing.text
    assert "G-1" not in listing.text


async def test_reimport_updates_and_never_reopens_a_paid_invoice(world: World) -> None:
    first = await world.upload(ledes_file())
    await world.post(
        first.headers["location"] + "/clients", {"client_ref": "ACME", "email": "a@b.co"}
    )
    assert len(await world.published()) == 1
    # The same file again: nothing changed, nothing published, nothing duplicated.
    again = await world.upload(ledes_file(), due_days="30")
    page = (await world.get(again.headers["location"])).text
    assert rows_of(page, "imported")[0].startswith("INV-1 ACME")
    assert "Unchanged" in rows_of(page, "imported")[0]
    assert len(await world.published()) == 1
    # A chosen due date changes the invoice: updated, published once more, same id.
    moved = await world.upload(ledes_file(), due_date="2027-01-15")
    page = (await world.get(moved.headers["location"])).text
    assert "Updated" in rows_of(page, "imported")[0]
    events = await world.published()
    assert len(events) == 2 and events[0].invoice.invoice_id == events[1].invoice.invoice_id
    assert str(events[1].invoice.due_at) == "2027-01-15"

    # Paid online in full: sync records it and publishes the invoice as paid.
    importer: LedesImporter = world.sync.state.ledes
    invoice_id = invoice_id_for(("12-3456789", "ACME", "INV-1"))
    paid = PaymentSucceeded(
        firm_id=FIRM,
        payment_id="p1",
        method=PaymentMethod.card,
        currency="USD",
        amount_minor=150050,
        allocations=[Allocation(invoice_id=invoice_id, amount_minor=150050)],
    )
    async with world.sync_service.sessionmaker() as s, s.begin():
        await importer.on_payment(s, paid)
    last = (await world.published())[-1].invoice
    assert (last.state, last.balance_minor, last.paid_minor) == (InvoiceState.paid, 0, 150050)

    # The billing system still shows it unpaid: a re-import leaves it paid, and says so.
    after = await world.upload(ledes_file())
    page = (await world.get(after.headers["location"])).text
    assert "INV-1 ACME 3 already paid here; a re-import does not reopen a paid invoice" in (
        rows_of(page, "skipped")
    )
    assert len(await world.published()) == 3
    async with world.sync_service.sessionmaker() as s:
        rows = (await s.scalars(select(LedesInvoice).where(LedesInvoice.firm_id == FIRM))).all()
    assert sorted(r.number for r in rows) == ["G-1", "INV-1"]


async def test_hostile_uploads_get_clear_answers(world: World) -> None:
    # 50 MB: refused from its declared size, before it is read.
    big = await world.upload(b"LEDES1998B[]\n" + b"x" * (50 * 1024 * 1024))
    assert big.status_code == 413
    assert "larger than 5 MB" in big.text
    # Binary junk: read, and reported by line.
    junk = await world.upload(bytes(range(256)) * 64, name="photo.png")
    assert junk.status_code == 303
    page = (await world.get(junk.headers["location"])).text
    assert "the first line must be LEDES1998B[]" in page
    assert "No invoice in this file could be imported." in page
    # Formula injection and HTML in fields: kept as text, escaped on every page.
    rows = [
        line(
            INVOICE_NUMBER='<img src=x onerror="alert(1)">',
            CLIENT_ID="<script>x</script>",
            INVOICE_TOTAL="1000.00",
            LINE_ITEM_DESCRIPTION='=HYPERLINK("http://evil.test","click")',
        )
    ]
    hostile = await world.upload(ledes.render(rows).encode(), name='<b>"x".txt')
    page = (await world.get(hostile.headers["location"])).text
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<img src=x" not in page and "<b>" not in page
    # Without the form's token, or for another firm's import: refused.
    no_csrf = await world.http.post(
        "/invoices/import", files={"file": ("a.txt", ledes_file(), "text/plain")}
    )
    assert no_csrf.status_code == 403
    importer: LedesImporter = world.sync.state.ledes
    theirs = await importer.import_file(OTHER_FIRM, ledes_file(), ImportOptions())
    assert (await world.get(f"/invoices/import/{theirs.import_id}")).status_code == 404
    assert (await world.get("/invoices/import/999")).status_code == 404
    taken = await world.post(
        f"/invoices/import/{theirs.import_id}/clients", {"client_ref": "ACME", "email": "a@b.co"}
    )
    assert taken.status_code == 404
    # Options out of range, a missing file, an empty file: a 4xx with the reason.
    assert (await world.upload(ledes_file(), due_days="-3")).status_code == 422
    assert (await world.upload(b"")).status_code == 400
    missing = await world.http.post("/invoices/import", data={"csrf_token": world.csrf})
    assert missing.status_code == 400 and "Choose a LEDES 1998B file" in missing.text
    unknown = await world.post(
        "/invoices/import/1/clients", {"client_ref": "NOPE", "email": "a@b.co"}
    )
    assert unknown.status_code == 404


async def test_sync_api_refuses_clearly(world: World) -> None:
    token = {"X-Internal-Token": world.sync_service.settings.internal_token}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.sync), base_url="http://sync", headers=token
    ) as sync:
        base = f"/internal/firms/{FIRM}/ledes"
        big = await sync.post(f"{base}/imports", content=b"x" * (5 * 1024 * 1024 + 1))
        assert big.status_code == 413 and "larger than 5 MB" in big.json()["detail"]
        assert (await sync.post(f"{base}/imports", params={"due_days": 999})).status_code == 422
        ok = await sync.post(f"{base}/imports", content=ledes_file())
        assert ok.status_code == 200
        assert [i["number"] for i in ok.json()["imported"]] == ["INV-1", "G-1"]
        bad = await sync.post(f"{base}/clients", json={"client_ref": "ACME", "email": "x@y"})
        assert bad.status_code == 422 and bad.json()["detail"]["field"] == "email"
        gone = await sync.post(f"{base}/clients", json={"client_ref": "NOPE", "email": "a@b.co"})
        assert gone.status_code == 404
        assert (await sync.get(f"{base}/imports/12345")).status_code == 404
        assert (
            await sync.get(f"{base}/imports", headers={"X-Internal-Token": ""})
        ).status_code == 401


async def test_refunds_and_returns_reopen_what_they_take_back(world: World) -> None:
    importer: LedesImporter = world.sync.state.ledes
    await importer.import_file(FIRM, ledes_file(), ImportOptions())
    await importer.set_client(FIRM, ClientEmail(client_ref="GLOBEX", email="ap@globex.test"))
    invoice_id = invoice_id_for(("12-3456789", "GLOBEX", "G-1"))
    common: dict[str, Any] = {
        "firm_id": FIRM,
        "payment_id": "p2",
        "method": PaymentMethod.ach,
        "currency": "USD",
        "amount_minor": 2000,
        "allocations": [Allocation(invoice_id=invoice_id, amount_minor=2000)],
    }
    for ev in (
        PaymentFailed(**common, reason="R01"),  # never succeeded: nothing was paid
        PaymentSucceeded(**common),
        PaymentFailed(**common, reason="R10", returned=True),
        PaymentSucceeded(**common),
        PaymentRefunded(**common, refund_id="r1", refunded_minor=2000),
    ):
        async with world.sync_service.sessionmaker() as s, s.begin():
            await importer.on_payment(s, ev)
    states = [(e.invoice.state, e.invoice.balance_minor) for e in await world.published()]
    assert states == [
        (InvoiceState.awaiting_payment, 2000),  # the email given
        (InvoiceState.paid, 0),
        (InvoiceState.awaiting_payment, 2000),
        (InvoiceState.paid, 0),
        (InvoiceState.awaiting_payment, 2000),
    ]
