"""Delivery tracking's internal APIs.

The mailer's tracking intake, as the gateway reports what its public tracking routes saw
(all with the internal token; unknown email or recipient -> 404, nothing stored):
- `POST /internal/tracking/open`   TrackingHit -> TrackingAnswer
- `POST /internal/tracking/click`  TrackingHit (with `path`) -> TrackingAnswer
- `POST /internal/tracking/view`   TrackingHit (with `path`) -> TrackingAnswer

envelope's timeline and suppressions, as the gateway asks them (under
`/internal/firms/{firm_id}`, with the internal token; another firm's ids -> 404):
- `GET    /envelopes/{envelope_id}/timeline`      -> TimelineOut
- `POST   /invoices/email-states` EmailStatesRequest -> dict[invoice_id, EmailStateOut]
- `GET    /suppressions`                          -> list[SuppressionOut]
- `GET    /suppressions/count`                    -> SuppressionCount
- `POST   /suppressions/check` SuppressionCheck   -> list[SuppressionOut] (those of the addresses)
- `DELETE /suppressions/{address}`                -> 204 (404 when the firm has no such one)
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

# --- the mailer's tracking intake --------------------------------------------------------


class TrackingHit(BaseModel):
    """What the gateway saw: a pixel fetched, a tracked link followed, or a page served to
    someone who came from a tracked link. `n` is the recipient's place in the email."""

    email_id: str = Field(min_length=1, max_length=64)
    n: int = Field(ge=0, le=999)
    at: datetime | None = None  # when the gateway saw it; None: now
    user_agent: str | None = Field(default=None, max_length=1000)
    path: str | None = Field(default=None, max_length=2000)  # click and view: the page


class TrackingAnswer(BaseModel):
    machine: bool = False
    published: bool = False  # an event went out (opens are at most one a minute)


# --- envelope's timeline -----------------------------------------------------------------


class TimelineLine(BaseModel):
    """One line of an envelope's timeline. `kind`: queued, sent, refused, failed, delivered,
    delayed, bounced, opened, clicked, viewed, paid."""

    at: datetime
    kind: str
    recipient: str | None = None
    email_id: str | None = None
    detail: str | None = None
    machine: bool = False


class TimelineOut(BaseModel):
    envelope_id: str
    client_name: str
    subject: str
    to: list[str]
    invoice_ids: list[str]
    numbers: dict[str, str] = Field(default_factory=dict)  # invoice id -> its number
    status: str  # the envelope's SendStatus
    state: str | None  # the latest meaningful state of its latest email (see timeline.py)
    state_at: datetime | None
    lines: list[TimelineLine]


class EmailStatesRequest(BaseModel):
    invoice_ids: list[str] = Field(max_length=500)


class EmailStateOut(BaseModel):
    """A bill's latest email as the Invoices page shows it."""

    envelope_id: str | None
    event: str | None  # sent, delayed, delivered, opened, clicked, viewed, bounced, failed
    at: datetime | None


# --- suppressions ------------------------------------------------------------------------


class SuppressionOut(BaseModel):
    address: str
    reason: str
    status: str | None
    envelope_id: str | None
    created_at: datetime
    message: str  # what a refused send says of it


class SuppressionCount(BaseModel):
    count: int


class SuppressionCheck(BaseModel):
    addresses: list[str] = Field(max_length=200)
