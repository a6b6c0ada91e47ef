from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import ServiceBase, UTCDateTime
from shared.schema import service_metadata


class Base(ServiceBase):
    __abstract__ = True
    metadata = service_metadata()


outbox = Base.metadata.tables["outbox"]


class OutgoingEmail(Base):
    """One message to deliver. `sending` is committed before the SMTP conversation starts,
    so a mailer that dies mid-way finds it on restart and never sends it a second time."""

    __tablename__ = "emails"

    email_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    envelope_id: Mapped[str | None] = mapped_column(String(36))
    to: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    content_url: Mapped[str] = mapped_column(Text)
    # An EmailStatus; the moves between them are services.mailer.rules.TRANSITIONS.
    status: Mapped[str] = mapped_column(String(20), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message_id: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    trace: Mapped[str | None] = mapped_column(Text)  # traceparent of the request, for retries


class EmailRecipient(Base):
    """One recipient's copy of an email (To, then Cc, `n` counting from 0): what the relay
    answered for it, and what was heard of it afterwards. The postman writes the relay's
    answer; the bounce intake, delivery and bounce notifications; the tracking intake, opens
    and clicks. Each writes only its own columns."""

    __tablename__ = "email_recipients"

    email_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(320))
    # The relay's answer: pending, accepted, refused (for good), deferred (for now).
    status: Mapped[str] = mapped_column(String(20), default="pending")
    reply: Mapped[str | None] = mapped_column(Text)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # From delivery status notifications.
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    bounced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    bounce_kind: Mapped[str | None] = mapped_column(String(10))  # BounceKind
    bounce_status: Mapped[str | None] = mapped_column(String(20))
    bounce_reason: Mapped[str | None] = mapped_column(Text)
    # From the tracking pixel and redirect: people only; `machine_opens` counts the rest.
    first_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opens: Mapped[int] = mapped_column(Integer, default=0)
    machine_opens: Mapped[int] = mapped_column(Integer, default=0)
    first_clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    clicks: Mapped[int] = mapped_column(Integer, default=0)
