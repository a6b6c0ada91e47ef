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
