"""The mailer writes MIME itself: the email package must read back exactly what was given."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage

from services.mailer.message import build_message

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n.leading dot line\n"
TEXT = "Dear Müller & Söhne,\n\n" + "A long line with ümlauts and = signs " * 12 + "\n.\nThanks"
HTML = "<p>Héllo <b>wörld</b> — <a href='https://pay.example/p/abc?x=1&y=2'>Pay</a></p>" * 30


def content(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "from_name": "Kanzlei Müller LLP",
        "to": ["ada@client.example", "bob@client.example"],
        "cc": ["audit@client.example"],
        "reply_to": "billing@firm.example",
        "subject": "Rechnung für März: invoices INV-1001, INV-1002 and a long subject that folds",
        "text": TEXT,
        "html": HTML,
        "attachments": [],
    }
    base.update(extra)
    return base


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_headers_and_both_parts_read_back_unchanged() -> None:
    out = build_message(content(), mail_from="billing@envelopepay.test", message_id="<m1@ep>")
    msg = parse(out.data)
    assert msg["Subject"] == content()["subject"]
    assert msg["From"].addresses[0].display_name == "Kanzlei Müller LLP"
    assert msg["From"].addresses[0].addr_spec == "billing@envelopepay.test"
    assert [a.addr_spec for a in msg["To"].addresses] == [
        "ada@client.example",
        "bob@client.example",
    ]
    assert msg["Cc"] == "audit@client.example"
    assert msg["Reply-To"] == "billing@firm.example"
    assert msg["Message-ID"] == "<m1@ep>"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == TEXT
    assert html.get_content().replace("\r\n", "\n").rstrip("\n") == HTML
    # The SMTP envelope goes to every To and Cc address.
    assert out.recipients == ["ada@client.example", "bob@client.example", "audit@client.example"]
    assert out.mail_from == "billing@envelopepay.test"


def test_attachments_come_back_byte_for_byte_with_their_names() -> None:
    atts = [
        {"filename": "invoice-INV-1.pdf", "content_type": "application/pdf",
         "content_b64": base64.b64encode(PDF).decode()},
        {"filename": "Übersicht März.pdf", "content_type": "application/pdf",
         "content_b64": base64.b64encode(PDF[::-1]).decode()},
    ]  # fmt: skip
    out = build_message(content(attachments=atts), mail_from="b@ep.test", message_id="<m2@ep>")
    msg = parse(out.data)
    assert msg.get_content_type() == "multipart/mixed"
    got = list(msg.iter_attachments())
    assert [a.get_filename() for a in got] == ["invoice-INV-1.pdf", "Übersicht März.pdf"]
    assert [a.get_content_type() for a in got] == ["application/pdf", "application/pdf"]
    assert got[0].get_content() == PDF
    assert got[1].get_content() == PDF[::-1]
    body = msg.get_body(("plain",))
    assert body is not None and "Thanks" in body.get_content()


def test_lines_are_crlf_and_short() -> None:
    atts = [{"filename": "a.pdf", "content_type": "application/pdf",
             "content_b64": base64.b64encode(PDF).decode()}]  # fmt: skip
    data = build_message(content(attachments=atts), mail_from="b@ep.test", message_id="<m@ep>").data
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 78


def test_header_injection_and_odd_values_stay_inert() -> None:
    evil = content(
        subject="Invoice\r\nBcc: victim@evil.example",
        to=["ada@client.example"],
        attachments=[{"filename": 'inv"\r\nX-Evil: 1.pdf', "content_type": "text/html\r\nX: y",
                      "content_b64": base64.b64encode(b"x").decode()}],
    )  # fmt: skip
    msg = parse(build_message(evil, mail_from="b@ep.test", message_id="<m3@ep>").data)
    assert msg["Bcc"] is None
    assert msg["X-Evil"] is None
    assert "victim@evil.example" in msg["Subject"]  # kept as text of the subject
    (att,) = list(msg.iter_attachments())
    assert att.get_content_type() == "application/octet-stream"
    assert att["X"] is None
    assert att.get_filename() is not None and "\n" not in att.get_filename()


def test_line_ending_shortcut_matches_aiosmtplib() -> None:
    """The mailer's fast path for aiosmtplib's line-ending normalization gives the same
    bytes as the regex it stands in for, on our messages and on anything else."""
    from services.mailer.prepared_smtp import _regex_normalize, normalize_message_line_endings

    ours = build_message(
        content(
            attachments=[
                {
                    "filename": "a.pdf",
                    "content_type": "application/pdf",
                    "content_b64": base64.b64encode(PDF).decode(),
                }
            ]
        ),
        mail_from="billing@envelopepay.test",
        message_id="<m@x>",
    ).data
    samples = [
        ours,
        ours[:-2],  # no final CRLF
        b"a\nb\r\nc\rd",  # lone LF and lone CR
        b"\r\n\r\n",
        b"",
        b"trailing CR\r",
        b"\n\r",
    ]
    for sample in samples:
        assert normalize_message_line_endings(sample) == _regex_normalize(sample), sample
    assert normalize_message_line_endings(ours) is ours  # nothing rewritten


def test_our_messages_have_crlf_only_and_dots_are_stuffed_as_aiosmtplib_does() -> None:
    """The relay hands our own messages to SMTP without normalizing their line endings: they
    must have no lone CR or LF, whatever the content holds. Its dot-stuffing gives the same
    bytes as aiosmtplib's regex."""
    from services.mailer.prepared_smtp import DOT_STUFFING, _regex_period

    nasty = "line one\rline two\nline three\r\n.starts with a dot\r\r\n\n\r"
    data = build_message(
        content(
            subject="Invoice\r\nBcc: x@evil.test",
            from_name="Hartwell\r& Moreno",
            text=nasty,
            html=f"<p>{nasty}</p>",
            attachments=[
                {
                    "filename": "a\r\n.pdf",
                    "content_type": "application/pdf",
                    "content_b64": base64.b64encode(PDF).decode(),
                }
            ],
        ),
        mail_from="billing@envelopepay.test",
        message_id="<m@x>",
    ).data
    assert data.count(b"\r\n") == data.count(b"\n") == data.count(b"\r")
    assert data.endswith(b"\r\n")
    stuffing = DOT_STUFFING
    for sample in [data, b".", b".\r\n..\r\nx.\r\n.y", b"\n.\n", b"", b"a.b"]:
        assert stuffing.sub(b"..", sample) == _regex_period.sub(b"..", sample), sample


def addresses(msg: EmailMessage, name: str) -> list[str]:
    return [a.addr_spec for a in msg[name].addresses]


def test_many_long_addresses_fold_between_addresses_never_inside_one() -> None:
    """A To of several long addresses used to be RFC 2047 encoded as one text, which split an
    address inside its encoded-words ("browse r-cc-...") and is not allowed in an address."""
    to = [f"browser-client-{i}-cf0328c4aa-7cf987a271@example.com" for i in range(4)]
    cc = ["browser-cc-cf0328c4aa-7cf987a271@example.com", "second.copy@client.example"]
    data = build_message(content(to=to, cc=cc), mail_from="b@ep.test", message_id="<m9@ep>").data
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert "=?" not in head.split("\r\nTo:", 1)[1].split("\r\nSubject:")[0]
    assert all(len(line) <= 78 for line in head.split("\r\n"))
    msg = parse(data)
    assert addresses(msg, "To") == to
    assert addresses(msg, "Cc") == cc


def test_odd_addresses_are_written_as_valid_addr_specs() -> None:
    odd = ['o"neil(x)@client.example', "ana@bücher.example"]
    built = build_message(content(to=odd, cc=[]), mail_from="b@ep.test", message_id="<m10@ep>")
    msg = parse(built.data)
    assert addresses(msg, "To") == ['"o\\"neil(x)"@client.example', "ana@xn--bcher-kva.example"]
    assert built.recipients == ['"o\\"neil(x)"@client.example', "ana@xn--bcher-kva.example"]


def test_an_address_that_cannot_be_carried_is_refused_by_name() -> None:
    import pytest

    from services.mailer.message import UnsendableAddress

    with pytest.raises(UnsendableAddress, match="outside ASCII before the @"):
        build_message(
            content(to=["jürgen@client.example"]), mail_from="b@ep.test", message_id="<m>"
        )


def head_of(data: bytes) -> str:
    return data.split(b"\r\n\r\n", 1)[0].decode("ascii")


def test_a_long_ascii_subject_is_folded_at_its_spaces_not_encoded() -> None:
    """Send All's default subject is plain ASCII and longer than a line: it goes out as it
    is, folded before a space, and reads back unchanged."""
    subject = (
        "Demo Law LLP: 4 bills (INV-20010, INV-20011, INV-20012, INV-20013) ($12,345.67 due)"
        " and  two spaces, then more words to need a third line of the folded subject"
    )
    data = build_message(content(subject=subject), mail_from="b@ep.test", message_id="<f@ep>").data
    head = head_of(data)
    lines = head.split("\r\nSubject: ", 1)[1].split("\r\nDate:")[0].split("\r\n")
    assert len(lines) == 3 and "=?" not in head.split("\r\nSubject:", 1)[1]
    assert all(line.startswith(" ") for line in lines[1:])
    assert max(len(line) for line in head.split("\r\n")) <= 78
    assert parse(data)["Subject"] == subject


def test_subjects_not_folded_at_spaces_are_encoded_and_read_back() -> None:
    """What folding at spaces cannot carry as it is: a word longer than a line, spaces at
    either end, text that would read as an encoded-word, a control character."""
    for subject in [
        "Invoice " + "x" * 90,
        "  Invoices INV-1, INV-2, INV-3, INV-4, INV-5, INV-6, INV-7, INV-8, INV-9  ",
        "Invoices =?utf-8?q?not_an_encoded_word?= INV-1, INV-2, INV-3, INV-4, INV-5",
        "Invoices\tINV-1, INV-2, INV-3, INV-4, INV-5, INV-6, INV-7, INV-8, INV-9, INV-10",
    ]:
        data = build_message(
            content(subject=subject), mail_from="b@ep.test", message_id="<g@ep>"
        ).data
        head = head_of(data)
        assert "=?utf-8?" in head.split("\r\nSubject:", 1)[1].split("\r\nDate:")[0]
        assert max(len(line) for line in head.split("\r\n")) <= 78
        assert parse(data)["Subject"] == subject, subject
