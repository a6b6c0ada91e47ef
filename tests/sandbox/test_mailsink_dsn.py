"""The dev mail sink's bounces: bounce@example.com answered with a real RFC 3464 report sent
by SMTP to the message's MAIL FROM, soft-bounce@example.com refused for now at RCPT, and
"delivered" reports for NOTIFY=SUCCESS when that setting is on. The reports are read back
with the mailer's own parser (services.mailer.dsn), as its intake reads them."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from aiosmtpd.smtp import SMTP as AioSMTP

from sandbox.mailsink import Settings, running_mailsink
from sandbox.mailsink.dsn import DsnEnvelope, DsnSender
from services.mailer import dsn as mailer_dsn
from services.mailer.verp import return_path
from shared.events import BounceKind

pytestmark = pytest.mark.timeout(60)

TRACKING = "tracking-secret-of-the-sink-tests"  # signs the mailer's return paths
VERP = return_path("bounces", "envelopepay.test", "0f1e2d3c4b5a49687766554433221100", 0, TRACKING)
MESSAGE = (
    b"From: Demo Law LLP <billing@envelopepay.test>\r\n"
    b"To: bounce@example.com\r\n"
    b"Subject: Demo Law LLP: invoice INV-1 ($10.00 due)\r\n"
    b"Message-ID: <0f1e2d3c4b5a49687766554433221100@envelopepay.test>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Dear client, the secret link is https://pay.example/secret-token\r\n"
)


@dataclass
class Receiver:
    """An SMTP server standing where the mailer's bounce intake stands: keeps what comes."""

    got: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.got.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        self.arrived.set()
        return "250 OK"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    handler = Receiver()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: AioSMTP(handler, hostname="receiver", decode_data=False, loop=loop),
        "127.0.0.1",
        0,
    )
    try:
        yield handler, int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def send(
    port: int,
    to: list[str],
    *,
    mail_from: str = VERP,
    mail_options: list[str] | None = None,
    rcpt_options: list[str] | None = None,
    message: bytes = MESSAGE,
) -> Any:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await smtp.connect()
    try:
        return await smtp.sendmail(
            mail_from, to, message, mail_options=mail_options or [], rcpt_options=rcpt_options or []
        )
    finally:
        await smtp.quit()


def parsed(raw: bytes) -> mailer_dsn.Report:
    r = mailer_dsn.parse(raw)
    assert isinstance(r, mailer_dsn.Report), r
    return r


async def test_bounce_address_is_stored_then_answered_with_a_user_unknown_report(
    tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    got, port = receiver
    async with running_mailsink(tmp_path, bounce_port=port) as sink:
        await send(
            sink.smtp_port,
            ["bounce@example.com"],
            mail_options=["RET=HDRS", "ENVID=0f1e2d3c4b5a49687766554433221100.0"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE,DELAY"],
        )
        await asyncio.wait_for(got.arrived.wait(), 10)
        assert sink.smtp.dsn is not None
        await sink.smtp.dsn.drain()
        async with httpx.AsyncClient(base_url=sink.http_url) as c:
            listed = (await c.get("/api/messages")).json()
    # The message itself, as usual, and a copy of the report the sink sent.
    assert any(m["to"] == ["bounce@example.com"] for m in listed)
    assert any(m["subject"] == "Undelivered Mail Returned to Sender" for m in listed)

    [(mail_from, rcpt_tos, raw)] = got.got
    assert mail_from == "<>" and rcpt_tos == [VERP]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg["Content-Type"].params["report-type"] == "delivery-status"
    report = parsed(raw)
    [note] = report.notifications
    assert (note.action, note.status, note.kind) == ("failed", "5.1.1", BounceKind.hard)
    assert note.final_recipient == "bounce@example.com"
    assert note.diagnostic is not None and "User unknown" in note.diagnostic
    # ENVID given back with its case, the returned headers only (RET=HDRS): not the body.
    assert report.envelope_id == "0f1e2d3c4b5a49687766554433221100.0"
    assert report.message_id == "<0f1e2d3c4b5a49687766554433221100@envelopepay.test>"
    assert b"secret-token" not in raw
    [where] = mailer_dsn.locate(
        report,
        rcpt_tos=rcpt_tos,
        bounce_local="bounces",
        bounce_domain="envelopepay.test",
        message_id_domain="envelopepay.test",
        verp_secret=TRACKING,
    )
    assert (where.email_id, where.n) == ("0f1e2d3c4b5a49687766554433221100", 0)


async def test_soft_bounce_is_refused_for_now_at_rcpt(
    tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    got, port = receiver
    async with running_mailsink(tmp_path, bounce_port=port) as sink:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(sink.smtp_port, ["soft-bounce@example.com"])
        assert refused.value.recipients[0].code == 450
        assert "4.2.1" in refused.value.recipients[0].message
        # With another recipient the message goes to that one alone.
        errors, _ = await send(sink.smtp_port, ["soft-bounce@example.com", "client@example.com"])
        assert errors["soft-bounce@example.com"][0] == 450
        assert [m.envelope.rcpt_tos for m in sink.store.messages()] == [["client@example.com"]]
    assert got.got == []


async def test_success_reports_only_when_asked_and_switched_on(
    tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    got, port = receiver
    asked = ["NOTIFY=SUCCESS,FAILURE,DELAY"]
    async with running_mailsink(tmp_path / "off", bounce_port=port) as sink:
        await send(sink.smtp_port, ["client@example.com"], rcpt_options=asked)
    assert got.got == []  # the setting is off by default (benchmarks)
    async with running_mailsink(tmp_path / "on", bounce_port=port, success_dsn=True) as sink:
        await send(sink.smtp_port, ["client@example.com"])  # not asked: nothing
        await send(sink.smtp_port, ["client@example.com"], rcpt_options=["NOTIFY=FAILURE"])
        await send(
            sink.smtp_port,
            ["client@example.com"],
            rcpt_options=[*asked, "ORCPT=rfc822;client@example.com"],
            mail_options=["ENVID=abc.0"],
        )
        listed = sink.store.messages()
    [(mail_from, rcpt_tos, raw)] = got.got
    assert (mail_from, rcpt_tos) == ("<>", [VERP])
    report = parsed(raw)
    [note] = report.notifications
    assert (note.action, note.status, note.delivered, note.kind) == (
        "delivered",
        "2.0.0",
        True,
        None,
    )
    assert note.original_recipient == "client@example.com"
    assert report.envelope_id == "abc.0"
    # A delivered report is not kept in the viewer: only the three messages.
    assert len(listed) == 3


async def test_never_and_null_sender_get_no_report(
    tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    got, port = receiver
    async with running_mailsink(tmp_path, bounce_port=port, success_dsn=True) as sink:
        await send(sink.smtp_port, ["bounce@example.com"], rcpt_options=["NOTIFY=NEVER"])
        await send(sink.smtp_port, ["bounce@example.com"], mail_from="")
    assert got.got == []


async def test_ret_full_returns_the_whole_message(
    tmp_path: Path, receiver: tuple[Receiver, int]
) -> None:
    got, port = receiver
    async with running_mailsink(tmp_path, bounce_port=port) as sink:
        await send(sink.smtp_port, ["bounce@example.com"], mail_options=["RET=FULL"])
    [(_, _, raw)] = got.got
    assert b"message/rfc822" in raw and b"secret-token" in raw
    assert parsed(raw).message_id == "<0f1e2d3c4b5a49687766554433221100@envelopepay.test>"


async def test_no_relay_configured_sends_nothing_and_still_accepts(tmp_path: Path) -> None:
    async with running_mailsink(tmp_path) as sink:
        errors, _ = await send(sink.smtp_port, ["bounce@example.com"])
        assert errors == {}
        assert len(sink.store.messages()) == 1


async def test_relay_down_gives_up_without_harm(tmp_path: Path) -> None:
    sender = DsnSender("127.0.0.1", 9, attempts=2, first_pause=0.01)
    sender.after_delivery(MESSAGE, VERP, ["bounce@example.com"], DsnEnvelope())
    await sender.drain()
    assert sender.sent == []


async def test_ehlo_offers_dsn(tmp_path: Path) -> None:
    async with running_mailsink(tmp_path) as sink:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.smtp_port)
        await smtp.connect()
        await smtp.ehlo()
        assert smtp.supports_extension("dsn")
        # MAIL, RCPT and DATA are the sink's own, and still listed by HELP.
        code, text = await smtp.execute_command(b"HELP")
        assert code == 250 and {"MAIL", "RCPT", "DATA"} <= set(text.split())
        await smtp.quit()


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "MAILSINK_BOUNCE_HOST": "10.0.0.2",
            "MAILSINK_BOUNCE_PORT": "2525",
            "MAILSINK_SUCCESS_DSN": "true",
        }
    )
    assert (s.bounce_host, s.bounce_port, s.success_dsn) == ("10.0.0.2", 2525, True)
    d = Settings.from_env({})
    assert (d.bounce_port, d.success_dsn) == (None, False)
    with pytest.raises(ValueError, match="MAILSINK_SUCCESS_DSN"):
        Settings.from_env({"MAILSINK_SUCCESS_DSN": "maybe"})
