from __future__ import annotations

from typing import ClassVar, Literal

from shared.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    service_name: ClassVar[str] = "payments"
    default_port: ClassVar[int] = 8004

    payments_processor: Literal["test", "stripe"] = "test"
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    # None: Stripe itself. Tests point it at the local stand-in (sandbox/stripe).
    stripe_api_base: str | None = None
    stripe_webhook_tolerance_seconds: int = 300
    ach_settle_seconds: float = 30.0
    checkout_ttl_minutes: int = 60 * 24
    # Test mode: every refund fails, so the firm's page can show a failed refund.
    test_refund_fail: bool = False
    # How often deposits and refunds that the processor did not take yet are retried, and
    # how often test mode looks for ACH debits due to settle.
    retry_seconds: float = 30.0
    settle_poll_seconds: float = 1.0

    def refuse_dev_secrets(self) -> None:
        """In production, Stripe needs its key and the webhook secret: without the secret no
        webhook could be verified, so no payment would ever complete."""
        super().refuse_dev_secrets()
        if self.payments_processor == "stripe" and not (
            self.stripe_api_key and self.stripe_webhook_secret
        ):
            raise ValueError("STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET must be set in production")
