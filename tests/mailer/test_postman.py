"""The mailer in process, on the backend under test, against a real SMTP server (aiosmtpd on
a free port). The bus is not started: `email.requested` is handed to the postman as the
consumer would, and what it publishes stays in the outbox.

The envelope service's internal API is replaced by an httpx transport that counts the
fetches, so the tests can show when the content came sealed in the event and when it was
fetched."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from services.mailer.app import MIGRATIONS, create_app
from services.mailer.models import OutgoingEmail, outbox
from services.mailer.postman import Postman
from services.mailer.settings import MailerSettings
from shared.email_content import seal_content
from shared.events import EmailRequested
from shared.migrations import upgrade_async

TOKEN = "internal-token-of-this-test-0123456789"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


def content(email_id: str) -> dict[str, Any]:
    return {
        "to": ["dana@example.test"],
        "cc": [],
        "from_name": "Hartwell & Moreno LLP",
        "reply_to": "billing@hartwell.test",
        "subject": f"Your invoice ({email_id[:8]})",
        "html": "<p>Pay at <a href='https://pay.test/pay/tok'>Pay Online</a></p>",
        "text": "Pay at https://pay.test/pay/tok",
        "attachments": [
            {"filename": "invoice-1042.pdf", "content_type": "application/pdf", "data": PDF}
        ],
    }


def as_api_json(c: dict[str, Any]) -> dict[str, Any]:
    """The same content as the internal API answers it: attachments in base64."""
    return {
        **c,
        "attachments": [
            {
                "filename": a["filename"],
                "content_type": a["content_type"],
                "content_b64": base64.b64encode(a["data"]).decode(),
            }
            for a in c["attachments"]
        ],
    }


@dataclass
class Sink:
    """aiosmtpd handler: keeps each accepted message; answers 451 to the first
    `refuse` DATA commands."""

    refuse: int = 0
    messages: list[email.message.EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        )
        return "250 OK"


@dataclass
class Mailer:
    postman: Postman
    sink: Sink
    fetched: list[str]
    contents: dict[str, dict[str, Any]]

    def request(self, email_id: str, *, sealed_with: str | None = TOKEN) -> EmailRequested:
        c = content(email_id)
        self.contents[email_id] = c
        return EmailRequested(
            firm_id="firm-hartwell",
            email_id=email_id,
            envelope_id=str(uuid.uuid4()),
            to=c["to"],
            subject=c["subject"],
            content_url=f"http://envelope.internal/internal/emails/{email_id}",
            sealed_content=seal_content(sealed_with, email_id, c) if sealed_with else None,
        )

    async def row(self, email_id: str) -> OutgoingEmail:
        async with self.postman.service.sessionmaker() as s:
            row = await s.get(OutgoingEmail, email_id)
            assert row is not None
            return row

    async def published(self) -> list[tuple[str, dict[str, Any]]]:
        async with self.postman.service.sessionmaker() as s:
            rows = await s.execute(
                select(outbox.c.routing_key, outbox.c.payload).order_by(outbox.c.id)
            )
            return [(key, json.loads(payload)) for key, payload in rows]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def mailer(database_url: str) -> AsyncIterator[Mailer]:
    await upgrade_async(MIGRATIONS, database_url)
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    settings = MailerSettings(
        database_url=database_url,
        environment="test",
        internal_token=TOKEN,
        smtp_port=port,
        retry_base_seconds=0,
    )
    app = create_app(settings)
    postman: Postman = app.state.postman
    fetched: list[str] = []
    contents: dict[str, dict[str, Any]] = {}

    def api(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-Internal-Token"] == TOKEN
        email_id = request.url.path.rsplit("/", 1)[-1]
        fetched.append(email_id)
        if email_id not in contents:
            return httpx.Response(404, json={"detail": "no such email"})
        return httpx.Response(200, json=as_api_json(contents[email_id]))

    await postman.http.aclose()
    postman.http = httpx.AsyncClient(
        transport=httpx.MockTransport(api), headers={"X-Internal-Token": TOKEN}
    )
    try:
        yield Mailer(postman, sink, fetched, contents)
    finally:
        await postman.http.aclose()
        await postman.relay.close()
        await postman.service.engine.dispose()
        controller.stop()


def check_delivered(m: Mailer, email_id: str) -> None:
    [msg] = [x for x in m.sink.messages if x["Message-ID"] == f"<{email_id}@envelopepay.test>"]
    c = m.contents[email_id]
    assert msg["Subject"] == c["subject"]
    assert msg["To"] == "dana@example.test"
    assert "Hartwell" in msg["From"]
    [att] = list(msg.iter_attachments())
    assert att.get_filename() == "invoice-1042.pdf"
    assert att.get_content() == PDF
    assert "https://pay.test/pay/tok" in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def test_sealed_content_is_sent_without_fetching_it(mailer: Mailer) -> None:
    email_id = str(uuid.uuid4())
    await mailer.postman.on_email_requested(mailer.request(email_id))

    check_delivered(mailer, email_id)
    assert mailer.fetched == []
    row = await mailer.row(email_id)
    assert row.status == "sent" and row.attempts == 1
    # The content itself is not kept: only where to fetch it, for a retry.
    assert row.content_url.endswith(email_id)
    [(key, payload)] = await mailer.published()
    assert key == "email.sent" and payload["email_id"] == email_id


async def test_content_that_does_not_open_is_fetched_instead(
    mailer: Mailer, caplog: pytest.LogCaptureFixture
) -> None:
    email_id = str(uuid.uuid4())
    with caplog.at_level(logging.WARNING):
        await mailer.postman.on_email_requested(
            mailer.request(email_id, sealed_with="a-rotated-token")
        )

    assert mailer.fetched == [email_id]
    check_delivered(mailer, email_id)
    assert "does not open" in caplog.text
    assert (await mailer.row(email_id)).status == "sent"


async def test_an_event_without_sealed_content_is_fetched(mailer: Mailer) -> None:
    email_id = str(uuid.uuid4())
    await mailer.postman.on_email_requested(mailer.request(email_id, sealed_with=None))

    assert mailer.fetched == [email_id]
    check_delivered(mailer, email_id)


async def test_a_retry_fetches_the_content_and_the_email_goes_out_once(mailer: Mailer) -> None:
    mailer.sink.refuse = 1
    email_id = str(uuid.uuid4())
    ev = mailer.request(email_id)
    await mailer.postman.on_email_requested(ev)

    row = await mailer.row(email_id)
    assert row.status == "retrying" and "451" in (row.error or "")
    assert mailer.sink.messages == [] and mailer.fetched == []

    await mailer.postman.deliver(email_id)
    assert mailer.fetched == [email_id]
    check_delivered(mailer, email_id)
    assert (await mailer.row(email_id)).attempts == 2

    # The same event delivered again (the broker lost our ack): not sent again.
    await mailer.postman.on_email_requested(ev)
    await mailer.postman.deliver(email_id)
    assert len(mailer.sink.messages) == 1
    assert [key for key, _ in await mailer.published()] == ["email.sent"]


async def test_a_batch_sends_each_email_once_and_each_failure_alone(
    mailer: Mailer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch as the consumer hands it over (`on_emails_requested`): the same event
    delivered twice and one email asked for under two events go out once; a refusal, a
    content that no longer exists and an SMTP step that raises something unforeseen each
    stop only their own email, with the state that says what to do next."""
    ids = [str(uuid.uuid4()) for _ in range(6)]
    good, refused, gone, broken = ids[0], ids[1], ids[2], ids[3]
    evs = [mailer.request(i) for i in ids]
    evs.append(evs[0])  # redelivered within the batch
    again = mailer.request(ids[4])  # the same email under another event
    evs.append(again)
    gone_ev = mailer.request(gone, sealed_with=None)
    del mailer.contents[gone]  # the envelope service no longer has it: 404
    evs[2] = gone_ev

    real_send = mailer.postman.relay.send
    refused_subject = mailer.contents[refused]["subject"]
    broken_subject = mailer.contents[broken]["subject"]

    async def send(msg: Any) -> Any:
        if f"Subject: {refused_subject}".encode() in msg.data:
            raise aiosmtplib.SMTPResponseException(451, "4.3.0 try again later")
        if f"Subject: {broken_subject}".encode() in msg.data:
            raise RuntimeError("a bug between us and the relay")
        return await real_send(msg)

    monkeypatch.setattr(mailer.postman.relay, "send", send)
    await mailer.postman.on_emails_requested(evs)

    delivered = sorted(m["Message-ID"] for m in mailer.sink.messages)
    assert delivered == sorted(f"<{i}@envelopepay.test>" for i in (good, ids[4], ids[5]))
    for i in (good, ids[4], ids[5]):
        check_delivered(mailer, i)
        row = await mailer.row(i)
        assert row.status == "sent" and row.attempts == 1 and row.sent_at is not None
        assert row.message_id == f"<{i}@envelopepay.test>"
    row = await mailer.row(refused)
    assert row.status == "retrying" and "451" in (row.error or "")
    row = await mailer.row(gone)
    assert row.status == "failed" and "no longer exists" in (row.error or "")
    row = await mailer.row(broken)
    assert row.status == "uncertain" and "a bug between us" in (row.error or "")

    published = await mailer.published()
    sent = sorted(p["email_id"] for key, p in published if key == "email.sent")
    assert sent == sorted([good, ids[4], ids[5]])
    failed = sorted(p["email_id"] for key, p in published if key == "email.failed")
    assert failed == sorted([gone, broken])

    # The whole batch delivered again: nothing more goes out or is published.
    await mailer.postman.on_emails_requested(evs)
    assert len(mailer.sink.messages) == 3
    assert len(await mailer.published()) == len(published)


async def test_an_address_no_message_can_carry_fails_its_email_alone(mailer: Mailer) -> None:
    good, odd = str(uuid.uuid4()), str(uuid.uuid4())
    evs = [mailer.request(good), mailer.request(odd, sealed_with=None)]
    mailer.contents[odd]["to"] = ["jürgen@client.example"]
    await mailer.postman.on_emails_requested(evs)

    assert [m["Message-ID"] for m in mailer.sink.messages] == [f"<{good}@envelopepay.test>"]
    row = await mailer.row(odd)
    assert row.status == "failed" and "outside ASCII before the @" in (row.error or "")
    published = await mailer.published()
    assert [p["email_id"] for key, p in published if key == "email.failed"] == [odd]
    assert [p["email_id"] for key, p in published if key == "email.sent"] == [good]
