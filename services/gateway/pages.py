"""Rendering helpers shared by the firm pages and the client pages."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from shared.money import format_money

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

STATE_LABELS = {
    "draft": "Draft",
    "awaiting_approval": "Pending approval",
    "awaiting_payment": "Unpaid",
    "paid": "Paid",
    "void": "Void",
    "deleted": "Deleted",
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


def invoice_state(item: dict[str, Any]) -> tuple[str, str]:
    """(label, css class) for an invoice's state as the firm should read it."""
    if item.get("payment_status") == "paid_online":
        return "Paid online", "paid"
    if item.get("payment_status") == "processing":
        return "Processing (ACH)", "processing"
    if item.get("payment_status") == "refunded" and item.get("state") == "awaiting_payment":
        return "Refunded", "unpaid"
    label = STATE_LABELS.get(item.get("state", ""), item.get("state", ""))
    css = {"Paid": "paid", "Unpaid": "unpaid", "Void": "void"}.get(label, "muted")
    return label, css


def unpaid(item: dict[str, Any]) -> bool:
    """A bill the client can still pay: something left after online payments, and no ACH
    payment under way. The header checkbox selects these, and only these can be overdue."""
    return (
        item.get("state") == "awaiting_payment"
        and (item.get("balance_minor") or 0) > (item.get("paid_online_minor") or 0)
        and item.get("payment_status") != "processing"
    )


def overdue(item: dict[str, Any], today: date | None = None) -> bool:
    """An unpaid bill past its due date."""
    if not item.get("due_at") or not unpaid(item):
        return False
    try:
        due_date = date.fromisoformat(str(item["due_at"])[:10])
    except ValueError:
        return False
    return due_date < (today or datetime.now(UTC).date())


templates.env.globals.update(
    money=money, fmt_date=fmt_date, invoice_state=invoice_state, unpaid=unpaid, overdue=overdue
)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)
