from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from shared.settings import ServiceSettings
from shared.tracking import DEV_TRACKING_SECRET


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
    # Each copy's return path is `<bounce_local>+<email id>.<n>@<bounce_domain>` (VERP);
    # the domain defaults to that of `mail_from`.
    bounce_local: str = "bounces"
    bounce_domain: str = ""
    # Signs the open pixel and click redirects of each copy; the gateway checks them.
    tracking_secret: str = DEV_TRACKING_SECRET
    # DKIM: the private key (PEM text, or the path of a PEM file), its selector and domain.
    # All three, or none (no signature).
    dkim_private_key: str | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    # Attachments larger than this (decoded, all together) fail the email before SMTP.
    max_attachment_bytes: int = 20_000_000
    # Fault injection for the crash tests; ignored in production.
    crash_after_smtp: bool = False

    @model_validator(mode="after")
    def _mail_defaults(self) -> MailerSettings:
        if not self.bounce_domain:
            self.bounce_domain = self.mail_from.rpartition("@")[2] or self.message_id_domain
        return self

    def refuse_dev_secrets(self) -> None:
        super().refuse_dev_secrets()
        if self.tracking_secret == DEV_TRACKING_SECRET:
            raise ValueError("TRACKING_SECRET must be set in production")
