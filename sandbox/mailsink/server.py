"""Running SMTP and the web viewer together in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import uvicorn

from .dsn import DsnSender
from .smtp import DEFAULT_MAX_MESSAGE_SIZE, SmtpServer, start_smtp_server
from .store import DEFAULT_MAX_MESSAGES, MailStore
from .web import create_app


@dataclass
class RunningMailSink:
    store: MailStore
    smtp: SmtpServer
    http_host: str
    http_port: int
    web_server: uvicorn.Server
    web_task: asyncio.Task[None]

    @property
    def smtp_host(self) -> str:
        return self.smtp.host

    @property
    def smtp_port(self) -> int:
        return self.smtp.port

    @property
    def http_url(self) -> str:
        host = f"[{self.http_host}]" if ":" in self.http_host else self.http_host
        return f"http://{host}:{self.http_port}"

    async def wait(self) -> None:
        """Until the web server stops (uvicorn handles SIGINT/SIGTERM)."""
        await asyncio.shield(self.web_task)


def _listen(host: str, port: int) -> socket.socket:
    # Binding ourselves (instead of letting uvicorn do it) is what makes port 0 usable:
    # the real port is known before uvicorn starts.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def running_mailsink(
    directory: str | os.PathLike[str],
    *,
    smtp_host: str = "127.0.0.1",
    smtp_port: int = 0,
    http_host: str = "127.0.0.1",
    http_port: int = 0,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    log_level: str = "warning",
    configure_logging: bool = False,
    bounce_host: str = "127.0.0.1",
    bounce_port: int | None = None,
    success_dsn: bool = False,
) -> AsyncIterator[RunningMailSink]:
    """Start the SMTP server and the viewer in the current loop; ports default to free ones.

    bounce_host:bounce_port is where the DSNs it answers with go (see dsn.py); without a
    port none is sent. success_dsn answers NOTIFY=SUCCESS with a "delivered" DSN.

    configure_logging lets uvicorn install its logging config; it is off by default
    because inside a test process that would rewire logging for everything else.
    """
    store = MailStore(directory, max_messages=max_messages)
    dsn = DsnSender(bounce_host, bounce_port, success_dsn=success_dsn, keep_copy=store.add)
    smtp = await start_smtp_server(
        store, smtp_host, smtp_port, max_message_size=max_message_size, dsn=dsn
    )
    try:
        sock = _listen(http_host, http_port)
    except OSError:
        await smtp.close()
        raise
    http_port = int(sock.getsockname()[1])
    app = create_app(store, smtp_address=f"{smtp.host}:{smtp.port}")
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        **({} if configure_logging else {"log_config": None}),
    )
    web_server = uvicorn.Server(config)
    web_task = asyncio.create_task(web_server.serve(sockets=[sock]))
    try:
        while not web_server.started:
            if web_task.done():
                web_task.result()  # re-raises why uvicorn failed to start
                raise RuntimeError("mailsink web server stopped during startup")
            await asyncio.sleep(0.01)
        yield RunningMailSink(store, smtp, http_host, http_port, web_server, web_task)
    finally:
        web_server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await web_task
        sock.close()
        await smtp.close()
