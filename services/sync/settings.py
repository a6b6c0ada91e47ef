from __future__ import annotations

from typing import ClassVar

from shared.settings import ServiceSettings


class SyncSettings(ServiceSettings):
    service_name: ClassVar[str] = "sync"
    default_port: ClassVar[int] = 8001

    clio_base_url: str = "http://127.0.0.1:8090"
    clio_client_id: str = "sandbox-client"
    clio_client_secret: str = "sandbox-secret"
    sync_interval_seconds: float = 60.0
    # Re-read a little before the last cursor: Clio's updated_at has second precision and a
    # bill saved during our previous read must not slip between two syncs.
    sync_overlap_seconds: float = 120.0
    # Clio webhooks (services/sync/webhooks.py). The public base URL at which Clio reaches the
    # gateway (https in production; Clio posts to <url>/webhooks/clio/<key>). Empty: no
    # webhooks, changes arrive by polling alone.
    clio_webhook_url: str = ""
    # The lifetime asked for (Clio allows 31 days at most) and when to extend it: once less
    # than the margin is left.
    clio_webhook_days: int = 31
    clio_webhook_renew_hours: float = 24.0
    # How often the registrations are checked (a database read; Clio is asked only when a
    # webhook is missing, unconfirmed, due for renewal, or the firm connected again).
    clio_webhook_check_seconds: float = 15.0
    # A delivery is a few hundred bytes; anything past this is refused (413).
    clio_webhook_max_bytes: int = 64 * 1024

    def refuse_dev_secrets(self) -> None:
        super().refuse_dev_secrets()
        if self.clio_client_secret == "sandbox-secret":
            raise ValueError("CLIO_CLIENT_SECRET must be set in production")
