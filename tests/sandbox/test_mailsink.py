"""The dev mail sink, exercised the way the application uses it: real mail over SMTP.

Each test starts the aiosmtpd server on a free port of the test loop and drives the
viewer in-process through httpx's ASGI transport; the last tests start the whole thing
(SMTP + uvicorn) with the helper and as `python -m sandbox.mailsink`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest

from sandbox.mailsink import (
    MailStore,
    SmtpServer,
    create_app,
    running_mailsink,
    start_smtp_server,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

SENDER = "billing@mueller-law.example"
ADA = "ada@client.example"
BOB = "bob@client.example"
# Long enough to be folded into several encoded words. (CPython 3.11.7 drops the
# space at some fold points, "Rechnung Nr. 2024-017 — ..." loses one; the sink shows
# such subjects exactly as a real client would.)
SUBJECT = "Rechnung 2024-017 — Zahlung fällig für Müller & Söhne"
PDF_NAME = "Rechnung 2024-017 (Müller).pdf"
# Every byte value, so any re-encoding or newline translation would show up.
PDF_BYTES = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 64 + b"\n%%EOF\n"
PAY_URL = "https://pay.example.test/i/inv-017?token=abc&src=email"
HELP_URL = "https://firm.example.test/help"
PORTAL_URL = "https://portal.example.test/clients/42"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# Unknown charsets, a broken encoded word and an address header without addresses.
MALFORMED_HEAD = (
    b"From: not an address\r\n"
    b"To: ada@client.example\r\n"
    b"Subject: =?x-unknown?q?caf=E9?= and =?utf-8?b?broken\r\n"
    b"Content-Type: multipart/mixed; boundary=XYZ\r\n"
    b"\r\n"
    b"--XYZ\r\n"
    b"Content-Type: text/plain; charset=x-made-up\r\n"
    b"\r\n"
)


def invoice_message(
    *, to: str = f"Ada Client <{ADA}>, Bob Payer <{BOB}>", subject: str = SUBJECT
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Müller & Partner LLP <{SENDER}>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain="mueller-law.example")
    message.set_content(f"Hello Ada,\n\nPay online: {PAY_URL}.\nClient portal ({PORTAL_URL}).\n")
    message.add_alternative(
        "<!doctype html><html><head><title>Invoice</title></head><body>"
        "<h1>Invoice INV-2024-017</h1>"
        f'<p><a href="{PAY_URL.replace("&", "&amp;")}">Pay now</a></p>'
        f'<p><a href="{HELP_URL}">Help</a> <a href="#top">top</a> '
        '<a href="javascript:alert(1)">not a link</a></p>'
        "</body></html>",
        subtype="html",
    )
    message.add_attachment(PDF_BYTES, "application", "pdf", filename=PDF_NAME)
    return message


def plain_message(to: str, subject: str, body: str = "Hello.\n") -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


@pytest.fixture
def sink_dir(tmp_path: Path) -> Path:
    return tmp_path / "mailsink"


@pytest.fixture
def store(sink_dir: Path) -> MailStore:
    return MailStore(sink_dir)


@pytest.fixture
async def smtp(store: MailStore) -> AsyncIterator[SmtpServer]:
    async with await start_smtp_server(store) as server:
        yield server


def client_for(store: MailStore) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(store))
    return httpx.AsyncClient(transport=transport, base_url="http://mailsink.test")


@pytest.fixture
async def client(store: MailStore) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(store) as http:
        yield http


async def send(smtp: SmtpServer, message: EmailMessage, **kwargs: Any) -> None:
    # The sink stores the message before answering DATA, so it is visible on return.
    await aiosmtplib.send(message, hostname=smtp.host, port=smtp.port, **kwargs)


async def only_message(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/messages")
    assert response.status_code == 200
    messages = response.json()
    assert len(messages) == 1
    return messages[0]


async def test_received_message_is_listed_with_envelope(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    message = invoice_message()
    before = datetime.now(UTC)
    # A third envelope recipient that is in no header: a Bcc.
    await send(smtp, message, recipients=[ADA, BOB, "audit@mueller-law.example"])

    listed = await only_message(client)
    assert listed["from"] == SENDER
    assert listed["from_name"] == "Müller & Partner LLP"
    assert listed["to"] == [ADA, BOB]
    assert listed["subject"] == SUBJECT
    assert listed["message_id"] == message["Message-ID"]
    assert listed["envelope"] == {
        "mail_from": SENDER,
        "rcpt_tos": [ADA, BOB, "audit@mueller-law.example"],
    }
    received = datetime.fromisoformat(listed["received_at"])
    assert before - timedelta(seconds=1) <= received <= datetime.now(UTC)
    assert listed["attachments"] == [
        {
            "index": 0,
            "filename": PDF_NAME,
            "content_type": "application/pdf",
            "size": len(PDF_BYTES),
            "content_id": None,
            "inline": False,
        }
    ]
    raw = (await client.get(f"/api/messages/{listed['id']}/raw")).content
    assert listed["size"] == len(raw) > len(PDF_BYTES)


async def test_detail_has_headers_bodies_and_links(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    message = invoice_message()
    await send(smtp, message)
    message_id = (await only_message(client))["id"]

    response = await client.get(f"/api/messages/{message_id}")
    assert response.status_code == 200
    detail = response.json()
    assert detail["subject"] == SUBJECT
    assert detail["headers"]["Subject"] == SUBJECT
    assert detail["headers"]["To"] == f"Ada Client <{ADA}>, Bob Payer <{BOB}>"
    assert detail["headers"]["Message-ID"] == message["Message-ID"]
    assert "<h1>Invoice INV-2024-017</h1>" in detail["html"]
    assert detail["text"].startswith("Hello Ada,\n")
    # HTML links first, then text-only ones; the pay link appears in both parts (with
    # &amp; in the HTML) but only once; fragments and javascript: are not links.
    assert detail["links"] == [PAY_URL, HELP_URL, PORTAL_URL]
    assert detail["attachments"][0]["filename"] == PDF_NAME


async def test_attachment_download_is_byte_identical(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    await send(smtp, invoice_message())
    message_id = (await only_message(client))["id"]

    response = await client.get(f"/messages/{message_id}/attachments/0")
    assert response.status_code == 200
    assert response.content == PDF_BYTES
    assert response.headers["content-type"] == "application/pdf"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("inline;")
    assert "filename*=UTF-8''Rechnung%202024-017%20%28M%C3%BCller%29.pdf" in disposition

    download = await client.get(f"/messages/{message_id}/attachments/0?download=1")
    assert download.content == PDF_BYTES
    assert download.headers["content-disposition"].startswith("attachment;")

    missing = await client.get(f"/messages/{message_id}/attachments/1")
    assert missing.status_code == 404


async def test_raw_source_is_exactly_what_was_sent(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    # Hand-written bytes: 8-bit UTF-8 body and a line starting with a dot, which SMTP
    # dot-stuffs on the wire and the sink has to un-stuff.
    raw = (
        "From: billing@mueller-law.example\r\n"
        "To: ada@client.example\r\n"
        "Subject: raw\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Grüße aus München\r\n"
        ".leading dot\r\n"
        "..two dots\r\n"
    ).encode()
    async with aiosmtplib.SMTP(hostname=smtp.host, port=smtp.port) as conn:
        await conn.sendmail(SENDER, [ADA], raw, mail_options=["BODY=8BITMIME"])
    message_id = (await only_message(client))["id"]

    response = await client.get(f"/api/messages/{message_id}/raw")
    assert response.status_code == 200
    assert response.content == raw
    detail = (await client.get(f"/api/messages/{message_id}")).json()
    assert detail["text"] == "Grüße aus München\n.leading dot\n..two dots\n"


async def _wire(smtp: SmtpServer, *chunks: bytes) -> list[bytes]:
    """Speak SMTP by hand: send each chunk as it is, and collect every reply line."""
    reader, writer = await asyncio.open_connection(smtp.host, smtp.port)
    replies = [await reader.readline()]
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.05)  # let a chunk arrive on its own
        writer.write(b"QUIT\r\n")
        while line := await reader.readline():
            replies.append(line)
    finally:
        writer.close()
    return replies


async def test_data_read_in_chunks_keeps_smtp_rules(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    """The sink reads DATA in chunks, not lines: the end marker split across packets, dot
    stuffing, an empty message, a line over 1,000 bytes and commands pipelined after the
    message all behave as RFC 5321 says."""
    head = b"EHLO wire\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<ada@client.example>\r\nDATA\r\n"
    body = b"Subject: split\r\n\r\n..starts with a dot\r\nlast line\r\n"
    replies = await _wire(smtp, head, body[:-1], b"\n.", b"\r\n")  # marker split
    assert any(r.startswith(b"250 OK: queued as") for r in replies), replies
    stored = (await client.get(f"/api/messages/{(await only_message(client))['id']}/raw")).content
    assert stored == b"Subject: split\r\n\r\n.starts with a dot\r\nlast line\r\n"
    await client.delete("/api/messages")

    replies = await _wire(smtp, head, b".\r\n")  # an empty message
    assert any(r.startswith(b"250 OK: queued as") for r in replies), replies
    assert (
        await client.get(f"/api/messages/{(await only_message(client))['id']}/raw")
    ).content == b""
    await client.delete("/api/messages")

    long_line = b"Subject: long\r\n\r\n" + b"x" * 1000 + b"\r\n.\r\n"
    replies = await _wire(smtp, head, long_line)
    assert any(r.startswith(b"500 Line too long") for r in replies), replies
    assert (await client.get("/api/messages")).json() == []

    # Two messages in one write, the second MAIL pipelined right behind the first's end.
    two = (
        b"Subject: one\r\n\r\nfirst\r\n.\r\n"
        b"MAIL FROM:<a@x.example>\r\nRCPT TO:<bob@client.example>\r\nDATA\r\n"
    )
    replies = await _wire(smtp, head, two, b"Subject: two\r\n\r\nsecond\r\n.\r\n")
    assert sum(r.startswith(b"250 OK: queued as") for r in replies) == 2, replies
    subjects = [m["subject"] for m in (await client.get("/api/messages")).json()]
    assert subjects == ["two", "one"]


async def test_smtputf8_recipient_and_subject(smtp: SmtpServer, client: httpx.AsyncClient) -> None:
    recipient = "jürgen@exämple.test"
    subject = "Überfällig: Rechnung für Jürgen 🧾"
    await send(smtp, plain_message(recipient, subject))

    listed = await only_message(client)
    assert listed["to"] == [recipient]
    assert listed["envelope"]["rcpt_tos"] == [recipient]
    assert listed["subject"] == subject
    raw = (await client.get(f"/api/messages/{listed['id']}/raw")).content
    # A non-ASCII address makes aiosmtplib use SMTPUTF8, which sends headers as raw
    # UTF-8 instead of encoded words; this proves that path was taken and stored intact.
    assert f"Subject: {subject}".encode() in raw


async def test_malformed_message_is_still_shown(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    # Unknown charsets, a broken encoded word and an address header without addresses:
    # the sink must keep and show what it got rather than refuse or crash.
    raw = (
        MALFORMED_HEAD + b"caf\xc3\xa9 https://example.test/x\r\n"
        b"--XYZ\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"not base64 at all!!\r\n"
    )
    async with aiosmtplib.SMTP(hostname=smtp.host, port=smtp.port) as conn:
        await conn.sendmail(SENDER, [ADA], raw)
    listed = await only_message(client)
    assert listed["envelope"] == {"mail_from": SENDER, "rcpt_tos": [ADA]}
    assert "and" in listed["subject"]

    detail = await client.get(f"/api/messages/{listed['id']}")
    assert detail.status_code == 200
    # The CRLF before a boundary belongs to the boundary (RFC 2046).
    assert detail.json()["text"] == "café https://example.test/x"
    assert detail.json()["links"] == ["https://example.test/x"]
    assert (await client.get(f"/messages/{listed['id']}")).status_code == 200
    assert (await client.get(f"/api/messages/{listed['id']}/raw")).content == raw
    assert (await client.get(f"/messages/{listed['id']}/attachments/0")).status_code == 200


MALFORMED = (
    MALFORMED_HEAD + b"caf\xc3\xa9\r\n"
    b"--XYZ\r\n"
    b"Content-Type: application/octet-stream; name==?utf-8?q?R=C3=A9sum=C3=A9.pdf?=\r\n"
    b'Content-Disposition: attachment; filename="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--XYZ\r\n"
    b"Content-Type: image/png\r\n"
    b"Content-ID: <logo@x>\r\n"
    b"\r\n"
    b"png\r\n"
    b"--XYZ--\r\n"
)


def _forwarded() -> EmailMessage:
    outer = plain_message(ADA, "Fwd: the invoice")
    outer.add_attachment(invoice_message())  # message/rfc822: one attachment, not descended
    return outer


def _with_logo() -> EmailMessage:
    message = plain_message(ADA, "with logo")
    message.add_alternative('<p><img src="cid:logo@x" alt="logo"></p>', subtype="html")
    message.get_payload()[1].add_related(b"\x89PNG", "image", "png", cid="<logo@x>")
    return message


def _smtp_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=email_policy.SMTP)  # CRLF, as it arrives over SMTP


def _mixed_everything() -> EmailMessage:
    message = _with_logo()
    message.add_attachment(b"%PDF-1.7 " * 9000, "application", "pdf", filename="INV-1.pdf")
    message.add_attachment("Caf\u00e9 notes\n" * 40, subtype="plain", filename="n\u00f6tes.txt")
    message.add_attachment(b"\x00\x01" * 10, "application", "octet-stream")  # no name
    message.preamble = "This is a MIME message.\r\n--not a boundary\r\n"
    message.epilogue = "--XYZ-- trailing words"
    return message


_UNCLOSED = (
    b"From: a@example.com\r\nTo: b@example.com\r\nSubject: unclosed\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="B1"\r\n\r\n'
    b"--B1\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
    b"--B1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
    b'filename="x.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\n'
)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(lambda: _smtp_bytes(invoice_message()), id="invoice-crlf"),
        pytest.param(lambda: _smtp_bytes(_with_logo()), id="embedded-logo-crlf"),
        pytest.param(lambda: _smtp_bytes(_forwarded()), id="forwarded-crlf"),
        pytest.param(lambda: _smtp_bytes(_mixed_everything()), id="nested-preamble-epilogue"),
        pytest.param(lambda: _smtp_bytes(plain_message(ADA, "plain")), id="single-part-crlf"),
        pytest.param(lambda: _UNCLOSED, id="unclosed-multipart"),
        pytest.param(lambda: bytes(invoice_message()), id="invoice"),
        pytest.param(lambda: bytes(_with_logo()), id="embedded-logo"),
        pytest.param(lambda: bytes(_forwarded()), id="forwarded"),
        pytest.param(lambda: MALFORMED, id="malformed"),
    ],
)
def test_quick_summary_matches_the_full_parse(raw: Any) -> None:
    """The summary taken on arrival (headers through the modern policy, structure through
    compat32) names the same attachments, in the same order, as the viewer's full parse,
    whose order the download URLs use."""
    from sandbox.mailsink.parsing import (
        _STRUCTURE_PARSER,
        _quick_structure,
        attachment_infos,
        header_addresses,
        header_text,
        parse_message,
        summarize,
    )

    data = raw()
    quick = summarize(
        "0000000000001-00000000", data, mail_from=SENDER, rcpt_tos=[ADA], received_at=NOW
    )
    full = parse_message(data)
    assert quick.attachments == attachment_infos(full)
    # The boundary-splitting shortcut builds the same tree as the line parser where it
    # applies, and declines (None) the shapes it leaves to the parser.
    shortcut = _quick_structure(data)
    if shortcut is not None:
        assert attachment_infos(shortcut) == attachment_infos(_STRUCTURE_PARSER.parsebytes(data))
    crlf_and_plain = b"\r\n\r\n" in data and b"message/rfc822" not in data
    assert (shortcut is not None) == (crlf_and_plain and data is not _UNCLOSED)
    assert quick.subject == (header_text(full, "Subject") or "")
    assert quick.to == [addr for _, addr in header_addresses(full, "To")]
    assert quick.from_name == (header_addresses(full, "From") or [("", "")])[0][0]


def _sent_by_the_mailer(pdfs: int) -> bytes:
    """A message as the mailer writes it (services/mailer/message.py): secure link alone,
    or with invoice PDFs, one of them with a non-ASCII name."""
    from services.mailer.message import build_message

    content = {
        "from_name": "Müller & Partner LLP",
        "to": [ADA, BOB],
        "cc": ["audit@client.example"],
        "reply_to": SENDER,
        "subject": SUBJECT,
        "text": f"Hello Ada,\n\nPay online: {PAY_URL}.\n.a line that starts with a dot\n",
        "html": f'<p><a href="{PAY_URL.replace("&", "&amp;")}">Pay now</a></p>',
        "attachments": [
            {
                "filename": PDF_NAME if k == 0 else f"INV-{k}.pdf",
                "content_type": "application/pdf",
                "data": PDF_BYTES + bytes([k]),
            }
            for k in range(pdfs)
        ],
    }
    return build_message(content, mail_from=SENDER, message_id="<m1@envelopepay.test>").data


@pytest.mark.parametrize("pdfs", [0, 1, 10])
def test_the_fast_path_takes_the_mailers_messages_and_agrees_with_the_email_package(
    pdfs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink's hand MIME splitter (docs/performance.md) applies to every shape of
    message the project sends, and the summary it gives equals the one the email package
    gives (the splitter switched off) and the attachments the viewer's full parse lists."""
    from sandbox.mailsink import parsing

    data = _sent_by_the_mailer(pdfs)
    assert parsing._quick_structure(data) is not None  # else the fast path never runs

    def summary() -> Any:
        return parsing.summarize(
            "0000000000001-00000000", data, mail_from=SENDER, rcpt_tos=[ADA], received_at=NOW
        )

    fast = summary()
    monkeypatch.setattr(parsing, "_quick_structure", lambda raw: None)
    assert fast == summary()
    assert fast.attachments == parsing.attachment_infos(parsing.parse_message(data))
    assert [a.filename for a in fast.attachments] == (
        [PDF_NAME, *(f"INV-{k}.pdf" for k in range(1, pdfs))] if pdfs else []
    )
    assert fast.subject == SUBJECT and fast.to == [ADA, BOB] and fast.cc == ["audit@client.example"]


async def test_list_is_newest_first(smtp: SmtpServer, client: httpx.AsyncClient) -> None:
    for n in range(3):
        await send(smtp, plain_message(ADA, f"message {n}"))
    subjects = [m["subject"] for m in (await client.get("/api/messages")).json()]
    assert subjects == ["message 2", "message 1", "message 0"]


async def test_to_filter(smtp: SmtpServer, client: httpx.AsyncClient) -> None:
    await send(smtp, plain_message(f"Ada <{ADA}>", "for ada"))
    await send(smtp, plain_message(BOB, "for bob"))
    await send(smtp, plain_message(BOB, "bob, ada in bcc"), recipients=[BOB, ADA])

    async def subjects(query: str) -> list[str]:
        response = await client.get("/api/messages", params={"to": query})
        return [m["subject"] for m in response.json()]

    assert await subjects("ADA@client") == ["bob, ada in bcc", "for ada"]
    assert await subjects("bob@") == ["bob, ada in bcc", "for bob"]
    assert await subjects("client.example") == ["bob, ada in bcc", "for bob", "for ada"]
    assert await subjects("nobody") == []


async def test_delete_all(smtp: SmtpServer, client: httpx.AsyncClient, sink_dir: Path) -> None:
    await send(smtp, plain_message(ADA, "one"))
    await send(smtp, plain_message(ADA, "two"))
    assert len(list((sink_dir / "messages").glob("*.eml"))) == 2

    response = await client.delete("/api/messages")
    assert response.json() == {"deleted": 2}
    assert (await client.get("/api/messages")).json() == []
    assert list((sink_dir / "messages").glob("*.eml")) == []

    # The viewer's button posts a form and lands back on the list.
    await send(smtp, plain_message(ADA, "three"))
    button = await client.post("/delete-all")
    assert button.status_code == 303
    assert button.headers["location"] == "/"
    assert (await client.get("/api/messages")).json() == []
    assert (await client.get("/health")).json() == {"status": "ok", "messages": 0}


async def test_messages_survive_a_new_store(
    smtp: SmtpServer, client: httpx.AsyncClient, sink_dir: Path
) -> None:
    await send(smtp, invoice_message(), recipients=[ADA, BOB, "audit@mueller-law.example"])
    await send(smtp, plain_message(BOB, "second"))
    before = (await client.get("/api/messages")).json()
    first_raw = (await client.get(f"/api/messages/{before[1]['id']}/raw")).content

    async with client_for(MailStore(sink_dir)) as restarted:
        assert (await restarted.get("/api/messages")).json() == before
        assert (await restarted.get(f"/api/messages/{before[1]['id']}/raw")).content == first_raw
        attachment = await restarted.get(f"/messages/{before[1]['id']}/attachments/0")
        assert attachment.content == PDF_BYTES


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
async def test_lost_index_is_rebuilt_from_eml_files(
    smtp: SmtpServer, client: httpx.AsyncClient, sink_dir: Path, damage: str
) -> None:
    await send(smtp, invoice_message())
    before = await only_message(client)
    index = sink_dir / "index.json"
    journal = sink_dir / "index.log"
    assert journal.exists(), "a new message goes to the index's journal"
    if damage == "delete":
        index.unlink()
        journal.unlink()
    else:
        index.write_text('{"version": 2, "messages": [')
        journal.write_text('{"version": 2, "id": "17')

    async with client_for(MailStore(sink_dir)) as restarted:
        after = (await restarted.get("/api/messages")).json()
    assert [m["id"] for m in after] == [before["id"]]
    assert after[0]["subject"] == SUBJECT
    assert after[0]["attachments"] == before["attachments"]
    # Without the index the envelope can only be reconstructed from the headers.
    assert after[0]["envelope"] == {"mail_from": SENDER, "rcpt_tos": [ADA, BOB]}
    assert json.loads(index.read_text())["messages"][0]["id"] == before["id"]


async def test_index_journal_is_folded_into_the_snapshot(sink_dir: Path) -> None:
    """Each message appends one line to index.log; a new store, or a journal grown past
    the snapshot, folds it into index.json. A torn last line loses nothing: the message's
    .eml file is still there."""
    store = MailStore(sink_dir)
    async with await start_smtp_server(store) as smtp:
        for n in range(3):
            await send(smtp, plain_message(ADA, f"message {n}"))
    journal = sink_dir / "index.log"
    lines = journal.read_bytes().splitlines()
    assert [json.loads(line)["subject"] for line in lines] == [f"message {n}" for n in range(3)]
    assert json.loads((sink_dir / "index.json").read_text())["messages"] == []
    journal.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:20])  # a crash mid-line

    reopened = MailStore(sink_dir)
    assert [s.subject for s in reopened.messages()] == ["message 2", "message 1", "message 0"]
    assert not journal.exists()
    snapshot = json.loads((sink_dir / "index.json").read_text())["messages"]
    assert [m["subject"] for m in snapshot] == ["message 0", "message 1", "message 2"]


async def test_keeps_only_the_newest_messages(sink_dir: Path) -> None:
    store = MailStore(sink_dir, max_messages=3)
    async with await start_smtp_server(store) as smtp, client_for(store) as client:
        for n in range(5):
            await send(smtp, plain_message(ADA, f"message {n}"))
        subjects = [m["subject"] for m in (await client.get("/api/messages")).json()]
    assert subjects == ["message 4", "message 3", "message 2"]
    assert len(list((sink_dir / "messages").glob("*.eml"))) == 3
    assert [s.subject for s in MailStore(sink_dir, max_messages=2).messages()] == [
        "message 4",
        "message 3",
    ]


async def test_oversized_message_is_refused(store: MailStore) -> None:
    async with await start_smtp_server(store, max_message_size=10_000) as smtp:
        await send(smtp, plain_message(ADA, "small enough"))
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send(smtp, plain_message(ADA, "too big", ("x" * 70 + "\n") * 200))
    assert refused.value.code == 552
    assert [s.subject for s in store.messages()] == ["small enough"]


async def test_list_page_escapes_message_content(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    message = plain_message(ADA, "<script>alert('xss')</script> & co")
    del message["From"]
    message["From"] = '"<img src=x onerror=alert(1)>" <evil@example.test>'
    await send(smtp, message)

    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt; &amp; co" in page.text
    assert "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert re.search(r'<meta http-equiv="refresh" content="\d+">', page.text)
    assert "default-src 'none'" in page.headers["content-security-policy"]

    message_id = (await only_message(client))["id"]
    detail_page = await client.get(f"/messages/{message_id}")
    assert "<script>alert" not in detail_page.text
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt; &amp; co" in detail_page.text


async def test_list_page_shows_messages(smtp: SmtpServer, client: httpx.AsyncClient) -> None:
    await send(smtp, invoice_message())
    await send(smtp, plain_message(BOB, "Payment received"))
    messages = (await client.get("/api/messages")).json()

    page = (await client.get("/")).text
    assert page.index("Payment received") < page.index("Rechnung 2024-017")
    for message in messages:
        assert f'href="/messages/{message["id"]}"' in page
        assert f'href="/api/messages/{message["id"]}/raw"' in page
    assert "Müller &amp; Partner LLP" in page
    assert f"{ADA}, {BOB}" in page
    assert '<form method="post" action="/delete-all">' in page

    filtered = (await client.get("/", params={"to": "ada@"})).text
    assert "Rechnung 2024-017" in filtered
    assert "Payment received" not in filtered


async def test_message_page_shows_the_mail_safely(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    message = invoice_message()
    await send(smtp, message)
    message_id = (await only_message(client))["id"]

    page = await client.get(f"/messages/{message_id}")
    assert page.status_code == 200
    text = page.text
    for value in ("Müller &amp; Partner LLP", ADA, BOB, "Message-ID", "Date"):
        assert value in text
    assert SUBJECT.replace("&", "&amp;") in text
    iframe = re.search(r"<iframe[^>]*>", text)
    assert iframe is not None
    assert f'src="/messages/{message_id}/html"' in iframe.group(0)
    sandbox = re.search(r'sandbox="([^"]*)"', iframe.group(0))
    assert sandbox is not None
    assert sandbox.group(1).split() == ["allow-popups", "allow-popups-to-escape-sandbox"]
    for tab in ("HTML", "Text", "Links (3)", "Headers", "Source"):
        assert f">{tab}</label>" in text
    # The text tab, links tab and source tab carry the content (escaped).
    assert f'<a href="{PAY_URL.replace("&", "&amp;")}" target="_blank"' in text
    assert f'<a href="{PORTAL_URL}" target="_blank"' in text
    assert "Content-Type: multipart/mixed" in text
    assert 'href="javascript:' not in text
    assert PDF_NAME in text
    assert f'href="/messages/{message_id}/attachments/0?download=1"' in text
    assert "application/pdf" in text

    body = await client.get(f"/messages/{message_id}/html")
    assert body.status_code == 200
    assert '<head><base target="_blank"><title>Invoice</title>' in body.text
    csp = body.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "sandbox allow-popups allow-popups-to-escape-sandbox" in csp
    assert "script-src" not in csp and "allow-scripts" not in csp


async def test_text_only_message_page_opens_on_text(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    await send(smtp, plain_message(ADA, "plain", "See https://example.test/a_(b), thanks.\n"))
    message_id = (await only_message(client))["id"]

    page = (await client.get(f"/messages/{message_id}")).text
    assert '<input type="radio" name="tab" id="tab-text" checked>' in page
    assert "<iframe" not in page
    detail = (await client.get(f"/api/messages/{message_id}")).json()
    assert detail["html"] is None
    assert detail["links"] == ["https://example.test/a_(b)"]
    assert (await client.get(f"/messages/{message_id}/html")).status_code == 404


async def test_embedded_images_point_at_their_attachment(
    smtp: SmtpServer, client: httpx.AsyncClient
) -> None:
    logo_cid = make_msgid(domain="mueller-law.example")
    message = plain_message(ADA, "with logo")
    message.add_alternative(f'<p><img src="cid:{logo_cid[1:-1]}" alt="logo"></p>', subtype="html")
    html_part = message.get_payload()[1]
    html_part.add_related(b"\x89PNG\r\n\x1a\nfake", "image", "png", cid=logo_cid)
    await send(smtp, message)
    listed = await only_message(client)
    assert listed["attachments"][0]["inline"] is True

    body = (await client.get(f"/messages/{listed['id']}/html")).text
    assert f'<img src="/messages/{listed["id"]}/attachments/0" alt="logo">' in body
    image = await client.get(f"/messages/{listed['id']}/attachments/0")
    assert image.content == b"\x89PNG\r\n\x1a\nfake"
    assert image.headers["content-type"] == "image/png"


async def test_unknown_messages_are_404(client: httpx.AsyncClient) -> None:
    for path in (
        "/api/messages/1700000000000-deadbeef",
        "/api/messages/1700000000000-deadbeef/raw",
        "/api/messages/index",
    ):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "message not found"}
    traversal = await client.get("/api/messages/..%2F..%2Findex.json")
    assert traversal.status_code == 404
    page = await client.get("/messages/1700000000000-deadbeef")
    assert page.status_code == 404
    assert "message not found" in page.text


async def test_running_mailsink_helper_serves_smtp_and_http(sink_dir: Path) -> None:
    async with running_mailsink(sink_dir) as sink:
        # Credentials are accepted so an app configured with SMTP auth works unchanged.
        await aiosmtplib.send(
            invoice_message(),
            hostname=sink.smtp_host,
            port=sink.smtp_port,
            username="app",
            password="anything",
        )
        async with httpx.AsyncClient(base_url=sink.http_url) as http:
            assert (await http.get("/health")).json() == {"status": "ok", "messages": 1}
            listed = (await http.get("/api/messages")).json()
            assert [m["subject"] for m in listed] == [SUBJECT]
            page = await http.get(f"/messages/{listed[0]['id']}")
            assert page.status_code == 200


async def test_module_runs_as_a_process(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MAILSINK_DIR": str(tmp_path / "sink"),
        "MAILSINK_SMTP_PORT": "0",
        "MAILSINK_HTTP_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox.mailsink",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        smtp_port = http_url = None
        async with asyncio.timeout(30):
            while smtp_port is None or http_url is None:
                line = (await process.stdout.readline()).decode()
                assert line, "mailsink exited before announcing its addresses"
                if match := re.search(r"SMTP listening on [^:]+:(\d+)", line):
                    smtp_port = int(match.group(1))
                if match := re.search(r"web viewer on (http://\S+)", line):
                    http_url = match.group(1)

        await aiosmtplib.send(invoice_message(), hostname="127.0.0.1", port=smtp_port)
        async with httpx.AsyncClient(base_url=http_url) as http:
            listed = (await http.get("/api/messages")).json()
            assert [m["subject"] for m in listed] == [SUBJECT]
            raw = (await http.get(f"/api/messages/{listed[0]['id']}/raw")).content
        assert (tmp_path / "sink" / "messages" / f"{listed[0]['id']}.eml").read_bytes() == raw
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)
