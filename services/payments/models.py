"""payments' tables. Each row carries firm_id; no other service reads them."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import ServiceBase, UTCDateTime
from shared.schema import FirmProjection, service_metadata


class Base(ServiceBase):
    __abstract__ = True
    metadata = service_metadata()


outbox = Base.metadata.tables["outbox"]


class Firm(FirmProjection, Base):
    __tablename__ = "firms"


class FirmAccount(Base):
    """Where a firm's money goes: its operating and its trust account at the processor
    (Stripe Connect acct_ ids). Test mode makes up both when a firm has none."""

    __tablename__ = "firm_accounts"

    firm_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operating_account: Mapped[str] = mapped_column(String(100))
    trust_account: Mapped[str] = mapped_column(String(100))
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
    # occurred_at of the invoice.updated (or invoice.removed) applied last: an older event
    # arriving late is skipped, so a stale snapshot never brings a removed bill back.
    event_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The bill's id in its source (the link to it in Clio), what Clio shows as paid on it,
    # and why it left the source (voided or deleted there), if it did.
    source_id: Mapped[str | None] = mapped_column(String(100))
    source_paid_minor: Mapped[int | None] = mapped_column(Integer)
    removed_reason: Mapped[str | None] = mapped_column(Text)


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


class CheckoutStatus(StrEnum):
    open = "open"
    complete = "complete"  # a payment was made from it
    expired = "expired"  # timed out, or its bills were paid meanwhile


class CheckoutSession(Base):
    """Created when the client clicks Pay, never when the email is sent."""

    __tablename__ = "checkout_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(300))
    scope: Mapped[str] = mapped_column(String(20))  # items, outstanding
    items: Mapped[str] = mapped_column(Text)  # JSON [{invoice_id, amount_minor}]
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # CheckoutStatus
    processor: Mapped[str] = mapped_column(String(20))
    processor_ref: Mapped[str | None] = mapped_column(String(200))
    redirect_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    payment_id: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)


class Payment(Base):
    """One payment of one checkout session. Its status and the processor's details are
    derived from the processor events recorded for it (processor_events), never from the
    order they arrived in."""

    __tablename__ = "payments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    session_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(300))
    method: Mapped[str] = mapped_column(String(10))  # card, ach
    status: Mapped[str] = mapped_column(String(20), index=True)  # shared.events.PaymentStatus
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(Integer)
    refunded_minor: Mapped[int] = mapped_column(Integer, default=0)
    fee_minor: Mapped[int] = mapped_column(Integer, default=0)
    payer_name: Mapped[str | None] = mapped_column(String(300))
    payer_email: Mapped[str | None] = mapped_column(String(320))
    processor: Mapped[str] = mapped_column(String(20))
    processor_ref: Mapped[str | None] = mapped_column(String(200), index=True)
    charge_ref: Mapped[str | None] = mapped_column(String(200))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    bank_last4: Mapped[str | None] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_code: Mapped[str | None] = mapped_column(String(50))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # Test mode's ACH debit: when it settles, and the return code it fails with (None: it
    # settles). Kept here so a restart does not lose a settlement.
    settle_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    settle_code: Mapped[str | None] = mapped_column(String(10))
    # Which bus events went out already: each transition is announced once.
    announced_processing: Mapped[bool] = mapped_column(Boolean, default=False)
    announced_succeeded: Mapped[bool] = mapped_column(Boolean, default=False)
    announced_failed: Mapped[bool] = mapped_column(Boolean, default=False)


class Allocation(Base):
    __tablename__ = "allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    invoice_id: Mapped[str] = mapped_column(String(100), index=True)
    number: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    account: Mapped[str] = mapped_column(String(20))  # rules.Account
    amount_minor: Mapped[int] = mapped_column(Integer)
    refunded_minor: Mapped[int] = mapped_column(Integer, default=0)
    # The source's balance when this was paid: once a sync shows it lower by this amount,
    # the firm has recorded the payment in Clio and it no longer reduces the balance here.
    source_balance_at_payment: Mapped[int] = mapped_column(Integer)
    # What Clio showed as paid on the bill then (None: not known; the balance decides).
    source_paid_at_payment: Mapped[int | None] = mapped_column(Integer)
    # Recorded in Clio: the synced balance shows it (`recorded_how` synced), or a firm user
    # said so (marked, by `recorded_by`). Either way it leaves "To record in Clio".
    reconciled: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str | None] = mapped_column(String(300))
    recorded_how: Mapped[str | None] = mapped_column(String(10))


class Deposit(Base):
    """What one payment puts into one of the firm's accounts (Stripe: one transfer)."""

    __tablename__ = "deposits"
    __table_args__ = (UniqueConstraint("payment_id", "account"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    account: Mapped[str] = mapped_column(String(20))
    destination: Mapped[str | None] = mapped_column(String(100))
    amount_minor: Mapped[int] = mapped_column(Integer)
    fee_minor: Mapped[int] = mapped_column(Integer)
    net_minor: Mapped[int] = mapped_column(Integer)
    reversed_minor: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20))  # rules.DepositStatus
    transferred: Mapped[bool] = mapped_column(Boolean, default=False)
    ref: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text)


class Refund(Base):
    """A refund; `id` is the client-generated refund id (idempotency). External refunds
    (made on the processor's dashboard) get an id from the processor's ref."""

    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    amount_minor: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # shared.events.RefundStatus
    processor_ref: Mapped[str | None] = mapped_column(String(200), index=True)
    requested_by: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # The processor was asked (a crash before that leaves it for the retry loop).
    submitted: Mapped[bool] = mapped_column(Boolean, default=False)
    announced: Mapped[bool] = mapped_column(Boolean, default=False)


class RefundItem(Base):
    __tablename__ = "refund_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    refund_id: Mapped[str] = mapped_column(ForeignKey("refunds.id"), index=True)
    invoice_id: Mapped[str] = mapped_column(String(100))
    number: Mapped[str] = mapped_column(String(100))
    account: Mapped[str] = mapped_column(String(20))
    amount_minor: Mapped[int] = mapped_column(Integer)


class ProcessorEventRecord(Base):
    """Every processor event received, once (unique per processor and event id), normalised.
    A payment's state is derived from these; an event about a payment not known yet waits
    here (payment_id null) until the payment appears."""

    __tablename__ = "processor_events"
    __table_args__ = (UniqueConstraint("processor", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    processor: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    payment_ref: Mapped[str | None] = mapped_column(String(200), index=True)
    refund_id: Mapped[str | None] = mapped_column(String(100))
    refund_ref: Mapped[str | None] = mapped_column(String(200))
    # Known once the event is matched to a payment; the processor's event names no firm.
    firm_id: Mapped[str | None] = mapped_column(String(64), index=True)
    payment_id: Mapped[str | None] = mapped_column(String(64), index=True)
    data: Mapped[str] = mapped_column(Text)  # the ProcessorEvent as JSON
