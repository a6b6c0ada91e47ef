"""Settings > Email templates (Clio's "Bill Message Templates"): the firm's templates, kept by
the envelope service, and the helpers the review window and Settings > Invoices use to offer
them."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from services.gateway.clients.base import Refused
from services.gateway.clients.envelope import EnvelopeClient
from services.gateway.deps import CurrentUser, EnvelopeClientDep, FormUser, show
from shared.api.envelope import BuiltinOut, TemplateIn, TemplateOut

TEMPLATE_ID = re.compile(r"^[0-9a-f-]{36}$")
GONE = "That template no longer exists."

router = APIRouter()


async def template_text(
    envelope: EnvelopeClient, firm_id: str, template_id: str
) -> BuiltinOut | TemplateOut:
    """The subject and body of a template of the firm's, or of the built-in one for ""."""
    if not template_id:
        return (await envelope.templates(firm_id)).builtin
    if not TEMPLATE_ID.match(template_id):
        raise HTTPException(status_code=404, detail="No such template.")
    found = await envelope.template(firm_id, template_id)
    if found is None:
        raise HTTPException(status_code=404, detail=GONE)
    return found


async def set_default_template(envelope: EnvelopeClient, firm_id: str, template_id: str) -> bool:
    """Make the template ("" for the built-in one) the firm's default; False if it is gone."""
    if template_id and not TEMPLATE_ID.match(template_id):
        return False
    return await envelope.set_default_template(firm_id, template_id or None)


async def template_choices(
    envelope: EnvelopeClient, firm_id: str, subject: str, body: str
) -> dict[str, Any]:
    """The review window's Email template select and autofill fields. The template whose text
    the envelope holds is preselected, else the firm's default."""
    listing = await envelope.templates(firm_id)
    builtin = listing.builtin
    selected = next((t.id for t in listing.items if (t.subject, t.body) == (subject, body)), None)
    if selected is None:
        same_as_builtin = (builtin.subject, builtin.body) == (subject, body)
        selected = "" if same_as_builtin else (listing.default_id or "")
    return {
        "templates": listing.items,
        "template_selected": selected,
        "autofill_fields": listing.autofill_fields,
    }


def _form_fields(form: FormData) -> TemplateIn:
    return TemplateIn(
        name=str(form.get("name") or ""),
        subject=str(form.get("subject") or ""),
        body=str(form.get("body") or ""),
        is_default=form.get("is_default") == "on",
    )


def _errors(refused: Refused) -> dict[str, str]:
    detail = refused.detail
    if isinstance(detail, dict):
        return dict(detail.get("errors") or {detail["field"]: detail["message"]})
    return {"body": str(detail)}


async def _load(envelope: EnvelopeClient, user: CurrentUser, template_id: str) -> TemplateOut:
    found = (
        await envelope.template(user.firm_id, template_id)
        if TEMPLATE_ID.match(template_id)
        else None
    )
    if found is None:
        raise HTTPException(status_code=404, detail="No such template.")
    return found


async def _editor(
    request: Request,
    envelope: EnvelopeClient,
    user: CurrentUser,
    template_id: str | None,
    form: TemplateIn,
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    """The New template / Edit template form; with no errors, a preview beside it."""
    listing = await envelope.templates(user.firm_id)
    preview = None
    if not errors:
        try:
            preview = await envelope.preview_template(user.firm_id, form.subject, form.body)
        except Refused as refused:
            errors = {k: v for k, v in _errors(refused).items() if k != "name"}
            status_code = 422 if errors else status_code
    return show(
        request,
        "email_template_form.html",
        user,
        status_code=status_code,
        template_id=template_id,
        form=form,
        errors=errors,
        preview=preview,
        autofill_fields=listing.autofill_fields,
    )


@router.get("/settings/templates", response_class=HTMLResponse)
async def templates_page(
    request: Request, user: CurrentUser, envelope: EnvelopeClientDep
) -> HTMLResponse:
    listing = await envelope.templates(user.firm_id)
    return show(request, "email_templates.html", user, listing=listing)


@router.get("/settings/templates/new", response_class=HTMLResponse)
async def new_template(
    request: Request, user: CurrentUser, envelope: EnvelopeClientDep
) -> HTMLResponse:
    builtin = (await envelope.templates(user.firm_id)).builtin
    # A new template starts from the built-in text: easier to change than to write.
    form = TemplateIn(name="", subject=builtin.subject, body=builtin.body, is_default=False)
    return await _editor(request, envelope, user, None, form, {})


@router.post("/settings/templates", response_model=None)
async def create_template(
    request: Request, user: FormUser, envelope: EnvelopeClientDep
) -> Response:
    raw = await request.form()
    form = _form_fields(raw)
    if raw.get("action") == "preview":
        return await _editor(request, envelope, user, None, form, {})
    try:
        await envelope.create_template(user.firm_id, form)
    except Refused as refused:
        return await _editor(request, envelope, user, None, form, _errors(refused), 422)
    return RedirectResponse("/settings/templates?notice=template_saved", status_code=303)


# Before /settings/templates/{template_id}, which would take this path.
@router.post("/settings/templates/default")
async def choose_default(
    request: Request, user: FormUser, envelope: EnvelopeClientDep
) -> RedirectResponse:
    template_id = str((await request.form()).get("template_id") or "")
    if not await set_default_template(envelope, user.firm_id, template_id):
        raise HTTPException(status_code=404, detail=GONE)
    return RedirectResponse("/settings/templates?notice=template_default", status_code=303)


@router.get("/settings/templates/{template_id}", response_class=HTMLResponse)
async def edit_template(
    request: Request, template_id: str, user: CurrentUser, envelope: EnvelopeClientDep
) -> HTMLResponse:
    found = await _load(envelope, user, template_id)
    form = TemplateIn(
        name=found.name, subject=found.subject, body=found.body, is_default=found.is_default
    )
    return await _editor(request, envelope, user, template_id, form, {})


@router.post("/settings/templates/{template_id}", response_model=None)
async def save_template(
    request: Request, template_id: str, user: FormUser, envelope: EnvelopeClientDep
) -> Response:
    raw = await request.form()
    form = _form_fields(raw)
    if not TEMPLATE_ID.match(template_id):
        raise HTTPException(status_code=404, detail="No such template.")
    if raw.get("action") == "preview":
        return await _editor(request, envelope, user, template_id, form, {})
    try:
        await envelope.update_template(user.firm_id, template_id, form)
    except Refused as refused:
        if refused.status == 404:
            raise HTTPException(status_code=404, detail=GONE) from refused
        return await _editor(request, envelope, user, template_id, form, _errors(refused), 422)
    return RedirectResponse("/settings/templates?notice=template_saved", status_code=303)


@router.get("/settings/templates/{template_id}/delete", response_class=HTMLResponse)
async def confirm_delete(
    request: Request, template_id: str, user: CurrentUser, envelope: EnvelopeClientDep
) -> HTMLResponse:
    found = await _load(envelope, user, template_id)
    return show(request, "email_template_delete.html", user, template=found)


@router.post("/settings/templates/{template_id}/delete")
async def delete_template(
    template_id: str, user: FormUser, envelope: EnvelopeClientDep
) -> RedirectResponse:
    # Gone already (a second click, or another tab) is as good as deleted.
    if TEMPLATE_ID.match(template_id):
        await envelope.delete_template(user.firm_id, template_id)
    return RedirectResponse("/settings/templates?notice=template_deleted", status_code=303)
