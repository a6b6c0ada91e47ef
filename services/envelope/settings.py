from __future__ import annotations

from typing import ClassVar

from shared.settings import ServiceSettings


class EnvelopeSettings(ServiceSettings):
    service_name: ClassVar[str] = "envelope"
    default_port: ClassVar[int] = 8002

    link_ttl_days: int = 90  # as Clio's secure bill links
    max_items_per_envelope: int = 10
    pdf_workers: int = 2
    link_secret: str = "dev-link-secret"
    # Automated reminders: how often the scheduler looks for slots due.
    reminder_interval_seconds: float = 60.0

    def refuse_dev_secrets(self) -> None:
        super().refuse_dev_secrets()
        if self.link_secret == "dev-link-secret":
            raise ValueError("LINK_SECRET must be set in production")
