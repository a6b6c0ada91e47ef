"""The client's checkout, after Pay on the pay page: in test mode our own page, which takes
a card or a bank account (ACH); the receipt; and the way back from the processor's page.
Errors from payments land at their form field."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from services.gateway.clients.base import Refused
from services.gateway.deps import PaymentsClientDep, SettingsDep
from services.gateway.pages import render
from services.gateway.public import back_token, csrf_ok, no_checkout, private, with_csrf
from services.gateway.settings import GatewaySettings
from shared.api.payments import AchForm, CardForm, CheckoutOut
from shared.events import PaymentMethod, PaymentStatus

CARD_FIELDS = ("name", "email", "card_number", "exp", "cvc")
ACH_FIELDS = ("name", "email", "routing_number", "account_number", "account_type")
# What the checkout form shows again after an error: never a card or account number or a CVC.
KEPT_FIELDS = ("method", "email", "name", "holder_name", "exp", "routing_number", "account_type")


def checkout_body(form: dict[str, str]) -> tuple[str, CardForm | AchForm]:
    """(method, body) for payments' card or ACH endpoint from the checkout form."""
    if form.get("method") == PaymentMethod.ach:
        body = {k: form.get(k, "").strip() for k in ACH_FIELDS}
        body["name"] = form.get("holder_name", "").strip()
        body["account_type"] = body["account_type"] or "checking"
        return PaymentMethod.ach, AchForm(**body)
    return PaymentMethod.card, CardForm(**{k: form.get(k, "").strip() for k in CARD_FIELDS})


def field_errors(method: str, detail: Any) -> tuple[dict[str, str], str | None]:
    """Split a 402/409 detail into (errors by form field, message for the whole form)."""
    if not isinstance(detail, dict):
        return {}, str(detail)
    field, message = detail.get("field"), str(detail.get("message") or "")
    known = CARD_FIELDS if method == PaymentMethod.card else ACH_FIELDS
    if field not in known:
        return {}, message
    # The ACH form names its holder's name field apart from the card's "Name on card".
    if method == PaymentMethod.ach and field == "name":
        field = "holder_name"
    return {str(field): message}, None


def receipt_state(cs: CheckoutOut) -> tuple[str, str]:
    """(status, outcome) of the receipt: the payment's status, "confirming" while a Stripe
    payment waits for its webhook; the outcome is received, processing or failed."""
    status = cs.payment_status or ("" if cs.payment_id else "confirming")
    if status in (PaymentStatus.failed, PaymentStatus.returned):
        return status, "failed"
    if status in (PaymentStatus.processing, "confirming"):
        return status, "processing"
    return status, "received"


router = APIRouter()


def checkout_page_for(
    request: Request,
    settings: GatewaySettings,
    cs: CheckoutOut,
    status_code: int = 200,
    **ctx: Any,
) -> Response:
    ctx = {"form": {"method": PaymentMethod.card}, "errors": {}, "error": None} | ctx
    back = back_token(request, settings, cs.id)
    return with_csrf(
        request, settings, "checkout.html", status_code=status_code, cs=cs, back=back, **ctx
    )


@router.get("/checkout/{session_id}", response_model=None)
async def checkout_page(
    request: Request, session_id: str, settings: SettingsDep, payments: PaymentsClientDep
) -> Response:
    cs = await payments.checkout(session_id)
    if cs is None:
        return no_checkout(request)
    if cs.payment_id:
        return RedirectResponse(f"/checkout/{session_id}/done", status_code=303)
    if cs.status == "open" and cs.processor != "test" and cs.redirect_url:
        # Back on our URL of a Stripe session still open: its hosted page takes the payment.
        return private(RedirectResponse(cs.redirect_url, status_code=303))
    status_code = 410 if cs.status == "expired" else 200
    return checkout_page_for(request, settings, cs, status_code=status_code)


@router.post("/checkout/{session_id}", response_model=None)
async def pay(
    request: Request, session_id: str, settings: SettingsDep, payments: PaymentsClientDep
) -> Response:
    """Test mode: pay the session by card or by bank account; errors land at their field."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    cs = await payments.checkout(session_id)
    if cs is None:
        return no_checkout(request)
    kept = {k: form.get(k, "") for k in KEPT_FIELDS}
    if not csrf_ok(request, form.get("csrf_token", "")):
        error = "This page expired. Nothing was charged. Please try again."
        return checkout_page_for(request, settings, cs, status_code=403, form=kept, error=error)
    method, body = checkout_body(form)
    try:
        await payments.pay(session_id, body)
    except Refused as refused:
        errors, error = field_errors(method, refused.detail)
        return checkout_page_for(
            request,
            settings,
            await payments.checkout(session_id) or cs,
            status_code=refused.status,
            form=kept | {"method": method},
            errors=errors,
            error=error,
        )
    return private(RedirectResponse(f"/checkout/{session_id}/done", status_code=303))


@router.get("/checkout/{session_id}/done", response_model=None)
async def done(
    request: Request, session_id: str, settings: SettingsDep, payments: PaymentsClientDep
) -> Response:
    """The receipt: received (card), processing (ACH until it settles), or failed. With
    Stripe the client may come back before its webhook: then the payment is confirming."""
    cs = await payments.checkout(session_id)
    if cs is None:
        return no_checkout(request)
    if not cs.payment_id and cs.processor == "test":
        return RedirectResponse(f"/checkout/{session_id}", status_code=303)
    back = back_token(request, settings, session_id)
    status, outcome = receipt_state(cs)
    page = render(request, "receipt.html", cs=cs, back=back, status=status, outcome=outcome)
    return private(page)


@router.get("/checkout/{session_id}/cancel", response_model=None)
async def cancel(request: Request, session_id: str, settings: SettingsDep) -> Response:
    """Back from the processor's page without paying: to the pay page, when we know it."""
    back = back_token(request, settings, session_id)
    if back:
        return private(RedirectResponse(f"/pay/{back}", status_code=303))
    return private(RedirectResponse(f"/checkout/{session_id}", status_code=303))
