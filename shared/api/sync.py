"""sync's internal API: the Clio connection, Sync now and its progress, the contact search,
the quarantine (Sync issues) and LEDES imports, for the gateway."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

Region = Literal["us", "ca", "eu", "au"]
"""Clio's regions, each its own host (app.clio.com, ca.app.clio.com, eu.…, au.…)."""

REGION_NAMES: dict[str, str] = {
    "us": "United States",
    "ca": "Canada",
    "eu": "Europe",
    "au": "Australia",
}


class ConnectRequest(BaseModel):
    code: str
    redirect_uri: str
    region: Region = "us"


class RateLimitState(BaseModel):
    """The firm's Clio request budget as Clio last reported it (X-RateLimit-*)."""

    limit: int | None = None
    remaining: int | None = None
    resets_at: datetime | None = None
    # Set while a 429's Retry-After is being waited out.
    blocked_until: datetime | None = None


class SyncProgress(BaseModel):
    """The running (or last) sync of a firm, for the Sync button's live progress."""

    running: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    fetched: int = 0
    # Bills Clio says the sync will read (meta.records of the first page); None until known.
    total: int | None = None
    changed: int = 0
    quarantined: int = 0
    requests: int = 0
    # At the current rate (bills per second since the start), time until `total` is read.
    seconds_left: float | None = None
    error: str | None = None


class WebhookState(BaseModel):
    """How changes in Clio reach this system: webhooks (with a public URL) or polling."""

    mode: Literal["webhooks", "polling"] = "polling"
    # Why polling, in words for Settings (e.g. no public URL is set).
    reason: str | None = None
    active: int = 0
    expires_at: datetime | None = None
    poll_seconds: float = 60.0


class ClioStatus(BaseModel):
    connected: bool
    region: Region | None = None
    # The connection's Clio host (its region's), for links to bills in Clio.
    app_url: str | None = None
    account_name: str | None = None
    connected_at: datetime | None = None
    last_synced_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    quarantined: int = 0
    rate_limit: RateLimitState | None = None
    webhooks: WebhookState | None = None
    progress: SyncProgress | None = None


class AuthorizeUrl(BaseModel):
    """Where to send the firm user to authorize Clio (served as a plain dict)."""

    url: str


class DisconnectOutcome(BaseModel):
    """Disconnect: the tokens are forgotten in any case; `revoked` says whether Clio confirmed
    it revoked them, `problem` why not."""

    was_connected: bool
    revoked: bool
    problem: str | None = None


class SyncOutcome(BaseModel):
    fetched: int
    changed: int
    quarantined: int
    error: str | None = None


class ContactMatch(BaseModel):
    contact_id: str
    name: str
    email: str


class QuarantineItem(BaseModel):
    source: str
    source_id: str
    reason: str
    received_at: datetime
    # The bill in Clio (its region's host), for the Sync issues list; None for LEDES.
    source_url: str | None = None
