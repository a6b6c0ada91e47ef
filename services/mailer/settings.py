from __future__ import annotations

from typing import ClassVar

from shared.settings import ServiceSettings


class MailerSettings(ServiceSettings):
    service_name: ClassVar[str] = "mailer"
    default_port: ClassVar[int] = 8003

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_seconds: float = 30.0
    mail_from: str = "billing@envelopepay.test"
    message_id_domain: str = "envelopepay.test"
    max_attempts: int = 6
    retry_base_seconds: float = 15.0
    # A pixel fetched or a link followed this soon after the relay accepted the copy is a
    # privacy proxy's or a scanner's, not a person's (services/mailer/tracking.py).
    tracking_machine_seconds: float = 10.0
    # Fault injection for the crash tests; ignored in production.
    crash_after_smtp: bool = False
