"""Turning raw RFC 5322 bytes into what the viewer and the API show.

Everything here is lenient on purpose: the sink exists to show what an application
really sent, so malformed input must still produce something readable instead of a 500.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses
from html.parser import HTMLParser
from urllib.parse import unquote

from .models import AttachmentInfo, Envelope, MessageDetail, MessageSummary

_PARSER = BytesParser(policy=policy.default)


# For the summary taken as each message arrives: the top-level headers through the modern
# policy (decoded words, address lists), and the MIME structure through compat32, whose
# headers are plain strings. The modern policy re-parses a header on every access, and
# walking a message's parts asks for each part's Content-Type many times: at hundreds of
# messages a second that was most of the sink's CPU. The structure (which part is the
# body, which are attachments, in what order) comes out the same either way.
class _StructurePart(EmailMessage):
    # EmailMessage.is_attachment expects the modern policy's header objects.
    def is_attachment(self) -> bool:
        return self.get_content_disposition() == "attachment"


_HEAD_PARSER = BytesHeaderParser(policy=policy.default)
_STRUCTURE_PARSER = BytesParser(_class=_StructurePart, policy=policy.compat32)

# Only these schemes are turned into clickable links in the viewer; anything else
# (javascript:, data:) would run in the viewer's origin.
LINK_SCHEMES = ("http://", "https://", "mailto:")

TEXT_URL_RE = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
CID_RE = re.compile(r"""cid:([^"'\s>)]+)""", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?'\"*"


def parse_message(raw: bytes) -> EmailMessage:
    message = _PARSER.parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _fix_surrogates(value: str) -> str:
    # The bytes parser keeps raw 8-bit header bytes (SMTPUTF8 mail) as surrogate escapes,
    # and the address objects expose them as such; turn them back into real characters.
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def header_text(message: Message, name: str) -> str | None:
    try:
        value = message.get(name)
    except Exception:  # malformed header the registry cannot parse
        raw = message.get_all(name, failobj=[])
        value = raw[0] if raw else None
    if value is None:
        return None
    return _fix_surrogates(str(value)).strip()


def all_headers(message: Message) -> dict[str, str]:
    result: dict[str, str] = {}
    lowered: dict[str, str] = {}
    for name in message.keys():
        key = lowered.setdefault(name.lower(), name)
        if key in result:
            continue
        values: list[str] = []
        for raw in message.get_all(name, failobj=[]):
            try:
                values.append(_fix_surrogates(str(raw)).strip())
            except Exception:
                continue
        result[key] = "\n".join(values)
    return result


def header_addresses(message: Message, name: str) -> list[tuple[str, str]]:
    """(display name, bare address) pairs of an address header."""
    pairs: list[tuple[str, str]] = []
    try:
        headers = message.get_all(name, failobj=[])
        for header in headers:
            for address in getattr(header, "addresses", ()):
                pairs.append(
                    (_fix_surrogates(address.display_name), _fix_surrogates(address.addr_spec))
                )
    except Exception:
        text = header_text(message, name)
        if text:
            pairs = [(display, addr) for display, addr in getaddresses([text]) if addr]
    return [(display, addr) for display, addr in pairs if addr and addr != "<>"]


def _content_id(part: Message) -> str | None:
    value = header_text(part, "Content-ID")
    return value.strip("<> ") if value else None


@dataclass(frozen=True)
class Bodies:
    html_part: Message | None
    text_part: Message | None


def find_bodies(message: EmailMessage) -> Bodies:
    try:
        html_part = message.get_body(preferencelist=("html",))
        text_part = message.get_body(preferencelist=("plain",))
    except Exception:
        html_part = text_part = None
    return Bodies(html_part=html_part, text_part=text_part)


def _leaf_parts(part: Message, *, is_root: bool = True) -> Iterator[Message]:
    # message/rfc822 is "multipart" to the email package, but for the reader a forwarded
    # mail is one attachment, so only real multipart/* containers are descended into.
    if part.get_content_maintype() == "multipart":
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                yield from _leaf_parts(sub, is_root=False)
        return
    yield part


def attachment_parts(message: EmailMessage, bodies: Bodies | None = None) -> list[Message]:
    """Every leaf part that is not the displayed HTML or text body, in document order.

    The position in this list is the attachment index used in URLs, so it has to be
    computed the same way on ingest and on download.
    """
    bodies = bodies or find_bodies(message)
    return [
        part
        for part in _leaf_parts(message)
        if part is not bodies.html_part and part is not bodies.text_part
    ]


def part_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    inner = part.get_payload()
    if isinstance(inner, list) and inner and isinstance(inner[0], Message):
        return inner[0].as_bytes(policy=policy.SMTP)
    if isinstance(inner, str):
        return inner.encode("utf-8", "surrogateescape")
    return b""


def part_text(part: Message) -> str:
    charset = (part.get_content_charset() or "utf-8").lower()
    if charset in ("us-ascii", "ascii"):
        # Mislabelled UTF-8 is common; UTF-8 is a superset so nothing valid is lost.
        charset = "utf-8"
    data = part_bytes(part)
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:
        text = data.decode("utf-8", errors="replace")
    # SMTP delivers CRLF; callers compare bodies with Python strings, so give them "\n".
    # The raw endpoint still has the exact bytes.
    return text.replace("\r\n", "\n")


def attachment_content_type(part: Message) -> str:
    content_type = part.get_content_type()
    charset = part.get_content_charset()
    if part.get_content_maintype() == "text" and charset:
        return f"{content_type}; charset={charset}"
    return content_type


def attachment_filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name and "=?" in name and part.policy is policy.compat32:
        # compat32 leaves RFC 2047 words in a parameter as they are; the modern policy
        # decodes them, and both paths must name an attachment alike.
        try:
            name = str(make_header(decode_header(name)))
        except Exception:
            pass
    return _fix_surrogates(name) if name else None


def attachment_infos(message: EmailMessage, bodies: Bodies | None = None) -> list[AttachmentInfo]:
    bodies = bodies or find_bodies(message)
    html = part_text(bodies.html_part) if bodies.html_part is not None else ""
    embedded = {unquote(cid) for cid in CID_RE.findall(html)}
    infos: list[AttachmentInfo] = []
    for index, part in enumerate(attachment_parts(message, bodies)):
        content_id = _content_id(part)
        infos.append(
            AttachmentInfo(
                index=index,
                filename=attachment_filename(part),
                content_type=part.get_content_type(),
                size=len(part_bytes(part)),
                content_id=content_id,
                inline=content_id is not None and content_id in embedded,
            )
        )
    return infos


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("a", "area"):
            return
        for name, value in attrs:
            if name == "href" and value:
                self.links.append(value.strip())


def _is_link(url: str) -> bool:
    return url.lower().startswith(LINK_SCHEMES)


def text_links(text: str) -> list[str]:
    links: list[str] = []
    for match in TEXT_URL_RE.finditer(text):
        links.append(trim_url(match.group(0)))
    return links


def trim_url(url: str) -> str:
    # Prose puts punctuation right after URLs ("pay at https://x/pay.") and wraps them
    # in parentheses; a closing bracket only belongs to the URL if it opened one too.
    while url:
        last = url[-1]
        if last in _TRAILING_PUNCTUATION:
            url = url[:-1]
        elif last in ")]}" and url.count(last) > url.count({")": "(", "]": "[", "}": "{"}[last]):
            url = url[:-1]
        else:
            break
    return url


def html_links(html: str) -> list[str]:
    collector = _LinkCollector()
    try:
        collector.feed(html)
        collector.close()
    except Exception:
        pass
    return collector.links


def extract_links(html: str | None, text: str | None) -> list[str]:
    """Links from the HTML part, then the text part, in order and without duplicates."""
    found = [*(html_links(html) if html else []), *(text_links(text) if text else [])]
    seen: set[str] = set()
    result: list[str] = []
    for url in found:
        if _is_link(url) and url not in seen:
            seen.add(url)
            result.append(url)
    return result


def _split_head(raw: bytes) -> tuple[bytes, bytes] | None:
    """(the header lines with their CRLFs, the body), split at the first empty line; None
    when there is none in CRLF form."""
    end = raw.find(b"\r\n\r\n")
    return None if end < 0 else (raw[: end + 2], raw[end + 4 :])


def _header_block(raw: bytes) -> bytes:
    """The top-level header lines, without the body: the header parser otherwise reads the
    whole body too, a line at a time, only to keep it as one string."""
    split = _split_head(raw)
    return raw if split is None else split[0]


_STRUCTURE_HEADERS = BytesHeaderParser(_class=_StructurePart, policy=policy.compat32)
_MAX_DEPTH = 20


def _quick_structure(raw: bytes) -> _StructurePart | None:
    """The MIME tree as `_STRUCTURE_PARSER` builds it, found by splitting at the boundaries
    instead of feeding the parser every line: a message with ten base64 PDFs is thousands
    of lines, which was most of the sink's CPU. Only the plain shape is handled (CRLF line
    ends, every multipart closed by its boundary, no message/* parts); for anything else it
    returns None and the full parser decides. Every message the mailer writes has that shape;
    what it saves is measured in docs/performance.md."""
    try:
        return _quick_part(raw, 0)
    except Exception:
        return None


def _quick_part(raw: bytes, depth: int) -> _StructurePart | None:
    split = _split_head(raw)
    if split is None or depth > _MAX_DEPTH:
        return None
    head, body = split
    part = _STRUCTURE_HEADERS.parsebytes(head)
    assert isinstance(part, _StructurePart)
    if part.defects:
        return None
    maintype = part.get_content_maintype()
    if maintype == "message":
        return None  # the parser nests the enclosed message: leave that to it
    if maintype != "multipart":
        part.set_payload(body.decode("ascii", "surrogateescape"))
        return part
    boundary = part.get_boundary()
    if not boundary:
        return None
    # A delimiter is a line of its own; the CRLF in front of it belongs to it (RFC 2046).
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("ascii", "strict"))
    children: list[Message] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            part.set_payload(children)
            return part  # the close delimiter; what follows is the epilogue
        line_end = chunk.find(b"\r\n")
        if line_end < 0 or chunk[:line_end].strip(b" \t"):
            return None  # text that only starts like a delimiter
        child = _quick_part(chunk[line_end + 2 :], depth + 1)
        if child is None:
            return None
        children.append(child)
    return None  # never closed


def summarize(
    message_id: str,
    raw: bytes,
    *,
    mail_from: str,
    rcpt_tos: list[str],
    received_at: datetime,
) -> MessageSummary:
    head: Message
    try:
        head = _HEAD_PARSER.parsebytes(_header_block(raw))
        structure = _quick_structure(raw)
        if structure is None:  # not a Message's truth value: that is its header count
            structure = _STRUCTURE_PARSER.parsebytes(raw)
        attachments = attachment_infos(structure)  # type: ignore[arg-type]
    except Exception:
        # Whatever the quick path trips on, the full parse (as the viewer does) decides.
        head = parse_message(raw)
        attachments = attachment_infos(head)  # type: ignore[arg-type]
    from_pairs = header_addresses(head, "From")
    from_name, from_addr = from_pairs[0] if from_pairs else ("", "")
    return MessageSummary(
        id=message_id,
        from_=from_addr,
        from_name=from_name,
        to=[addr for _, addr in header_addresses(head, "To")],
        cc=[addr for _, addr in header_addresses(head, "Cc")],
        subject=header_text(head, "Subject") or "",
        received_at=received_at,
        message_id=header_text(head, "Message-ID"),
        size=len(raw),
        attachments=attachments,
        envelope=Envelope(mail_from=mail_from, rcpt_tos=rcpt_tos),
    )


def build_detail(summary: MessageSummary, message: EmailMessage) -> MessageDetail:
    bodies = find_bodies(message)
    html = part_text(bodies.html_part) if bodies.html_part is not None else None
    text = part_text(bodies.text_part) if bodies.text_part is not None else None
    return MessageDetail(
        **summary.model_dump(by_alias=False),
        headers=all_headers(message),
        html=html,
        text=text,
        links=extract_links(html, text),
    )


_HEAD_RE = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
_HTML_RE = re.compile(r"<html\b[^>]*>", re.IGNORECASE)
_DOCTYPE_RE = re.compile(r"^\s*<!doctype[^>]*>", re.IGNORECASE)
_BASE_TAG = '<base target="_blank">'


def html_for_iframe(html: str, cid_urls: dict[str, str]) -> str:
    """Prepare the HTML body for the sandboxed frame.

    cid: references point at attachments of the same mail, so they are rewritten to the
    attachment URLs, otherwise embedded logos would show as broken images. The injected
    <base target="_blank"> makes every link open a new tab: navigating inside the frame
    would be blocked or confusing, and the recipient's mail client would open a browser.
    """
    if cid_urls:
        html = CID_RE.sub(lambda m: cid_urls.get(unquote(m.group(1)), m.group(0)), html)
    for pattern in (_HEAD_RE, _HTML_RE, _DOCTYPE_RE):
        match = pattern.search(html)
        if match:
            return html[: match.end()] + _BASE_TAG + html[match.end() :]
    return _BASE_TAG + html
