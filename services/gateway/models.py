from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import ServiceBase, UTCDateTime
from shared.events import ReminderSettings
from shared.schema import service_metadata


class Base(ServiceBase):
    __abstract__ = True
    metadata = service_metadata()


outbox = Base.metadata.tables["outbox"]


def _or(value: int | None, default: int) -> int:
    """A column's value, or its default before the row is first flushed."""
    return default if value is None else value


class Firm(Base):
    __tablename__ = "firms"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(50))
    address: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(String(300))
    combine_envelopes: Mapped[bool] = mapped_column(Boolean, default=False)
    default_delivery: Mapped[str] = mapped_column(String(20), default="link")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # An IANA zone name: the firm's days (Overdue, reminder dates) and business hours.
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    # Settings > Reminders (ReminderSettings, one column each).
    reminders_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    reminder_first_after_days: Mapped[int] = mapped_column(Integer, default=15, server_default="15")
    reminder_every_days: Mapped[int] = mapped_column(Integer, default=15, server_default="15")
    reminder_before_due_days: Mapped[int | None] = mapped_column(Integer)
    reminder_quiet_days: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    reminder_hours_start: Mapped[int] = mapped_column(Integer, default=9, server_default="9")
    reminder_hours_end: Mapped[int] = mapped_column(Integer, default=17, server_default="17")
    reminder_subject: Mapped[str | None] = mapped_column(Text)
    reminder_body: Mapped[str | None] = mapped_column(Text)

    @property
    def reminders(self) -> ReminderSettings:
        """The firm's reminder settings as firm.updated carries them (FirmProfile.reminders)."""
        return ReminderSettings(
            enabled=bool(self.reminders_enabled),
            first_after_days=_or(self.reminder_first_after_days, 15),
            every_days=_or(self.reminder_every_days, 15),
            before_due_days=self.reminder_before_due_days,
            quiet_after_send_days=_or(self.reminder_quiet_days, 3),
            business_hours_start=_or(self.reminder_hours_start, 9),
            business_hours_end=_or(self.reminder_hours_end, 17),
            subject=self.reminder_subject,
            body=self.reminder_body,
        )


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(ForeignKey("firms.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebSession(Base):
    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    firm_id: Mapped[str] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BatchKind(StrEnum):
    selected = "selected"  # Review & Send Selected
    balance = "balance"  # Send client balance: pays for all unpaid bills by default


class Batch(Base):
    """The envelopes drafted by one Review & Send Selected (or one Send client balance),
    reviewed one by one or sent all at once."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20), default=BatchKind.selected)
    envelope_ids: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SendRequest(Base):
    """One click of Send. The send id is minted when the confirmation is shown, so a double
    click or a browser retry carries the same id and sends once. `seq` numbers the sends of
    an envelope as the page that asked for it saw them: a second tab showing the same
    confirmation asks for the same number, and the unique constraint turns it away."""

    __tablename__ = "send_requests"
    __table_args__ = (UniqueConstraint("envelope_id", "seq"),)

    send_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64), index=True)
    envelope_id: Mapped[str] = mapped_column(String(36), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(36), index=True)  # a Send All run
    batch_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OAuthState(Base):
    __tablename__ = "oauth_states"

    state: Mapped[str] = mapped_column(String(100), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
