"""Delivery status notifications (RFC 3464) read with the email package. Plain functions.

`parse(raw)` turns a message that came back to us into a `Report`: one `Notification` per
recipient it speaks of (action, RFC 3463 status, diagnostic, remote MTA) and the clues to
which of our emails it is about (the Original-Envelope-Id, the returned headers' Message-ID,
Exim's X-Failed-Recipients), or into `NotADsn` with the reason (an autoreply, a person's
mail, something unreadable): never an exception.

`locate(report, ...)` then says which email and recipient each notification is about, from,
in order: the VERP address the report was sent to (`services.mailer.verp`, signed: one with
a missing or wrong signature is not ours), the ENVID the mailer gave (`<email id>.<n>`), the
Message-ID of the returned headers (`<email id@domain>`, the recipient then found by
address), and X-Failed-Recipients.

Trust. Only a signed VERP address proves the report answers a copy this mailer sent. An
ENVID, a Message-ID and the report's fields are text anyone who can write to the bounce
intake (its SMTP endpoint, the IMAP mailbox, the webhook's provider) can make up, knowing an
email id. So a notification placed without a signed VERP address (`Located.signed` false)
may still record a soft bounce or a delivery, but a hard bounce (which suppresses the
address) only when its Final-Recipient is the copy's own address; otherwise the hard bounce
is dropped with its reason (`services.mailer.bounces`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from services.mailer.verp import read_return_path
from shared.events import BounceKind

# What an Action field may say (RFC 3464 2.3.3).
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ENVID = re.compile(r"(?P<email>[A-Za-z0-9_-]{1,64})\.(?P<n>\d{1,3})")
_MESSAGE_ID = re.compile(r"<\s*(?P<email>[A-Za-z0-9_-]{1,64})@(?P<domain>[^<>@\s]+)\s*>")
_MESSAGE_ID_LINE = re.compile(r"^\s*Message-ID:\s*(<[^<>\s]{3,300}>)", re.IGNORECASE | re.MULTILINE)
_GLOBAL_STATUS = re.compile(rb"Content-Type:[ \t]*message/global-delivery-status", re.IGNORECASE)
_GLOBAL_AS_TEXT = b"text/x-global-delivery-status; charset=utf-8"
_REPORT_TYPES = ("message/delivery-status", "text/x-global-delivery-status")
_RETURNED = ("text/rfc822-headers", "message/rfc822", "message/global", "message/global-headers")
# Headers of a message in a mailbox that hold the address it was delivered to.
_DELIVERED_TO = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
MAX_FIELD = 1000  # a diagnostic longer than this is cut: it is shown to people, not parsed
MAX_NOTIFICATIONS = 100


@dataclass(frozen=True)
class Notification:
    """What a report says of one recipient."""

    action: str  # one of ACTIONS
    status: str | None = None  # e.g. "5.1.1"
    final_recipient: str | None = None
    original_recipient: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None

    @property
    def kind(self) -> BounceKind | None:
        """A bounce's kind: hard when it failed for good (5.x.x, or failed with no status
        that says otherwise), soft when delayed or failed for now (4.x.x); None when it is
        not a bounce (delivered, relayed, expanded)."""
        if self.action == "delayed":
            return BounceKind.soft
        if self.action != "failed":
            return None
        if self.status and self.status.startswith("4"):
            return BounceKind.soft
        return BounceKind.hard

    @property
    def delivered(self) -> bool:
        # "expanded": delivered to the address we sent to, which then forwarded it on.
        return self.action in ("delivered", "expanded")

    @property
    def reason(self) -> str:
        """What a person reads: the remote server's words where there are any."""
        if self.diagnostic:
            return self.diagnostic
        if self.status:
            return f"{self.action} ({self.status})"
        return self.action


@dataclass(frozen=True)
class Report:
    notifications: tuple[Notification, ...]
    envelope_id: str | None = None  # Original-Envelope-Id: the ENVID we gave
    message_id: str | None = None  # of the returned message
    failed_recipients: tuple[str, ...] = ()  # X-Failed-Recipients (Exim, Gmail)
    delivered_to: tuple[str, ...] = ()  # the addresses the report itself was sent to
    reporting_mta: str | None = None


@dataclass(frozen=True)
class NotADsn:
    reason: str


@dataclass(frozen=True)
class Located:
    """Which of our recipients a notification is about: `n` when the report named the copy
    (VERP, ENVID), else the `address` to find it by among the email's recipients."""

    email_id: str
    n: int | None
    address: str | None
    notification: Notification
    found_by: str  # "verp", "envid", "message-id", "x-failed-recipients"

    @property
    def signed(self) -> bool:
        """Placed by a VERP address with this mailer's signature, not by what the report
        says of itself."""
        return self.found_by == "verp"


# --- reading ----------------------------------------------------------------------------


def parse(raw: bytes) -> Report | NotADsn:
    """A report, or why `raw` is not one. Never raises."""
    try:
        return _parse(raw)
    except Exception as exc:  # hostile or broken input: a reason, never a crash
        return NotADsn(f"unreadable message ({type(exc).__name__})")


def _parse(raw: bytes) -> Report | NotADsn:
    if not raw or not raw.strip():
        return NotADsn("empty message")
    # The email package reads message/global-delivery-status (RFC 6533, UTF-8) as a message
    # and loses its 8-bit text; read as text, its bytes stay.
    raw = _GLOBAL_STATUS.sub(b"Content-Type: " + _GLOBAL_AS_TEXT, raw)
    msg = message_from_bytes(raw, policy=policy.compat32)
    if not msg.keys():
        return NotADsn("not a delivery status notification (no headers)")
    failed_to = tuple(_addresses(msg.get_all("X-Failed-Recipients") or []))
    delivered_to = tuple(_addresses(msg.get_all(name) or [] for name in _DELIVERED_TO))
    status_part = next((p for p in msg.walk() if p.get_content_type() in _REPORT_TYPES), None)
    returned = _returned_headers(msg)
    message_id = _clean(returned.get("Message-ID")) if returned is not None else None
    if message_id is None:
        # Exim (and others) quote the returned message as text in the body.
        m = _MESSAGE_ID_LINE.search(_body_text(msg))
        message_id = m[1] if m else None
    if status_part is None:
        if failed_to:
            # An Exim bounce of the older kind: plain text naming the recipients in a header.
            text = _body_text(msg)
            status = _status_in(text)
            notes = tuple(
                Notification(
                    action="failed",
                    status=status,
                    final_recipient=addr,
                    diagnostic=_diagnostic_in(text, addr),
                )
                for addr in failed_to[:MAX_NOTIFICATIONS]
            )
            return Report(notes, None, message_id, failed_to, delivered_to)
        if _auto_submitted(msg):
            return NotADsn("an automatic reply, not a delivery status notification")
        return NotADsn("not a delivery status notification (no message/delivery-status part)")
    per_message, per_recipient = _status_blocks(status_part)
    notes_list: list[Notification] = []
    for block in per_recipient[:MAX_NOTIFICATIONS]:
        note = _notification(block)
        if note is not None:
            notes_list.append(note)
    if not notes_list and failed_to:
        notes_list = [Notification(action="failed", final_recipient=a) for a in failed_to]
    if not notes_list:
        return NotADsn("a delivery status notification with no recipient's action in it")
    return Report(
        tuple(notes_list),
        envelope_id=_clean(per_message.get("Original-Envelope-Id")),
        message_id=message_id,
        failed_recipients=failed_to,
        delivered_to=delivered_to,
        reporting_mta=_typed(per_message.get("Reporting-MTA")),
    )


def _status_blocks(part: Message) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The per-message fields and each recipient's, as dicts of their (unfolded) values."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list) and part.get_content_type() == "message/delivery-status":
        # The email package splits message/delivery-status into its blocks itself.
        for sub in payload:
            if isinstance(sub, Message):
                blocks.append({k: _text(v) for k, v in sub.items()})
    else:
        text = _decoded(part)
        for chunk in re.split(r"\r?\n[ \t]*\r?\n", text.strip()):
            if chunk.strip():
                blocks.append(_fields(chunk))
    # Field names are case-insensitive.
    blocks = [{_canonical(k): v for k, v in b.items()} for b in blocks]
    if not blocks:
        return {}, []
    first = blocks[0]
    if "Action" in first or "Final-Recipient" in first:
        return {}, blocks  # no per-message block (seen from some MTAs)
    return first, blocks[1:]


_FIELDS = {
    name.lower(): name
    for name in (
        "Reporting-MTA",
        "Original-Envelope-Id",
        "Final-Recipient",
        "Original-Recipient",
        "Action",
        "Status",
        "Diagnostic-Code",
        "Remote-MTA",
        "X-Display-Name",
    )
}


def _fields(chunk: str) -> dict[str, str]:
    """`Name: value` lines, a line that starts with white space continuing the one before."""
    fields: dict[str, str] = {}
    name = None
    for line in chunk.strip().splitlines():
        if line[:1] in (" ", "\t") and name is not None:
            fields[name] = f"{fields[name]} {line.strip()}"
            continue
        key, colon, value = line.partition(":")
        if colon and key.strip() and " " not in key.strip():
            name = key.strip()
            fields.setdefault(name, value.strip())
    return fields


def _canonical(name: str) -> str:
    return _FIELDS.get(name.strip().lower(), name.strip())


def _notification(block: dict[str, str]) -> Notification | None:
    action = (block.get("Action") or "").strip().lower().split(" ", 1)[0]
    if action not in ACTIONS:
        return None
    diagnostic = _joined_reply(_typed(block.get("Diagnostic-Code")))
    status = _status_in(block.get("Status") or "") or _status_in(diagnostic or "")
    return Notification(
        action=action,
        status=status,
        final_recipient=_address(_typed(block.get("Final-Recipient"))),
        original_recipient=_address(_typed(block.get("Original-Recipient"))),
        diagnostic=diagnostic[:MAX_FIELD] if diagnostic else None,
        remote_mta=_typed(block.get("Remote-MTA")),
    )


def _joined_reply(text: str | None) -> str | None:
    """A multiline SMTP reply as one sentence: "550-5.1.1 a 550-5.1.1 b 550 5.1.1 c" ->
    "550 5.1.1 a b c"."""
    if not text:
        return text
    m = re.match(r"(\d{3})[- ]((?:\d\.\d{1,3}\.\d{1,3})?)", text)
    if m is None:
        return text
    code, status = m[1], m[2]
    prefix = re.escape(code) + r"[- ]" + (re.escape(status) + r"\s+" if status else "")
    rest = re.sub(r"\s" + prefix, " ", text[m.end() :])
    return f"{code} {status}{' ' if status else ''}{' '.join(rest.split())}".strip()


def _returned_headers(msg: Message) -> Message | None:
    """The headers of the message the report returns, if it returns any."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype not in _RETURNED:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
        text = _decoded(part)
        if text.strip():
            return HeaderParser(policy=policy.compat32).parsestr(text, headersonly=True)
    return None


def _text(value: object) -> str:
    """A header value as text: raw UTF-8 bytes (kept as surrogate escapes) made characters."""
    text = _unfold(value)
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def _decoded(part: Message) -> str:
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return data.decode(charset, "replace")
        except LookupError:
            return data.decode("utf-8", "replace")
    payload = part.get_payload()
    return payload if isinstance(payload, str) else ""


def _body_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            return _decoded(part)[:20_000]
    return ""


def _auto_submitted(msg: Message) -> bool:
    auto = (msg.get("Auto-Submitted") or "").strip().lower()
    return bool(auto and auto != "no") or bool(msg.get("X-Autoreply") or msg.get("X-Autorespond"))


def _unfold(value: object) -> str:
    return re.sub(r"\s*\r?\n\s*", " ", str(value)).strip()


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = _unfold(value)[:MAX_FIELD]
    return text or None


def _typed(value: str | None) -> str | None:
    """A typed field's value without its type: "rfc822; a@b" -> "a@b"."""
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    text = (rest if sep and re.fullmatch(r"\s*[A-Za-z0-9-]+\s*", kind) else value).strip()
    return text[:MAX_FIELD] or None


def _address(value: str | None) -> str | None:
    if not value:
        return None
    addr = value.strip().strip("<>").strip()
    return addr if "@" in addr and len(addr) <= 320 else None


def _addresses(values: Iterable[object]) -> list[str]:
    flat: list[str] = []
    for v in values:
        if isinstance(v, list):
            flat.extend(str(x) for x in v)
        else:
            flat.append(str(v))
    out: list[str] = []
    for _, addr in getaddresses([_unfold(v) for v in flat]):
        if "@" in addr and addr not in out and len(addr) <= 320:
            out.append(addr)
    return out[:MAX_NOTIFICATIONS]


def _status_in(text: str) -> str | None:
    m = _STATUS.search(text or "")
    return f"{m[1]}.{m[2]}.{m[3]}" if m else None


def _diagnostic_in(text: str, address: str) -> str | None:
    """The lines of an Exim-style text bounce that follow the address: the remote's answer."""
    lines = [ln.strip() for ln in text.splitlines()]
    for i, line in enumerate(lines):
        if address.lower() in line.lower():
            after = " ".join(ln for ln in lines[i + 1 : i + 4] if ln)
            return (after or line)[:MAX_FIELD] or None
    return None


# --- whose it is ------------------------------------------------------------------------


def locate(
    report: Report,
    *,
    rcpt_tos: Sequence[str] = (),
    bounce_local: str,
    bounce_domain: str,
    message_id_domain: str,
    verp_secret: str,
) -> list[Located]:
    """Which email and recipient each notification is about; a notification nothing places
    is left out (the caller logs what was dropped). `verp_secret` is the mailer's
    `tracking_secret`, which signs its return paths."""
    verp = next(
        (
            r
            for r in (
                read_return_path(a, bounce_local, bounce_domain, verp_secret)
                for a in (*rcpt_tos, *report.delivered_to)
            )
            if r is not None
        ),
        None,
    )
    envid = _ENVID.fullmatch(report.envelope_id or "")
    mid = _MESSAGE_ID.fullmatch((report.message_id or "").strip())
    ours = mid is not None and mid["domain"].lower() == message_id_domain.lower()
    by_message_id = mid["email"] if mid is not None and ours else None
    failed = report.failed_recipients
    located: list[Located] = []
    for i, note in enumerate(report.notifications):
        address = note.final_recipient or note.original_recipient
        found_by = None
        if address is None and failed:
            # A report without Final-Recipient: X-Failed-Recipients names them, in order.
            if len(failed) == len(report.notifications):
                address, found_by = failed[i], "x-failed-recipients"
            elif len(failed) == 1:
                address, found_by = failed[0], "x-failed-recipients"
        if verp is not None:
            located.append(Located(verp.email_id, verp.n, address, note, "verp"))
        elif envid is not None:
            located.append(Located(envid["email"], int(envid["n"]), address, note, "envid"))
        elif by_message_id is not None and address:
            located.append(Located(by_message_id, None, address, note, found_by or "message-id"))
    return located


__all__ = ["Located", "NotADsn", "Notification", "Report", "locate", "parse"]
