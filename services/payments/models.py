from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import ServiceBase, UTCDateTime, new_metadata
from shared.outbox import inbox_table, outbox_table


class Base(ServiceBase):
    __abstract__ = True
    metadata = new_metadata()


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)


class Firm(Base):
    __tablename__ = "firms"

    firm_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Bill(Base):
    """An invoice or trust request as far as paying it goes: the source's balance."""

    __tablename__ = "bills"
    __table_args__ = (UniqueConstraint("firm_id", "invoice_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    invoice_id: Mapped[str] = mapped_column(String(100))
    number: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(30))
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    client_name: Mapped[str] = mapped_column(String(300))
    currency: Mapped[str] = mapped_column(String(3))
    source_balance_minor: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # occurred_at of the invoice.updated applied last: an older event arriving late is skipped.
    event_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PayLink(Base):
    __tablename__ = "pay_links"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    link_id: Mapped[str] = mapped_column(String(150))
    envelope_id: Mapped[str] = mapped_column(String(36))
    client_id: Mapped[str] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(300))
    client_email: Mapped[str | None] = mapped_column(String(320))
    invoice_ids: Mapped[str] = mapped_column(Text)
    pay_all_outstanding: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CheckoutSession(Base):
    """Created when the client clicks Pay, never when the email is sent."""

    __tablename__ = "checkout_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    items: Mapped[str] = mapped_column(Text)  # JSON [{invoice_id, amount_minor}]
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # open, complete, expired
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    payment_id: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    session_id: Mapped[str] = mapped_column(String(64), unique=True)
    method: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))  # processing, succeeded, failed, refunded
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(Integer)
    payer_name: Mapped[str | None] = mapped_column(String(300))
    payer_email: Mapped[str | None] = mapped_column(String(320))
    processor: Mapped[str] = mapped_column(String(20))
    processor_ref: Mapped[str | None] = mapped_column(String(200))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_reason: Mapped[str | None] = mapped_column(Text)


class Allocation(Base):
    __tablename__ = "allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    invoice_id: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    amount_minor: Mapped[int] = mapped_column(Integer)
    # The source's balance when this was paid: once a sync shows it lower by this amount,
    # the firm has recorded the payment in Clio and it no longer reduces the balance here.
    source_balance_at_payment: Mapped[int] = mapped_column(Integer)
    reconciled: Mapped[bool] = mapped_column(Boolean, default=False)
