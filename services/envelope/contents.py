"""What an envelope's email says: each bill as an item with its links, and the email composed
from the envelope's templates (compose.py renders them), or why a send has none."""

from __future__ import annotations

from collections.abc import Mapping

from services.envelope.compose import ComposedEmail, EmailItem, TemplateInvalid, compose_email
from services.envelope.links import Links
from services.envelope.models import Invoice
from services.envelope.rules import (
    Refusal,
    balance_due,
    carries_statement,
    matter_label,
    refusal,
    suppression_detail,
)
from shared.events import FirmProfile, InvoiceSnapshot


def email_item(inv: Invoice, token: str, links: Links) -> EmailItem:
    snap = InvoiceSnapshot.model_validate_json(inv.snapshot)
    return EmailItem(
        invoice_id=inv.invoice_id,
        number=inv.number,
        kind=inv.kind,
        matter=matter_label(snap.matter_number, snap.matter_description),
        due_at=inv.due_at,
        currency=inv.currency,
        total_minor=inv.total_minor,
        balance_minor=balance_due(inv.balance_minor, inv.paid_online_minor),
        view_url=links.view_url(token, inv.invoice_id),
        pay_url=links.pay_url(token, inv.invoice_id),
    )


def compose(
    links: Links,
    firm: FirmProfile,
    client_name: str,
    invoices: list[Invoice],
    token: str,
    *,
    subject_template: str,
    body_template: str,
) -> ComposedEmail:
    """The email of `invoices` (at least one) whose links carry `token`; raises
    TemplateInvalid when a template does not render."""
    items = [email_item(i, token, links) for i in invoices]
    return compose_email(
        firm,
        client_name,
        items,
        subject_template=subject_template,
        body_template=body_template,
        pay_all_url=links.pay_url(token),
        view_all_url=(
            links.statement_url(token) if carries_statement(len(items)) else items[0].view_url
        ),
    )


def compose_send(
    links: Links,
    firm: FirmProfile,
    client_name: str,
    invoices: list[Invoice],
    token: str,
    *,
    to: list[str],
    subject_template: str,
    body_template: str,
    suppressed: Mapping[str, str] | None = None,
) -> tuple[ComposedEmail | None, Refusal | None, str | None]:
    """A send's email, or why it has none: (email, None, None) or (None, reason, message).
    `suppressed`: the firm's suppressed addresses among `to`, with their messages."""
    refused = refusal(len(invoices), to, suppressed)
    if refused is not None:
        return None, refused, refused.message(suppression_detail(to, suppressed or {}))
    try:
        composed = compose(
            links,
            firm,
            client_name,
            invoices,
            token,
            subject_template=subject_template,
            body_template=body_template,
        )
    except TemplateInvalid as exc:
        return None, Refusal.template_error, Refusal.template_error.message(str(exc))
    return composed, None, None
