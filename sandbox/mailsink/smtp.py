"""The SMTP side: an aiosmtpd server that accepts everything and files it in the store."""

from __future__ import annotations

import asyncio
import logging
import re
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session

from .dsn import (
    SOFT_BOUNCE_REPLY,
    DsnEnvelope,
    DsnRequest,
    DsnSender,
    is_soft_bounce,
    xtext_decode,
)
from .store import MailStore

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024
_END_OF_DATA = b"\r\n.\r\n"
_STUFFED_DOT = re.compile(rb"\r\n\.")
_CHUNK = 256 * 1024
# RFC 3461's parameters, taken off MAIL and RCPT before aiosmtpd sees them (it refuses any
# it does not know, and upper-cases the rest, where ENVID's case matters).
_MAIL_DSN = re.compile(r"\s+(RET|ENVID)=(\S+)", re.IGNORECASE)
_RCPT_DSN = re.compile(r"\s+(NOTIFY|ORCPT)=(\S+)", re.IGNORECASE)
# SinkSMTP overrides aiosmtpd's DATA and calls its internals (the checks, `_reader`,
# `_set_post_data_state`, `_call_handler_hook`), as they are in this range of versions
# (distribution, lowest included, first excluded): tests/unit/test_shim_versions.py fails
# outside it. Figure: docs/performance.md.
WRITTEN_FOR = ("aiosmtpd", "1.4.6", "1.5")


class SinkSMTP(SMTP):
    """aiosmtpd's server with DATA read in chunks rather than line by line.

    aiosmtpd reads DATA one line at a time through its stream reader, a Python round per
    76-character line: a message with ten PDFs is some seven thousand rounds, and the sink
    spent more CPU there than the sender spent writing the message. This reads whatever has
    arrived, looks for the end marker, and then applies the same rules aiosmtpd does: lines
    of at most `line_length_limit` bytes (else 500), at most `data_size_limit` bytes in all
    (else 552), and a leading dot removed from every line (RFC 5321 4.5.2). With
    `decode_data` on, aiosmtpd's own DATA runs."""

    def _dsn(self) -> DsnEnvelope:
        assert self.envelope is not None
        found = getattr(self.envelope, "dsn", None)
        if found is None:
            found = DsnEnvelope()
            self.envelope.dsn = found  # type: ignore[attr-defined]
        return found

    async def smtp_MAIL(self, arg: str) -> None:
        params = dict((k.upper(), v) for k, v in _MAIL_DSN.findall(arg or ""))
        await super().smtp_MAIL(_MAIL_DSN.sub("", arg or ""))
        if params and self.envelope is not None and self.envelope.mail_from is not None:
            dsn = self._dsn()
            dsn.ret = params.get("RET")
            dsn.envid = xtext_decode(params["ENVID"])[:100] if "ENVID" in params else None

    async def smtp_RCPT(self, arg: str) -> None:
        params = dict((k.upper(), v) for k, v in _RCPT_DSN.findall(arg or ""))
        before = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        await super().smtp_RCPT(_RCPT_DSN.sub("", arg or ""))
        if params and self.envelope is not None and len(self.envelope.rcpt_tos) > before:
            notify = params.get("NOTIFY")
            self._dsn().recipients[self.envelope.rcpt_tos[-1]] = DsnRequest(
                notify=frozenset(notify.upper().split(",")) if notify else None,
                orcpt=xtext_decode(params["ORCPT"])[:400] if "ORCPT" in params else None,
            )

    async def smtp_DATA(self, arg: str) -> None:
        if self._decode_data:
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # A CRLF in front, so that an empty message (".\r\n" at once) and a first line that
        # starts with a dot look like every other line.
        data = bytearray(b"\r\n")
        limit = self.data_size_limit
        too_much = False
        while True:
            chunk = await self._reader.read(_CHUNK)
            if not chunk:  # the client went away mid-message
                self._writer.close()
                return
            searched_from = max(0, len(data) - len(_END_OF_DATA) + 1)
            data += chunk
            end = data.find(_END_OF_DATA, searched_from)
            if end >= 0:
                break
            if limit and len(data) > limit + 2 + len(_END_OF_DATA):
                too_much = True
                del data[: len(data) - len(_END_OF_DATA)]  # keep only what may end it
        if end + len(_END_OF_DATA) != len(data):
            # Pipelined commands after the message: hand them back to the reader.
            self._reader._buffer[:0] = data[end + len(_END_OF_DATA) :]  # type: ignore[attr-defined]
        body = bytes(data[2 : end + 2])  # up to and including the last line's CRLF
        if too_much or (limit and len(body) > limit):
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        if body and max(map(len, body.split(b"\r\n"))) + 2 > self.line_length_limit:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self._set_post_data_state()
            return
        original = _STUFFED_DOT.sub(b"\r\n", b"\r\n" + body)[2:]
        self.envelope.content = original
        self.envelope.original_content = original
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


# HELP lists a command by the syntax aiosmtpd's decorator attached to it: keep it on ours.
for _name in ("smtp_MAIL", "smtp_RCPT", "smtp_DATA"):
    for _attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
        if hasattr(getattr(SMTP, _name), _attr):
            setattr(getattr(SinkSMTP, _name), _attr, getattr(getattr(SMTP, _name), _attr))


class SinkHandler:
    """aiosmtpd handler: every sender and recipient is accepted but the soft-bounce
    addresses (450 at RCPT), DATA is stored, and answered with a DSN where `sandbox.mailsink.dsn`
    says so. EHLO offers DSN (RFC 3461)."""

    def __init__(self, store: MailStore, dsn: DsnSender | None = None) -> None:
        self.store = store
        self.dsn = dsn

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-DSN", responses[-1]]

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if is_soft_bounce(address):
            return SOFT_BOUNCE_REPLY
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if raw is None:
            content = envelope.content
            raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else b""
        try:
            summary = await asyncio.to_thread(
                self.store.add, raw, envelope.mail_from or "", list(envelope.rcpt_tos)
            )
        except Exception:
            log.exception("mailsink could not store a message from %s", envelope.mail_from)
            return "451 Requested action aborted: error in processing"
        log.info(
            "mailsink stored %s from %s to %s: %r",
            summary.id,
            envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
            summary.subject,
        )
        if self.dsn is not None:
            self.dsn.after_delivery(
                raw,
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                getattr(envelope, "dsn", None) or DsnEnvelope(),
            )
        return f"250 OK: queued as {summary.id}"


def _accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    # Applications configured with SMTP credentials should work against the sink
    # unchanged, so AUTH is offered and any username/password is accepted.
    return AuthResult(success=True)


class SmtpServer:
    """A running sink SMTP listener on the current event loop; use as an async context
    manager or call close()."""

    def __init__(
        self, server: asyncio.Server, host: str, port: int, dsn: DsnSender | None = None
    ) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.dsn = dsn

    async def close(self) -> None:
        if self.dsn is not None:
            await self.dsn.drain()
        self.server.close()
        await self.server.wait_closed()

    async def __aenter__(self) -> SmtpServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_smtp_server(
    store: MailStore,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    dsn: DsnSender | None = None,
) -> SmtpServer:
    """Listen on host:port (0 picks a free port, see .port) in the running event loop.

    aiosmtpd's Controller would run a second loop in a thread; serving from the caller's
    loop keeps the SMTP server, the web viewer and the tests in one loop.
    """
    loop = asyncio.get_running_loop()
    handler = SinkHandler(store, dsn)

    def protocol() -> SMTP:
        return SinkSMTP(
            handler,
            data_size_limit=max_message_size,
            enable_SMTPUTF8=True,
            # decode_data=False keeps bytes exact and makes aiosmtpd advertise 8BITMIME.
            decode_data=False,
            # Without an explicit name aiosmtpd calls socket.getfqdn(), which can hang
            # for seconds on machines with slow reverse DNS.
            hostname="mailsink",
            ident="mailsink",
            authenticator=_accept_any_login,
            auth_require_tls=False,
            auth_required=False,
            loop=loop,
        )

    server = await loop.create_server(protocol, host=host, port=port)
    bound_port = int(server.sockets[0].getsockname()[1])
    return SmtpServer(server, host, bound_port, dsn)
