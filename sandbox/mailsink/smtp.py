"""The SMTP side: an aiosmtpd server that accepts everything and files it in the store."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from .store import MailStore

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024


class SinkHandler:
    """aiosmtpd handler: every sender and recipient is accepted (aiosmtpd's default for
    MAIL and RCPT), DATA is stored."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

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

    def __init__(self, server: asyncio.Server, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port

    async def close(self) -> None:
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
) -> SmtpServer:
    """Listen on host:port (0 picks a free port, see .port) in the running event loop.

    aiosmtpd's Controller would run a second loop in a thread; serving from the caller's
    loop keeps the SMTP server, the web viewer and the tests in one loop.
    """
    loop = asyncio.get_running_loop()
    handler = SinkHandler(store)

    def protocol() -> SMTP:
        return SMTP(
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
    return SmtpServer(server, host, bound_port)
