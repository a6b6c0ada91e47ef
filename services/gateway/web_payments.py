"""The Payments tab: the firm's payments, one payment's page with its refunds, the CSV export.

The refund rules live in payments (ACH only in full, as seed 000 warns; never more than was
paid); these pages offer only what payments allows and show its refusals on the page.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from services.gateway.clients.base import Refused
from services.gateway.clients.payments import PaymentsClient
from services.gateway.deps import CurrentUser, FormUser, PaymentsClientDep, show
from shared.api.payments import PaymentDetailOut, PaymentOut, RefundBody, RefundItemIn
from shared.events import PaymentMethod, PaymentStatus, RefundStatus
from shared.money import exponent, format_money, to_decimal

STATUS_LABELS = {
    PaymentStatus.processing: "Processing",
    PaymentStatus.succeeded: "Paid",
    PaymentStatus.failed: "Failed",
    PaymentStatus.refunded: "Refunded",
    PaymentStatus.partially_refunded: "Partially refunded",
    PaymentStatus.returned: "Returned",
}
# The list's status filter: what payments filters on, labelled as the list shows it.
STATUS_CHOICES = [("", "All")] + [
    (str(k), "Processing (ACH)" if k == PaymentStatus.processing else v)
    for k, v in STATUS_LABELS.items()
]
STATUS_CSS = {
    PaymentStatus.processing: "processing",
    PaymentStatus.succeeded: "paid",
    PaymentStatus.failed: "void",
    PaymentStatus.refunded: "muted",
    PaymentStatus.partially_refunded: "unpaid",
    PaymentStatus.returned: "void",
}
REFUND_CSS = {
    RefundStatus.pending: "processing",
    RefundStatus.succeeded: "paid",
    RefundStatus.failed: "void",
}
ACH_WARNING = (
    "ACH payments are not eligible for partial refunds. Refunding this payment returns the "
    "funds for every invoice in it."
)
AMOUNT_RE = re.compile(r"^\d+(?:\.\d+)?$")


def status_label(payment: PaymentOut) -> str:
    """The status as the firm reads it: an ACH payment is "Processing (ACH)" until it settles."""
    status = payment.status
    if status == PaymentStatus.processing and payment.method == PaymentMethod.ach:
        return "Processing (ACH)"
    return STATUS_LABELS.get(status, status.replace("_", " ").capitalize())


def status_css(payment: PaymentOut) -> str:
    return STATUS_CSS.get(payment.status, "muted")


def refund_css(status: str) -> str:
    return REFUND_CSS.get(status, "muted")


def method_label(payment: PaymentOut) -> str:
    """The method as the firm reads it: Card •••• 4242, Bank •••• 6789."""
    if payment.method == PaymentMethod.ach:
        last4 = payment.bank_last4
        return f"Bank •••• {last4}" if last4 else "Bank (ACH)"
    last4 = payment.card_last4
    return f"Card •••• {last4}" if last4 else "Card"


def decimal_text(minor: int, currency: str) -> str:
    """An amount as typed in a form field: "123.45", never a float."""
    return f"{to_decimal(minor, currency):.{exponent(currency)}f}"


def parse_amount(text: str, currency: str) -> int:
    """Minor units from what a person typed ("1,234.50", "$12"); ValueError when it is not an
    amount of this currency (more decimals than it has are refused, not rounded)."""
    cleaned = re.sub(r"[\s,$€£¥]", "", text or "")
    if not cleaned:
        return 0
    if not AMOUNT_RE.match(cleaned):
        raise ValueError("Enter an amount like 120.00.")
    whole, _, frac = cleaned.partition(".")
    if len(frac) > exponent(currency):
        raise ValueError(f"Use at most {exponent(currency)} decimals.")
    return int(Decimal(cleaned).scaleb(exponent(currency)))


def list_params(status: str, q: str) -> dict[str, str]:
    """The list's filters as payments takes them; a status it does not have is dropped."""
    status = status if status in STATUS_LABELS else ""
    return {k: v for k, v in {"status": status, "q": q.strip()}.items() if v}


def refundable_items(detail: PaymentDetailOut) -> list[dict[str, Any]]:
    """The payment's allocations with what is left to refund on each."""
    return [
        a.model_dump() | {"refundable_minor": max(0, a.amount_minor - a.refunded_minor)}
        for a in detail.allocations
    ]


def can_refund(detail: PaymentDetailOut) -> bool:
    return not detail.refund_block_reason and detail.refundable_minor > 0


def refund_request(
    detail: PaymentDetailOut, form: Any
) -> tuple[bool, list[RefundItemIn], dict[str, str], dict[str, str]]:
    """Read the refund form: (full, items to refund, amounts as typed, errors by invoice id).

    The amounts are checked against what each item has left, so a typo is answered at its
    field; payments checks the same again and has the last word."""
    full = form.get("full") == "1"
    currency = detail.currency
    left = {a["invoice_id"]: a["refundable_minor"] for a in refundable_items(detail)}
    typed = dict(zip(form.getlist("item"), form.getlist("amount"), strict=False))
    if full:
        return True, [], {str(k): str(v) for k, v in typed.items()}, {}
    items: list[RefundItemIn] = []
    errors: dict[str, str] = {}
    for invoice_id, text in typed.items():
        invoice_id, text = str(invoice_id), str(text)
        try:
            minor = parse_amount(text, currency)
        except ValueError as exc:
            errors[invoice_id] = str(exc)
            continue
        if invoice_id not in left:
            errors[invoice_id] = "This bill is not part of the payment."
        elif minor > left[invoice_id]:
            errors[invoice_id] = f"At most {format_money(left[invoice_id], currency)} is left."
        elif minor > 0:
            items.append(RefundItemIn(invoice_id=invoice_id, amount_minor=minor))
    return False, items, {str(k): str(v) for k, v in typed.items()}, errors


router = APIRouter()
HELPERS = {
    "status_label": status_label,
    "status_css": status_css,
    "refund_css": refund_css,
    "method_label": method_label,
}


async def load_payment(
    payments: PaymentsClient, user: CurrentUser, payment_id: str
) -> PaymentDetailOut:
    detail = await payments.payment(user.firm_id, payment_id)
    if detail is None:
        raise HTTPException(status_code=404, detail="No such payment.")
    return detail


def detail_page(
    request: Request,
    user: CurrentUser,
    detail: PaymentDetailOut,
    status_code: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    items = refundable_items(detail)
    defaults = {
        a["invoice_id"]: decimal_text(a["refundable_minor"], detail.currency) for a in items
    }
    ctx.setdefault("refund_id", str(uuid.uuid4()))
    ctx["typed"] = defaults | ctx.get("typed", {})
    ctx.setdefault("errors", {})
    ctx = {"error": None, "confirm": None, "flash": None} | ctx
    return show(
        request,
        "payment_detail.html",
        user,
        status_code=status_code,
        p=detail,
        items=items,
        can_refund=can_refund(detail),
        ach_warning=ACH_WARNING,
        **HELPERS,
        **ctx,
    )


# --- the list and the export ----------------------------------------------------------------


@router.get("/payments", response_class=HTMLResponse)
async def payments_page(
    request: Request, user: CurrentUser, payments: PaymentsClientDep, status: str = "", q: str = ""
) -> HTMLResponse:
    params = list_params(status, q)
    return show(
        request,
        "payments.html",
        user,
        payments=await payments.payments(user.firm_id, params),
        status=params.get("status", ""),
        q=q,
        export="/payments.csv" + (f"?{urlencode(params)}" if params else ""),
        statuses=STATUS_CHOICES,
        **HELPERS,
    )


@router.get("/payments.csv")
async def payments_csv(
    user: CurrentUser, payments: PaymentsClientDep, status: str = "", q: str = ""
) -> Response:
    """payments' CSV, streamed through as it comes: one row per allocated bill, of the
    payments the list shows (its filters apply)."""
    resp = await payments.payments_csv(user.firm_id, list_params(status, q))
    if resp is None:
        raise HTTPException(status_code=502, detail="The export is not available right now.")
    filename = f"payments-{datetime.now(UTC):%Y-%m-%d}.csv"
    return StreamingResponse(
        resp.aiter_bytes(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
        background=BackgroundTask(resp.aclose),
    )


# --- one payment and its refunds ------------------------------------------------------------


@router.get("/payments/{payment_id}", response_class=HTMLResponse)
async def payment_page(
    request: Request,
    payment_id: str,
    user: CurrentUser,
    payments: PaymentsClientDep,
    refund: str = "",
) -> HTMLResponse:
    detail = await load_payment(payments, user, payment_id)
    flash = next((f for f in detail.refunds if f.id == refund), None)
    return detail_page(request, user, detail, flash=flash)


@router.post("/payments/{payment_id}/refunds", response_model=None)
async def refund(
    request: Request, payment_id: str, user: FormUser, payments: PaymentsClientDep
) -> Response:
    """Refund, in two steps: the form asks for a confirmation of exactly what goes back, then
    the confirmed form (same refund_id, so a double submit refunds once) refunds."""
    form = await request.form()
    detail = await load_payment(payments, user, payment_id)
    refund_id = str(form.get("refund_id") or "")
    try:
        uuid.UUID(refund_id)
    except ValueError:
        error = "The form expired. Reload the page and try again."
        return detail_page(request, user, detail, status_code=400, error=error)
    full, items, typed, errors = refund_request(detail, form)
    ctx: dict[str, Any] = {"refund_id": refund_id, "typed": typed, "errors": errors}
    if errors:
        return detail_page(request, user, detail, status_code=422, **ctx)
    if not full and not items:
        error = "Enter the amount to refund for at least one bill."
        return detail_page(request, user, detail, status_code=422, error=error, **ctx)
    if form.get("confirm") != "1":
        total = detail.refundable_minor if full else sum(i.amount_minor for i in items)
        confirm = {"full": full, "items": items, "total_minor": total}
        return detail_page(request, user, detail, confirm=confirm, **ctx)
    body = RefundBody(
        refund_id=refund_id, requested_by=user.name or user.email, full=full, items=items
    )
    try:
        await payments.refund(user.firm_id, payment_id, body)
    except Refused as refused:
        if refused.status == 404:
            raise HTTPException(status_code=404, detail="No such payment.") from refused
        detail_json = refused.detail
        message = detail_json.get("message") if isinstance(detail_json, dict) else detail_json
        if refused.field in typed:
            ctx["errors"] = {str(refused.field): str(message)}
        fresh = await load_payment(payments, user, payment_id)
        return detail_page(
            request,
            user,
            fresh,
            status_code=refused.status,
            error=str(message),
            **(ctx | {"refund_id": str(uuid.uuid4())}),
        )
    return RedirectResponse(f"/payments/{payment_id}?refund={refund_id}", status_code=303)
