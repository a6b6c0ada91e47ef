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
        bounce_host=settings.bounce_host,
        bounce_port=settings.bounce_port,
        success_dsn=settings.success_dsn,
        log_level="info",
        configure_logging=True,
    ) as sink:
        # Printed rather than logged and flushed so scripts (and tests using port 0)
        # can read the real addresses from stdout.
        print(f"mailsink: SMTP listening on {sink.smtp_host}:{sink.smtp_port}", flush=True)
        print(f"mailsink: web viewer on {sink.http_url}", flush=True)
        print(f"mailsink: storing messages in {settings.directory.resolve()}", flush=True)
        if settings.bounce_port:
            print(
                f"mailsink: bounces to {settings.bounce_host}:{settings.bounce_port}"
                f" (delivered notices {'on' if settings.success_dsn else 'off'})",
                flush=True,
            )
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
