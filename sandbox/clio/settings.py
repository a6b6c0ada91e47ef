"""Runtime settings of the Clio sandbox, read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"


@dataclass(frozen=True)
class SandboxSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    # Clio allows 50 a minute per access token at peak; 0 turns the limit off (benchmarks).
    rate_limit: int = 50
    # Empty means any redirect URI is accepted, which suits local runs on changing ports.
    redirect_uris: tuple[str, ...] = ()
    # Base for the absolute `meta.paging.next` URLs when the sandbox sits behind a proxy.
    public_url: str | None = None
    # Seconds to wait before each retry of a failed webhook delivery (one try more than delays).
    webhook_retry_delays: tuple[float, ...] = (1.0, 5.0, 25.0)
    webhook_timeout: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxSettings:
        env = os.environ if environ is None else environ
        listed = env.get("CLIO_SANDBOX_REDIRECT_URIS", "").split(",")
        redirect_uris = tuple(uri.strip() for uri in listed if uri.strip())
        return cls(
            host=env.get("CLIO_SANDBOX_HOST", cls.host),
            port=int(env.get("CLIO_SANDBOX_PORT", str(cls.port))),
            client_id=env.get("CLIO_SANDBOX_CLIENT_ID", cls.client_id),
            client_secret=env.get("CLIO_SANDBOX_CLIENT_SECRET", cls.client_secret),
            rate_limit=int(env.get("CLIO_SANDBOX_RATE_LIMIT", str(cls.rate_limit))),
            redirect_uris=redirect_uris,
            public_url=env.get("CLIO_SANDBOX_PUBLIC_URL") or None,
            webhook_retry_delays=_delays(env.get("CLIO_SANDBOX_WEBHOOK_RETRY_DELAYS")),
            webhook_timeout=float(
                env.get("CLIO_SANDBOX_WEBHOOK_TIMEOUT", str(cls.webhook_timeout))
            ),
        )


def _delays(raw: str | None) -> tuple[float, ...]:
    if raw is None:
        return SandboxSettings.webhook_retry_delays
    return tuple(float(part) for part in raw.split(",") if part.strip())
