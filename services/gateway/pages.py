"""Rendering helpers shared by the firm pages and the client pages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from jinja2.runtime import Context

from shared.events import SENDABLE_STATES, BillPayment, InvoiceState
from shared.money import format_money

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

STATE_LABELS = {
    InvoiceState.draft: "Draft",
    InvoiceState.awaiting_approval: "Pending approval",
    InvoiceState.awaiting_payment: "Unpaid",
    InvoiceState.paid: "Paid",
    InvoiceState.void: "Void",
    InvoiceState.deleted: "Deleted",
}


def money(minor: int | None, currency: str = "USD") -> str:
    return format_money(minor or 0, currency)


def fmt_date(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = (
                datetime.fromisoformat(value.replace("Z", "+00:00"))
                if "T" in value
                else date.fromisoformat(value)
            )
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.strftime("%b %-d, %Y %-I:%M %p")
    return value.strftime("%b %-d, %Y")


def field(item: Any, name: str) -> Any:
    """A field of a bill as envelope serves it: an InvoiceOut, or the same as a dict."""
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def invoice_state(item: Any) -> tuple[str, str]:
    """(label, css class) for an invoice's state as the firm should read it."""
    state, payment = field(item, "state") or "", field(item, "payment_status")
    if state in (InvoiceState.void, InvoiceState.deleted):
        return STATE_LABELS[InvoiceState(state)], "void"  # removed in Clio: nothing else counts
    if payment == BillPayment.paid_online:
        return "Paid online", "paid"
    if payment == BillPayment.processing:
        return "Processing (ACH)", "processing"
    if payment == BillPayment.refunded and state == InvoiceState.awaiting_payment:
        return "Refunded", "unpaid"
    label = STATE_LABELS.get(state, state)
    css = {"Paid": "paid", "Unpaid": "unpaid", "Void": "void"}.get(label, "muted")
    return label, css


def sendable(item: Any) -> bool:
    """A bill the firm may put in an envelope (its row's checkbox)."""
    return field(item, "state") in SENDABLE_STATES


def unpaid(item: Any) -> bool:
    """A bill the client can still pay: something left after online payments, and no ACH
    payment under way. The header checkbox selects these, and only these can be overdue."""
    return (
        field(item, "state") == InvoiceState.awaiting_payment
        and (field(item, "balance_minor") or 0) > (field(item, "paid_online_minor") or 0)
        and field(item, "payment_status") != BillPayment.processing
    )


def overdue(item: Any, today: date | None = None) -> bool:
    """An unpaid bill past its due date: `today` is the firm's local date (pages pass it as
    `today`); UTC's date only where no page told."""
    due_at = field(item, "due_at")
    if not due_at or not unpaid(item):
        return False
    try:
        due_date = date.fromisoformat(str(due_at)[:10])
    except ValueError:
        return False
    return due_date < (today or datetime.now(UTC).date())


@pass_context
def overdue_in_page(ctx: Context, item: Any, today: date | None = None) -> bool:
    """`overdue(inv)` in a template: by the page's `today` (the firm's local date)."""
    return overdue(item, today or ctx.get("today"))


templates.env.globals.update(
    money=money,
    fmt_date=fmt_date,
    invoice_state=invoice_state,
    sendable=sendable,
    unpaid=unpaid,
    overdue=overdue_in_page,
)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)
