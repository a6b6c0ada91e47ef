"""Settings > Email templates (Clio's "Bill Message Templates"): the firm's templates, kept by
the envelope service, and the helpers the review window and Settings > Invoices use to offer
them."""

import re
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from services.gateway.auth import CurrentUser
from services.gateway.clients import Upstream
from services.gateway.deps import Pages

TEMPLATE_ID = re.compile(r"^[0-9a-f-]{36}$")


def _base(firm_id: str) -> str:
    return f"/internal/firms/{firm_id}/templates"


async def template_list(upstream: Upstream, firm_id: str) -> dict[str, Any]:
    """{"items": [...], "default_id", "builtin": {name, subject, body}, "autofill_fields"}."""
    resp = await upstream.call(upstream.envelope, "GET", _base(firm_id))
    resp.raise_for_status()
    return dict(resp.json())


async def template_text(upstream: Upstream, firm_id: str, template_id: str) -> dict[str, str]:
    """The subject and body of a template of the firm's, or of the built-in one for ""."""
    if not template_id:
        return dict((await template_list(upstream, firm_id))["builtin"])
    if not TEMPLATE_ID.match(template_id):
        raise HTTPException(status_code=404, detail="No such template.")
    resp = await upstream.call(upstream.envelope, "GET", f"{_base(firm_id)}/{template_id}")
    if resp.status_code == 404:
        raise HTTPException(status_code=404, detail="That template no longer exists.")
    resp.raise_for_status()
    return dict(resp.json())


async def set_default_template(upstream: Upstream, firm_id: str, template_id: str) -> bool:
    """Make the template ("" for the built-in one) the firm's default; False if it is gone."""
    if template_id and not TEMPLATE_ID.match(template_id):
        return False
    resp = await upstream.call(
        upstream.envelope,
        "POST",
        f"{_base(firm_id)}/default",
        json={"template_id": template_id or None},
    )
    if resp.status_code == 404:
        return False
    resp.raise_for_status()
    return True


async def template_choices(
    upstream: Upstream, firm_id: str, subject: str, body: str
) -> dict[str, Any]:
    """The review window's Email template select and autofill fields. The template whose text
    the envelope holds is preselected, else the firm's default."""
    listing = await template_list(upstream, firm_id)
    items = listing["items"]
    builtin = listing["builtin"]
    selected = next((t["id"] for t in items if (t["subject"], t["body"]) == (subject, body)), None)
    if selected is None:
        same_as_builtin = (builtin["subject"], builtin["body"]) == (subject, body)
        selected = "" if same_as_builtin else (listing["default_id"] or "")
    return {
        "templates": items,
        "template_selected": selected,
        "autofill_fields": listing["autofill_fields"],
    }


def _form_fields(form: FormData) -> dict[str, Any]:
    return {
        "name": str(form.get("name") or ""),
        "subject": str(form.get("subject") or ""),
        "body": str(form.get("body") or ""),
        "is_default": form.get("is_default") == "on",
    }


def _errors(resp: Any) -> dict[str, str]:
    detail = resp.json().get("detail")
    if isinstance(detail, dict):
        return dict(detail.get("errors") or {detail["field"]: detail["message"]})
    return {"body": str(detail)}


def router(pages: Pages) -> APIRouter:
    r = APIRouter()
    upstream = pages.upstream
    User = pages.User
    FormUser = pages.FormUser
    show = pages.show

    async def load(user: CurrentUser, template_id: str) -> dict[str, Any]:
        if not TEMPLATE_ID.match(template_id):
            raise HTTPException(status_code=404, detail="No such template.")
        resp = await upstream.call(upstream.envelope, "GET", f"{_base(user.firm_id)}/{template_id}")
        if resp.status_code == 404:
            raise HTTPException(status_code=404, detail="No such template.")
        resp.raise_for_status()
        return dict(resp.json())

    async def editor(
        request: Request,
        user: CurrentUser,
        template_id: str | None,
        form: dict[str, Any],
        errors: dict[str, str],
        status_code: int = 200,
    ) -> HTMLResponse:
        """The New template / Edit template form; with no errors, a preview beside it."""
        listing = await template_list(upstream, user.firm_id)
        preview = None
        if not errors:
            resp = await upstream.call(
                upstream.envelope,
                "POST",
                f"{_base(user.firm_id)}/preview",
                json={"subject": form["subject"], "body": form["body"]},
            )
            if resp.status_code == 422:
                errors = {k: v for k, v in _errors(resp).items() if k != "name"}
                status_code = 422 if errors else status_code
            else:
                resp.raise_for_status()
                preview = resp.json()
        return show(
            request,
            "email_template_form.html",
            user,
            status_code=status_code,
            template_id=template_id,
            form=form,
            errors=errors,
            preview=preview,
            autofill_fields=listing["autofill_fields"],
        )

    @r.get("/settings/templates", response_class=HTMLResponse)
    async def templates_page(request: Request, user: User) -> HTMLResponse:
        listing = await template_list(upstream, user.firm_id)
        return show(request, "email_templates.html", user, listing=listing)

    @r.get("/settings/templates/new", response_class=HTMLResponse)
    async def new_template(request: Request, user: User) -> HTMLResponse:
        builtin = (await template_list(upstream, user.firm_id))["builtin"]
        # A new template starts from the built-in text: easier to change than to write.
        form = {"name": "", "subject": builtin["subject"], "body": builtin["body"]}
        return await editor(request, user, None, form | {"is_default": False}, {})

    @r.post("/settings/templates", response_model=None)
    async def create_template(request: Request, user: FormUser) -> Response:
        raw = await request.form()
        form = _form_fields(raw)
        if raw.get("action") == "preview":
            return await editor(request, user, None, form, {})
        resp = await upstream.call(upstream.envelope, "POST", _base(user.firm_id), json=form)
        if resp.status_code == 422:
            return await editor(request, user, None, form, _errors(resp), status_code=422)
        resp.raise_for_status()
        return RedirectResponse("/settings/templates?notice=template_saved", status_code=303)

    # Before /settings/templates/{template_id}, which would take this path.
    @r.post("/settings/templates/default")
    async def choose_default(request: Request, user: FormUser) -> RedirectResponse:
        template_id = str((await request.form()).get("template_id") or "")
        if not await set_default_template(upstream, user.firm_id, template_id):
            raise HTTPException(status_code=404, detail="That template no longer exists.")
        return RedirectResponse("/settings/templates?notice=template_default", status_code=303)

    @r.get("/settings/templates/{template_id}", response_class=HTMLResponse)
    async def edit_template(request: Request, template_id: str, user: User) -> HTMLResponse:
        found = await load(user, template_id)
        form = {k: found[k] for k in ("name", "subject", "body", "is_default")}
        return await editor(request, user, template_id, form, {})

    @r.post("/settings/templates/{template_id}", response_model=None)
    async def save_template(request: Request, template_id: str, user: FormUser) -> Response:
        raw = await request.form()
        form = _form_fields(raw)
        if not TEMPLATE_ID.match(template_id):
            raise HTTPException(status_code=404, detail="No such template.")
        if raw.get("action") == "preview":
            return await editor(request, user, template_id, form, {})
        resp = await upstream.call(
            upstream.envelope, "PUT", f"{_base(user.firm_id)}/{template_id}", json=form
        )
        if resp.status_code == 404:
            raise HTTPException(status_code=404, detail="That template no longer exists.")
        if resp.status_code == 422:
            return await editor(request, user, template_id, form, _errors(resp), status_code=422)
        resp.raise_for_status()
        return RedirectResponse("/settings/templates?notice=template_saved", status_code=303)

    @r.get("/settings/templates/{template_id}/delete", response_class=HTMLResponse)
    async def confirm_delete(request: Request, template_id: str, user: User) -> HTMLResponse:
        found = await load(user, template_id)
        return show(request, "email_template_delete.html", user, template=found)

    @r.post("/settings/templates/{template_id}/delete")
    async def delete_template(template_id: str, user: FormUser) -> RedirectResponse:
        if TEMPLATE_ID.match(template_id):
            resp = await upstream.call(
                upstream.envelope, "DELETE", f"{_base(user.firm_id)}/{template_id}"
            )
            if resp.status_code != 404:  # gone already: a second click, or another tab
                resp.raise_for_status()
        return RedirectResponse("/settings/templates?notice=template_deleted", status_code=303)

    return r
