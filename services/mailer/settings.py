from __future__ import annotations

from typing import ClassVar, Literal

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
    # Each copy's return path is `<bounce_local>+<email id>.<n>.<signature>@<bounce_domain>`
    # (VERP, services/mailer/verp.py);
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
    # A pixel fetched or a link followed this soon after the relay accepted the copy is a
    # privacy proxy's or a scanner's, not a person's (services/mailer/tracking.py).
    tracking_machine_seconds: float = 10.0
    # Fault injection for the crash tests; ignored in production.
    crash_after_smtp: bool = False

    # --- bounces (services/mailer/bounce_intake.py) ----------------------------------------
    # Where delivery status notifications come in: an SMTP endpoint in this process (dev,
    # tests, or behind the MX of the bounce domain), an IMAP mailbox, the gateway's
    # provider webhook, or nowhere.
    bounce_intake: Literal["smtp", "imap", "webhook", "off"] = "off"
    bounce_smtp_host: str = "127.0.0.1"
    bounce_smtp_port: int = 2525
    bounce_max_message_size: int = 2 * 1024 * 1024
    bounce_imap_host: str = ""
    bounce_imap_port: int = 993
    bounce_imap_tls: bool = True  # TLS from the start; false: STARTTLS
    bounce_imap_username: str = ""
    bounce_imap_password: str | None = None
    bounce_imap_folder: str = "INBOX"
    # Once recorded, a message is moved to this folder, or deleted when it is empty.
    bounce_imap_done_folder: str = ""
    bounce_imap_poll_seconds: float = 60.0
    # The gateway's /webhooks/bounces forwards a raw DSN signed with this (HMAC-SHA256).
    bounce_webhook_secret: str | None = None
    bounce_webhook_tolerance_seconds: int = 300

    @model_validator(mode="after")
    def _mail_defaults(self) -> MailerSettings:
        if not self.bounce_domain:
            self.bounce_domain = self.mail_from.rpartition("@")[2] or self.message_id_domain
        return self

    def refuse_dev_secrets(self) -> None:
        super().refuse_dev_secrets()
        if self.tracking_secret == DEV_TRACKING_SECRET:
            raise ValueError("TRACKING_SECRET must be set in production")

    @model_validator(mode="after")
    def _bounce_intake_checks(self) -> MailerSettings:
        if self.environment == "production":
            if self.bounce_intake == "webhook" and not self.bounce_webhook_secret:
                raise ValueError("BOUNCE_WEBHOOK_SECRET must be set with BOUNCE_INTAKE=webhook")
            if self.bounce_intake == "imap" and not (
                self.bounce_imap_host and self.bounce_imap_password
            ):
                raise ValueError(
                    "BOUNCE_IMAP_HOST and BOUNCE_IMAP_PASSWORD must be set with BOUNCE_INTAKE=imap"
                )
        return self
