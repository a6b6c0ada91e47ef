"""The client's pages, reached by the link token in an email; no login.

The pay page (/pay/{token}) lists the envelope's bills; Pay, Pay All or Pay full balance asks
payments for a checkout session, created only now, when the client clicks. With Stripe the
client goes to Stripe's hosted page; in test mode to our own checkout page (/checkout/{id},
in public_checkout.py), which takes a card or a bank account (ACH) and ends on the receipt.

The checkout URL never carries the link token: the token rides in a signed, HttpOnly cookie
bound to the checkout session, so the receipt can link back to the pay page.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.gateway import auth
from services.gateway.clients.base import Pdf, Refused
from services.gateway.clients.envelope import EnvelopeClient
from services.gateway.clients.payments import PaymentsClient
from services.gateway.deps import EnvelopeClientDep, PaymentsClientDep, SettingsDep
from services.gateway.pages import render
from services.gateway.settings import GatewaySettings
from services.gateway.tracking import report_view
from shared.api.payments import LinkOut

# Client pages must never be cached by a shared proxy or indexed.
PRIVATE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"}

# How long a request waits for payments to learn of a link the envelope service issued.
LINK_ARRIVAL_WAIT_SECONDS = 4.0
# The cookie that carries the link token from the pay page to the checkout and receipt.
PAYLINK_COOKIE = "ep_paylink"
PAYLINK_COOKIE_SECONDS = 2 * 24 * 3600  # a checkout session lives 24 hours


def _signature(secret: str, session_id: str, token: str) -> str:
    msg = f"paylink|{session_id}|{token}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:32]


def paylink_cookie(secret: str, session_id: str, token: str) -> str:
    """The cookie value that ties a checkout session to the pay link it came from."""
    return f"{session_id}.{token}.{_signature(secret, session_id, token)}"


def token_for(secret: str, raw: str | None, session_id: str) -> str | None:
    """The link token of this checkout session from the cookie, if it is ours and untouched."""
    parts = (raw or "").split(".")
    if len(parts) != 3 or parts[0] != session_id:
        return None
    _, token, sig = parts
    return token if hmac.compare_digest(sig, _signature(secret, session_id, token)) else None


router = APIRouter()


def no_link(status: str) -> LinkOut:
    """A link payments cannot show: "unknown" (nobody issued it) or "pending" (issued, on its
    way to payments)."""
    return LinkOut(
        status=status,
        firm=None,
        client_name="",
        items=[],
        currency="",
        total_due_minor=0,
        pay_all_outstanding=False,
        outstanding=None,
    )


def private(resp: Response) -> Response:
    resp.headers.update(PRIVATE)
    return resp


def with_csrf(
    request: Request, settings: GatewaySettings, name: str, status_code: int = 200, **ctx: Any
) -> Response:
    token = request.cookies.get(auth.ANON_CSRF_COOKIE) or secrets.token_urlsafe(24)
    resp = render(request, name, status_code=status_code, csrf_token=token, **ctx)
    auth.set_anon_csrf(resp, token, settings.session_cookie_secure)
    return private(resp)


def csrf_ok(request: Request, given: str) -> bool:
    return auth.csrf_ok(request.cookies.get(auth.ANON_CSRF_COOKIE), given)


def back_token(request: Request, settings: GatewaySettings, session_id: str) -> str | None:
    return token_for(settings.secret_key, request.cookies.get(PAYLINK_COOKIE), session_id)


async def link(payments: PaymentsClient, envelope: EnvelopeClient, token: str) -> LinkOut:
    """What payments knows of a client link. A link the envelope service issued but payments
    does not know yet (its paylink.issued is on the way: payments gathers them, and runs
    behind the mail during a big Send All) is waited for a few seconds; then the client is
    asked to come back in a moment ("pending"), never told the link is dead. A token nobody
    issued is answered at once."""
    data = await payments.paylink(token)
    if data is not None and data.status != "unknown":
        return data
    if not await envelope.link_issued(token):
        return data or no_link("unknown")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINK_ARRIVAL_WAIT_SECONDS
    while loop.time() < deadline:
        await asyncio.sleep(0.2)
        data = await payments.paylink(token)
        if data is not None and data.status != "unknown":
            return data
    return no_link("pending")


def expired(request: Request, data: LinkOut) -> Response:
    """A link that does not work: a clear page with the firm's contact, never an error. 410
    for an expired or revoked link, 404 for a token nobody issued; 503 with a page that
    reloads itself for a link that works but has not reached payments yet."""
    if data.status == "pending":
        resp = render(request, "link_pending.html", status_code=503)
        resp.headers["Retry-After"] = "3"
        return private(resp)
    unknown = data.status == "unknown"
    return private(
        render(
            request,
            "link_expired.html",
            status_code=404 if unknown else 410,
            firm=data.firm,
            client_name=data.client_name,
            unknown=unknown,
        )
    )


def no_checkout(request: Request) -> Response:
    return expired(request, no_link("unknown"))


async def pdf_page(
    request: Request,
    payments: PaymentsClient,
    envelope: EnvelopeClient,
    token: str,
    pdf: Pdf | None,
) -> Response:
    if pdf is None:
        return expired(request, await link(payments, envelope, token))
    resp = Response(
        pdf.content, media_type="application/pdf", headers={"Content-Disposition": pdf.disposition}
    )
    return report_view(request, private(resp))  # "viewed", when it came from an email


# Before /v/{token}/{invoice_id}: "statement" is never an invoice id (those are clio:123).
@router.get("/v/{token}/statement", response_model=None)
async def view_statement(
    request: Request, token: str, payments: PaymentsClientDep, envelope: EnvelopeClientDep
) -> Response:
    """The combined statement of every bill on the link, with the Pay All link."""
    pdf = await envelope.link_statement(token)
    return await pdf_page(request, payments, envelope, token, pdf)


@router.get("/v/{token}/{invoice_id}", response_model=None)
async def view_invoice(
    request: Request,
    token: str,
    invoice_id: str,
    payments: PaymentsClientDep,
    envelope: EnvelopeClientDep,
) -> Response:
    pdf = await envelope.link_invoice(token, invoice_id)
    return await pdf_page(request, payments, envelope, token, pdf)


def pay_page_for(
    request: Request,
    settings: GatewaySettings,
    token: str,
    data: LinkOut,
    status_code: int = 200,
    **ctx: Any,
) -> Response:
    ctx = {"focus": "", "error": None} | ctx
    return with_csrf(
        request, settings, "pay.html", status_code=status_code, token=token, data=data, **ctx
    )


@router.get("/pay/{token}", response_model=None)
async def pay_page(
    request: Request,
    token: str,
    settings: SettingsDep,
    payments: PaymentsClientDep,
    envelope: EnvelopeClientDep,
    invoice: str = "",
) -> Response:
    data = await link(payments, envelope, token)
    if data.status != "ok":
        return expired(request, data)
    focus = invoice if any(i.invoice_id == invoice for i in data.items) else ""
    # "viewed", when the client came from an email's tracked link (tracking.py).
    return report_view(request, pay_page_for(request, settings, token, data, focus=focus))


@router.post("/pay/{token}/checkout", response_model=None)
async def start_checkout(
    request: Request,
    token: str,
    settings: SettingsDep,
    payments: PaymentsClientDep,
    envelope: EnvelopeClientDep,
    csrf_token: Annotated[str, Form()] = "",
    scope: Annotated[str, Form()] = "items",
) -> Response:
    """Pay, Pay All or Pay full balance: payments opens a checkout session now."""
    form = await request.form()
    data = await link(payments, envelope, token)
    if data.status != "ok":
        return expired(request, data)
    if not csrf_ok(request, csrf_token):
        error = "This page expired. Please try again."
        return pay_page_for(request, settings, token, data, status_code=403, error=error)
    ids = [str(v) for v in form.getlist("invoice_ids")]
    try:
        started = await payments.start_checkout(
            token, ids, "outstanding" if scope == "outstanding" else "items"
        )
    except Refused as refused:
        if refused.status == 502:
            error = "Payments are not answering right now. Nothing was charged. Please try again."
            return pay_page_for(request, settings, token, data, status_code=503, error=error)
        fresh = await link(payments, envelope, token)
        if fresh.status != "ok":
            return expired(request, fresh)
        detail = refused.detail
        error = detail.get("message") if isinstance(detail, dict) else str(detail)
        return pay_page_for(request, settings, token, fresh, status_code=409, error=error)
    session_id = started.session_id
    redirect = RedirectResponse(started.redirect_url or f"/checkout/{session_id}", status_code=303)
    redirect.set_cookie(
        PAYLINK_COOKIE,
        paylink_cookie(settings.secret_key, session_id, token),
        max_age=PAYLINK_COOKIE_SECONDS,
        path="/checkout",
        httponly=True,
        samesite="lax",
        secure=settings.session_cookie_secure,
    )
    return private(redirect)
