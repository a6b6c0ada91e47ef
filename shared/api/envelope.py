"""envelope's internal API: invoices, drafts, previews and client PDFs for the gateway, the
content of an email for the mailer, batches, balances and email templates."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

# --- invoices, envelopes, previews, emails --------------------------------------------------


class InvoiceOut(BaseModel):
    invoice_id: str
    number: str
    kind: str
    state: str
    client_id: str
    client_name: str
    matter: str | None
    issued_at: date | None
    due_at: date | None
    currency: str
    total_minor: int
    balance_minor: int
    paid_online_minor: int
    payment_status: str | None
    last_sent_at: datetime | None
    email_status: str | None


class InvoicePage(BaseModel):
    items: list[InvoiceOut]
    total: int
    page: int
    per_page: int


class DraftRequest(BaseModel):
    invoice_ids: list[str] = Field(min_length=1, max_length=1000)
    created_by: str


class SendOut(BaseModel):
    send_id: str
    requested_at: datetime
    to: list[str]
    subject: str
    status: str
    sent_at: datetime | None
    error: str | None


class EnvelopeOut(BaseModel):
    id: str
    client_id: str
    client_name: str
    invoice_ids: list[str]
    to: list[str]
    cc: list[str]
    subject: str
    body: str
    delivery: str
    status: str
    last_sent_at: datetime | None
    preview: dict[str, str] | None = None
    sends: list[SendOut] = []


class PreviewRequest(BaseModel):
    subject: str
    body: str


class Preview(BaseModel):
    """An email's subject and message as a client would get them (served as a plain dict)."""

    subject: str
    html: str
    text: str


class LinkIssued(BaseModel):
    issued: bool


class AttachmentOut(BaseModel):
    filename: str
    content_type: str
    content_b64: str


class EmailContent(BaseModel):
    email_id: str
    to: list[str]
    cc: list[str]
    from_name: str
    reply_to: str | None
    subject: str
    html: str
    text: str
    attachments: list[AttachmentOut]


# --- many envelopes at once: Send All progress, batch overviews, balances ------------------


class SendStatusRequest(BaseModel):
    send_ids: list[str] = Field(max_length=5000)


class SendState(BaseModel):
    """One send's status (a SendStatus) and, when it failed, why."""

    status: str
    error: str | None = None


class SummaryRequest(BaseModel):
    ids: list[str] = Field(max_length=5000)


class EnvelopeSummary(BaseModel):
    id: str
    client_id: str
    client_name: str
    invoice_ids: list[str]
    to: list[str]
    subject: str
    body: str
    status: str
    last_sent_at: datetime | None
    sends: int
    last_error: str | None


class BalanceOut(BaseModel):
    client_id: str
    client_name: str
    email: str | None
    currency: str
    outstanding_minor: int
    unpaid_items: int
    oldest_due: date | None
    last_sent_at: datetime | None


class BalanceDraftRequest(BaseModel):
    created_by: str


class BalanceDraft(BaseModel):
    """The client balance's envelope, drafted (served as a plain dict)."""

    id: str


# --- email templates ------------------------------------------------------------------------


class TemplateIn(BaseModel):
    name: str = ""
    subject: str = ""
    body: str = ""
    # On update, None leaves the firm's default as it is.
    is_default: bool | None = None


class TemplateOut(BaseModel):
    id: str
    name: str
    subject: str
    body: str
    is_default: bool
    created_at: datetime
    updated_at: datetime


class BuiltinOut(BaseModel):
    name: str
    subject: str
    body: str


class TemplateList(BaseModel):
    items: list[TemplateOut]
    default_id: str | None
    builtin: BuiltinOut
    autofill_fields: dict[str, str]


class DefaultIn(BaseModel):
    template_id: str | None = None  # None: the built-in template


class DefaultOut(BaseModel):
    default_id: str | None


class TextIn(BaseModel):
    subject: str = ""
    body: str = ""
