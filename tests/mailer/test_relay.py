"""The relay's faster aiosmtplib client (services.mailer.prepared_smtp) against a real SMTP
server (aiosmtpd on a free port): it is fenced to the aiosmtplib releases it was written
for, leaves aiosmtplib itself alone, and puts on the wire what aiosmtplib's own `sendmail`
puts there."""

from __future__ import annotations

import base64
import importlib.metadata
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import aiosmtplib.protocol
import aiosmtplib.smtp
import pytest
from aiosmtpd.controller import Controller

from services.mailer import prepared_smtp
from services.mailer.message import build_message
from services.mailer.prepared_smtp import AIOSMTPLIB_WRITTEN_FOR, PreparedSMTP

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


def release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def test_the_aiosmtplib_shim_was_written_for_the_installed_release() -> None:
    """PreparedSMTP repeats two of aiosmtplib's methods and uses its private parts: a new
    release must be compared with it before this range moves."""
    installed = release(importlib.metadata.version("aiosmtplib"))
    low, high = (release(v) for v in AIOSMTPLIB_WRITTEN_FOR)
    assert low <= installed < high, (
        f"aiosmtplib {importlib.metadata.version('aiosmtplib')} is outside the releases "
        f"services/mailer/prepared_smtp.py was written for {AIOSMTPLIB_WRITTEN_FOR}"
    )


def test_aiosmtplib_module_globals_are_left_alone() -> None:
    assert aiosmtplib.protocol.PERIOD_REGEX is prepared_smtp._regex_period
    assert isinstance(aiosmtplib.protocol.PERIOD_REGEX, re.Pattern)
    assert aiosmtplib.protocol.normalize_message_line_endings is prepared_smtp._regex_normalize
    assert aiosmtplib.smtp.normalize_message_line_endings is prepared_smtp._regex_normalize  # type: ignore[attr-defined]


@dataclass
class Recorder:
    """Keeps what each transaction put on the wire; refuses the recipients and DATA it is
    told to."""

    seen: list[tuple[str, list[str], list[str], bytes]] = field(default_factory=list)
    refuse_rcpt: set[str] = field(default_factory=set)
    refuse_data: str | None = None

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse_rcpt:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.refuse_data:
            return self.refuse_data
        self.seen.append(
            (
                envelope.mail_from,
                list(envelope.mail_options),
                list(envelope.rcpt_tos),
                envelope.original_content,
            )
        )
        return "250 OK"


@pytest.fixture
def sink() -> Iterator[tuple[Recorder, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


def ours() -> bytes:
    text = ".a line that starts with a dot\n..and two\nend."
    return build_message(
        {
            "to": ["dana@example.test"],
            "cc": [],
            "from_name": "Hartwell & Moreno LLP",
            "reply_to": None,
            "subject": "Your invoice",
            "html": f"<p>{text}</p>",
            "text": text,
            "attachments": [
                {
                    "filename": "invoice.pdf",
                    "content_type": "application/pdf",
                    "content_b64": base64.b64encode(PDF).decode(),
                }
            ],
        },
        mail_from="billing@envelopepay.test",
        message_id="<m@envelopepay.test>",
    ).data


MESSAGES = [
    ours(),
    b".starts with a dot\r\nno final line ending",
    b"lone LF\nlone CR\rCRLF\r\n.\r\n..\r\n",
    b"Subject: x\r\n\r\nbody\r\n",
]


async def test_the_same_transaction_as_aiosmtplib_sendmail(sink: tuple[Recorder, int]) -> None:
    recorder, port = sink
    to = ["dana@example.test", "second@example.test"]
    stock = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    prepared = PreparedSMTP(hostname="127.0.0.1", port=port)
    await stock.connect()
    await prepared.connect()
    try:
        for message in MESSAGES:
            await stock.sendmail("billing@envelopepay.test", to, message)
            await prepared.send_prepared("billing@envelopepay.test", to, message)
        # As the relay sends our own messages: their line endings taken as they are.
        await prepared.send_prepared("billing@envelopepay.test", to, MESSAGES[0], crlf_only=True)
    finally:
        await stock.quit()
        await prepared.quit()
    assert len(recorder.seen) == 2 * len(MESSAGES) + 1
    assert recorder.seen[-1] == recorder.seen[0]
    for i in range(len(MESSAGES)):
        by_stock, by_prepared = recorder.seen[2 * i], recorder.seen[2 * i + 1]
        assert by_prepared == by_stock, i
        assert any(option.lower().startswith("size=") for option in by_stock[1])


async def test_refusals_raise_as_sendmail_and_leave_the_connection_usable(
    sink: tuple[Recorder, int],
) -> None:
    recorder, port = sink
    smtp = PreparedSMTP(hostname="127.0.0.1", port=port)
    await smtp.connect()
    try:
        recorder.refuse_rcpt = {"gone@example.test"}
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await smtp.send_prepared("b@envelopepay.test", ["gone@example.test"], MESSAGES[3])
        recorder.refuse_data = "451 4.3.0 try again later"
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.send_prepared("b@envelopepay.test", ["ok@example.test"], MESSAGES[3])
        assert refused.value.code == 451
        recorder.refuse_data = None
        # One recipient of two refused: sent to the other, as sendmail does.
        await smtp.send_prepared(
            "b@envelopepay.test", ["gone@example.test", "ok@example.test"], MESSAGES[3]
        )
    finally:
        await smtp.quit()
    [(_, _, rcpts, content)] = recorder.seen
    assert rcpts == ["ok@example.test"] and content == MESSAGES[3]


@dataclass
class DsnRecorder(Recorder):
    """A relay that offers DSN (RFC 3461), keeping the RCPT options too."""

    rcpt_options: list[list[str]] = field(default_factory=list)

    async def handle_EHLO(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        responses.insert(-1, "250-DSN")
        return responses

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        self.rcpt_options.append(list(rcpt_options))
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


async def test_the_dsn_request_is_the_one_sendmail_makes_with_the_same_options() -> None:
    from tests.mailer.test_delivery import DsnController

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    recorder = DsnRecorder()
    controller = DsnController(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    stock = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    prepared = PreparedSMTP(hostname="127.0.0.1", port=port)
    try:
        await stock.connect()
        await prepared.connect()
        sender, to = "bounces+e1.0@envelopepay.test", ["dana@example.test"]
        await stock.sendmail(
            sender,
            to,
            MESSAGES[0],
            mail_options=["RET=HDRS", "ENVID=e1.0"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE,DELAY"],
        )
        reply = await prepared.send_prepared(
            sender, to, MESSAGES[0], crlf_only=True, dsn_envid="e1.0"
        )
        await stock.quit()
        await prepared.quit()
    finally:
        controller.stop()
    assert reply.code == 250
    by_stock, by_prepared = recorder.seen
    assert by_prepared == by_stock
    assert [o.split("=")[0] for o in by_stock[1]] == ["SIZE", "RET", "ENVID"]
    assert recorder.rcpt_options == [["NOTIFY=SUCCESS,FAILURE,DELAY"]] * 2
