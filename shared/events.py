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


class ReminderSettings(BaseModel):
    """Settings > Reminders, as Clio counts them: the first reminder `first_after_days` after
    the issue date of the client's oldest unpaid item, then every `every_days` (7 to 365);
    optionally one `before_due_days` before a due date; none within `quiet_after_send_days`
    of a manual send of the same items. Sent in the firm's business hours, in its time zone."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    enabled: bool = False
    first_after_days: int = Field(default=15, ge=1, le=365)
    every_days: int = Field(default=15, ge=7, le=365)
    before_due_days: int | None = Field(default=None, ge=1, le=60)
    quiet_after_send_days: int = Field(default=3, ge=0, le=60)
    business_hours_start: int = Field(default=9, ge=0, le=23)  # local hour, inclusive
    business_hours_end: int = Field(default=17, ge=1, le=24)  # local hour, exclusive
    subject: str | None = None  # None: the built-in reminder template
    body: str | None = None


class FirmProfile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    email: str | None = None
    phone: str | None = None
    address: str | None = None
    website: str | None = None
    combine_envelopes: bool = False
    default_delivery: Delivery = Delivery.link
    # An IANA zone name: the firm's days (Overdue, reminder dates) and business hours.
    time_zone: str = "UTC"
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)

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
    """A bill voided or deleted at its source: it leaves every unpaid list, its pay links say
    it is no longer payable, and no reminder mentions it. `state` is void or deleted."""

    routing_key: ClassVar[str] = "invoice.removed"
    invoice_id: str
    reason: str
    state: InvoiceState = InvoiceState.void


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
    """The relay accepted the email for a recipient. `to` lists the recipients it accepted
    since the email's last `email.sent`; `refused` those it refused for good, each with the
    server's reply. An email whose recipient the relay deferred is announced in parts: the
    recipients accepted at once, then the rest (and the refused) once the deferred one has
    its answer, so the page never waits for a retry to say who has it."""

    routing_key: ClassVar[str] = "email.sent"
    email_id: str
    envelope_id: str | None = None
    message_id: str
    to: list[str]
    sent_at: datetime
    refused: dict[str, str] = Field(default_factory=dict)


class EmailFailed(Event):
    """No recipient will get the email: refused, or given up on. `refused` holds each
    recipient's reply where the relay gave one."""

    routing_key: ClassVar[str] = "email.failed"
    email_id: str
    envelope_id: str | None = None
    reason: str
    refused: dict[str, str] = Field(default_factory=dict)


class EmailTracked(Event):
    """Something that happened to one recipient's copy of an email after the relay took it.
    `recipient` is the address; `at` when it happened (the event may be reported later)."""

    email_id: str
    envelope_id: str | None = None
    recipient: str
    at: datetime


class EmailDelivered(EmailTracked):
    """A delivery status notification said the recipient's server delivered it."""

    routing_key: ClassVar[str] = "email.delivered"


class BounceKind(StrEnum):
    hard = "hard"  # refused for good (5.x.x): the address is suppressed
    soft = "soft"  # delayed or refused for now (4.x.x): nothing is suppressed


class EmailBounced(EmailTracked):
    """A delivery status notification (or the relay, after accepting) said it did not arrive."""

    routing_key: ClassVar[str] = "email.bounced"
    kind: BounceKind
    status: str | None = None  # the RFC 3463 status code, e.g. 5.1.1
    reason: str


class EmailOpened(EmailTracked):
    """The tracking pixel was fetched. `machine` when a privacy proxy or a scanner fetched it
    (seconds after delivery, or a known prefetcher): not a person reading."""

    routing_key: ClassVar[str] = "email.opened"
    machine: bool = False
    user_agent: str | None = None


class ClickTarget(StrEnum):
    view_invoice = "view_invoice"
    pay_online = "pay_online"
    pay_all = "pay_all"
    other = "other"


class EmailClicked(EmailTracked):
    """A tracked link of the email (View Invoice, Pay Online, Pay All) was followed; `path`
    is this system's own page it led to."""

    routing_key: ClassVar[str] = "email.clicked"
    target: ClickTarget = ClickTarget.other
    path: str
    machine: bool = False
    user_agent: str | None = None


class EmailViewed(EmailTracked):
    """The invoice or pay page was served to someone who came from this email's link."""

    routing_key: ClassVar[str] = "email.viewed"
    path: str


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


class PaymentRecorded(Event):
    """Payments made here that are now recorded at the source (Clio's synced figures show
    them, or a firm user marked them recorded): the bill's balance there counts them, so
    nothing may subtract them from it again. `how` is synced or marked."""

    routing_key: ClassVar[str] = "payment.recorded"
    payment_id: str
    allocations: list[Allocation]
    how: str = "synced"


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
    PaymentRecorded,
)
