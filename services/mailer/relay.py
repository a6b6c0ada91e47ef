"""SMTP connections to the relay, kept open and reused.

Opening a connection per message (TCP, banner, EHLO, maybe STARTTLS and AUTH, QUIT) costs
more than sending a small message. The pool keeps up to `size` connections; a connection
that failed in any way is closed and never reused, so a message is never retried on a
connection in an unknown state. An idle connection is checked with NOOP before it carries
a message: relays close idle connections, and a NOOP that fails costs no message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from services.mailer.message import OutgoingMessage
from services.mailer.prepared_smtp import PreparedSMTP
from services.mailer.settings import MailerSettings

log = logging.getLogger(__name__)

# A connection idle longer than this is checked with NOOP before use.
CHECK_AFTER_IDLE_SECONDS = 5.0
# Relays limit messages per connection; start a new one well before any such limit.
MAX_MESSAGES_PER_CONNECTION = 200


class _Conn:
    def __init__(self, smtp: PreparedSMTP) -> None:
        self.smtp = smtp
        self.last_used = time.monotonic()
        self.sent = 0


class RelayPool:
    def __init__(self, settings: MailerSettings, size: int) -> None:
        self.settings = settings
        self.size = max(1, size)
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(self.size)
        self.opened = 0  # connections opened since start (tests, metrics)

    async def _open(self) -> _Conn:
        st = self.settings
        smtp = PreparedSMTP(
            hostname=st.smtp_host,
            port=st.smtp_port,
            use_tls=st.smtp_tls,
            start_tls=st.smtp_starttls,
            timeout=st.smtp_timeout_seconds,
            username=st.smtp_username or None,
            password=st.smtp_password or None,
        )
        await smtp.connect()
        self.opened += 1
        return _Conn(smtp)

    async def _usable(self, conn: _Conn) -> bool:
        if not conn.smtp.is_connected or conn.sent >= MAX_MESSAGES_PER_CONNECTION:
            return False
        if time.monotonic() - conn.last_used < CHECK_AFTER_IDLE_SECONDS:
            return True
        try:
            await conn.smtp.noop()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            return False
        return True

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PreparedSMTP]:
        """A connected client for one message. Raises what connecting raises."""
        async with self._slots:
            conn = None
            while self._idle:
                candidate = self._idle.pop()
                if await self._usable(candidate):
                    conn = candidate
                    break
                await self._discard(candidate)
            if conn is None:
                conn = await self._open()
            try:
                yield conn.smtp
            except BaseException:
                await self._discard(conn)
                raise
            conn.sent += 1
            conn.last_used = time.monotonic()
            self._idle.append(conn)

    async def send(self, msg: OutgoingMessage) -> SMTPResponse:
        """One SMTP transaction for `msg`: the relay's answer to DATA, or what it raised."""
        async with self.connection() as smtp:
            return await smtp.send_prepared(
                msg.mail_from, msg.recipients, msg.data, crlf_only=True, dsn_envid=msg.envid
            )

    async def _discard(self, conn: _Conn) -> None:
        try:
            if conn.smtp.is_connected:
                await asyncio.wait_for(conn.smtp.quit(), timeout=2)
        except Exception:
            conn.smtp.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn)
