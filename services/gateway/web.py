"""The firm's pages: log in, Invoices, Review & Send, Settings, Payments.

No `from __future__ import annotations` here: FastAPI resolves the route signatures'
Annotated dependencies, which are local to `router`, at definition time."""

import json
import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import IntegrityError

from services.gateway import auth
from services.gateway.auth import CurrentUser
from services.gateway.clients import ServiceUnavailable, Upstream
from services.gateway.firms import firm_profile, publish_firm
from services.gateway.models import Batch, Firm, OAuthState, SendRequest
from services.gateway.pages import render
from services.gateway.settings import GatewaySettings
from shared.events import EnvelopeSendRequested
from shared.runtime import Service

EMAIL_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
PER_PAGE_CHOICES = (10, 25, 50, 100)
NOTICES = {
    "synced": "Sync finished.",
    "sent": "Envelope sent to the outbox. It will show as sent within seconds.",
    "settings": "Settings saved.",
    "clio": "Clio is connected. Your bills are syncing.",
}


class LoginRequired(Exception):
    pass


def parse_emails(text: str) -> tuple[list[str], list[str]]:
    """Split a To/Cc field on commas, semicolons and spaces; returns (valid, invalid)."""
    parts = [p.strip() for p in re.split(r"[,;\s]+", text or "") if p.strip()]
    good = [p for p in parts if EMAIL_RE.match(p)]
    bad = [p for p in parts if not EMAIL_RE.match(p)]
    return good, bad


def router(service: Service, settings: GatewaySettings, upstream: Upstream) -> APIRouter:
    r = APIRouter()
    sm = service.sessionmaker

    async def current_user(request: Request) -> CurrentUser:
        async with sm() as s:
            user = await auth.load_session(s, request.cookies.get(auth.SESSION_COOKIE))
        if user is None:
            raise LoginRequired()
        return user

    User = Annotated[CurrentUser, Depends(current_user)]

    async def check_csrf(request: Request, user: User) -> CurrentUser:
        form = await request.form()
        if not auth.csrf_ok(user.csrf_token, str(form.get("csrf_token") or "")):
            raise HTTPException(
                status_code=403, detail="The form expired. Go back, reload the page and try again."
            )
        return user

    FormUser = Annotated[CurrentUser, Depends(check_csrf)]

    async def firm_name(firm_id: str) -> str:
        async with sm() as s:
            firm = await s.get(Firm, firm_id)
            return firm.name if firm else ""

    def show(
        request: Request, name: str, user: CurrentUser, status_code: int = 200, **ctx: Any
    ) -> HTMLResponse:
        notice = NOTICES.get(request.query_params.get("notice", ""))
        return render(request, name, status_code=status_code, user=user, notice=notice, **ctx)

    # --- log in -------------------------------------------------------------------------

    @r.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        resp = render(request, "login.html", csrf_token=token, error=None, email="")
        resp.set_cookie(
            auth.ANON_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="lax",
            secure=settings.session_cookie_secure,
        )
        return resp

    @r.post("/login", response_model=None)
    async def login(
        request: Request,
        email: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form()] = "",
    ) -> Response:
        if not auth.csrf_ok(request.cookies.get(auth.ANON_CSRF_COOKIE), csrf_token):
            return render(
                request,
                "login.html",
                status_code=403,
                csrf_token=csrf_token,
                error="The form expired. Please try again.",
                email=email,
            )
        async with sm() as s, s.begin():
            user = await auth.authenticate(s, email, password)
            if user is None:
                return render(
                    request,
                    "login.html",
                    status_code=401,
                    csrf_token=csrf_token,
                    error="That email and password do not match.",
                    email=email,
                )
            token = await auth.start_session(s, user, settings.session_hours)
        resp = RedirectResponse("/invoices", status_code=303)
        resp.set_cookie(
            auth.SESSION_COOKIE,
            token,
            httponly=True,
            samesite="lax",
            secure=settings.session_cookie_secure,
            max_age=settings.session_hours * 3600,
        )
        resp.delete_cookie(auth.ANON_CSRF_COOKIE)
        return resp

    @r.post("/logout")
    async def logout(request: Request, user: FormUser) -> RedirectResponse:
        async with sm() as s, s.begin():
            await auth.end_session(s, request.cookies.get(auth.SESSION_COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(auth.SESSION_COOKIE)
        return resp

    @r.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse("/invoices", status_code=303)

    # --- Invoices -----------------------------------------------------------------------

    @r.get("/invoices", response_class=HTMLResponse)
    async def invoices(
        request: Request,
        user: User,
        q: str = "",
        state: str = "unpaid",
        kind: str = "all",
        page: Annotated[int, Query(ge=1)] = 1,
        per_page: int = 25,
    ) -> HTMLResponse:
        per_page = per_page if per_page in PER_PAGE_CHOICES else 25
        params = {"q": q, "state": state, "kind": kind, "page": page, "per_page": per_page}
        resp = await upstream.call(
            upstream.envelope, "GET", f"/internal/firms/{user.firm_id}/invoices", params=params
        )
        resp.raise_for_status()
        data = resp.json()
        clio = (
            await upstream.call(upstream.sync, "GET", f"/internal/firms/{user.firm_id}/clio")
        ).json()
        pages = max(1, -(-data["total"] // per_page))

        def link(**changes: Any) -> str:
            return "/invoices?" + urlencode({**params, **changes})

        return show(
            request,
            "invoices.html",
            user,
            data=data,
            params=params,
            pages=pages,
            link=link,
            per_page_choices=PER_PAGE_CHOICES,
            clio=clio,
            firm_name=await firm_name(user.firm_id),
        )

    @r.post("/invoices/sync")
    async def sync_now(user: FormUser) -> RedirectResponse:
        resp = await upstream.call(upstream.sync, "POST", f"/internal/firms/{user.firm_id}/sync")
        if resp.status_code == 409:
            return RedirectResponse("/settings", status_code=303)
        return RedirectResponse("/invoices?notice=synced", status_code=303)

    @r.get("/invoices/{invoice_id}/pdf")
    async def invoice_pdf(invoice_id: str, user: User) -> Response:
        resp = await upstream.call(
            upstream.envelope, "GET", f"/internal/firms/{user.firm_id}/invoices/{invoice_id}/pdf"
        )
        if resp.status_code == 404:
            raise HTTPException(status_code=404, detail="No such invoice.")
        resp.raise_for_status()
        return Response(
            resp.content,
            media_type="application/pdf",
            headers={"Content-Disposition": resp.headers.get("Content-Disposition", "inline")},
        )

    # --- Review & Send ------------------------------------------------------------------

    @r.post("/envelopes/review", response_model=None)
    async def review_selected(request: Request, user: FormUser) -> Response:
        form = await request.form()
        ids = [str(v) for v in form.getlist("invoice_ids")]
        if not ids:
            return RedirectResponse("/invoices", status_code=303)
        resp = await upstream.call(
            upstream.envelope,
            "POST",
            f"/internal/firms/{user.firm_id}/envelopes/drafts",
            json={"invoice_ids": ids, "created_by": user.id},
        )
        resp.raise_for_status()
        envelopes = resp.json()
        if not envelopes:
            return RedirectResponse("/invoices", status_code=303)
        batch_id = auth.new_id()
        async with sm() as s, s.begin():
            s.add(
                Batch(
                    id=batch_id,
                    firm_id=user.firm_id,
                    user_id=user.id,
                    envelope_ids=json.dumps([e["id"] for e in envelopes]),
                    created_at=datetime.now(UTC),
                )
            )
        return RedirectResponse(f"/batches/{batch_id}/0", status_code=303)

    async def load_batch(user: CurrentUser, batch_id: str) -> list[str]:
        async with sm() as s:
            batch = await s.get(Batch, batch_id)
        if batch is None or batch.firm_id != user.firm_id:
            raise HTTPException(status_code=404, detail="No such batch.")
        return json.loads(batch.envelope_ids)

    async def load_envelope(user: CurrentUser, envelope_id: str) -> dict[str, Any]:
        resp = await upstream.call(
            upstream.envelope, "GET", f"/internal/firms/{user.firm_id}/envelopes/{envelope_id}"
        )
        if resp.status_code == 404:
            raise HTTPException(status_code=404, detail="No such envelope.")
        resp.raise_for_status()
        return resp.json()

    async def invoices_of(user: CurrentUser, ids: list[str]) -> list[dict[str, Any]]:
        # The envelope's bills, for the review window's list and View Invoice buttons.
        resp = await upstream.call(
            upstream.envelope,
            "GET",
            f"/internal/firms/{user.firm_id}/invoices",
            params={"state": "all", "per_page": 200, "ids": ",".join(ids)},
        )
        resp.raise_for_status()
        by_id = {i["invoice_id"]: i for i in resp.json()["items"]}
        return [by_id[i] for i in ids if i in by_id]

    @r.get("/batches/{batch_id}/{n}", response_class=HTMLResponse)
    async def review(request: Request, batch_id: str, n: int, user: User) -> HTMLResponse:
        ids = await load_batch(user, batch_id)
        if not 0 <= n < len(ids):
            raise HTTPException(status_code=404, detail="No such envelope in this batch.")
        env = await load_envelope(user, ids[n])
        return show(
            request,
            "review.html",
            user,
            batch_id=batch_id,
            n=n,
            count=len(ids),
            env=env,
            items=await invoices_of(user, env["invoice_ids"]),
            to=", ".join(env["to"]),
            subject=env["subject"],
            body=env["body"],
            preview=env["preview"],
            errors={},
        )

    @r.post("/batches/{batch_id}/{n}/continue", response_class=HTMLResponse)
    async def review_continue(
        request: Request,
        batch_id: str,
        n: int,
        user: FormUser,
        to: Annotated[str, Form()] = "",
        subject: Annotated[str, Form()] = "",
        body: Annotated[str, Form()] = "",
    ) -> HTMLResponse:
        ids = await load_batch(user, batch_id)
        if not 0 <= n < len(ids):
            raise HTTPException(status_code=404, detail="No such envelope in this batch.")
        env = await load_envelope(user, ids[n])
        errors: dict[str, str] = {}
        good, bad = parse_emails(to)
        if bad:
            errors["to"] = "Not an email address: " + ", ".join(bad)
        elif not good:
            errors["to"] = "Add at least one recipient."
        if not subject.strip():
            errors["subject"] = "The subject cannot be empty."
        preview = env["preview"]
        resp = await upstream.call(
            upstream.envelope,
            "POST",
            f"/internal/firms/{user.firm_id}/envelopes/{env['id']}/preview",
            json={"subject": subject, "body": body},
        )
        if resp.status_code == 422:
            errors["body"] = "Template error: " + str(resp.json().get("detail"))
        else:
            resp.raise_for_status()
            preview = resp.json()
        items = await invoices_of(user, env["invoice_ids"])
        common = dict(
            batch_id=batch_id,
            n=n,
            count=len(ids),
            env=env,
            items=items,
            to=to,
            subject=subject,
            body=body,
            preview=preview,
        )
        if errors:
            return show(request, "review.html", user, status_code=422, errors=errors, **common)
        return show(request, "confirm.html", user, send_id=auth.new_id(), recipients=good, **common)

    @r.post("/batches/{batch_id}/{n}/back", response_class=HTMLResponse)
    async def review_back(
        request: Request,
        batch_id: str,
        n: int,
        user: FormUser,
        to: Annotated[str, Form()] = "",
        subject: Annotated[str, Form()] = "",
        body: Annotated[str, Form()] = "",
    ) -> HTMLResponse:
        """Go Back: the review window again, with the edits kept."""
        ids = await load_batch(user, batch_id)
        if not 0 <= n < len(ids):
            raise HTTPException(status_code=404, detail="No such envelope in this batch.")
        env = await load_envelope(user, ids[n])
        resp = await upstream.call(
            upstream.envelope,
            "POST",
            f"/internal/firms/{user.firm_id}/envelopes/{env['id']}/preview",
            json={"subject": subject, "body": body},
        )
        preview = resp.json() if resp.status_code == 200 else env["preview"]
        return show(
            request,
            "review.html",
            user,
            batch_id=batch_id,
            n=n,
            count=len(ids),
            env=env,
            items=await invoices_of(user, env["invoice_ids"]),
            to=to,
            subject=subject,
            body=body,
            preview=preview,
            errors={},
        )

    @r.post("/batches/{batch_id}/{n}/send")
    async def send_now(
        batch_id: str,
        n: int,
        user: FormUser,
        send_id: Annotated[str, Form()],
        to: Annotated[str, Form()] = "",
        subject: Annotated[str, Form()] = "",
        body: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        ids = await load_batch(user, batch_id)
        if not 0 <= n < len(ids):
            raise HTTPException(status_code=404, detail="No such envelope in this batch.")
        env = await load_envelope(user, ids[n])
        good, bad = parse_emails(to)
        if bad or not good or not subject.strip():
            return RedirectResponse(f"/batches/{batch_id}/{n}", status_code=303)
        async with sm() as s:
            firm = await s.get(Firm, user.firm_id)
        try:
            async with sm() as s, s.begin():
                s.add(
                    SendRequest(
                        send_id=send_id,
                        firm_id=user.firm_id,
                        envelope_id=env["id"],
                        batch_id=batch_id,
                        user_id=user.id,
                        created_at=datetime.now(UTC),
                    )
                )
                await s.flush()
                await service.publish(
                    s,
                    EnvelopeSendRequested(
                        firm_id=user.firm_id,
                        envelope_id=env["id"],
                        send_id=send_id,
                        invoice_ids=env["invoice_ids"],
                        client_id=env["client_id"],
                        to=good,
                        subject=subject,
                        body=body,
                        delivery=(firm.default_delivery if firm else "link"),  # type: ignore[arg-type]
                        requested_by=user.id,
                    ),
                )
        except IntegrityError:
            pass  # this very click was already taken: a double click or a retried request
        nxt = n + 1
        if nxt < len(ids):
            return RedirectResponse(f"/batches/{batch_id}/{nxt}?notice=sent", status_code=303)
        return RedirectResponse("/invoices?notice=sent", status_code=303)

    # --- Settings -----------------------------------------------------------------------

    @r.get("/settings", response_class=HTMLResponse)
    async def settings_page(request: Request, user: User) -> HTMLResponse:
        async with sm() as s:
            firm = await s.get(Firm, user.firm_id)
        clio = (
            await upstream.call(upstream.sync, "GET", f"/internal/firms/{user.firm_id}/clio")
        ).json()
        quarantine = (
            await upstream.call(upstream.sync, "GET", f"/internal/firms/{user.firm_id}/quarantine")
        ).json()
        return show(
            request, "settings.html", user, firm=firm, clio=clio, quarantine=quarantine, errors={}
        )

    @r.post("/settings", response_model=None)
    async def save_settings(request: Request, user: FormUser) -> Response:
        form = await request.form()
        errors: dict[str, str] = {}
        name = str(form.get("name") or "").strip()
        email = str(form.get("email") or "").strip()
        if not name:
            errors["name"] = "The firm needs a name: clients see it on every email."
        if email and not EMAIL_RE.match(email):
            errors["email"] = "Not an email address."
        delivery = str(form.get("default_delivery") or "link")
        if delivery not in ("link", "attachment"):
            errors["default_delivery"] = "Choose a delivery."
        async with sm() as s, s.begin():
            firm = await s.get(Firm, user.firm_id)
            assert firm is not None
            if errors:
                clio = (
                    await upstream.call(
                        upstream.sync, "GET", f"/internal/firms/{user.firm_id}/clio"
                    )
                ).json()
                return show(
                    request,
                    "settings.html",
                    user,
                    status_code=422,
                    firm=firm,
                    clio=clio,
                    quarantine=[],
                    errors=errors,
                )
            firm.name = name
            firm.email = email or None
            firm.phone = str(form.get("phone") or "").strip() or None
            firm.address = str(form.get("address") or "").strip() or None
            firm.website = str(form.get("website") or "").strip() or None
            firm.combine_envelopes = form.get("combine_envelopes") == "on"
            firm.default_delivery = delivery
            await publish_firm(service, s, firm)
        return RedirectResponse("/settings?notice=settings", status_code=303)

    @r.post("/settings/clio/connect")
    async def clio_connect(request: Request, user: FormUser) -> RedirectResponse:
        state = secrets.token_urlsafe(24)
        async with sm() as s, s.begin():
            s.add(
                OAuthState(
                    state=state, firm_id=user.firm_id, user_id=user.id, created_at=datetime.now(UTC)
                )
            )
        redirect_uri = f"{settings.public_base_url}/clio/callback"
        resp = await upstream.call(
            upstream.sync,
            "GET",
            "/internal/clio/authorize-url",
            params={"redirect_uri": redirect_uri, "state": state},
        )
        resp.raise_for_status()
        return RedirectResponse(resp.json()["url"], status_code=303)

    @r.get("/clio/callback", response_model=None)
    async def clio_callback(
        request: Request, user: User, code: str = "", state: str = "", error: str = ""
    ) -> Response:
        async with sm() as s, s.begin():
            row = await s.get(OAuthState, state) if state else None
            if row is not None:
                await s.delete(row)
        if row is None or row.firm_id != user.firm_id:
            raise HTTPException(
                status_code=400,
                detail="This Clio authorization was not started here. Connect again from Settings.",
            )
        if error or not code:
            raise HTTPException(
                status_code=400,
                detail=f"Clio did not authorize the connection ({error or 'no code'}).",
            )
        resp = await upstream.call(
            upstream.sync,
            "POST",
            f"/internal/firms/{user.firm_id}/clio/connect",
            json={"code": code, "redirect_uri": f"{settings.public_base_url}/clio/callback"},
        )
        if resp.status_code >= 400:
            raise HTTPException(
                status_code=502, detail=f"Clio connection failed: {resp.json().get('detail')}"
            )
        return RedirectResponse("/invoices?notice=clio", status_code=303)

    # --- Payments -----------------------------------------------------------------------

    @r.get("/payments", response_class=HTMLResponse)
    async def payments(request: Request, user: User) -> HTMLResponse:
        resp = await upstream.call(
            upstream.payments, "GET", f"/internal/firms/{user.firm_id}/payments"
        )
        resp.raise_for_status()
        return show(request, "payments.html", user, payments=resp.json())

    return r


__all__ = ["LoginRequired", "ServiceUnavailable", "firm_profile", "router"]
