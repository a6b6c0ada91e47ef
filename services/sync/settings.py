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

    def refuse_dev_secrets(self) -> None:
        super().refuse_dev_secrets()
        if self.clio_client_secret == "sandbox-secret":
            raise ValueError("CLIO_CLIENT_SECRET must be set in production")
