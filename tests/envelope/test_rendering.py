"""PDFs rendered ahead of time: an invoice.updated leads to a stored PDF without any request,
content-keyed so nothing identical renders twice, renders joined while in flight, in worker
processes, and a combined envelope's email carrying the statement. Both database backends."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pypdf import PdfReader
from sqlalchemy import func, select

from services.envelope import api, pdf
from services.envelope.app import MIGRATIONS
from services.envelope.desk import Desk
from services.envelope.models import Base, Email, Envelope, EnvelopeSend, Invoice, Link, Pdf
from services.envelope.prerender import COALESCE_SECONDS
from services.envelope.settings import EnvelopeSettings
from shared.email_content import open_content
from shared.events import (
    EmailRequested,
    EmailSent,
    EnvelopeSendRequested,
    FirmProfile,
    FirmUpdated,
    InvoiceSnapshot,
    InvoiceUpdated,
    LineItem,
)
from shared.migrations import upgrade_async
from shared.money import format_money
from shared.runtime import Service
from shared.tokens import hash_token

FIRM_ID = "firm-render"
PUBLIC = "https://pay.hartwell.test"
FIRM = FirmProfile(
    name="Hartwell & Moreno LLP",
    email="billing@hartwellmoreno.test",
    address="450 Mission Street, Suite 1200\nSan Francisco, CA 94105",
    combine_envelopes=True,
    default_delivery="attachment",
)


def snapshot(n: int, **changes: object) -> InvoiceSnapshot:
    base = InvoiceSnapshot(
        invoice_id=f"clio:{n}",
        source_id=str(n),
        etag=f'"{n}-1"',
        number=f"INV-{n}",
        kind="invoice",
        state="awaiting_payment",
        client_id="77",
        client_name="Northgate Provisions, Inc.",
        client_email="ap@northgate.test",
        matter_number="00318-Northgate",
        matter_description="Lease renewal",
        issued_at=dt.date(2025, 4, 1),
        due_at=dt.date(2025, 5, 1),
        total_minor=100_000 + n,
        balance_minor=80_000 + n,
        paid_minor=20_000,
        line_items=[
            LineItem(
                kind="fee",
                date=dt.date(2025, 3, 3),
                description="Review of lease",
                quantity="1.5",
                rate_minor=42_500,
                total_minor=63_750,
            ),
            LineItem(
                kind="expense",
                date=dt.date(2025, 3, 12),
                description="Recording fee",
                quantity="1",
                rate_minor=7_500,
                total_minor=7_500,
            ),
        ],
    )
    return base.model_copy(update=changes)


def send_request(
    env: Envelope, send_id: str, to: list[str], *, delivery: str
) -> EnvelopeSendRequested:
    return EnvelopeSendRequested(
        firm_id=FIRM_ID,
        envelope_id=env.id,
        send_id=send_id,
        invoice_ids=json.loads(env.invoice_ids),
        client_id=env.client_id,
        to=to,
        subject="Invoices {{ invoice_numbers }}",
        body=env.body,
        delivery=delivery,  # type: ignore[arg-type]
        requested_by="u-1",
    )


def email_sent(env: Envelope, send_id: str, at: datetime) -> EmailSent:
    return EmailSent(
        firm_id=FIRM_ID,
        email_id=send_id,
        envelope_id=env.id,
        message_id=f"<{send_id}@test>",
        to=["ap@northgate.test"],
        sent_at=at,
    )


def text_of(document: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(document)).pages)


class Harness:
    def __init__(self, service: Service, desk: Desk) -> None:
        self.service = service
        self.desk = desk
        self.renderer = desk.renderer
        self.clock = datetime.now(UTC)

    def _tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    async def firm_updated(self, firm: FirmProfile = FIRM) -> None:
        ev = FirmUpdated(firm_id=FIRM_ID, firm=firm, occurred_at=self._tick())
        async with self.service.sessionmaker() as s, s.begin():
            await self.desk.on_firm_updated(s, ev)

    async def invoice_updated(self, snap: InvoiceSnapshot) -> None:
        """As the consumer delivers it: the handler inside its own transaction."""
        ev = InvoiceUpdated(firm_id=FIRM_ID, invoice=snap, occurred_at=self._tick())
        async with self.service.sessionmaker() as s, s.begin():
            await self.desk.on_invoice_updated(s, ev)

    async def pdfs(self) -> dict[str, Pdf]:
        async with self.service.sessionmaker() as s:
            return {p.key: p for p in await s.scalars(select(Pdf))}

    async def events(self, routing_key: str) -> list[dict[str, object]]:
        async with self.service.sessionmaker() as s:
            rows = await s.execute(
                select(self.service.outbox.c.payload).where(
                    self.service.outbox.c.routing_key == routing_key
                )
            )
            return [json.loads(r[0]) for r in rows]

    def expected_key(self, snap: InvoiceSnapshot) -> str:
        """The key a PDF of `snap` is stored under: what the PDF shows of the firm, the
        invoice's own pay link while something is due."""
        shown = FirmProfile.model_validate(FIRM.model_dump(include=set(pdf.FIRM_FIELDS)))
        token = self.desk.invoice_token(FIRM_ID, snap.invoice_id)
        pay_url = self.desk.pay_url(token) if snap.balance_minor > 0 else None
        return pdf.invoice_cache_key(snap, shown, pay_url=pay_url)


@pytest.fixture
async def harness(database_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    await upgrade_async(MIGRATIONS, database_url)
    settings = EnvelopeSettings(
        database_url=database_url,
        environment="test",
        public_base_url=PUBLIC,
        var_dir=tmp_path,
        pdf_workers=2,
    )
    service = Service(settings, Base.metadata, MIGRATIONS)
    desk = Desk(service, settings)
    desk.renderer.start()
    try:
        yield Harness(service, desk)
    finally:
        await desk.renderer.stop()
        await service.engine.dispose()


async def test_an_updated_invoice_is_rendered_ahead_of_time(harness: Harness) -> None:
    await harness.firm_updated()
    snap = snapshot(1001)
    await harness.invoice_updated(snap)
    await harness.renderer.drain()

    # Stored without anyone asking, under the key of exactly this content.
    pdfs = await harness.pdfs()
    assert list(pdfs) == [harness.expected_key(snap)]
    stored = pdfs[harness.expected_key(snap)]
    assert stored.invoice_id == snap.invoice_id and stored.firm_id == FIRM_ID
    text = text_of(stored.content)
    for expected in ("INV-1001", "Northgate Provisions, Inc.", "Review of lease", "Recording fee"):
        assert expected in text
    assert harness.renderer.renders == 1
    # The PDF's pay link is registered with it, ahead of time: a send has nothing to add.
    issued = await harness.events("paylink.issued")
    assert [e["link_id"] for e in issued] == [f"invoice:{snap.invoice_id}"]

    # A send or a View Invoice then finds it ready and renders nothing; the link stays one.
    assert await harness.renderer.ensure(FIRM_ID, snap.invoice_id) == harness.expected_key(snap)
    assert await harness.renderer.ensure(FIRM_ID, snap.invoice_id) == harness.expected_key(snap)
    assert harness.renderer.renders == 1
    issued = await harness.events("paylink.issued")
    assert [e["link_id"] for e in issued] == [f"invoice:{snap.invoice_id}"]


async def test_an_unchanged_snapshot_renders_nothing_new(harness: Harness) -> None:
    await harness.firm_updated()
    snap = snapshot(1002)
    await harness.invoice_updated(snap)
    await harness.renderer.drain()
    assert harness.renderer.renders == 1

    await harness.invoice_updated(snap)  # sync published it again (a contact's email, say)
    await harness.renderer.drain()
    assert harness.renderer.renders == 1
    assert list(await harness.pdfs()) == [harness.expected_key(snap)]


async def test_a_changed_invoice_renders_under_a_new_key(harness: Harness) -> None:
    await harness.firm_updated()
    first = snapshot(1003)
    await harness.invoice_updated(first)
    await harness.renderer.drain()

    paid_some = snapshot(1003, balance_minor=30_000, paid_minor=71_003)
    await harness.invoice_updated(paid_some)
    await harness.renderer.drain()

    assert harness.renderer.renders == 2
    pdfs = await harness.pdfs()
    assert set(pdfs) == {harness.expected_key(first), harness.expected_key(paid_some)}
    assert "$300.00" in text_of(pdfs[harness.expected_key(paid_some)].content)
    assert await harness.renderer.ensure(FIRM_ID, "clio:1003") == harness.expected_key(paid_some)
    assert harness.renderer.renders == 2


async def test_quick_updates_of_one_invoice_render_only_the_newest(harness: Harness) -> None:
    await harness.firm_updated()
    versions = [snapshot(1004, balance_minor=80_000 - i * 1_000) for i in range(6)]
    for version in versions:
        await harness.invoice_updated(version)
    await harness.renderer.drain()

    assert harness.renderer.renders == 1
    assert list(await harness.pdfs()) == [harness.expected_key(versions[-1])]


async def test_only_committed_sendable_invoices_are_rendered_ahead(harness: Harness) -> None:
    await harness.firm_updated()
    await harness.invoice_updated(snapshot(1005, state="draft"))
    with pytest.raises(RuntimeError):
        async with harness.service.sessionmaker() as s, s.begin():
            ev = InvoiceUpdated(
                firm_id=FIRM_ID, invoice=snapshot(1006), occurred_at=harness._tick()
            )
            await harness.desk.on_invoice_updated(s, ev)
            raise RuntimeError("the consumer failed: rolled back")
    await asyncio.sleep(2 * COALESCE_SECONDS)  # anything scheduled would be dispatched by now
    await harness.renderer.drain()
    assert harness.renderer.renders == 0
    assert await harness.pdfs() == {}


async def test_concurrent_requests_join_the_render_in_flight(harness: Harness) -> None:
    await harness.renderer.stop()  # no background renderer: every render here is on demand
    await harness.firm_updated()
    snap = snapshot(1007)
    await harness.invoice_updated(snap)

    keys = await asyncio.gather(
        *(harness.renderer.ensure(FIRM_ID, snap.invoice_id) for _ in range(4))
    )

    assert set(keys) == {harness.expected_key(snap)}
    assert harness.renderer.renders == 1
    assert list(await harness.pdfs()) == [harness.expected_key(snap)]
    async with harness.service.sessionmaker() as s:
        links = await s.scalar(select(func.count()).select_from(Link))
    assert links == 1
    assert len(await harness.events("paylink.issued")) == 1


async def test_renders_run_in_worker_processes(harness: Harness) -> None:
    await harness.firm_updated()
    await harness.invoice_updated(snapshot(1008))
    await harness.renderer.drain()
    assert harness.renderer.renders == 1
    assert harness.renderer.worker_pids
    assert os.getpid() not in harness.renderer.worker_pids


async def test_a_firm_profile_change_renders_again_but_a_setting_does_not(
    harness: Harness,
) -> None:
    await harness.firm_updated()
    await harness.invoice_updated(snapshot(1009))
    await harness.renderer.drain()
    assert harness.renderer.renders == 1

    await harness.firm_updated(FIRM.model_copy(update={"combine_envelopes": False}))
    await harness.renderer.drain()
    assert harness.renderer.renders == 1  # no PDF shows that setting

    moved = FIRM.model_copy(update={"address": "1 Market Street\nSan Francisco, CA 94105"})
    await harness.firm_updated(moved)
    await harness.renderer.drain()
    assert harness.renderer.renders == 2
    newest = max((await harness.pdfs()).values(), key=lambda p: p.created_at)
    assert "1 Market Street" in text_of(newest.content)


async def test_a_combined_envelope_sent_with_attachments_carries_the_statement(
    harness: Harness,
) -> None:
    await harness.firm_updated()
    snaps = [snapshot(n) for n in (1010, 1011, 1012)]
    snaps.append(snapshot(1013, kind="trust_request", number="TR-1013", line_items=[]))
    for snap in snaps:
        await harness.invoice_updated(snap)
    await harness.renderer.drain()
    renders_before_send = harness.renderer.renders
    assert renders_before_send == len(snaps)

    (env,) = await harness.desk.create_drafts(FIRM_ID, [s.invoice_id for s in snaps], "u-1")
    assert env.delivery == "attachment"
    # Drafting a combined envelope that goes out with attachments renders its statement.
    await harness.renderer.drain()
    assert harness.renderer.renders == renders_before_send + 1
    send = EnvelopeSendRequested(
        firm_id=FIRM_ID,
        envelope_id=env.id,
        send_id="send-render-1",
        invoice_ids=json.loads(env.invoice_ids),
        client_id=env.client_id,
        to=["ap@northgate.test"],
        subject=env.subject,
        body=env.body,
        delivery="attachment",
        requested_by="u-1",
    )
    attachments = await harness.desk.prepare_send(send)
    async with harness.service.sessionmaker() as s, s.begin():
        await harness.desk.on_send_requested(s, send, attachments)

    # Nothing was rendered at send time: the bills' PDFs and the statement were ready.
    assert harness.renderer.renders == renders_before_send + 1
    found = await harness.desk.email_content(send.send_id)
    assert found is not None
    email, files = found
    names = [name for name, _ in files]
    assert names[0].startswith("statement-") and names[0].endswith(".pdf")
    assert names[1:] == [
        "invoice-INV-1010.pdf",
        "invoice-INV-1011.pdf",
        "invoice-INV-1012.pdf",
        "trust-request-TR-1013.pdf",
    ]
    statement = text_of(files[0][1])
    for snap in snaps:
        assert snap.number in statement
    grand_total = format_money(sum(s.balance_minor for s in snaps), "USD")
    assert grand_total in statement
    token = harness.desk.send_token(send.send_id)
    # The statement's Pay All link is the statement's own, for these bills, and it works.
    statement_token = harness.desk.statement_token(FIRM_ID, [s.invoice_id for s in snaps])
    assert harness.desk.pay_url(statement_token) in statement
    async with harness.service.sessionmaker() as s:
        link = await s.get(Link, hash_token(statement_token))
        assert link is not None
        assert sorted(json.loads(link.invoice_ids)) == sorted(s_.invoice_id for s_ in snaps)
    for (_, content), snap in zip(files[1:], snaps, strict=True):
        assert snap.number in text_of(content)
    # The email's View Statement link leads to the same statement, rendered once.
    assert harness.desk.statement_url(token) in email.html
    key = await harness.desk.link_statement(token)
    assert key is not None
    assert json.loads(email.attachments)[0]["pdf_key"] == key
    assert harness.renderer.renders == renders_before_send + 1
    assert await harness.desk.link_statement("not-a-token") is None

    # email.requested goes out with the same email sealed in, added as it is published:
    # the mailer needs no fetch, the link token is not readable on the bus, and the
    # outbox row stays small (the PDFs are not written to it).
    async with harness.service.sessionmaker() as s:
        [payload] = (
            await s.scalars(
                select(harness.service.outbox.c.payload).where(
                    harness.service.outbox.c.routing_key == "email.requested"
                )
            )
        ).all()
    assert len(payload) < 2000 and json.loads(payload)["sealed_content"] is None
    [published] = await harness.desk.seal_email_contents([json.loads(payload)])
    assert isinstance(published, bytes)  # the message body itself
    requested = EmailRequested.model_validate_json(published)
    assert token.encode() not in published and statement_token.encode() not in published
    assert requested.content_url.endswith(f"/internal/emails/{send.send_id}")
    assert requested.sealed_content is not None
    carried = open_content(
        harness.service.settings.internal_token, send.send_id, requested.sealed_content
    )
    assert carried["html"] == email.html and carried["text"] == email.text
    assert carried["subject"] == email.subject and carried["to"] == ["ap@northgate.test"]
    assert [(a["filename"], a["data"]) for a in carried["attachments"]] == files
    # An email that no longer exists goes out as it is; the mailer's fetch then says so.
    gone = {**json.loads(payload), "email_id": "no-such-email"}
    assert await harness.desk.seal_email_contents([gone]) == [gone]

    # The client's View Statement, through envelope's internal API (the gateway's upstream).
    app = FastAPI()
    app.include_router(api.router(harness.service, harness.desk))
    transport = httpx.ASGITransport(app=app)
    headers = {"X-Internal-Token": harness.service.settings.internal_token}
    async with httpx.AsyncClient(transport=transport, base_url="http://envelope") as http:
        viewed = await http.get(f"/internal/links/{token}/statement.pdf", headers=headers)
        assert viewed.status_code == 200
        assert viewed.headers["content-type"] == "application/pdf"
        assert viewed.content == files[0][1]
        missing = await http.get("/internal/links/nope/statement.pdf", headers=headers)
        assert missing.status_code == 404
        # Whether a link was issued (the gateway asks while payments has not learnt of it).
        issued = await http.get(f"/internal/links/{token}", headers=headers)
        assert issued.status_code == 200 and issued.json() == {"issued": True}
        assert (await http.get("/internal/links/nope", headers=headers)).status_code == 404
        assert (await http.get(f"/internal/links/{token}")).status_code == 401
    async with harness.service.sessionmaker() as s:
        assert (await s.get(Envelope, env.id)).status == "queued"  # type: ignore[union-attr]
        assert await s.get(Email, send.send_id) is not None


async def test_sends_stamp_last_sent_once_and_never_back_in_time(harness: Harness) -> None:
    """A link-delivery send, twice, with the mailer's confirmations arriving out of order:
    each send is one email and one record, a repeated send request changes nothing, and
    Last Sent (of the envelope and of each bill) is the newest confirmation's."""
    await harness.firm_updated()
    snaps = [snapshot(1020), snapshot(1021)]
    for snap in snaps:
        await harness.invoice_updated(snap)
    (env,) = await harness.desk.create_drafts(FIRM_ID, [s.invoice_id for s in snaps], "u-1")

    def send(send_id: str) -> EnvelopeSendRequested:
        return send_request(env, send_id, ["ap@northgate.test"], delivery="link")

    async def handle(handler: object, ev: object) -> None:
        async with harness.service.sessionmaker() as s, s.begin():
            await handler(s, ev)  # type: ignore[operator]

    async def request(send_id: str) -> None:
        async with harness.service.sessionmaker() as s, s.begin():
            await harness.desk.on_send_requested(s, send(send_id), None)

    await request("send-a")
    await request("send-a")  # the same send requested again: nothing more
    await request("send-b")
    async with harness.service.sessionmaker() as s:
        emails = list(await s.scalars(select(Email).order_by(Email.email_id)))
        assert [e.email_id for e in emails] == ["send-a", "send-b"]
        assert emails[0].subject == "Invoices invoice INV-1020 and invoice INV-1021"
        queued = await s.get(Envelope, env.id)
        assert queued is not None and queued.status == "queued"
        assert queued.subject == "Invoices {{ invoice_numbers }}"
        bills = list(await s.scalars(select(Invoice).where(Invoice.firm_id == FIRM_ID)))
        assert {b.email_status for b in bills} == {"queued"}
    links = [e for e in await harness.events("paylink.issued") if e["envelope_id"] == env.id]
    assert sorted(e["link_id"] for e in links) == ["send-a", "send-b"]

    newer = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    older = newer - timedelta(hours=1)

    def sent(send_id: str, at: datetime) -> EmailSent:
        return email_sent(env, send_id, at)

    await handle(harness.desk.on_email_sent, sent("send-b", newer))
    await handle(harness.desk.on_email_sent, sent("send-a", older))  # confirmed late
    await handle(harness.desk.on_email_sent, sent("not-a-send", newer + timedelta(days=1)))
    async with harness.service.sessionmaker() as s:
        done = await s.get(Envelope, env.id)
        assert done is not None and done.status == "sent"
        assert done.last_sent_at == newer
        bills = list(await s.scalars(select(Invoice).where(Invoice.firm_id == FIRM_ID)))
        assert [(b.last_sent_at, b.email_status) for b in bills] == [(newer, "sent")] * 2
        records = {r.send_id: r for r in await s.scalars(select(EnvelopeSend))}
        assert set(records) == {"send-a", "send-b"}
        assert (records["send-a"].status, records["send-a"].sent_at) == ("sent", older)
        assert records["send-b"].message_id == "<send-b@test>"


async def test_sends_applied_as_one_batch(harness: Harness) -> None:
    """Sends of several clients' envelopes applied together, as the service applies the
    send requests delivered at about the same time: each good send makes its email with its
    own PDFs and pay link; a send requested twice within the batch makes one email; a send
    without a recipient fails alone; a send of an unknown envelope is dropped. Then their
    confirmations, together and out of order, stamp each envelope and bill with its own
    newest time."""
    await harness.firm_updated()
    clients = {"77": (2000, 2001), "78": (2002,), "79": (2003, 2004, 2005)}
    snaps = [
        snapshot(n, client_id=cid, client_name=f"Client {cid}", client_email=f"ap@{cid}.test")
        for cid, numbers in clients.items()
        for n in numbers
    ]
    for snap in snaps:
        await harness.invoice_updated(snap)
    envs = await harness.desk.create_drafts(FIRM_ID, [s.invoice_id for s in snaps], "u-1")
    assert sorted(len(json.loads(e.invoice_ids)) for e in envs) == [1, 2, 3]
    await harness.renderer.drain()
    renders = harness.renderer.renders

    def send(env: Envelope, send_id: str, to: list[str]) -> EnvelopeSendRequested:
        return send_request(env, send_id, to, delivery="attachment")

    one, two, three = sorted(envs, key=lambda e: e.client_id)
    batch = [
        send(one, "b-1", ["ap@77.test"]),
        send(two, "b-2", []),  # no recipient
        send(three, "b-3", ["ap@79.test"]),
        send(one, "b-1", ["ap@77.test"]),  # the same send again
        send(three, "b-3", ["ap@79.test"]).model_copy(update={"envelope_id": "nope"}),
    ]
    batch[4] = batch[4].model_copy(update={"send_id": "b-4"})
    prepared = await harness.desk.prepare_sends(batch)
    assert set(prepared) == {"b-1", "b-2", "b-3"}
    async with harness.service.sessionmaker() as s, s.begin():
        await harness.desk.on_sends_requested(s, batch, prepared)
    assert harness.renderer.renders == renders  # all ready ahead of time

    async with harness.service.sessionmaker() as s:
        emails = {e.email_id: e for e in await s.scalars(select(Email))}
        assert set(emails) == {"b-1", "b-3"}
        assert emails["b-1"].subject == "Invoices invoice INV-2000 and invoice INV-2001"
        assert json.loads(emails["b-3"].to) == ["ap@79.test"]
        # Each email's own PDFs: the statement first, then each of its bills.
        names = [a["filename"] for a in json.loads(emails["b-3"].attachments)]
        assert names[0].startswith("statement-")
        assert names[1:] == ["invoice-INV-2003.pdf", "invoice-INV-2004.pdf", "invoice-INV-2005.pdf"]
        records = {r.send_id: r for r in await s.scalars(select(EnvelopeSend))}
        assert {k: r.status for k, r in records.items()} == {
            "b-1": "queued",
            "b-2": "failed",
            "b-3": "queued",
        }
        assert records["b-2"].error == "the envelope has no recipient"
        statuses = {e.id: e.status for e in await s.scalars(select(Envelope))}
        assert statuses == {one.id: "queued", two.id: "failed", three.id: "queued"}
    links = {e["link_id"]: e for e in await harness.events("paylink.issued")}
    assert {"b-1", "b-3"} <= set(links) and "b-2" not in links
    assert [i["invoice_id"] for i in links["b-3"]["items"]] == [
        "clio:2003",
        "clio:2004",
        "clio:2005",
    ]  # type: ignore[index,union-attr]
    requested = [e["email_id"] for e in await harness.events("email.requested")]
    assert sorted(requested) == ["b-1", "b-3"]

    # Applied again (a redelivered batch): nothing more.
    async with harness.service.sessionmaker() as s, s.begin():
        await harness.desk.on_sends_requested(s, batch, prepared)
    assert sorted(e["email_id"] for e in await harness.events("email.requested")) == ["b-1", "b-3"]

    newer = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    older = newer - timedelta(hours=1)

    sent = email_sent

    async with harness.service.sessionmaker() as s, s.begin():
        await harness.desk.on_sends_requested(s, [send(one, "b-5", ["ap@77.test"])], None)
    async with harness.service.sessionmaker() as s, s.begin():
        await harness.desk.on_emails_sent(
            s,
            [
                sent(one, "b-5", newer),
                sent(three, "b-3", older),
                sent(one, "b-1", older),  # the earlier send, confirmed late
                sent(two, "unknown", newer),
            ],
        )
    async with harness.service.sessionmaker() as s:
        stamped = {e.id: (e.status, e.last_sent_at) for e in await s.scalars(select(Envelope))}
        assert stamped == {
            one.id: ("sent", newer),
            two.id: ("failed", None),
            three.id: ("sent", older),
        }
        bills = {
            b.invoice_id: (b.last_sent_at, b.email_status)
            for b in await s.scalars(select(Invoice).where(Invoice.firm_id == FIRM_ID))
        }
        assert bills["clio:2000"] == bills["clio:2001"] == (newer, "sent")
        assert bills["clio:2003"] == (older, "sent")
        assert bills["clio:2002"][0] is None
        records = {r.send_id: r for r in await s.scalars(select(EnvelopeSend))}
        assert (records["b-1"].status, records["b-1"].sent_at) == ("sent", older)
        assert records["b-5"].message_id == "<b-5@test>"
