"""Settings: the firm's profile, Settings > Invoices, and the Clio connection."""

import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway.deps import EMAIL_RE, Pages
from services.gateway.firms import publish_firm
from services.gateway.models import Firm, OAuthState
from services.gateway.web_templates import set_default_template, template_list


def router(pages: Pages) -> APIRouter:
    r = APIRouter()
    service = pages.service
    settings = pages.settings
    upstream = pages.upstream
    sm = pages.service.sessionmaker
    User = pages.User
    FormUser = pages.FormUser
    show = pages.show

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
            request,
            "settings.html",
            user,
            firm=firm,
            clio=clio,
            quarantine=quarantine,
            templates=await template_list(upstream, user.firm_id),
            errors={},
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
        # Default template: kept by the envelope service with the templates themselves.
        choice = form.get("default_template")
        if choice is not None and not errors:
            if not await set_default_template(upstream, user.firm_id, str(choice)):
                errors["default_template"] = "That template no longer exists. Choose another."
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
                    templates=await template_list(upstream, user.firm_id),
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

    return r
