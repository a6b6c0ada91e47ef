"""Building the MIME message, as bytes ready for SMTP. Plain functions.

The structure is fixed and ours: multipart/alternative (text, then HTML; UTF-8,
quoted-printable), inside multipart/mixed with base64 attachments when there are any.
It is written directly rather than through the email package's generator, which walks a
ten-PDF message line by line in Python and cost more CPU than the SMTP conversation.
Header values that are not plain ASCII are RFC 2047 encoded (email.header), a long ASCII
subject is folded at its spaces, attachment filenames are RFC 2231; lines end in CRLF (every
one: the relay passes our messages to SMTP without normalizing them) and stay under 78
characters but for headers the encoder folds.
tests/unit/test_mailer_message.py parses the result back with the email package to check
every part.
"""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate
from typing import Any
from urllib.parse import quote

CRLF = "\r\n"
B64_LINE = 76


@dataclass(frozen=True)
class OutgoingMessage:
    """A message ready for the relay: its envelope and its bytes."""

    mail_from: str
    recipients: list[str]
    data: bytes
    message_id: str
    # The DSN envelope id (RFC 3461 ENVID), asked for when the relay offers DSN.
    envid: str | None = None


def message_id_for(email_id: str, domain: str) -> str:
    # Deterministic: should a message ever go out twice, mail clients that thread or
    # deduplicate by Message-ID still show it once.
    return f"<{email_id}@{domain}>"


def _one_line(value: str) -> str:
    # Header values come from people and from Clio: never let one start another header.
    return " ".join(value.splitlines())


def _header(name: str, value: str) -> str:
    value = _one_line(value)
    if value.isascii() and len(name) + len(value) < 76 and "\n" not in value:
        return f"{name}: {value}"
    encoded = Header(value, "utf-8", header_name=name).encode(linesep=CRLF)
    return f"{name}: {encoded}"


# A word of an unstructured header's value, with the spaces before it.
_SPACED_WORD = re.compile(r" *[^ ]+")


def _text_header(name: str, value: str) -> str:
    """An unstructured header (Subject): a long value of printable ASCII folded at its
    spaces (RFC 5322 3.2.2: a CRLF before a space, which unfolding removes), lines under 78
    characters; any other value as `_header` writes it (RFC 2047 encoded-words), and so
    one with a word longer than a line, with spaces at either end, or with text that reads
    as an encoded-word ("=?"). Encoding a long ASCII value gained nothing but its length,
    and cost a Python step per character."""
    value = _one_line(value)
    if (
        len(name) + len(value) < 76
        or not (value.isascii() and value.isprintable())
        or "=?" in value
    ):
        return _header(name, value)
    words = _SPACED_WORD.findall(value)
    if value.startswith(" ") or "".join(words) != value:  # spaces at either end
        return _header(name, value)
    lines: list[str] = []
    line = f"{name}: {words[0]}"
    for word in words[1:]:
        if len(line) + len(word) > 76:
            lines.append(line)
            line = ""
        line += word
    lines.append(line)
    if max(len(x) for x in lines) > 78:  # a word longer than a line
        return _header(name, value)
    return CRLF.join(lines)


class UnsendableAddress(ValueError):
    """An address this message cannot carry: a permanent failure of its email, not a crash."""


# RFC 5322 dot-atom text: a local part made of these is written as it is, any other is quoted.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _addr_spec(address: str) -> str:
    """An address as an ASCII addr-spec: an internationalized domain in its IDNA form, an
    unusual local part quoted. Encoded-words (RFC 2047) are not allowed in an address."""
    local, at, domain = _one_line(address).strip().rpartition("@")
    if not at or not local or not domain:
        raise UnsendableAddress(f"not an email address: {address!r}")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise UnsendableAddress(f"the domain of {address!r} is not valid") from exc
    if not local.isascii():
        raise UnsendableAddress(f"{address!r} has letters outside ASCII before the @")
    if not _DOT_ATOM.fullmatch(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{local}@{domain}"


def _address_header(name: str, specs: list[str]) -> str:
    """To, Cc or Reply-To from addr-specs (`_addr_spec`), folded between addresses (after a
    comma) so that lines stay under 78 characters where the addresses allow it."""
    lines: list[str] = []
    line = f"{name}:"
    for i, spec in enumerate(specs):
        piece = spec + ("," if i + 1 < len(specs) else "")
        if i and len(line) + 1 + len(piece) > 76:
            lines.append(line)
            line = ""
        line += " " + piece
    lines.append(line)
    return CRLF.join(lines)


def _qp(text: str) -> str:
    # binascii's quoted-printable (C): soft breaks keep lines under 76 characters.
    # Every line break to LF first (a lone CR too), so that the message has CRLF only.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return encoded.decode("ascii").replace("\n", CRLF)


def _b64_lines(b64: str) -> str:
    return CRLF.join([b64[i : i + B64_LINE] for i in range(0, len(b64), B64_LINE)])


def _attachment_body(att: dict[str, Any]) -> str:
    if "data" in att:  # bytes (sealed content) rather than base64 (the internal API)
        return _b64_lines(binascii.b2a_base64(att["data"], newline=False).decode("ascii"))
    return _b64_lines("".join(att["content_b64"].split()))


def _filename_param(filename: str) -> str:
    filename = "".join(ch if ch.isprintable() else "_" for ch in filename)
    if filename.isascii():
        escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
        return f'filename="{escaped}"'
    return f"filename*=utf-8''{quote(filename, safe='')}"


def _boundary() -> str:
    # "=_" cannot occur in quoted-printable or base64 output: the boundary is never content.
    return f"=_{secrets.token_hex(12)}"


def attachment_bytes(content: dict[str, Any]) -> int:
    """The attachments' size as files (decoded), without decoding them."""
    total = 0
    for att in content.get("attachments") or []:
        if "data" in att:
            total += len(att["data"])
        else:
            b64 = att["content_b64"]
            total += len(b64) * 3 // 4 - b64[-2:].count("=") if b64 else 0
    return total


@dataclass(frozen=True)
class MessageParts:
    """An email's message but for its two bodies, written once per email: every
    recipient's copy is `head`, its text, `middle`, its HTML and `tail` (`assemble`), so
    only the bodies (their tracking links) are encoded again per copy."""

    recipients: list[str]  # addr-specs, To then Cc
    head: bytes  # the headers, and the MIME lines up to the text part's body
    middle: bytes  # between the text part's body and the HTML part's
    tail: bytes  # the end of the alternative part, and the attachments

    def assemble(self, text: str, html: str) -> bytes:
        return b"".join(
            (
                self.head,
                _qp(text).encode("ascii"),
                self.middle,
                _qp(html).encode("ascii"),
                self.tail,
            )
        )


def prepare_message(content: dict[str, Any], *, mail_from: str, message_id: str) -> MessageParts:
    to = [_addr_spec(a) for a in content["to"]]
    cc = [_addr_spec(a) for a in content.get("cc") or []]
    headers = [
        _header("From", formataddr((content["from_name"], mail_from), charset="utf-8")),
        _address_header("To", to),
    ]
    if cc:
        headers.append(_address_header("Cc", cc))
    if content.get("reply_to"):
        headers.append(_address_header("Reply-To", [_addr_spec(content["reply_to"])]))
    headers += [
        _text_header("Subject", content["subject"]),
        f"Date: {formatdate(localtime=False, usegmt=True)}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
    ]
    alt = _boundary()
    text_head = [
        f"--{alt}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "",
    ]
    middle = [
        "",
        f"--{alt}",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "",
    ]
    attachments = content.get("attachments") or []
    if not attachments:
        head = [
            *headers,
            f'Content-Type: multipart/alternative; boundary="{alt}"',
            "",
            *text_head,
        ]
        tail = ["", f"--{alt}--", ""]
    else:
        mixed = _boundary()
        head = [
            *headers,
            f'Content-Type: multipart/mixed; boundary="{mixed}"',
            "",
            f"--{mixed}",
            f'Content-Type: multipart/alternative; boundary="{alt}"',
            "",
            *text_head,
        ]
        tail = ["", f"--{alt}--", ""]
        for att in attachments:
            ctype = att.get("content_type") or ""
            if not re.fullmatch(r"[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+", ctype):
                ctype = "application/octet-stream"
            tail += [
                f"--{mixed}",
                f"Content-Type: {ctype}",
                "Content-Transfer-Encoding: base64",
                f"Content-Disposition: attachment; {_filename_param(att['filename'])}",
                "",
                _attachment_body(att),
            ]
        tail += [f"--{mixed}--", ""]
    return MessageParts(
        [*to, *cc],
        CRLF.join(head).encode("ascii"),
        CRLF.join(middle).encode("ascii"),
        CRLF.join(tail).encode("ascii"),
    )


def build_message(content: dict[str, Any], *, mail_from: str, message_id: str) -> OutgoingMessage:
    """The whole message to every recipient at once, with the bodies as they are (the
    postman sends a copy per recipient instead: services.mailer.copies)."""
    parts = prepare_message(content, mail_from=mail_from, message_id=message_id)
    data = parts.assemble(content["text"], content["html"])
    return OutgoingMessage(mail_from, parts.recipients, data, message_id)
