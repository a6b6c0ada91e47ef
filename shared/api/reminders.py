"""envelope's internal API for automated bill reminders, as the gateway asks it.

Routes (all under `/internal/firms/{firm_id}`, with the internal token):
- `GET  /reminders?days=60`            -> RemindersOut: the upcoming list and the history
- `GET  /reminders/paused`             -> PausedOut: the clients and bills switched off (what
  Invoices and Outstanding Balances show on every load: two small reads, nothing computed)
- `POST /reminders/clients/{client_id}` ReminderSwitch -> 204: reminders on or off for a client
- `POST /reminders/invoices/{invoice_id}` ReminderSwitch -> 204: on or off for one bill
- `POST /reminders/clients/{client_id}/send-now` -> ReminderSent: the client's reminder now
  (still never for paid or processing items, nor to a suppressed address)
- `POST /reminders/run` RunRequest -> RunOut: one scheduler pass "as of" a chosen moment;
  refused (403) when the service runs in production
A firm's reminder settings and time zone travel in firm.updated (`FirmProfile.reminders`,
`FirmProfile.time_zone`), not through this API.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class ReminderSwitch(BaseModel):
    enabled: bool


class UpcomingReminder(BaseModel):
    client_id: str
    client_name: str
    due_on: date  # the firm's local date the reminder is due
    slot: str  # the slot key: what makes it unique for the client
    reason: str  # "15 days after issue", "every 15 days", "3 days before due"
    invoice_ids: list[str]
    numbers: list[str]
    currency: str
    amount_minor: int
    to: list[str]
    paused: bool  # the client's reminders are off
    blocked: str | None = None  # why it will not go (suppressed address, no email, quiet)


class SentReminder(BaseModel):
    client_id: str
    client_name: str
    slot: str
    due_on: date
    sent_at: datetime | None  # None: queued, not yet confirmed by the mailer
    envelope_id: str | None
    invoice_ids: list[str]
    currency: str
    amount_minor: int
    to: list[str]
    status: str  # queued, sent, failed, skipped
    note: str | None = None  # why skipped or failed


class RemindersOut(BaseModel):
    enabled: bool
    time_zone: str
    upcoming: list[UpcomingReminder]
    history: list[SentReminder]
    paused_clients: list[str] = Field(default_factory=list)
    paused_invoices: list[str] = Field(default_factory=list)


class PausedOut(BaseModel):
    clients: list[str]
    invoices: list[str]


class ReminderSent(BaseModel):
    queued: bool
    envelope_id: str | None = None
    reason: str | None = None  # why nothing was queued


class RunRequest(BaseModel):
    as_of: datetime  # aware; the scheduler's clock for this pass


class RunOut(BaseModel):
    as_of: datetime
    queued: int
    skipped: int
    # Why the pass did nothing for the firm, when it could not: reminders off, or `as_of`
    # outside the firm's business hours (in its time zone).
    note: str | None = None
