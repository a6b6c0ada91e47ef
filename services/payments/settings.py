from __future__ import annotations

from typing import ClassVar, Literal

from shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    service_name: ClassVar[str] = "payments"
    default_port: ClassVar[int] = 8004

    payments_processor: Literal["test", "stripe"] = "test"
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    ach_settle_seconds: float = 30.0
    checkout_ttl_minutes: int = 60 * 24
