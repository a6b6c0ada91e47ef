"""sync's internal API: the Clio connection, Sync now, the contact search and the
quarantine, for the gateway."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class ConnectRequest(BaseModel):
    code: str
    redirect_uri: str


class ClioStatus(BaseModel):
    connected: bool
    account_name: str | None = None
    connected_at: datetime | None = None
    last_synced_at: datetime | None = None
    last_error: str | None = None
    quarantined: int = 0


class AuthorizeUrl(BaseModel):
    """Where to send the firm user to authorize Clio (served as a plain dict)."""

    url: str


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
