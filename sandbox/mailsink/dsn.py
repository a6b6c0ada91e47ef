"""Delivery status notifications (RFC 3464) the sink sends back, so that bounces can be tried
on one machine:

- a message to `bounce@example.com` is accepted and stored as usual, then answered with a
  "failed" DSN (5.1.1 user unknown) unless its RCPT said NOTIFY=NEVER (or a NOTIFY without
  FAILURE);
- `soft-bounce@example.com` is refused at RCPT with 450 4.2.1 (see smtp.py): a temporary
  failure, which the sender retries;
- with `success_dsn` on, a recipient whose RCPT asked NOTIFY=SUCCESS gets a "delivered" DSN.

Each DSN goes by SMTP, from the null sender `<>`, to the message's MAIL FROM, through the
configured relay (`bounce_host:bounce_port`: in `make run`, the mailer's bounce intake); a
message with the null sender is never answered. RET=HDRS (or no RET) returns the headers,
RET=FULL the whole message; ENVID and ORCPT are given back as RFC 3461 asks.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

import aiosmtplib

log = logging.getLogger(__name__)

BOUNCE_ADDRESSES = frozenset({"bounce@example.com"})
SOFT_BOUNCE_ADDRESSES = frozenset({"soft-bounce@example.com"})
SOFT_BOUNCE_REPLY = "450 4.2.1 Mailbox temporarily unavailable: try again later"
REPORTING_MTA = "mailsink.test"
CRLF = "\r\n"


@dataclass
class DsnRequest:
    """What the client asked of one recipient with RFC 3461's parameters."""

    notify: frozenset[str] | None = None  # None: not asked (FAILURE and DELAY by default)
    orcpt: str | None = None


@dataclass
class DsnEnvelope:
    """The transaction's DSN parameters (MAIL's RET and ENVID, each RCPT's NOTIFY, ORCPT)."""

    ret: str | None = None
    envid: str | None = None
    recipients: dict[str, DsnRequest] = field(default_factory=dict)


def wants(request: DsnRequest | None, what: str) -> bool:
    if request is None or request.notify is None:
        return what in ("FAILURE", "DELAY")
    return what in request.notify


def is_bounce(address: str) -> bool:
    return address.strip().lower() in BOUNCE_ADDRESSES


def is_soft_bounce(address: str) -> bool:
    return address.strip().lower() in SOFT_BOUNCE_ADDRESSES


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext: "+HH" stands for the byte 0xHH."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "+" and i + 2 < len(value):
            try:
                out.append(chr(int(value[i + 1 : i + 3], 16)))
                i += 3
                continue
            except ValueError:
                pass
        out.append(value[i])
        i += 1
    return "".join(out)


def build_dsn(
    *,
    original: bytes,
    mail_from: str,
    recipient: str,
    action: str,
    status: str,
    diagnostic: str,
    envelope: DsnEnvelope,
    arrival: datetime,
    now: datetime | None = None,
) -> bytes:
    """A multipart/report DSN about one recipient of `original`, addressed to `mail_from`."""
    now = now or datetime.now(UTC)
    boundary = f"=_mailsink_{secrets.token_hex(8)}"
    request = envelope.recipients.get(recipient)
    failed = action == "failed"
    subject = "Undelivered Mail Returned to Sender" if failed else "Successful Mail Delivery Report"
    human = (
        f"This is the mail system at host {REPORTING_MTA} (the dev mail sink).\r\n\r\n"
        + (
            "Your message could not be delivered to the recipient below.\r\n"
            if failed
            else "Your message was successfully delivered to the recipient below.\r\n"
        )
        + f"\r\n<{recipient}>: {diagnostic}\r\n"
    )
    per_message = [f"Reporting-MTA: dns; {REPORTING_MTA}"]
    if envelope.envid:
        per_message.append(f"Original-Envelope-Id: {envelope.envid}")
    per_message.append(f"Arrival-Date: {format_datetime(arrival)}")
    per_recipient = []
    if request is not None and request.orcpt:
        per_recipient.append(f"Original-Recipient: {request.orcpt}")
    per_recipient += [
        f"Final-Recipient: rfc822; {recipient}",
        f"Action: {action}",
        f"Status: {status}",
        f"Remote-MTA: dns; {REPORTING_MTA}",
        f"Diagnostic-Code: smtp; {diagnostic}",
    ]
    head, _, _ = original.replace(b"\r\n", b"\n").partition(b"\n\n")
    returned_full = (envelope.ret or "").upper() == "FULL"
    if returned_full:
        returned_type, returned = "message/rfc822", original.replace(b"\r\n", b"\n")
    else:
        returned_type, returned = "text/rfc822-headers", head + b"\n"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{REPORTING_MTA}>",
        f"To: <{mail_from}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{secrets.token_hex(12)}@{REPORTING_MTA}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        human,
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        CRLF.join(per_message),
        "",
        CRLF.join(per_recipient),
        "",
        f"--{boundary}",
        "Content-Description: Undelivered Message" + ("" if returned_full else " Headers"),
        f"Content-Type: {returned_type}",
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    text = CRLF.join(lines).encode() + CRLF.encode()
    body = returned.replace(b"\n", b"\r\n")
    return text + body + f"{CRLF}--{boundary}--{CRLF}".encode()


class DsnSender:
    """Sends the sink's DSNs in the background; `drain()` waits for those under way."""

    def __init__(
        self,
        host: str | None,
        port: int | None,
        *,
        success_dsn: bool = False,
        attempts: int = 5,
        first_pause: float = 0.5,
        keep_copy: object = None,
    ) -> None:
        self.host = host
        self.port = port
        self.success_dsn = success_dsn
        self.attempts = attempts
        self.first_pause = first_pause
        self.keep_copy = keep_copy  # callable(raw, mail_from, rcpt_tos): a copy in the viewer
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: list[tuple[str, str]] = []  # (action, to), for tests and the log

    @property
    def enabled(self) -> bool:
        return bool(self.host and self.port)

    def after_delivery(
        self, original: bytes, mail_from: str, rcpt_tos: list[str], envelope: DsnEnvelope
    ) -> None:
        """Answer an accepted message as its recipients call for."""
        if mail_from.strip() in ("", "<>"):  # never answer a bounce (the null sender)
            return
        arrival = datetime.now(UTC)
        for rcpt in rcpt_tos:
            request = envelope.recipients.get(rcpt)
            if is_bounce(rcpt):
                if not wants(request, "FAILURE"):
                    continue
                action, status = "failed", "5.1.1"
                diagnostic = f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
            elif self.success_dsn and wants(request, "SUCCESS") and request is not None:
                action, status = "delivered", "2.0.0"
                diagnostic = "250 2.0.0 Ok: delivered to the dev mail sink"
            else:
                continue
            if not self.enabled:
                log.warning(
                    "mailsink: no bounce relay configured (MAILSINK_BOUNCE_PORT): the %s "
                    "notification for %s is not sent",
                    action,
                    rcpt,
                )
                continue
            raw = build_dsn(
                original=original,
                mail_from=mail_from,
                recipient=rcpt,
                action=action,
                status=status,
                diagnostic=diagnostic,
                envelope=envelope,
                arrival=arrival,
            )
            task = asyncio.get_running_loop().create_task(self._send(raw, mail_from, action))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, raw: bytes, to: str, action: str) -> None:
        pause = self.first_pause
        for attempt in range(1, self.attempts + 1):
            try:
                await self._deliver(raw, to)
            except (aiosmtplib.SMTPException, OSError) as exc:
                if isinstance(exc, aiosmtplib.SMTPResponseException) and 500 <= exc.code < 600:
                    log.warning("mailsink: the %s DSN to %s was refused: %s", action, to, exc)
                    return
                if attempt == self.attempts:
                    log.warning("mailsink: could not send the %s DSN to %s: %r", action, to, exc)
                    return
                await asyncio.sleep(pause)
                pause *= 2
                continue
            self.sent.append((action, to))
            log.info("mailsink sent a %s DSN to %s", action, to)
            if action == "failed" and callable(self.keep_copy):
                try:
                    await asyncio.to_thread(self.keep_copy, raw, "", [to])
                except Exception:
                    log.exception("mailsink could not keep a copy of a DSN")
            return

    async def _deliver(self, raw: bytes, to: str) -> None:
        # From the null sender, which aiosmtplib.send() does not allow.
        smtp = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=10)
        await smtp.connect()
        try:
            await smtp.sendmail("", [to], raw)
        finally:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
