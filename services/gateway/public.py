"""The client's pages, reached by the link token in an email; no login."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.gateway import auth
from services.gateway.clients import Upstream
from services.gateway.pages import render
from services.gateway.settings import GatewaySettings

# Client pages must never be cached by a shared proxy or indexed.
PRIVATE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"}


def router(settings: GatewaySettings, upstream: Upstream) -> APIRouter:
    r = APIRouter()

    def private(resp: Response) -> Response:
        resp.headers.update(PRIVATE)
        return resp

    def with_csrf(request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        token = request.cookies.get(auth.ANON_CSRF_COOKIE) or secrets.token_urlsafe(24)
        resp = render(request, name, status_code=status_code, csrf_token=token, **ctx)
        resp.set_cookie(
            auth.ANON_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="lax",
            secure=settings.session_cookie_secure,
        )
        return private(resp)

    def csrf_ok(request: Request, given: str) -> bool:
        return auth.csrf_ok(request.cookies.get(auth.ANON_CSRF_COOKIE), given)

    async def link(token: str) -> dict[str, Any]:
        resp = await upstream.call(upstream.payments, "GET", f"/internal/paylinks/{token}")
        resp.raise_for_status()
        return resp.json()

    def expired(request: Request, data: dict[str, Any]) -> Response:
        return private(
            render(
                request,
                "link_expired.html",
                status_code=410,
                firm=data.get("firm"),
                client_name=data.get("client_name"),
            )
        )

    async def pdf_from_envelope(request: Request, token: str, path: str) -> Response:
        resp = await upstream.call(upstream.envelope, "GET", path)
        if resp.status_code == 404:
            return expired(request, await link(token))
        resp.raise_for_status()
        return private(
            Response(
                resp.content,
                media_type="application/pdf",
                headers={"Content-Disposition": resp.headers.get("Content-Disposition", "inline")},
            )
        )

    # Before /v/{token}/{invoice_id}: "statement" is never an invoice id (those are clio:123).
    @r.get("/v/{token}/statement", response_model=None)
    async def view_statement(request: Request, token: str) -> Response:
        """The combined statement of every bill on the link, with the Pay All link."""
        return await pdf_from_envelope(request, token, f"/internal/links/{token}/statement.pdf")

    @r.get("/v/{token}/{invoice_id}", response_model=None)
    async def view_invoice(request: Request, token: str, invoice_id: str) -> Response:
        return await pdf_from_envelope(
            request, token, f"/internal/links/{token}/invoices/{invoice_id}/pdf"
        )

    @r.get("/pay/{token}", response_model=None)
    async def pay_page(request: Request, token: str, invoice: str = "") -> Response:
        data = await link(token)
        if data["status"] != "ok":
            return expired(request, data)
        focus = invoice if any(i["invoice_id"] == invoice for i in data["items"]) else ""
        return with_csrf(request, "pay.html", token=token, data=data, focus=focus, error=None)

    @r.post("/pay/{token}/checkout", response_model=None)
    async def start_checkout(
        request: Request, token: str, csrf_token: Annotated[str, Form()] = ""
    ) -> Response:
        form = await request.form()
        data = await link(token)
        if data["status"] != "ok":
            return expired(request, data)
        if not csrf_ok(request, csrf_token):
            return with_csrf(
                request,
                "pay.html",
                status_code=403,
                token=token,
                data=data,
                focus="",
                error="This page expired. Please try again.",
            )
        ids = [str(v) for v in form.getlist("invoice_ids")]
        resp = await upstream.call(
            upstream.payments,
            "POST",
            f"/internal/paylinks/{token}/checkout",
            json={"invoice_ids": ids},
        )
        if resp.status_code == 409:
            return with_csrf(
                request,
                "pay.html",
                status_code=409,
                token=token,
                data=await link(token),
                focus="",
                error=resp.json()["detail"],
            )
        resp.raise_for_status()
        return RedirectResponse(f"/checkout/{resp.json()['session_id']}", status_code=303)

    async def checkout(session_id: str) -> dict[str, Any] | None:
        resp = await upstream.call(upstream.payments, "GET", f"/internal/checkout/{session_id}")
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json()

    @r.get("/checkout/{session_id}", response_model=None)
    async def checkout_page(request: Request, session_id: str) -> Response:
        cs = await checkout(session_id)
        if cs is None:
            return private(
                render(request, "link_expired.html", status_code=404, firm=None, client_name=None)
            )
        if cs["payment_id"]:
            return RedirectResponse(f"/checkout/{session_id}/done", status_code=303)
        return with_csrf(request, "checkout.html", cs=cs, form={}, errors={}, error=None)

    @r.post("/checkout/{session_id}", response_model=None)
    async def pay(request: Request, session_id: str) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        cs = await checkout(session_id)
        if cs is None:
            return private(
                render(request, "link_expired.html", status_code=404, firm=None, client_name=None)
            )
        safe_form = {k: form.get(k, "") for k in ("name", "email")}
        if not csrf_ok(request, form.get("csrf_token", "")):
            return with_csrf(
                request,
                "checkout.html",
                status_code=403,
                cs=cs,
                form=safe_form,
                errors={},
                error="This page expired. Nothing was charged. Please try again.",
            )
        card = {k: form.get(k, "") for k in ("name", "email", "card_number", "exp", "cvc")}
        resp = await upstream.call(
            upstream.payments, "POST", f"/internal/checkout/{session_id}/card", json=card
        )
        if resp.status_code in (402, 409):
            detail = resp.json()["detail"]
            errors = {detail["field"]: detail["message"]} if detail.get("field") else {}
            return with_csrf(
                request,
                "checkout.html",
                status_code=resp.status_code,
                cs=await checkout(session_id),
                form=safe_form,
                errors=errors,
                error=None if errors else detail["message"],
            )
        resp.raise_for_status()
        return RedirectResponse(f"/checkout/{session_id}/done", status_code=303)

    @r.get("/checkout/{session_id}/done", response_model=None)
    async def done(request: Request, session_id: str) -> Response:
        cs = await checkout(session_id)
        if cs is None or not cs["payment_id"]:
            return RedirectResponse(f"/checkout/{session_id}", status_code=303)
        return private(render(request, "receipt.html", cs=cs))

    return r
