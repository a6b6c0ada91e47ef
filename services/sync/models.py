from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import ServiceBase, UTCDateTime
from shared.schema import service_metadata


class Base(ServiceBase):
    __abstract__ = True
    metadata = service_metadata()


outbox = Base.metadata.tables["outbox"]


class ClioConnection(Base):
    __tablename__ = "clio_connections"

    firm_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_url: Mapped[str] = mapped_column(String(300))
    access_token: Mapped[str] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    account_name: Mapped[str | None] = mapped_column(String(300))
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    bills_cursor: Mapped[datetime | None] = mapped_column(UTCDateTime())
    contacts_cursor: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    # Clio's region (us, ca, eu, au): which host the tokens belong to.
    region: Mapped[str] = mapped_column(String(2), default="us", server_default="us")
    line_items_cursor: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("firm_id", "contact_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    contact_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(320))
    etag: Mapped[str | None] = mapped_column(String(100))


class Invoice(Base):
    """The mirror: the last snapshot published for each bill."""

    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("firm_id", "invoice_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    invoice_id: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    snapshot: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ClioLine(Base):
    """A Clio line item as last listed (its LINE_ITEM_FIELDS, JSON), kept by line id so the
    bulk listing (`updated_since`, across bills) can be merged into each bill's lines."""

    __tablename__ = "clio_lines"
    __table_args__ = (
        UniqueConstraint("firm_id", "line_id"),
        Index("ix_clio_lines_firm_bill", "firm_id", "bill_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64))
    line_id: Mapped[str] = mapped_column(String(64))
    bill_id: Mapped[str] = mapped_column(String(64))
    raw: Mapped[str] = mapped_column(Text)


class Quarantined(Base):
    """A bill that could not be mapped, kept with its reason until a later sync maps it."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("firm_id", "source", "source_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(20))
    source_id: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SyncRun(Base):
    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # Bills Clio said this sync would read (meta.records), and the API requests it made.
    total: Mapped[int | None] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


# --- LEDES 1998B imports (services/sync/ledes_import.py) ---------------------------------


class LedesClient(Base):
    """A LEDES file's CLIENT_ID as this firm knows it: the name and email it lacks."""

    __tablename__ = "ledes_clients"
    __table_args__ = (UniqueConstraint("firm_id", "client_ref"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    client_ref: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(320))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LedesInvoice(Base):
    """An imported invoice: the snapshot last built for it, published once its client has an
    email, and what was paid here (LEDES has no source system to record payments in)."""

    __tablename__ = "ledes_invoices"
    # invoice_id is derived from (law_firm_id, client_ref, number): unique per firm with it.
    __table_args__ = (UniqueConstraint("firm_id", "invoice_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    invoice_id: Mapped[str] = mapped_column(String(100))
    law_firm_id: Mapped[str] = mapped_column(String(100))
    client_ref: Mapped[str] = mapped_column(String(100))
    number: Mapped[str] = mapped_column(String(100))
    snapshot: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paid_minor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    import_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LedesImport(Base):
    """One uploaded file and what became of it (the result page, kept as JSON)."""

    __tablename__ = "ledes_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(300))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    imported: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[str] = mapped_column(Text)


class ClioWebhook(Base):
    """One of a firm's Clio webhooks (one per model: bill, contact, matter).

    `hook_key` is the firm's unguessable part of the public URL Clio posts to; `shared_secret`
    keys the HMAC of each delivery. `status`: registering (asked Clio, no answer yet), pending
    (no handshake yet), enabled, or failed (`last_error` says why; polling carries on).
    """

    __tablename__ = "clio_webhooks"
    __table_args__ = (UniqueConstraint("firm_id", "model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(20))
    hook_key: Mapped[str] = mapped_column(String(100), index=True)
    webhook_id: Mapped[str | None] = mapped_column(String(64))
    shared_secret: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
