"""Bounces and delivery notifications recorded by the mailer, on the backend under test: the
copy's row and the event staged in its outbox, once per notification however often it comes,
through each intake (SMTP, an IMAP mailbox, the signed webhook)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from sqlalchemy import select

from services.mailer import bounce_intake
from services.mailer.app import MIGRATIONS, create_app
from services.mailer.bounces import Bounces
from services.mailer.models import EmailRecipient, OutgoingEmail, outbox
from services.mailer.settings import MailerSettings
from services.mailer.verp import return_path
from shared.migrations import upgrade_async

DSN = Path(__file__).parent / "dsn"
TOKEN = "internal-token-of-the-bounce-tests"
SECRET = "provider-webhook-secret-0123456789"
TRACKING = "tracking-secret-of-the-bounce-tests"  # signs the return paths
NOW = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)
FIRM = "firm-hartwell"


def verp(email_id: str, n: int, secret: str = TRACKING) -> str:
    """The return path the mailer gives copy `n` of `email_id`."""
    return return_path("bounces", "envelopepay.test", email_id, n, secret)


def dsn_for(name: str, email_id: str, secret: str = TRACKING) -> bytes:
    """One of the sample reports, about `email_id` (its email id replaced everywhere), its
    VERP addresses signed with `secret` as the mailer signs them."""
    raw = (DSN / name).read_bytes()
    ids = set(re.findall(rb"bounces\+([0-9a-f]{32})\.\d", raw)) | set(
        re.findall(rb"<([0-9a-f]{32})@envelopepay\.test>", raw)
    )
    for old in ids:
        raw = raw.replace(old, email_id.encode())
    return re.sub(
        rb"bounces\+([0-9a-f]{32})\.(\d{1,3})@envelopepay\.test",
        lambda m: verp(m[1].decode(), int(m[2]), secret).encode(),
        raw,
    )


@dataclass
class World:
    settings: MailerSettings
    app: Any
    bounces: Bounces

    @property
    def service(self) -> Any:
        return self.app.state.service

    async def email(self, *addresses: str) -> str:
        """An email the mailer sent, with a copy per address (as the postman records them)."""
        email_id = uuid.uuid4().hex
        async with self.service.sessionmaker() as s, s.begin():
            s.add(
                OutgoingEmail(
                    email_id=email_id,
                    firm_id=FIRM,
                    envelope_id="env-1",
                    to=json.dumps(list(addresses)),
                    subject="Your invoice",
                    content_url="http://envelope/internal/emails/x",
                    status="sent",
                    attempts=1,
                    created_at=NOW,
                    sent_at=NOW,
                )
            )
            for n, address in enumerate(addresses):
                s.add(
                    EmailRecipient(
                        email_id=email_id,
                        n=n,
                        firm_id=FIRM,
                        address=address,
                        status="accepted",
                        accepted_at=NOW,
                    )
                )
        return email_id

    async def copy(self, email_id: str, n: int) -> EmailRecipient:
        async with self.service.sessionmaker() as s:
            row = await s.get(EmailRecipient, (email_id, n))
            assert row is not None
            return row

    async def published(self) -> list[dict[str, Any]]:
        async with self.service.sessionmaker() as s:
            rows = await s.execute(
                select(outbox.c.routing_key, outbox.c.payload).order_by(outbox.c.id)
            )
            return [{"key": key, **json.loads(payload)} for key, payload in rows]


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    await upgrade_async(MIGRATIONS, database_url)
    settings = MailerSettings(
        database_url=database_url,
        environment="test",
        internal_token=TOKEN,
        mail_from="billing@envelopepay.test",
        bounce_intake="webhook",
        bounce_webhook_secret=SECRET,
        bounce_max_message_size=64 * 1024,
        tracking_secret=TRACKING,
    )
    app = create_app(settings)
    bounces: Bounces = app.state.bounces
    bounces.clock = lambda: NOW
    try:
        yield World(settings, app, bounces)
    finally:
        await app.state.postman.http.aclose()
        await app.state.postman.relay.close()
        await app.state.service.engine.dispose()


async def test_a_hard_bounce_is_recorded_and_published_once(world: World) -> None:
    email_id = await world.email("nobody@example.org")
    raw = dsn_for("postfix.eml", email_id)
    first = await world.bounces.take(raw)
    again = await world.bounces.take(raw)

    assert [e.routing_key for e in first.events] == ["email.bounced"]
    assert again.events == [] and again.dropped == []
    copy = await world.copy(email_id, 0)
    assert (copy.bounce_kind, copy.bounce_status, copy.bounced_at) == ("hard", "5.1.1", NOW)
    assert copy.bounce_reason is not None and "User unknown" in copy.bounce_reason
    [ev] = await world.published()
    assert ev["key"] == "email.bounced"
    assert {k: ev[k] for k in ("email_id", "envelope_id", "firm_id", "recipient", "kind")} == {
        "email_id": email_id,
        "envelope_id": "env-1",
        "firm_id": FIRM,
        "recipient": "nobody@example.org",
        "kind": "hard",
    }
    assert ev["status"] == "5.1.1" and "User unknown" in ev["reason"]


async def test_the_same_report_taken_twice_at_once_is_published_once(world: World) -> None:
    email_id = await world.email("nobody@example.org")
    raw = dsn_for("postfix.eml", email_id)
    results = await asyncio.gather(*(world.bounces.take(raw) for _ in range(4)))
    assert sum(len(r.events) for r in results) == 1
    assert len(await world.published()) == 1


async def test_soft_then_hard_then_soft(world: World) -> None:
    email_id = await world.email("slow@example.org")
    soft = await world.bounces.take(dsn_for("delay.eml", email_id))
    assert [(e.routing_key, e.kind) for e in soft.events] == [("email.bounced", "soft")]  # type: ignore[attr-defined]
    copy = await world.copy(email_id, 0)
    assert (copy.bounce_kind, copy.bounce_status) == ("soft", "4.4.1")

    # The delay was for nothing: the server gave up for good.
    hard = dsn_for("postfix.eml", email_id).replace(b"nobody@example.org", b"slow@example.org")
    assert [e.kind for e in (await world.bounces.take(hard)).events] == ["hard"]  # type: ignore[attr-defined]
    # A late delay notice changes nothing after that.
    assert (await world.bounces.take(dsn_for("delay.eml", email_id))).events == []
    copy = await world.copy(email_id, 0)
    assert (copy.bounce_kind, copy.bounce_status) == ("hard", "5.1.1")
    assert [e["kind"] for e in await world.published()] == ["soft", "hard"]


async def test_a_delivery_notice_is_recorded_once(world: World) -> None:
    email_id = await world.email("client@example.org")
    raw = dsn_for("delivered.eml", email_id)
    taken = await world.bounces.take(raw)
    assert [e.routing_key for e in taken.events] == ["email.delivered"]
    assert (await world.bounces.take(raw)).events == []
    copy = await world.copy(email_id, 0)
    assert copy.delivered_at == NOW and copy.bounce_kind is None
    [ev] = await world.published()
    assert (ev["key"], ev["recipient"], ev["email_id"]) == (
        "email.delivered",
        "client@example.org",
        email_id,
    )
    # Delivered, then a stale delay notice: no soft bounce over a delivery.
    assert (await world.bounces.take(dsn_for("delay.eml", email_id))).events == []


async def test_the_copy_is_found_by_address_when_only_the_message_id_names_the_email(
    world: World,
) -> None:
    email_id = await world.email("accounts@example.co.uk", "old.partner@example.co.uk")
    taken = await world.bounces.take(dsn_for("exim.eml", email_id))
    assert [e.recipient for e in taken.events] == ["old.partner@example.co.uk"]
    assert (await world.copy(email_id, 0)).bounce_kind is None
    assert (await world.copy(email_id, 1)).bounce_kind == "hard"


async def test_a_report_without_final_recipient_bounces_the_copy_its_verp_names(
    world: World,
) -> None:
    email_id = await world.email("a@example.net", "b@example.net", "c@example.net")
    taken = await world.bounces.take(dsn_for("no_final_recipient.eml", email_id))
    assert [(e.recipient, e.status) for e in taken.events] == [("c@example.net", "5.2.1")]  # type: ignore[attr-defined]


async def test_unknown_emails_and_junk_are_dropped_with_a_reason(world: World) -> None:
    unknown = await world.bounces.take(dsn_for("postfix.eml", uuid.uuid4().hex))
    assert unknown.events == [] and "unknown email" in unknown.dropped[0]
    junk = await world.bounces.take(b"\x00\xff garbage")
    assert junk.events == [] and junk.dropped
    email_id = await world.email("someone@example.org")
    no_copy = await world.bounces.take(
        dsn_for("exim.eml", email_id)  # names old.partner@..., not a recipient of this email
    )
    assert no_copy.events == [] and "no recipient" in no_copy.dropped[0]
    assert await world.published() == []


# --- SMTP intake --------------------------------------------------------------------------


async def test_smtp_intake_takes_bounces_for_verp_addresses_only(world: World) -> None:
    email_id = await world.email("nobody@example.org")
    intake = await bounce_intake.start_smtp_intake(world.bounces, world.settings, port=0)
    to = verp(email_id, 0)
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port)
        await smtp.connect()
        try:
            await smtp.sendmail("", [to], dsn_for("postfix.eml", email_id))
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
                await smtp.sendmail("", ["billing@envelopepay.test"], b"Subject: hi\r\n\r\nx\r\n")
            assert refused.value.recipients[0].code == 550
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await smtp.sendmail("", ["bounces+x.0@elsewhere.example"], b"x")
            # An unknown email is answered 250 (dropped, never retried by the sender).
            other = verp(uuid.uuid4().hex, 0)
            errors, _ = await smtp.sendmail("", [other], dsn_for("postfix.eml", "0" * 32))
            assert errors == {}
            # Too large: 552, nothing recorded.
            with pytest.raises(aiosmtplib.SMTPResponseException) as big:
                await smtp.sendmail("", [to], b"Subject: x\r\n\r\n" + b"a" * 70 * 1024)
            assert big.value.code == 552
        finally:
            await smtp.quit()
    finally:
        await intake.close()
    assert (await world.copy(email_id, 0)).bounce_kind == "hard"
    assert [e["key"] for e in await world.published()] == ["email.bounced"]


async def test_smtp_intake_refuses_a_forged_return_path(world: World) -> None:
    email_id = await world.email("nobody@example.org")
    intake = await bounce_intake.start_smtp_intake(world.bounces, world.settings, port=0)
    good = verp(email_id, 0)
    local, _, domain = good.partition("@")
    head, _, sig = local.rpartition(".")
    forged = [
        f"bounces+{email_id}.0@envelopepay.test",  # unsigned, as return paths used to be
        f"bounces+{email_id}.0.{'a' * len(sig)}@envelopepay.test",
        verp(email_id, 1).replace(".1.", ".0."),  # another copy's signature
        verp(email_id, 0, secret="a guessed secret"),
    ]
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port)
        await smtp.connect()
        try:
            for address in forged:
                with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
                    await smtp.sendmail("", [address], dsn_for("postfix.eml", email_id))
                assert refused.value.recipients[0].code == 550, address
            assert await world.published() == []
            # Case-folded by an MTA on the way back: still ours.
            folded = f"BOUNCES+{email_id}.0.{sig.upper()}@{domain.upper()}"
            errors, _ = await smtp.sendmail("", [folded], dsn_for("postfix.eml", email_id))
            assert errors == {}
        finally:
            await smtp.quit()
    finally:
        await intake.close()
    assert (await world.copy(email_id, 0)).bounce_kind == "hard"
    assert [e["key"] for e in await world.published()] == ["email.bounced"]


async def test_smtp_intake_answers_451_when_it_cannot_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(raw: bytes, rcpt_tos: Any = ()) -> Any:
        raise OSError("database is down")

    monkeypatch.setattr(world.bounces, "take", broken)
    intake = await bounce_intake.start_smtp_intake(world.bounces, world.settings, port=0)
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=intake.port)
        await smtp.connect()
        with pytest.raises(aiosmtplib.SMTPResponseException) as later:
            await smtp.sendmail("", [verp("abc", 0)], b"Subject: x\r\n\r\nx")
        assert later.value.code == 451
        await smtp.quit()
    finally:
        await intake.close()


# --- webhook -------------------------------------------------------------------------------


def api(world: World) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.app),
        base_url="http://mailer",
        headers={"X-Internal-Token": TOKEN},
    )


async def test_webhook_records_a_signed_report_and_refuses_a_forged_one(world: World) -> None:
    email_id = await world.email("nobody@example.org")
    raw = dsn_for("postfix.eml", email_id)
    async with api(world) as c:
        forged = await c.post(
            "/internal/bounces",
            content=raw,
            headers={"X-Bounce-Signature": bounce_intake.sign("not-the-secret", raw)},
        )
        assert forged.status_code == 400
        unsigned = await c.post("/internal/bounces", content=raw)
        assert unsigned.status_code == 400
        stale = await c.post(
            "/internal/bounces",
            content=raw,
            headers={"X-Bounce-Signature": bounce_intake.sign(SECRET, raw, at=1_000_000_000)},
        )
        assert stale.status_code == 400
        tampered = await c.post(
            "/internal/bounces",
            content=raw + b"\r\n",
            headers={"X-Bounce-Signature": bounce_intake.sign(SECRET, raw)},
        )
        assert tampered.status_code == 400
        assert await world.published() == []

        ok = await c.post(
            "/internal/bounces",
            content=raw,
            headers={"X-Bounce-Signature": bounce_intake.sign(SECRET, raw)},
        )
        assert ok.status_code == 200 and ok.json()["recorded"] == ["email.bounced"]
        big = b"x" * (65 * 1024)
        too_big = await c.post(
            "/internal/bounces",
            content=big,
            headers={"X-Bounce-Signature": bounce_intake.sign(SECRET, big)},
        )
        assert too_big.status_code == 413
        no_token = await c.post(
            "/internal/bounces",
            content=raw,
            headers={
                "X-Internal-Token": "wrong",
                "X-Bounce-Signature": bounce_intake.sign(SECRET, raw),
            },
        )
        assert no_token.status_code == 401
    assert (await world.copy(email_id, 0)).bounce_kind == "hard"
    assert len(await world.published()) == 1


async def test_webhook_ignores_a_forged_return_path(world: World) -> None:
    """A report whose VERP address is forged is placed, if at all, by its ENVID or
    Message-ID: a soft bounce or a delivery is recorded, a hard bounce only when its
    Final-Recipient is the copy's own address."""
    email_id = await world.email("client@example.org")

    async def post(raw: bytes) -> dict[str, Any]:
        async with api(world) as c:
            resp = await c.post(
                "/internal/bounces",
                content=raw,
                headers={"X-Bounce-Signature": bounce_intake.sign(SECRET, raw)},
            )
        assert resp.status_code == 200
        return dict(resp.json())

    guess = "a guessed secret"
    # ENVID names copy 0, but the report's Final-Recipient is someone else: no suppression.
    hard = await post(dsn_for("microsoft.eml", email_id, secret=guess))
    assert hard["recorded"] == []
    assert "without a signed return path" in hard["dropped"][0]
    # Placed by nothing but its (forged) VERP address: dropped.
    nothing = await post(dsn_for("no_final_recipient.eml", email_id, secret=guess))
    assert nothing["recorded"] == [] and nothing["dropped"]
    assert (await world.copy(email_id, 0)).bounce_kind is None
    assert await world.published() == []
    # A delay placed by its ENVID: recorded, as before.
    soft = dsn_for("delay.eml", email_id, secret=guess).replace(
        b"slow@example.org", b"client@example.org"
    )
    assert (await post(soft))["recorded"] == ["email.bounced"]
    assert (await world.copy(email_id, 0)).bounce_kind == "soft"
    # A hard bounce whose Final-Recipient is the copy's address: recorded.
    consistent = dsn_for("microsoft.eml", email_id, secret=guess).replace(
        b"jdoe@contoso.com", b"client@example.org"
    )
    assert (await post(consistent))["recorded"] == ["email.bounced"]
    assert (await world.copy(email_id, 0)).bounce_kind == "hard"
    assert [e["kind"] for e in await world.published()] == ["soft", "hard"]


async def test_webhook_is_off_unless_configured(world: World) -> None:
    world.settings.bounce_intake = "smtp"
    raw = b"Subject: x\r\n\r\nx"
    async with api(world) as c:
        resp = await c.post(
            "/internal/bounces",
            content=raw,
            headers={"X-Bounce-Signature": bounce_intake.sign(SECRET, raw)},
        )
    assert resp.status_code == 404


def test_production_refuses_an_intake_without_its_secret() -> None:
    # tracking_secret: H1's, refused at its default in production too.
    base = {"environment": "production", "internal_token": "x" * 32, "tracking_secret": "t" * 32}
    with pytest.raises(ValueError, match="BOUNCE_WEBHOOK_SECRET"):
        MailerSettings(**base, bounce_intake="webhook")
    with pytest.raises(ValueError, match="BOUNCE_IMAP"):
        MailerSettings(**base, bounce_intake="imap")


# --- IMAP ------------------------------------------------------------------------------------


@dataclass
class FakeImap:
    """Just enough IMAP4rev1 for imaplib and the poller, over a real socket."""

    folders: dict[str, dict[int, bytes]] = field(
        default_factory=lambda: {"INBOX": {}, "Processed": {}}
    )
    logins: list[tuple[str, str]] = field(default_factory=list)
    next_uid: int = 1
    fail_login: bool = False

    def add(self, raw: bytes, folder: str = "INBOX") -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.folders[folder][uid] = raw
        return uid

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        selected: str | None = None
        deleted: set[int] = set()

        async def send(line: bytes) -> None:
            writer.write(line + b"\r\n")
            await writer.drain()

        await send(b"* OK [CAPABILITY IMAP4rev1] fake ready")
        while line := await reader.readline():
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            cmd, _, args = rest.partition(b" ")
            cmd = cmd.upper()
            if cmd == b"CAPABILITY":
                await send(b"* CAPABILITY IMAP4rev1")
            elif cmd == b"LOGIN":
                user, password = (a.strip(b'"').decode() for a in args.split(b" ", 1))
                self.logins.append((user, password))
                if self.fail_login:
                    await send(tag + b" NO [AUTHENTICATIONFAILED] nope")
                    continue
            elif cmd == b"SELECT":
                selected = args.strip(b'"').decode()
                await send(b"* %d EXISTS" % len(self.folders[selected]))
            elif cmd == b"UID":
                sub, _, uargs = args.partition(b" ")
                sub = sub.upper()
                box = self.folders[selected or "INBOX"]
                if sub == b"SEARCH":
                    await send(b"* SEARCH " + b" ".join(b"%d" % u for u in sorted(box)))
                elif sub == b"FETCH":
                    uid_s, _, what = uargs.partition(b" ")
                    uid = int(uid_s)
                    if uid in box:
                        if b"RFC822.SIZE" in what:
                            await send(b"* 1 FETCH (UID %d RFC822.SIZE %d)" % (uid, len(box[uid])))
                        else:
                            data = box[uid]
                            writer.write(b"* 1 FETCH (UID %d BODY[] {%d}\r\n" % (uid, len(data)))
                            writer.write(data + b")\r\n")
                            await writer.drain()
                elif sub == b"COPY":
                    uid_set, _, target = uargs.partition(b" ")
                    for u in uid_set.split(b","):
                        self.folders[target.strip(b'"').decode()][int(u)] = box[int(u)]
                elif sub == b"STORE":
                    uid_set = uargs.split(b" ", 1)[0]
                    deleted |= {int(u) for u in uid_set.split(b",")}
            elif cmd == b"EXPUNGE":
                box = self.folders[selected or "INBOX"]
                for u in deleted:
                    box.pop(u, None)
                deleted.clear()
            elif cmd == b"LOGOUT":
                await send(b"* BYE")
                await send(tag + b" OK bye")
                break
            await send(tag + b" OK done")
        writer.close()


@pytest.fixture
async def imap() -> AsyncIterator[tuple[FakeImap, int]]:
    fake = FakeImap()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    try:
        yield fake, int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def imap_settings(world: World, port: int, **kw: Any) -> MailerSettings:
    return world.settings.model_copy(
        update={
            "bounce_intake": "imap",
            "bounce_imap_host": "127.0.0.1",
            "bounce_imap_port": port,
            "bounce_imap_tls": False,
            "bounce_imap_username": "bounces@envelopepay.test",
            "bounce_imap_password": "mailbox-password",
            **kw,
        }
    )


async def test_imap_poller_records_and_moves_what_it_read(
    world: World, imap: tuple[FakeImap, int]
) -> None:
    fake, port = imap
    email_id = await world.email("nobody@example.org", "client@example.org")
    fake.add(dsn_for("gmail.eml", email_id).replace(b"no.such.person.42@gmail.com", b"x@y.z"))
    fake.add((DSN / "junk_autoreply.eml").read_bytes())
    fake.add(dsn_for("postfix.eml", uuid.uuid4().hex))  # an email we do not know
    settings = imap_settings(world, port, bounce_imap_done_folder="Processed")
    poller = bounce_intake.ImapPoller(world.bounces, settings)

    assert await poller.poll_once() == 3
    assert fake.logins == [("bounces@envelopepay.test", "mailbox-password")]
    assert fake.folders["INBOX"] == {} and len(fake.folders["Processed"]) == 3
    # Gmail's report names copy 1 by the Delivered-To header the mailbox kept.
    assert (await world.copy(email_id, 1)).bounce_kind == "hard"
    assert (await world.copy(email_id, 0)).bounce_kind is None
    assert await poller.poll_once() == 0
    assert len(await world.published()) == 1


async def test_imap_poller_deletes_without_a_done_folder_and_keeps_what_failed(
    world: World, imap: tuple[FakeImap, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, port = imap
    email_id = await world.email("nobody@example.org")
    fake.add(dsn_for("postfix.eml", email_id))
    poller = bounce_intake.ImapPoller(world.bounces, imap_settings(world, port))
    real_take = world.bounces.take

    async def broken(raw: bytes, rcpt_tos: Any = ()) -> Any:
        raise OSError("database is down")

    monkeypatch.setattr(world.bounces, "take", broken)
    assert await poller.poll_once() == 0
    assert len(fake.folders["INBOX"]) == 1  # kept for the next poll
    monkeypatch.setattr(world.bounces, "take", real_take)
    assert await poller.poll_once() == 1
    assert fake.folders["INBOX"] == {} and fake.folders["Processed"] == {}
    assert (await world.copy(email_id, 0)).bounce_kind == "hard"


async def test_imap_poller_ignores_a_forged_return_path(
    world: World, imap: tuple[FakeImap, int]
) -> None:
    fake, port = imap
    email_id = await world.email("nobody@example.org", "client@example.org")
    guess = "a guessed secret"
    # Gmail's report, its Delivered-To naming copy 1 with a forged signature.
    fake.add(
        dsn_for("gmail.eml", email_id, secret=guess).replace(
            b"no.such.person.42@gmail.com", b"x@y.z"
        )
    )
    fake.add(dsn_for("no_final_recipient.eml", email_id, secret=guess))
    fake.add(
        dsn_for("microsoft.eml", email_id, secret=guess).replace(
            b"jdoe@contoso.com", b"someone.else@example.org"
        )
    )
    poller = bounce_intake.ImapPoller(world.bounces, imap_settings(world, port))
    assert await poller.poll_once() == 3  # read and dropped: not kept for another poll
    assert (await world.copy(email_id, 0)).bounce_kind is None
    assert (await world.copy(email_id, 1)).bounce_kind is None
    assert await world.published() == []


async def test_imap_poller_survives_a_refused_login(
    world: World, imap: tuple[FakeImap, int]
) -> None:
    fake, port = imap
    fake.fail_login = True
    poller = bounce_intake.ImapPoller(world.bounces, imap_settings(world, port))
    with pytest.raises(Exception, match="AUTHENTICATIONFAILED|nope"):
        await poller.poll_once()
    task = asyncio.create_task(poller.run())  # logs and sleeps; never crashes the mailer
    await asyncio.sleep(0.2)
    assert not task.done()
    task.cancel()


# --- the dev mail sink answering through the SMTP intake (what `make run` wires) -----------


async def test_the_dev_sinks_reports_reach_the_intake(world: World, tmp_path: Path) -> None:
    from sandbox.mailsink import running_mailsink

    email_id = await world.email("client@example.com", "bounce@example.com")
    intake = await bounce_intake.start_smtp_intake(world.bounces, world.settings, port=0)
    message = (
        b"From: billing@envelopepay.test\r\nTo: client@example.com\r\nSubject: x\r\n"
        b"Message-ID: <" + email_id.encode() + b"@envelopepay.test>\r\n\r\nHello\r\n"
    )
    try:
        async with running_mailsink(tmp_path, bounce_port=intake.port, success_dsn=True) as sink:
            for n, to in enumerate(("client@example.com", "bounce@example.com")):
                smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.smtp_port)
                await smtp.connect()
                await smtp.sendmail(
                    verp(email_id, n),
                    [to],
                    message,
                    mail_options=["RET=HDRS", f"ENVID={email_id}.{n}"],
                    rcpt_options=["NOTIFY=SUCCESS,FAILURE,DELAY"],
                )
                await smtp.quit()
            assert sink.smtp.dsn is not None
            await sink.smtp.dsn.drain()
    finally:
        await intake.close()
    assert (await world.copy(email_id, 0)).delivered_at == NOW
    bounced = await world.copy(email_id, 1)
    assert (bounced.bounce_kind, bounced.bounce_status) == ("hard", "5.1.1")
    assert bounced.delivered_at is None
    assert sorted((e["key"], e["recipient"]) for e in await world.published()) == [
        ("email.bounced", "bounce@example.com"),
        ("email.delivered", "client@example.com"),
    ]
