from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import ServiceBase, UTCDateTime
from shared.events import Delivery, SendStatus
from shared.schema import FirmProjection, service_metadata


class Base(ServiceBase):
    __abstract__ = True
    metadata = service_metadata()


class Firm(FirmProjection, Base):
    __tablename__ = "firms"


class Invoice(Base):
    """What envelope knows of an invoice: the source's snapshot plus sending and paying state."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("firm_id", "invoice_id"),
        Index("ix_invoices_firm_client", "firm_id", "client_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    invoice_id: Mapped[str] = mapped_column(String(100))
    snapshot: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(300))
    number: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))  # InvoiceKind
    state: Mapped[str] = mapped_column(String(30))  # InvoiceState
    issued_at: Mapped[date | None] = mapped_column(Date)
    due_at: Mapped[date | None] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(Integer)
    balance_minor: Mapped[int] = mapped_column(Integer)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    email_status: Mapped[str | None] = mapped_column(String(30))  # SendStatus: queued, sent, failed
    # The latest thing heard of the bill's latest email (services.envelope.timeline): sent,
    # delivered, opened, viewed, clicked, bounced, failed; and when.
    email_event: Mapped[str | None] = mapped_column(String(20))
    email_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Which email that is (its send id): set when the mailer confirms it sent a newer one.
    email_id: Mapped[str | None] = mapped_column(String(64))
    payment_status: Mapped[str | None] = mapped_column(String(30))  # BillPayment
    # Sums kept from payment events (each applied once; they commute, so events of
    # different queues arriving in any order give the same result):
    # Succeeded, net of refunds, less what is recorded in Clio already (payment.recorded):
    # what Clio's balance does not count yet.
    paid_online_minor: Mapped[int] = mapped_column(Integer, default=0)
    processing_minor: Mapped[int] = mapped_column(Integer, default=0)  # ACH not settled
    refunded_minor: Mapped[int] = mapped_column(Integer, default=0)
    # Paid here and recorded in Clio since (payment.recorded): Clio's balance counts it.
    recorded_online_minor: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # occurred_at of the invoice.updated applied last: an older event arriving late is skipped.
    event_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Envelope(Base):
    __tablename__ = "envelopes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(300))
    invoice_ids: Mapped[str] = mapped_column(Text)  # JSON list, in display order
    to: Mapped[str] = mapped_column(Text)  # JSON list
    cc: Mapped[str] = mapped_column(Text, default="[]")
    subject: Mapped[str] = mapped_column(Text)  # template source
    body: Mapped[str] = mapped_column(Text)  # template source
    delivery: Mapped[str] = mapped_column(String(20), default=Delivery.link)
    status: Mapped[str] = mapped_column(String(20), default=SendStatus.draft)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EnvelopeSend(Base):
    """One sending of an envelope; an envelope may be re-sent any number of times."""

    __tablename__ = "envelope_sends"

    send_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    envelope_id: Mapped[str] = mapped_column(String(36), index=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    to: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # SendStatus: queued, sent, failed
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message_id: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)


class Email(Base):
    """The rendered message, fetched by the mailer; kept off the bus because it holds the
    client's link token."""

    __tablename__ = "emails"

    email_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    envelope_id: Mapped[str] = mapped_column(String(36))
    to: Mapped[str] = mapped_column(Text)
    cc: Mapped[str] = mapped_column(Text)
    from_name: Mapped[str] = mapped_column(String(300))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    attachments: Mapped[str] = mapped_column(Text, default="[]")  # [{filename, pdf_key}]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Link(Base):
    __tablename__ = "links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    envelope_id: Mapped[str] = mapped_column(String(36))
    send_id: Mapped[str] = mapped_column(String(64))
    invoice_ids: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Pdf(Base):
    """Rendered PDFs, keyed by a hash of everything that shapes them."""

    __tablename__ = "pdfs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    invoice_id: Mapped[str | None] = mapped_column(String(100))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EmailTemplate(Base):
    """A firm's bill message template: subject and body are template source with autofill
    fields, checked when saved. At most one per firm is the default for new drafts."""

    __tablename__ = "email_templates"
    __table_args__ = (UniqueConstraint("firm_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EmailEvent(Base):
    """One line of an envelope's timeline: what happened to one recipient's copy of one of
    its emails (queued, sent, refused, delivered, opened, clicked, viewed, bounced, failed),
    or to the envelope's bills (paid). `machine` marks an open or click a privacy proxy or a
    scanner caused. `event_id` (the bus event's) makes each line appear once."""

    __tablename__ = "email_events"
    __table_args__ = (Index("ix_email_events_envelope", "firm_id", "envelope_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    firm_id: Mapped[str] = mapped_column(String(64))
    envelope_id: Mapped[str] = mapped_column(String(36))
    email_id: Mapped[str | None] = mapped_column(String(64))
    recipient: Mapped[str | None] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(Text)
    machine: Mapped[bool] = mapped_column(Boolean, default=False)


class Suppression(Base):
    """An address that hard-bounced: no reminder and no new send goes to it until a firm
    user changes the recipient or clears it."""

    __tablename__ = "suppressions"

    firm_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)  # lower-cased
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(20))  # RFC 3463, e.g. 5.1.1
    email_id: Mapped[str | None] = mapped_column(String(64))
    envelope_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Reminder(Base):
    """One slot of a client's automated reminders, recorded once: queued (with the envelope
    and send that carry it) or skipped (with why). The unique (firm, client, slot) key is
    what makes each slot go at most once, whatever runs the scheduler and how often; the
    unique (firm, client, sent_on) key, at most one reminder per client per local day
    (skipped slots leave `sent_on` empty)."""

    __tablename__ = "reminders"
    __table_args__ = (
        UniqueConstraint("firm_id", "client_id", "slot", name="uq_reminders_slot"),
        UniqueConstraint("firm_id", "client_id", "sent_on", name="uq_reminders_day"),
        Index("ix_reminders_firm_created", "firm_id", "created_at"),
        Index("ix_reminders_firm_due", "firm_id", "due_on"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(64))
    slot: Mapped[str] = mapped_column(String(160))
    kind: Mapped[str] = mapped_column(String(20))  # reminder_rules.SlotKind
    reason: Mapped[str] = mapped_column(String(200))
    due_on: Mapped[date] = mapped_column(Date)  # the firm's local date of the slot
    sent_on: Mapped[date | None] = mapped_column(Date)  # the local date it was queued
    status: Mapped[str] = mapped_column(String(20))  # queued or skipped
    note: Mapped[str | None] = mapped_column(Text)
    client_name: Mapped[str] = mapped_column(String(300))
    envelope_id: Mapped[str | None] = mapped_column(String(36))
    send_id: Mapped[str | None] = mapped_column(String(64))
    invoice_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(Integer, default=0)
    to: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReminderClient(Base):
    """A client whose reminders a firm user switched off (or back on)."""

    __tablename__ = "reminder_clients"

    firm_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReminderInvoice(Base):
    """A bill a firm user left out of reminders (or put back)."""

    __tablename__ = "reminder_invoices"

    firm_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
