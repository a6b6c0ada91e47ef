"""Review & Send: drafting envelopes, the review window, Continue, Send Envelope Now."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.gateway import auth
from services.gateway.batches import envelope_ids, is_balance, load_batch, new_batch
from services.gateway.clients.base import Refused, ServiceUnavailable
from services.gateway.clients.envelope import EnvelopeClient
from services.gateway.clients.timeline import timeline_client
from services.gateway.deps import (
    DELIVERIES,
    CurrentUser,
    EnvelopeClientDep,
    FormUser,
    ServiceDep,
    SyncClientDep,
    parse_emails,
    pay_all_checked,
    show,
)
from services.gateway.models import Batch
from services.gateway.sending import Send, next_seq, request_send, sent_envelopes
from services.gateway.web_templates import template_choices, template_text
from shared.api.envelope import EnvelopeOut, InvoiceOut
from shared.events import Delivery

router = APIRouter()


@dataclass(frozen=True)
class Reviewed:
    """The envelope in the review window: its batch, the batch's envelope ids, its place."""

    batch: Batch
    ids: list[str]
    n: int
    env: EnvelopeOut


async def reviewed(
    batch_id: str, n: int, user: CurrentUser, service: ServiceDep, envelope: EnvelopeClientDep
) -> Reviewed:
    """The n-th envelope of the firm's batch; 404 when there is none."""
    batch = await load_batch(service, user, batch_id)
    ids = envelope_ids(batch)
    if not 0 <= n < len(ids):
        raise HTTPException(status_code=404, detail="No such envelope in this batch.")
    env = await envelope.envelope(user.firm_id, ids[n])
    if env is None:
        raise HTTPException(status_code=404, detail="No such envelope.")
    return Reviewed(batch, ids, n, env)


@dataclass(frozen=True)
class ReviewForm:
    """The review window's form, as Continue, Go Back and Apply template post it."""

    to: str
    subject: str
    body: str
    delivery: str
    pay_all: bool
    template_id: str


async def review_form(
    to: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    delivery: Annotated[str, Form()] = "",
    pay_all_outstanding: Annotated[str, Form()] = "",
    template_id: Annotated[str, Form()] = "",
) -> ReviewForm:
    pay_all = pay_all_checked(pay_all_outstanding)
    return ReviewForm(to, subject, body, delivery, pay_all, template_id)


# The review window's envelope (after the user: a bad CSRF token is refused first).
ReviewedDep = Annotated[Reviewed, Depends(reviewed)]
ReviewFormDep = Annotated[ReviewForm, Depends(review_form)]


async def invoices_of(
    envelope: EnvelopeClient, user: CurrentUser, ids: list[str]
) -> list[InvoiceOut]:
    # The envelope's bills, for the review window's list and View Invoice buttons.
    page = await envelope.invoices(user.firm_id, state="all", per_page=200, ids=",".join(ids))
    by_id = {i.invoice_id: i for i in page.items}
    return [by_id[i] for i in ids if i in by_id]


def send_settings(
    batch: Batch, env: EnvelopeOut, delivery: str | None = None, pay_all: bool | None = None
) -> dict[str, Any]:
    """Additional settings and Payment settings as the page shows them: as posted, else the
    envelope's delivery (the firm's default when it was drafted) and, for a client balance,
    payment for all unpaid bills."""
    return {
        "delivery": delivery if delivery in DELIVERIES else (env.delivery or Delivery.link),
        "pay_all_outstanding": is_balance(batch) if pay_all is None else pay_all,
        "combined": len(env.invoice_ids) > 1,
    }


async def review_context(
    envelope: EnvelopeClient,
    user: CurrentUser,
    it: Reviewed,
    form: ReviewForm | None,
    preview: Any,
) -> dict[str, Any]:
    """What the review window and the confirmation both show: the envelope as drafted, or
    as the form posted it."""
    env = it.env
    return dict(
        batch_id=it.batch.id,
        n=it.n,
        count=len(it.ids),
        env=env,
        items=await invoices_of(envelope, user, env.invoice_ids),
        to=form.to if form else ", ".join(env.to),
        subject=form.subject if form else env.subject,
        body=form.body if form else env.body,
        preview=preview,
        **(
            send_settings(it.batch, env, form.delivery, form.pay_all)
            if form
            else send_settings(it.batch, env)
        ),
    )


async def review_page(
    request: Request,
    envelope: EnvelopeClient,
    user: CurrentUser,
    context: dict[str, Any],
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    choices = await template_choices(envelope, user.firm_id, context["subject"], context["body"])
    return show(
        request,
        "review.html",
        user,
        status_code=422 if errors else 200,
        errors=errors or {},
        **context,
        **choices,
    )


@router.post("/envelopes/review", response_model=None)
async def review_selected(
    request: Request, user: FormUser, service: ServiceDep, envelope: EnvelopeClientDep
) -> Response:
    form = await request.form()
    ids = [str(v) for v in form.getlist("invoice_ids")]
    if not ids:
        return RedirectResponse("/invoices", status_code=303)
    envelopes = await envelope.drafts(user.firm_id, ids, user.id)
    if not envelopes:
        return RedirectResponse("/invoices", status_code=303)
    batch_id = await new_batch(service, user, [e.id for e in envelopes])
    return RedirectResponse(f"/batches/{batch_id}/0", status_code=303)


@router.get("/contacts")
async def contacts(user: CurrentUser, sync: SyncClientDep, q: str = "") -> JSONResponse:
    """The review window's contact picker: the firm's Clio contacts matching what was typed.
    It only suggests; the To field is what is sent, so a failure here suggests nothing."""
    try:
        found = await sync.contacts(user.firm_id, q[:200], limit=8)
    except ServiceUnavailable:
        return JSONResponse([], status_code=503)
    except Refused:
        return JSONResponse([], status_code=502)
    return JSONResponse(
        [{"name": c.name, "email": c.email} for c in found],
        headers={"Cache-Control": "no-store"},
    )


@router.get("/batches/{batch_id}/{n}", response_class=HTMLResponse)
async def review(
    request: Request, user: CurrentUser, it: ReviewedDep, envelope: EnvelopeClientDep
) -> HTMLResponse:
    context = await review_context(envelope, user, it, None, it.env.preview)
    return await review_page(request, envelope, user, context)


@router.post("/batches/{batch_id}/{n}/continue", response_class=HTMLResponse)
async def review_continue(
    request: Request,
    user: FormUser,
    it: ReviewedDep,
    form: ReviewFormDep,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
) -> HTMLResponse:
    errors: dict[str, str] = {}
    good, bad = parse_emails(form.to)
    if bad:
        errors["to"] = "Not an email address: " + ", ".join(bad)
    elif not good:
        errors["to"] = "Add at least one recipient."
    else:  # an address that hard-bounced gets nothing until it is changed or cleared
        blocked = await timeline_client(request).suppressed(user.firm_id, good)
        if blocked:
            errors["to"] = " ".join(x.message for x in blocked)
    if not form.subject.strip():
        errors["subject"] = "The subject cannot be empty."
    if form.delivery and form.delivery not in DELIVERIES:
        errors["delivery"] = "Choose how to share the bill."
    preview: Any = it.env.preview
    try:
        preview = await envelope.preview(user.firm_id, it.env.id, form.subject, form.body)
    except Refused as refused:
        errors["body"] = "Template error: " + str(refused.detail)
    context = await review_context(envelope, user, it, form, preview)
    if errors:
        return await review_page(request, envelope, user, context, errors)
    return show(
        request,
        "confirm.html",
        user,
        send_id=auth.new_id(),
        seq=await next_seq(service, it.env.id),
        balance=is_balance(it.batch),
        recipients=good,
        **context,
    )


async def back_page(
    request: Request,
    user: CurrentUser,
    envelope: EnvelopeClient,
    it: Reviewed,
    form: ReviewForm,
) -> HTMLResponse:
    """The review window again, with the form's edits kept."""
    preview: Any = it.env.preview
    try:
        preview = await envelope.preview(user.firm_id, it.env.id, form.subject, form.body)
    except (Refused, httpx.HTTPStatusError):
        pass  # the envelope's own preview, as the review window first showed it
    context = await review_context(envelope, user, it, form, preview)
    return await review_page(request, envelope, user, context)


@router.post("/batches/{batch_id}/{n}/back", response_class=HTMLResponse)
async def review_back(
    request: Request,
    user: FormUser,
    it: ReviewedDep,
    form: ReviewFormDep,
    envelope: EnvelopeClientDep,
) -> HTMLResponse:
    """Go Back: the review window again, with the edits kept."""
    return await back_page(request, user, envelope, it, form)


@router.post("/batches/{batch_id}/{n}/template", response_class=HTMLResponse)
async def apply_template(
    request: Request,
    user: FormUser,
    form: ReviewFormDep,
    envelope: EnvelopeClientDep,
    service: ServiceDep,
    batch_id: str,
    n: int,
) -> HTMLResponse:
    """Email template: Subject and Message from the chosen template; To and the settings as
    they were."""
    chosen = await template_text(envelope, user.firm_id, form.template_id)
    it = await reviewed(batch_id, n, user, service, envelope)
    form = replace(form, subject=chosen.subject, body=chosen.body)
    return await back_page(request, user, envelope, it, form)


@router.post("/batches/{batch_id}/{n}/send")
async def send_now(
    user: FormUser,
    it: ReviewedDep,
    service: ServiceDep,
    send_id: Annotated[str, Form()],
    seq: Annotated[int, Form()] = 1,
    to: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    delivery: Annotated[str, Form()] = "",
    # Posted by the confirmation ("" when unchecked); absent, the batch's default.
    pay_all_outstanding: Annotated[str | None, Form()] = None,
) -> RedirectResponse:
    batch_id, n, ids = it.batch.id, it.n, it.ids
    good, bad = parse_emails(to)
    if bad or not good or not subject.strip() or (delivery and delivery not in DELIVERIES):
        return RedirectResponse(f"/batches/{batch_id}/{n}", status_code=303)
    pay_all = (
        is_balance(it.batch)
        if pay_all_outstanding is None
        else pay_all_checked(pay_all_outstanding)
    )
    send = Send(
        firm_id=user.firm_id,
        user_id=user.id,
        envelope=it.env,
        send_id=send_id,
        seq=seq,
        to=good,
        subject=subject,
        body=body,
        batch_id=batch_id,
        pay_all_outstanding=pay_all,
        delivery=delivery or None,
    )
    # False: a double click, a retried request or a second tab; nothing more to do.
    await request_send(service, send)
    # The next envelope of the batch not yet sent, so unsent ones stay in review.
    done = await sent_envelopes(service, ids)
    for m in list(range(n + 1, len(ids))) + list(range(0, n)):
        if ids[m] not in done:
            return RedirectResponse(f"/batches/{batch_id}/{m}?notice=sent", status_code=303)
    return RedirectResponse(f"/batches/{batch_id}?notice=sent", status_code=303)
