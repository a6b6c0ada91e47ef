"""python -m sandbox.mailsink: the dev mail sink (SMTP + web viewer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .config import Settings
from .server import running_mailsink


async def serve(settings: Settings) -> None:
    async with running_mailsink(
        settings.directory,
        smtp_host=settings.smtp_host,
        smtp_port=settings.smtp_port,
        http_host=settings.http_host,
        http_port=settings.http_port,
        max_messages=settings.max_messages,
        max_message_size=settings.max_message_size,
        log_level="info",
        configure_logging=True,
    ) as sink:
        # Printed rather than logged and flushed so scripts (and tests using port 0)
        # can read the real addresses from stdout.
        print(f"mailsink: SMTP listening on {sink.smtp_host}:{sink.smtp_port}", flush=True)
        print(f"mailsink: web viewer on {sink.http_url}", flush=True)
        print(f"mailsink: storing messages in {settings.directory.resolve()}", flush=True)
        await sink.wait()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # aiosmtpd logs every SMTP command and its AUTH setup per connection at INFO.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    settings = Settings.from_env()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
