"""Event contracts. Every event is published on the one topic exchange with its
`routing_key` as the routing key. Consumers ignore fields they do not know, so a producer may
add fields without a new schema version; removing or changing one needs a new version."""

from __future__ import annotations

import datetime as dt
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

# --- states that cross a service boundary -----------------------------------------------
# Each is a StrEnum, so a member equals its string on the wire and in the database; a
# service's own states (the mailer's outgoing email, a deposit) live in that service.


class InvoiceKind(StrEnum):
    invoice = "invoice"
    trust_request = "trust_request"


class InvoiceState(StrEnum):
    """A bill's state in the source system (Clio's bill states)."""

    draft = "draft"
    awaiting_approval = "awaiting_approval"
    awaiting_payment = "awaiting_payment"
    paid = "paid"
    void = "void"
    deleted = "deleted"


# Bills a firm may put in an envelope: unpaid ones, and paid ones (as a receipt).
SENDABLE_STATES: frozenset[InvoiceState] = frozenset(
    {InvoiceState.awaiting_payment, InvoiceState.paid}
)


class Delivery(StrEnum):
    """How an envelope carries its bills: a secure link, or PDFs attached."""

    link = "link"
    attachment = "attachment"


class PaymentMethod(StrEnum):
    card = "card"
    ach = "ach"


class BillPayment(StrEnum):
    """What envelope projects of a bill's online payments (from payment.* events), shown to
    the firm beside the bill's own state."""

    paid_online = "paid_online"
    processing = "processing"
    refunded = "refunded"


class SendStatus(StrEnum):
    """An envelope's, and each of its sends': drafted, queued for the mailer, sent, failed.
    A bill's email status is one of queued, sent and failed."""

    draft = "draft"
    queued = "queued"
    sent = "sent"
    failed = "failed"


class PaymentStatus(StrEnum):
    """A payment as payments derives it from what its processor reported."""

    processing = "processing"
    failed = "failed"
    succeeded = "succeeded"
    returned = "returned"
    refunded = "refunded"
    partially_refunded = "partially_refunded"


class RefundStatus(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    routing_key: ClassVar[str] = ""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=utcnow)
    firm_id: str
    schema_version: int = 1


# --- firm -------------------------------------------------------------------------------


class FirmProfile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    website: str | None = None
    combine_envelopes: bool = False
    default_delivery: Delivery = Delivery.link

    @property
    def address_lines(self) -> list[str]:
        """The address as its non-empty lines (a textarea sends CRLF, people add blanks)."""
        return [line.strip() for line in (self.address or "").splitlines() if line.strip()]


class FirmUpdated(Event):
    """The firm's profile and invoice settings, as the gateway holds them."""

    routing_key: ClassVar[str] = "firm.updated"
    firm: FirmProfile


# --- invoices ---------------------------------------------------------------------------


class LineItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["fee", "expense", "other"] = "other"
    date: dt.date | None = None
    description: str = ""
    quantity: str = "1"
    rate_minor: int = 0
    total_minor: int = 0


class InvoiceSnapshot(BaseModel):
    """An invoice or trust request as the source system last showed it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    invoice_id: str
    source: Literal["clio", "ledes"] = "clio"
    source_id: str
    etag: str | None = None
    number: str
    kind: InvoiceKind
    state: InvoiceState
    client_id: str
    client_name: str
    client_email: str | None = None
    matter_id: str | None = None
    matter_number: str | None = None
    matter_description: str | None = None
    subject: str | None = None
    issued_at: dt.date | None = None
    due_at: dt.date | None = None
    currency: str = "USD"
    total_minor: int
    balance_minor: int
    paid_minor: int = 0
    line_items: list[LineItem] = Field(default_factory=list)
    source_updated_at: datetime | None = None


class InvoiceUpdated(Event):
    routing_key: ClassVar[str] = "invoice.updated"
    invoice: InvoiceSnapshot


class InvoiceRemoved(Event):
    routing_key: ClassVar[str] = "invoice.removed"
    invoice_id: str
    reason: str


# --- envelopes and email ----------------------------------------------------------------


class EnvelopeSendRequested(Event):
    """A firm user asked for an envelope to be sent. `send_id` makes the request idempotent."""

    routing_key: ClassVar[str] = "envelope.send_requested"
    envelope_id: str
    send_id: str
    invoice_ids: list[str]
    client_id: str
    to: list[str]
    cc: list[str] = Field(default_factory=list)
    subject: str
    body: str
    delivery: Delivery = Delivery.link
    pay_all_outstanding: bool = False
    requested_by: str


class EmailRequested(Event):
    """A message ready to go out; the mailer sends each `email_id` at most once.

    The content holds the client's link token, and no secret may be readable on the bus:
    it travels in `sealed_content` (`shared.email_content`: encrypted and authenticated
    under the internal token, bound to `email_id`), and stays available at `content_url`
    (an internal API) for retries and for an event that carries none.
    """

    routing_key: ClassVar[str] = "email.requested"
    email_id: str
    envelope_id: str | None = None
    to: list[str]
    subject: str
    content_url: str
    sealed_content: str | None = None


class EmailSent(Event):
    routing_key: ClassVar[str] = "email.sent"
    email_id: str
    envelope_id: str | None = None
    message_id: str
    to: list[str]
    sent_at: datetime


class EmailFailed(Event):
    routing_key: ClassVar[str] = "email.failed"
    email_id: str
    envelope_id: str | None = None
    reason: str


class PayLinkItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    invoice_id: str
    number: str
    kind: InvoiceKind
    currency: str
    balance_minor: int
    due_at: dt.date | None = None


class PayLinkIssued(Event):
    """A client link was minted for an envelope. Only the token's hash travels."""

    routing_key: ClassVar[str] = "paylink.issued"
    link_id: str
    token_hash: str
    envelope_id: str
    client_id: str
    client_name: str
    client_email: str | None = None
    items: list[PayLinkItem]
    pay_all_outstanding: bool = False
    expires_at: datetime


# --- payments ---------------------------------------------------------------------------


class Allocation(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    invoice_id: str
    amount_minor: int


class PaymentEvent(Event):
    payment_id: str
    method: PaymentMethod
    currency: str
    amount_minor: int
    allocations: list[Allocation]
    payer_name: str | None = None
    payer_email: str | None = None


class PaymentProcessing(PaymentEvent):
    routing_key: ClassVar[str] = "payment.processing"


class PaymentSucceeded(PaymentEvent):
    routing_key: ClassVar[str] = "payment.succeeded"


class PaymentFailed(PaymentEvent):
    """A payment that will not bring money: an ACH debit that failed (e.g. R01), or, with
    `returned`, one that had succeeded and was taken back (an ACH return, a chargeback).
    Either way the bills' balances are owed again."""

    routing_key: ClassVar[str] = "payment.failed"
    reason: str = ""
    failure_code: str | None = None
    returned: bool = False


class PaymentRefunded(PaymentEvent):
    """One refund that succeeded: `refunded_minor` is this refund's amount and
    `allocations` what it returned per item."""

    routing_key: ClassVar[str] = "payment.refunded"
    refund_id: str
    refunded_minor: int


ALL_EVENTS: tuple[type[Event], ...] = (
    FirmUpdated,
    InvoiceUpdated,
    InvoiceRemoved,
    EnvelopeSendRequested,
    EmailRequested,
    EmailSent,
    EmailFailed,
    PayLinkIssued,
    PaymentProcessing,
    PaymentSucceeded,
    PaymentFailed,
    PaymentRefunded,
)
