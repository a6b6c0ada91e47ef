from __future__ import annotations

import base64
import hashlib
from typing import ClassVar

from shared.settings import ServiceSettings

# Clio's hosts, one a region: a firm's data and tokens live on its region's host only.
PRODUCTION_HOSTS = {
    "us": "https://app.clio.com",
    "ca": "https://ca.app.clio.com",
    "eu": "https://eu.app.clio.com",
    "au": "https://au.app.clio.com",
}


class SyncSettings(ServiceSettings):
    service_name: ClassVar[str] = "sync"
    default_port: ClassVar[int] = 8001

    # The US host; outside production the other regions default to it plus /ca, /eu, /au
    # (the Clio sandbox serves each region under its prefix).
    clio_base_url: str = "http://127.0.0.1:8090"
    # Overrides, "us=https://…,ca=https://…"; in production the unset ones are Clio's hosts.
    clio_region_urls: str = ""
    clio_client_id: str = "sandbox-client"
    clio_client_secret: str = "sandbox-secret"
    # Fernet keys for the Clio tokens at rest, comma-separated: the first encrypts, every one
    # decrypts (rotate by putting a new key first; rows are re-encrypted at start).
    clio_token_keys: str = ""
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

    def region_urls(self) -> dict[str, str]:
        if self.environment == "production":
            urls = dict(PRODUCTION_HOSTS)
        else:
            root = self.clio_base_url.rstrip("/")
            urls = {
                region: root if region == "us" else f"{root}/{region}"
                for region in PRODUCTION_HOSTS
            }
        for pair in self.clio_region_urls.split(","):
            region, sep, url = pair.strip().partition("=")
            if sep and region.strip() in PRODUCTION_HOSTS and url.strip():
                urls[region.strip()] = url.strip().rstrip("/")
        return urls

    def base_url_for(self, region: str) -> str:
        """The host of `region` (KeyError for an unknown one)."""
        return self.region_urls()[region]

    def token_keys(self) -> list[bytes]:
        keys = [k.strip().encode() for k in self.clio_token_keys.split(",") if k.strip()]
        if keys:
            return keys
        # Development only (refused in production): a key derived from the internal token.
        digest = hashlib.sha256(b"clio-token-key:" + self.internal_token.encode()).digest()
        return [base64.urlsafe_b64encode(digest)]

    def refuse_dev_secrets(self) -> None:
        super().refuse_dev_secrets()
        if self.clio_client_secret == "sandbox-secret":
            raise ValueError("CLIO_CLIENT_SECRET must be set in production")
        if not self.clio_token_keys.strip():
            raise ValueError("CLIO_TOKEN_KEYS must be set in production")
