"""Where bounces and delivery notifications come in (`BOUNCE_INTAKE`), each handing the raw
message to `services.mailer.bounces.Bounces.take`:

- `smtp`: an SMTP endpoint (aiosmtpd) in the mailer's own event loop, on
  `BOUNCE_SMTP_HOST:BOUNCE_SMTP_PORT`. It takes mail only for this system's VERP addresses
  (`<bounce_local>+<email id>.<n>.<sig>@<bounce_domain>` with a signature this mailer wrote,
  `services.mailer.verp`; any other, a forged or missing signature too: 550), at most
  `BOUNCE_MAX_MESSAGE_SIZE` bytes (552), and answers 250 once the message is recorded, or
  dropped as not ours (so the sender does not retry it); 451 when the database failed.
  `make run` points the dev mail sink at it; in production, an MX for the bounce domain.
  A report placed without a signed return path (IMAP, webhook, or an SMTP report whose
  VERP address was lost) may not bounce a copy hard unless its Final-Recipient is the
  copy's address (`services.mailer.bounces`).
- `imap`: a mailbox polled every `BOUNCE_IMAP_POLL_SECONDS` (imaplib, in a thread): each
  message is recorded, then moved to `BOUNCE_IMAP_DONE_FOLDER` or deleted; one that could
  not be recorded (the database failed) stays for the next poll.
- `webhook`: the gateway's `POST /webhooks/bounces` forwards a provider's raw DSN here
  (`POST /internal/bounces`, with the internal token), signed by the provider with
  `BOUNCE_WEBHOOK_SECRET`: `X-Bounce-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
  "<t>." + body>`; a forged, stale or unsigned one is refused (400) and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import imaplib
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from services.mailer.bounces import Bounces, bounce_domain_of
from services.mailer.settings import MailerSettings
from services.mailer.verp import read_return_path
from shared.runtime import Service

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 20  # a DSN goes to one return path; a few more is already odd
SIGNATURE_HEADER = "X-Bounce-Signature"


# --- SMTP -------------------------------------------------------------------------------


class BounceHandler:
    """aiosmtpd handler: VERP recipients only, each message handed to `Bounces.take`."""

    def __init__(self, bounces: Bounces, local: str, domain: str, secret: str) -> None:
        self.bounces = bounces
        self.local = local
        self.domain = domain
        self.secret = secret

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if read_return_path(address, self.local, self.domain, self.secret) is None:
            return "550 5.1.1 not a bounce address of this system"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            await self.bounces.take(raw, list(envelope.rcpt_tos))
        except Exception:
            log.exception("bounce intake: could not record a message from %s", envelope.mail_from)
            return "451 4.3.0 could not record it now; try again later"
        return "250 OK"


@dataclass
class SmtpIntake:
    server: asyncio.Server
    host: str
    port: int

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def start_smtp_intake(
    bounces: Bounces, settings: MailerSettings, *, port: int | None = None
) -> SmtpIntake:
    """Listen in the running loop (port 0: a free one, see `.port`)."""
    loop = asyncio.get_running_loop()
    handler = BounceHandler(
        bounces, settings.bounce_local, bounce_domain_of(settings), settings.tracking_secret
    )

    def protocol() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=settings.bounce_max_message_size,
            decode_data=False,
            enable_SMTPUTF8=True,
            hostname="envelopepay-bounces",  # never socket.getfqdn(): slow reverse DNS
            ident="envelopepay bounce intake",
            loop=loop,
        )

    host = settings.bounce_smtp_host
    server = await loop.create_server(
        protocol, host=host, port=settings.bounce_smtp_port if port is None else port
    )
    bound = int(server.sockets[0].getsockname()[1])
    return SmtpIntake(server, host, bound)


# --- IMAP -------------------------------------------------------------------------------


class Mailbox:
    """The bounce mailbox through imaplib (blocking: called in a thread, one at a time)."""

    def __init__(self, settings: MailerSettings) -> None:
        self.s = settings
        self.conn: imaplib.IMAP4 | None = None

    def open(self) -> None:
        s = self.s
        if s.bounce_imap_tls:
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                s.bounce_imap_host, s.bounce_imap_port, ssl_context=ssl.create_default_context()
            )
        else:
            conn = imaplib.IMAP4(s.bounce_imap_host, s.bounce_imap_port)
            if "STARTTLS" in conn.capabilities:
                conn.starttls(ssl.create_default_context())
        conn.login(s.bounce_imap_username, s.bounce_imap_password or "")
        typ, data = conn.select(_quoted(s.bounce_imap_folder))
        if typ != "OK":
            raise imaplib.IMAP4.error(f"cannot open folder {s.bounce_imap_folder!r}: {data!r}")
        self.conn = conn

    def waiting(self, limit: int) -> list[tuple[bytes, int]]:
        """The uids of the messages in the folder, with their sizes, oldest first."""
        assert self.conn is not None
        typ, data = self.conn.uid("SEARCH", "ALL")
        uids = data[0].split() if typ == "OK" and data and data[0] else []
        out = []
        for uid in uids[:limit]:
            typ, sized = self.conn.uid("FETCH", uid, "(RFC822.SIZE)")
            size = 0
            if typ == "OK" and sized and isinstance(sized[0], bytes):
                m = _SIZE.search(sized[0])
                size = int(m.group(1)) if m else 0
            out.append((uid, size))
        return out

    def fetch(self, uid: bytes) -> bytes | None:
        assert self.conn is not None
        typ, data = self.conn.uid("FETCH", uid, "(BODY.PEEK[])")
        if typ != "OK":
            return None
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                return bytes(item[1])
        return None

    def done(self, uids: list[bytes]) -> None:
        """Recorded: moved to the done folder, or deleted."""
        assert self.conn is not None
        if not uids:
            return
        uid_set = b",".join(uids).decode()
        target = self.s.bounce_imap_done_folder
        if target:
            typ, _ = self.conn.uid("COPY", uid_set, _quoted(target))
            if typ != "OK":
                raise imaplib.IMAP4.error(f"cannot copy to {target!r}")
        self.conn.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)")
        self.conn.expunge()

    def close(self) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.conn.logout()
        self.conn = None


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapPoller:
    """Takes what waits in the mailbox, then sleeps `bounce_imap_poll_seconds`."""

    BATCH = 200

    def __init__(
        self,
        bounces: Bounces,
        settings: MailerSettings,
        mailbox: Callable[[], Mailbox] | None = None,
    ) -> None:
        self.bounces = bounces
        self.settings = settings
        self.mailbox = mailbox or (lambda: Mailbox(settings))

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except (OSError, imaplib.IMAP4.error) as exc:
                log.warning("bounce intake: IMAP mailbox not read: %r", exc)
            await asyncio.sleep(self.settings.bounce_imap_poll_seconds)

    async def poll_once(self) -> int:
        """One pass over the folder; returns how many messages were taken out of it."""
        box = self.mailbox()
        await asyncio.to_thread(box.open)
        try:
            waiting = await asyncio.to_thread(box.waiting, self.BATCH)
            done: list[bytes] = []
            for uid, size in waiting:
                if size > self.settings.bounce_max_message_size:
                    log.warning("bounce intake: IMAP message %s too large (%d bytes)", uid, size)
                    done.append(uid)
                    continue
                raw = await asyncio.to_thread(box.fetch, uid)
                if raw is None:
                    continue
                try:
                    await self.bounces.take(raw)
                except Exception:
                    # The database: the message stays for the next poll.
                    log.exception("bounce intake: could not record IMAP message %s", uid)
                    continue
                done.append(uid)
            await asyncio.to_thread(box.done, done)
            return len(done)
        finally:
            await asyncio.to_thread(box.close)


# --- webhook ----------------------------------------------------------------------------


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    """The signature header's value for `body` (what a provider, or a test, sends)."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def signature_ok(secret: str, body: bytes, header: str, tolerance: int, now: float) -> bool:
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, eq, value = item.strip().partition("=")
        if eq:
            parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError, IndexError):
        return False
    if abs(now - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


def webhook_router(
    service: Service,
    bounces: Bounces,
    settings: MailerSettings,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    router = APIRouter(tags=["bounces"], dependencies=[Depends(service.require_internal())])

    @router.post("/internal/bounces", response_model=None)
    async def bounce_webhook(
        request: Request, x_bounce_signature: str = Header(default="")
    ) -> JSONResponse:
        secret = settings.bounce_webhook_secret
        if settings.bounce_intake != "webhook" or not secret:
            return JSONResponse({"detail": "the bounce webhook is not enabled"}, status_code=404)
        body = await _read(request, settings.bounce_max_message_size)
        if body is None:
            return JSONResponse({"detail": "payload too large"}, status_code=413)
        if not signature_ok(
            secret, body, x_bounce_signature, settings.bounce_webhook_tolerance_seconds, clock()
        ):
            log.warning("bounce intake: refused a webhook with a bad or missing signature")
            return JSONResponse({"detail": "bad signature"}, status_code=400)
        try:
            taken = await bounces.take(body)
        except Exception:
            log.exception("bounce intake: could not record a webhook's message")
            return JSONResponse({"detail": "try again later"}, status_code=503)
        return JSONResponse(
            {"recorded": [ev.routing_key for ev in taken.events], "dropped": taken.dropped}
        )

    return router


async def _read(request: Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# --- wiring -----------------------------------------------------------------------------


def wire(service: Service, settings: MailerSettings, app: Any, bounces: Bounces) -> None:
    """Starts the configured intake with the service (`app.py` calls this)."""
    app.include_router(webhook_router(service, bounces, settings))
    if settings.bounce_intake == "smtp":

        async def bounce_smtp_intake() -> None:
            intake = await start_smtp_intake(bounces, settings)
            log.info("bounce intake: SMTP on %s:%s", intake.host, intake.port)
            try:
                await asyncio.Event().wait()
            finally:
                await intake.close()

        service.background(bounce_smtp_intake)
    elif settings.bounce_intake == "imap":
        poller = ImapPoller(bounces, settings)

        async def bounce_imap_intake() -> None:
            await poller.run()

        service.background(bounce_imap_intake)
