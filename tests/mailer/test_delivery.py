"""Each recipient's copy against a real SMTP server (aiosmtpd on a free port) whose answers the
test decides: the same request twice, a 4xx then a success, a 5xx, one recipient of two
refused, a retry that sends only what waits, the DSN request, tracked links, attachments too
large. On SQLite and PostgreSQL (the `database_url` fixture)."""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from sqlalchemy import select

from services.mailer.app import MIGRATIONS, create_app
from services.mailer.models import EmailRecipient, OutgoingEmail, outbox
from services.mailer.postman import Postman
from services.mailer.settings import MailerSettings
from services.mailer.verp import read_return_path, return_path
from shared import tracking
from shared.email_content import seal_content
from shared.events import EmailRequested
from shared.migrations import upgrade_async
from tests.mailer.test_postman import TOKEN, as_api_json, free_port

BASE = "https://pay.envelopepay.test"
SECRET = "tracking-secret-of-this-test"


@dataclass
class Transaction:
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    rcpt_options: list[str]
    message: email.message.EmailMessage
    raw: bytes  # as it came over the wire


@dataclass
class Relay:
    """aiosmtpd handler: answers each RCPT and DATA from the queues the test fills (250 when
    a queue is empty), and keeps each transaction it accepted."""

    dsn: bool = False
    rcpt: dict[str, list[str]] = field(default_factory=dict)  # address -> its next answers
    data: list[str] = field(default_factory=list)
    accepted: list[Transaction] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)  # every RCPT address, in order

    async def handle_EHLO(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.dsn:
            responses.insert(-1, "250-DSN")
        return responses

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        self.tried.append(address)
        answers = self.rcpt.get(address) or []
        if answers:
            answer = answers.pop(0)
            if not answer.startswith("2"):
                return answer
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.data:
            answer = self.data.pop(0)
            if not answer.startswith("2"):
                return answer
        self.accepted.append(
            Transaction(
                envelope.mail_from,
                list(envelope.mail_options),
                list(envelope.rcpt_tos),
                list(envelope.rcpt_options),
                email.message_from_bytes(envelope.content, policy=email.policy.default),  # type: ignore[arg-type]
                envelope.original_content,
            )
        )
        return "250 2.0.0 Ok: queued as Q" + str(len(self.accepted))

    def to(self, address: str) -> list[Transaction]:
        return [t for t in self.accepted if t.rcpt_tos == [address]]


class DsnSMTP(SMTP):
    """aiosmtpd's server, taking the RFC 3461 parameters (aiosmtpd refuses any it does not
    know) so that the client's DSN request can be seen."""

    def _getparams(self, params: Any) -> Any:
        result = super()._getparams(params)
        if result is not None:
            for name in ("RET", "ENVID", "NOTIFY", "ORCPT"):
                result.pop(name, None)
        return result


class DsnController(Controller):
    def factory(self) -> SMTP:
        return DsnSMTP(self.handler, **self.SMTP_kwargs)


def content(**extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "to": ["dana@example.test", "eli@example.test"],
        "cc": ["audit@example.test"],
        "from_name": "Hartwell & Moreno LLP",
        "reply_to": "billing@hartwell.test",
        "subject": "Your invoice INV-1042",
        "html": (
            "<html><body><p>Dear Dana,</p>"
            f'<a href="{BASE}/pay/tok123?invoice=inv-1&amp;x=2">Pay Online</a> '
            f"<a href='{BASE}/v/tok123/inv-1'>View Invoice</a> "
            '<a href="https://hartwell.test/about">About us</a></body></html>'
        ),
        "text": f"Pay at {BASE}/pay/tok123?invoice=inv-1&x=2.\nAbout us: https://hartwell.test/about",
        "attachments": [],
    }
    c.update(extra)
    return c


@dataclass
class Mailer:
    postman: Postman
    relay: Relay
    contents: dict[str, dict[str, Any]]
    fetched: list[str]

    def request(self, c: dict[str, Any] | None = None) -> EmailRequested:
        email_id = uuid.uuid4().hex
        c = c or content()
        self.contents[email_id] = c
        return EmailRequested(
            firm_id="firm-hartwell",
            email_id=email_id,
            envelope_id=str(uuid.uuid4()),
            to=c["to"],
            subject=c["subject"],
            content_url=f"http://envelope.internal/internal/emails/{email_id}",
            sealed_content=seal_content(TOKEN, email_id, c),
        )

    async def row(self, email_id: str) -> OutgoingEmail:
        async with self.postman.service.sessionmaker() as s:
            row = await s.get(OutgoingEmail, email_id)
            assert row is not None
            return row

    async def copies(self, email_id: str) -> list[EmailRecipient]:
        async with self.postman.service.sessionmaker() as s:
            return list(
                await s.scalars(
                    select(EmailRecipient)
                    .where(EmailRecipient.email_id == email_id)
                    .order_by(EmailRecipient.n)
                )
            )

    async def published(self) -> list[tuple[str, dict[str, Any]]]:
        async with self.postman.service.sessionmaker() as s:
            rows = await s.execute(
                select(outbox.c.routing_key, outbox.c.payload).order_by(outbox.c.id)
            )
            return [(key, json.loads(payload)) for key, payload in rows]


async def start(database_url: str, *, dsn: bool = False, **settings: Any) -> AsyncIterator[Mailer]:
    await upgrade_async(MIGRATIONS, database_url)
    relay = Relay(dsn=dsn)
    port = free_port()
    controller = DsnController(relay, hostname="127.0.0.1", port=port)
    controller.start()
    app = create_app(
        MailerSettings(
            database_url=database_url,
            environment="test",
            internal_token=TOKEN,
            smtp_port=port,
            retry_base_seconds=0,
            public_base_url=BASE,
            tracking_secret=SECRET,
            mail_from="billing@envelopepay.test",
            **settings,
        )
    )
    postman: Postman = app.state.postman
    contents: dict[str, dict[str, Any]] = {}
    fetched: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        email_id = request.url.path.rsplit("/", 1)[-1]
        fetched.append(email_id)
        return httpx.Response(200, json=as_api_json(contents[email_id]))

    await postman.http.aclose()
    postman.http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    try:
        yield Mailer(postman, relay, contents, fetched)
    finally:
        await postman.http.aclose()
        await postman.relay.close()
        await postman.service.engine.dispose()
        controller.stop()


@pytest.fixture
async def mailer(database_url: str) -> AsyncIterator[Mailer]:
    async for m in start(database_url):
        yield m


@pytest.fixture
async def dsn_mailer(database_url: str) -> AsyncIterator[Mailer]:
    async for m in start(database_url, dsn=True):
        yield m


ALL = ["dana@example.test", "eli@example.test", "audit@example.test"]


async def test_each_recipient_gets_its_own_copy_with_the_same_headers(mailer: Mailer) -> None:
    ev = mailer.request()
    await mailer.postman.on_email_requested(ev)

    # One transaction per recipient, To then Cc, each from its own return path.
    assert [t.rcpt_tos for t in mailer.relay.accepted] == [[a] for a in ALL]
    for n, t in enumerate(mailer.relay.accepted):
        assert t.mail_from == return_path("bounces", "envelopepay.test", ev.email_id, n, SECRET)
        found = read_return_path(t.mail_from, "bounces", "envelopepay.test", SECRET)
        assert found is not None and (found.email_id, found.n) == (ev.email_id, n)
        msg = t.message
        assert [a.addr_spec for a in msg["To"].addresses] == ALL[:2]
        assert msg["Cc"] == "audit@example.test"
        assert msg["From"].addresses[0].display_name == "Hartwell & Moreno LLP"
        assert msg["From"].addresses[0].addr_spec == "billing@envelopepay.test"
        assert msg["Reply-To"] == "billing@hartwell.test"
        assert msg["Message-ID"] == f"<{ev.email_id}@envelopepay.test>"
        assert msg["DKIM-Signature"] is None  # no key configured
        # No DSN offered, none asked.
        assert [o.split("=")[0] for o in t.mail_options] == ["SIZE"] and t.rcpt_options == []

    row = await mailer.row(ev.email_id)
    assert row.status == "sent" and row.attempts == 1
    copies = await mailer.copies(ev.email_id)
    assert [(c.n, c.address, c.status) for c in copies] == [
        (n, a, "accepted") for n, a in enumerate(ALL)
    ]
    assert all(c.reply and c.reply.startswith("250 2.0.0 Ok") for c in copies)
    assert all(c.accepted_at is not None for c in copies)
    [(key, payload)] = await mailer.published()
    assert key == "email.sent"
    assert payload["to"] == ALL and payload["refused"] == {}


async def test_copies_differ_only_by_their_tracking_links(mailer: Mailer) -> None:
    ev = mailer.request()
    await mailer.postman.on_email_requested(ev)

    bodies = []
    for n, t in enumerate(mailer.relay.accepted):
        html_part = t.message.get_body(("html",))
        text_part = t.message.get_body(("plain",))
        assert html_part is not None and text_part is not None
        html, text = html_part.get_content(), text_part.get_content()
        # Our pages go through the redirect, signed for this recipient and exactly that page.
        tracked = [u for u in _hrefs(html) if u.startswith(f"{BASE}/t/c/")]
        assert [_target(u) for u in tracked] == ["/pay/tok123?invoice=inv-1&x=2", "/v/tok123/inv-1"]
        for url in tracked:
            token = urlsplit(url).path.rsplit("/", 1)[1]
            got = tracking.read_click(SECRET, token, _target(url))
            assert got == tracking.Recipient(ev.email_id, n)
        # Another host is left exactly as it is.
        assert "https://hartwell.test/about" in _hrefs(html)
        assert f"{BASE}/pay/tok123" not in html
        pixel = tracking.pixel_url(BASE, SECRET, ev.email_id, n)
        assert f'<img src="{pixel}" alt="" width="1" height="1"' in html
        assert html.index(pixel) < html.index("</body>")
        # The text part too; the full stop after the URL stays text.
        [text_url] = [w for w in text.split() if w.startswith(f"{BASE}/t/c/")]
        assert text_url.endswith(".")
        assert _target(text_url[:-1]) == "/pay/tok123?invoice=inv-1&x=2"
        assert "About us: https://hartwell.test/about" in text
        bodies.append((html, text))
    # Take the tracking out and the copies are the same.
    assert len({_untracked(h) + _untracked(t) for h, t in bodies}) == 1
    assert len({h for h, _ in bodies}) == 3


def _hrefs(html: str) -> list[str]:
    import re
    from html import unescape

    return [unescape(v) for v in re.findall(r'href="([^"]*)"', html)]


def _target(url: str) -> str:
    return parse_qs(urlsplit(url).query)["u"][0]


def _untracked(body: str) -> str:
    import re

    return re.sub(r"/t/[oc]/[A-Za-z0-9_.-]+", "/t/TOKEN", body)


async def test_the_same_request_delivered_twice_sends_one_email(mailer: Mailer) -> None:
    ev = mailer.request(content(to=["dana@example.test"], cc=[]))
    await mailer.postman.on_email_requested(ev)
    await mailer.postman.on_email_requested(ev)  # the broker lost our ack
    await mailer.postman.on_emails_requested([ev, ev])  # and again, twice in a batch
    await mailer.postman.deliver(ev.email_id)  # a retry loop that finds it

    assert len(mailer.relay.accepted) == 1
    assert [k for k, _ in await mailer.published()] == ["email.sent"]


async def test_a_4xx_then_a_success_sends_one_email(mailer: Mailer) -> None:
    mailer.relay.data = ["451 4.3.0 try again later"]
    ev = mailer.request(content(to=["dana@example.test"], cc=[]))
    await mailer.postman.on_email_requested(ev)

    row = await mailer.row(ev.email_id)
    assert row.status == "retrying" and row.error == "dana@example.test: 451 4.3.0 try again later"
    [copy] = await mailer.copies(ev.email_id)
    assert copy.status == "deferred" and copy.reply == "451 4.3.0 try again later"
    assert mailer.relay.accepted == [] and await mailer.published() == []

    await mailer.postman.deliver(ev.email_id)
    await mailer.postman.deliver(ev.email_id)  # a second retry finds nothing waiting
    assert len(mailer.relay.accepted) == 1
    row = await mailer.row(ev.email_id)
    assert row.status == "sent" and row.attempts == 2 and row.error is None
    [copy] = await mailer.copies(ev.email_id)
    assert copy.status == "accepted" and copy.reply is not None and copy.reply.startswith("250")
    [(key, payload)] = await mailer.published()
    assert key == "email.sent" and payload["to"] == ["dana@example.test"]


async def test_a_5xx_fails_the_email_at_once_with_the_reply(mailer: Mailer) -> None:
    mailer.relay.rcpt["dana@example.test"] = ["550 5.1.1 <dana@example.test>: no such user"]
    ev = mailer.request(content(to=["dana@example.test"], cc=[]))
    await mailer.postman.on_email_requested(ev)

    assert mailer.relay.accepted == []
    row = await mailer.row(ev.email_id)
    reply = "550 5.1.1 <dana@example.test>: no such user"
    assert row.status == "failed" and row.attempts == 1
    assert row.error == f"the relay refused the message to dana@example.test: {reply}"
    [copy] = await mailer.copies(ev.email_id)
    assert (copy.status, copy.reply, copy.accepted_at) == ("refused", reply, None)
    [(key, payload)] = await mailer.published()
    assert key == "email.failed"
    assert payload["reason"] == row.error
    assert payload["refused"] == {"dana@example.test": reply}

    # Refused for good: no retry ever tries it again.
    await mailer.postman.deliver(ev.email_id)
    assert mailer.relay.tried == ["dana@example.test"]


async def test_a_5xx_to_data_is_the_recipients_reply_too(mailer: Mailer) -> None:
    mailer.relay.data = ["554 5.7.1 message rejected as spam"]
    ev = mailer.request(content(to=["dana@example.test"], cc=[]))
    await mailer.postman.on_email_requested(ev)

    [(key, payload)] = await mailer.published()
    assert key == "email.failed"
    assert payload["refused"] == {"dana@example.test": "554 5.7.1 message rejected as spam"}
    assert "554 5.7.1 message rejected as spam" in payload["reason"]


async def test_one_recipient_of_two_refused_the_other_gets_it(mailer: Mailer) -> None:
    mailer.relay.rcpt["eli@example.test"] = ["550 5.1.1 no such user here"]
    ev = mailer.request(content(cc=[]))
    await mailer.postman.on_email_requested(ev)

    assert [t.rcpt_tos for t in mailer.relay.accepted] == [["dana@example.test"]]
    row = await mailer.row(ev.email_id)
    assert row.status == "sent"
    assert (
        row.error
        == "the relay refused the message to eli@example.test: 550 5.1.1 no such user here"
    )
    assert [c.status for c in await mailer.copies(ev.email_id)] == ["accepted", "refused"]
    [(key, payload)] = await mailer.published()
    assert key == "email.sent"
    assert payload["to"] == ["dana@example.test"]
    assert payload["refused"] == {"eli@example.test": "550 5.1.1 no such user here"}


async def test_a_retry_sends_only_the_deferred_recipient(mailer: Mailer) -> None:
    """One accepted, one deferred, one refused for good: the page hears at once who has it,
    and the rest once the deferred one has its answer; the retry sends only that one."""
    mailer.relay.rcpt["eli@example.test"] = ["452 4.2.2 mailbox full"]
    mailer.relay.rcpt["audit@example.test"] = ["550 5.1.1 gone"]
    ev = mailer.request()
    await mailer.postman.on_email_requested(ev)

    assert [t.rcpt_tos for t in mailer.relay.accepted] == [["dana@example.test"]]
    assert [c.status for c in await mailer.copies(ev.email_id)] == [
        "accepted",
        "deferred",
        "refused",
    ]
    row = await mailer.row(ev.email_id)
    assert row.status == "retrying" and row.error == "eli@example.test: 452 4.2.2 mailbox full"
    [(key, first)] = await mailer.published()
    assert key == "email.sent"
    assert first["to"] == ["dana@example.test"] and first["refused"] == {}

    await mailer.postman.deliver(ev.email_id)
    assert mailer.relay.tried == [*ALL, "eli@example.test"]
    assert [t.rcpt_tos for t in mailer.relay.accepted] == [
        ["dana@example.test"],
        ["eli@example.test"],
    ]
    copies = await mailer.copies(ev.email_id)
    assert [c.status for c in copies] == ["accepted", "accepted", "refused"]
    # The retry fetched the content (none is kept) and wrote the same tracked copy.
    assert mailer.fetched == [ev.email_id]
    [(_, again), (key, payload)] = await mailer.published()
    assert again == first
    assert key == "email.sent"
    assert payload["to"] == ["eli@example.test"]  # dana's was announced with the first answer
    assert payload["refused"] == {"audit@example.test": "550 5.1.1 gone"}


async def test_a_recipient_deferred_to_the_last_attempt_is_given_up(database_url: str) -> None:
    async for mailer in start(database_url, max_attempts=2):
        mailer.relay.rcpt["eli@example.test"] = ["450 4.2.0 greylisted"] * 5
        ev = mailer.request(content(cc=[]))
        await mailer.postman.on_email_requested(ev)
        await mailer.postman.deliver(ev.email_id)

        row = await mailer.row(ev.email_id)
        assert row.status == "sent" and row.attempts == 2
        eli = (await mailer.copies(ev.email_id))[1]
        assert eli.status == "refused"
        assert eli.reply == "gave up after 2 attempts: 450 4.2.0 greylisted"
        [(k1, first), (k2, last)] = await mailer.published()
        assert k1 == k2 == "email.sent"
        assert first["to"] == ["dana@example.test"] and first["refused"] == {}
        assert last["to"] == [] and last["refused"] == {"eli@example.test": eli.reply}
        assert len(mailer.relay.to("dana@example.test")) == 1


async def test_the_relay_down_defers_every_copy(database_url: str) -> None:
    async for mailer in start(database_url, smtp_timeout_seconds=5):
        mailer.postman.settings.smtp_port = free_port()  # nothing listens there
        ev = mailer.request()
        await mailer.postman.on_email_requested(ev)

        row = await mailer.row(ev.email_id)
        assert row.status == "retrying"
        copies = await mailer.copies(ev.email_id)
        assert [c.status for c in copies] == ["deferred"] * 3
        assert all("the relay is not reachable" in (c.reply or "") for c in copies)
        assert mailer.relay.tried == [] and await mailer.published() == []


async def test_the_dsn_extension_is_asked_for_each_copy(dsn_mailer: Mailer) -> None:
    ev = dsn_mailer.request(content(cc=[]))
    await dsn_mailer.postman.on_email_requested(ev)

    assert len(dsn_mailer.relay.accepted) == 2
    for n, t in enumerate(dsn_mailer.relay.accepted):
        # aiosmtpd hands the options over in capitals.
        assert "RET=HDRS" in t.mail_options
        assert f"ENVID={ev.email_id}.{n}".upper() in t.mail_options
        assert t.rcpt_options == ["NOTIFY=SUCCESS,FAILURE,DELAY"]
        assert t.mail_from == return_path("bounces", "envelopepay.test", ev.email_id, n, SECRET)


async def test_attachments_over_the_limit_fail_without_smtp(database_url: str) -> None:
    async for mailer in start(database_url, max_attachment_bytes=1_000_000):
        pdf = b"%PDF" + b"x" * 1_560_000
        atts = [{"filename": "big.pdf", "content_type": "application/pdf", "data": pdf}]
        ev = mailer.request(content(attachments=atts))
        await mailer.postman.on_email_requested(ev)

        assert mailer.relay.tried == []
        reason = (
            "the attachments are 1.6 MB, over the 1 MB limit; send this envelope by secure link"
        )
        row = await mailer.row(ev.email_id)
        assert row.status == "failed" and row.error == reason
        [(key, payload)] = await mailer.published()
        assert key == "email.failed" and payload["reason"] == reason


async def test_the_default_limit_reads_as_the_firm_would_see_it() -> None:
    from services.mailer.rules import attachments_over_limit

    limit = MailerSettings.model_fields["max_attachment_bytes"].default
    assert str(attachments_over_limit(31_200_000, limit)) == (
        "the attachments are 31.2 MB, over the 20 MB limit; send this envelope by secure link"
    )


async def test_an_attempt_that_ends_unexpectedly_is_uncertain_and_never_resent(
    mailer: Mailer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first copy accepted, then something that is no answer of the relay's: what went
    out is recorded, the rest stays unsent, and a person decides (nothing is retried)."""
    real_send = mailer.postman.relay.send

    async def send(msg: Any) -> Any:
        if msg.recipients == ["eli@example.test"]:
            raise RuntimeError("a bug between us and the relay")
        return await real_send(msg)

    monkeypatch.setattr(mailer.postman.relay, "send", send)
    ev = mailer.request()
    await mailer.postman.on_email_requested(ev)

    row = await mailer.row(ev.email_id)
    assert row.status == "uncertain" and "a bug between us" in (row.error or "")
    assert [c.status for c in await mailer.copies(ev.email_id)] == [
        "accepted",
        "pending",
        "pending",
    ]
    [(key, payload)] = await mailer.published()
    assert key == "email.failed" and "check with the client" in payload["reason"]
    await mailer.postman.deliver(ev.email_id)
    await mailer.postman.on_email_requested(ev)
    assert [t.rcpt_tos for t in mailer.relay.accepted] == [["dana@example.test"]]


async def test_copies_are_dkim_signed_when_a_key_is_configured(database_url: str) -> None:
    import dkim as dkimpy

    from tests.unit.test_mailer_dkim import dns, key_pair

    pem, record = key_pair()
    async for mailer in start(
        database_url, dkim_private_key=pem, dkim_selector="mail2026", dkim_domain="firm.example"
    ):
        ev = mailer.request(content(cc=[]))
        await mailer.postman.on_email_requested(ev)
        assert len(mailer.relay.accepted) == 2
        for t in mailer.relay.accepted:
            assert "d=firm.example" in str(t.message["DKIM-Signature"])
            assert dkimpy.verify(t.raw, dnsfunc=dns(record))


def test_production_refuses_the_development_tracking_secret() -> None:
    prod = {"environment": "production", "internal_token": "a-real-internal-token"}
    with pytest.raises(ValueError, match="TRACKING_SECRET must be set in production"):
        MailerSettings(**prod)  # type: ignore[arg-type]
    st = MailerSettings(**prod, tracking_secret="a-real-tracking-secret")  # type: ignore[arg-type]
    assert st.bounce_domain == "envelopepay.test" and st.bounce_local == "bounces"


async def test_an_email_without_a_recipient_fails_without_smtp(mailer: Mailer) -> None:
    ev = mailer.request(content(to=[], cc=[]))
    await mailer.postman.on_email_requested(ev)

    assert mailer.relay.tried == []
    row = await mailer.row(ev.email_id)
    assert row.status == "failed" and row.error == "the email has no recipient"
    assert await mailer.copies(ev.email_id) == []


async def test_two_retries_of_the_same_email_at_once_send_it_once(mailer: Mailer) -> None:
    """Two retry loops (two mailers) find the same email due: one sends, the other finds it
    already `sending` and sends nothing."""
    import asyncio

    mailer.relay.data = ["451 4.3.0 try again later"]
    ev = mailer.request(content(to=["dana@example.test"], cc=[]))
    await mailer.postman.on_email_requested(ev)
    assert (await mailer.row(ev.email_id)).status == "retrying"

    await asyncio.gather(*(mailer.postman.deliver(ev.email_id) for _ in range(3)))
    assert len(mailer.relay.accepted) == 1
    assert (await mailer.row(ev.email_id)).attempts == 2
    assert [k for k, _ in await mailer.published()] == ["email.sent"]
