"""Settings from MAILSINK_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .smtp import DEFAULT_MAX_MESSAGE_SIZE
from .store import DEFAULT_MAX_MESSAGES


@dataclass(frozen=True)
class Settings:
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    http_host: str = "127.0.0.1"
    http_port: int = 8025
    directory: Path = Path("var/mailsink")
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    # Where the DSNs it sends go (bounce@example.com, and "delivered" with success_dsn):
    # an SMTP server taking mail for the senders' return paths. No port: none is sent.
    bounce_host: str = "127.0.0.1"
    bounce_port: int | None = None
    # Answer NOTIFY=SUCCESS with a "delivered" DSN (on in `make run`, off by default so
    # benchmarks measure the sink alone).
    success_dsn: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def integer(name: str, default: int) -> int:
            value = env.get(name, "").strip()
            if not value:
                return default
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got {value!r}") from None

        def boolean(name: str, default: bool) -> bool:
            value = env.get(name, "").strip().lower()
            if not value:
                return default
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{name} must be true or false, got {value!r}")

        bounce_port = integer("MAILSINK_BOUNCE_PORT", 0)
        return cls(
            smtp_host=env.get("MAILSINK_SMTP_HOST") or defaults.smtp_host,
            smtp_port=integer("MAILSINK_SMTP_PORT", defaults.smtp_port),
            http_host=env.get("MAILSINK_HTTP_HOST") or defaults.http_host,
            http_port=integer("MAILSINK_HTTP_PORT", defaults.http_port),
            directory=Path(env.get("MAILSINK_DIR") or defaults.directory),
            max_messages=integer("MAILSINK_MAX_MESSAGES", defaults.max_messages),
            max_message_size=integer("MAILSINK_MAX_MESSAGE_SIZE", defaults.max_message_size),
            bounce_host=env.get("MAILSINK_BOUNCE_HOST") or defaults.bounce_host,
            bounce_port=bounce_port or None,
            success_dsn=boolean("MAILSINK_SUCCESS_DSN", defaults.success_dsn),
        )
