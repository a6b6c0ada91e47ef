"""Invoices > Import LEDES: upload a LEDES 1998B file, see what was imported and what was not
(each bad line by its number), give the clients the format has no email for an email."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from services.gateway import auth
from services.gateway.clients.base import Refused
from services.gateway.clients.ledes import LedesClient
from services.gateway.deps import EMAIL_RE, CurrentUser, FormUser
from services.gateway.pages import render
from shared.api.ledes import DEFAULT_DUE_DAYS, MAX_FILE_BYTES, ClientEmail, ImportResult

router = APIRouter()
# The multipart envelope around the file: boundaries, headers, the other few fields.
FORM_OVERHEAD = 64 * 1024
MAX_MB = MAX_FILE_BYTES // (1024 * 1024)
NOTICES = {"email": "Email saved. That client's invoices are on the Invoices page now."}


def ledes_client(request: Request) -> LedesClient:
    """On sync's connection (the gateway's Clients keep one pool per service)."""
    return LedesClient(request.app.state.clients.sync.http)


LedesDep = Annotated[LedesClient, Depends(ledes_client)]


def _page(
    request: Request,
    user: auth.CurrentUser,
    ledes: LedesClient,
    status_code: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    ctx.setdefault("error", None)
    ctx.setdefault("due_days", DEFAULT_DUE_DAYS)
    ctx.setdefault("due_date", "")
    return render(
        request,
        "ledes.html",
        status_code=status_code,
        user=user,
        notice=None,
        max_mb=MAX_MB,
        **ctx,
    )


@router.get("/invoices/import", response_class=HTMLResponse)
async def import_page(request: Request, user: CurrentUser, ledes: LedesDep) -> HTMLResponse:
    return _page(request, user, ledes, imports=await ledes.imports(user.firm_id))


@router.post("/invoices/import", response_model=None)
async def upload(request: Request, user: CurrentUser, ledes: LedesDep) -> Response:
    async def refuse(status: int, message: str, **ctx: Any) -> HTMLResponse:
        imports = await ledes.imports(user.firm_id)
        return _page(request, user, ledes, status, error=message, imports=imports, **ctx)

    # Before the form is read: a file past the limit is refused without taking it in.
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        return await refuse(411, "The upload did not say its size. Please try again.")
    if int(length) > MAX_FILE_BYTES + FORM_OVERHEAD:
        return await refuse(413, _too_large())
    form = await request.form(max_files=1, max_fields=10)
    if not auth.csrf_ok(user.csrf_token, str(form.get("csrf_token") or "")):
        raise HTTPException(
            status_code=403, detail="The form expired. Go back, reload the page and try again."
        )
    due_days_text = str(form.get("due_days") or DEFAULT_DUE_DAYS).strip()
    due_date_text = str(form.get("due_date") or "").strip()
    kept = {"due_days": due_days_text, "due_date": due_date_text}
    if not due_days_text.isdigit() or not 0 <= int(due_days_text) <= 365:
        return await refuse(422, "Days until due must be a whole number from 0 to 365.", **kept)
    due_date: dt.date | None = None
    if due_date_text:
        try:
            due_date = dt.date.fromisoformat(due_date_text)
        except ValueError:
            return await refuse(422, "The due date is not a date.", **kept)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await refuse(400, "Choose a LEDES 1998B file to import.", **kept)
    data = await upload.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return await refuse(413, _too_large(), **kept)
    if not data:
        return await refuse(400, "The file is empty.", **kept)
    try:
        result = await ledes.upload(
            user.firm_id, data, upload.filename, int(due_days_text), due_date
        )
    except Refused as exc:
        return await refuse(exc.status, exc.message or "The file was refused.", **kept)
    return RedirectResponse(f"/invoices/import/{result.import_id}", status_code=303)


def _too_large() -> str:
    return (
        f"The file is larger than {MAX_MB} MB. Export fewer invoices at a time "
        "(a date range, or a few clients) and import each file."
    )


def _result_page(
    request: Request,
    user: auth.CurrentUser,
    result: ImportResult,
    status_code: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    ctx.setdefault("errors", {})
    ctx.setdefault("entered", {})
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return render(
        request,
        "ledes_result.html",
        status_code=status_code,
        user=user,
        notice=notice,
        result=result,
        **ctx,
    )


async def _result(ledes: LedesClient, firm_id: str, import_id: int) -> ImportResult:
    result = await ledes.result(firm_id, import_id)
    if result is None:
        raise HTTPException(status_code=404, detail="No such import.")
    return result


@router.get("/invoices/import/{import_id}", response_class=HTMLResponse)
async def import_result(
    import_id: int, request: Request, user: CurrentUser, ledes: LedesDep
) -> HTMLResponse:
    return _result_page(request, user, await _result(ledes, user.firm_id, import_id))


@router.post("/invoices/import/{import_id}/clients", response_model=None)
async def client_email(
    import_id: int, request: Request, user: FormUser, ledes: LedesDep
) -> Response:
    result = await _result(ledes, user.firm_id, import_id)
    form = await request.form()
    ref = str(form.get("client_ref") or "")
    email = str(form.get("email") or "").strip()
    name = str(form.get("name") or "").strip()
    if not 1 <= len(ref) <= 100:
        raise HTTPException(status_code=404, detail="No such client.")
    errors: dict[str, str] = {}
    if not EMAIL_RE.match(email) or len(email) > 320:
        errors[ref] = "Enter an email address, like billing@client.com."
    elif len(name) > 300:
        errors[ref] = "The name is too long (300 characters at most)."
    if not errors:
        try:
            await ledes.set_client(
                user.firm_id, ClientEmail(client_ref=ref, email=email, name=name)
            )
        except Refused as exc:
            if exc.status == 404:
                raise HTTPException(status_code=404, detail="No such client.") from exc
            errors[ref] = exc.message or "That email was refused."
        else:
            return RedirectResponse(f"/invoices/import/{import_id}?notice=email", status_code=303)
    entered = {ref: {"email": email, "name": name}}
    return _result_page(request, user, result, 422, errors=errors, entered=entered)
