"""Review & Send: drafting envelopes, the review window, Continue, Send Envelope Now."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.gateway import auth
from services.gateway.batches import envelope_ids, is_balance, load_batch, new_batch
from services.gateway.clients.base import Refused, ServiceUnavailable
from services.gateway.clients.envelope import EnvelopeClient
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
from shared.runtime import Service

router = APIRouter()

# What the review window's forms post besides the To, Subject and Message fields.
DeliveryField = Annotated[str, Form()]


async def batch_envelope(
    service: Service, envelope: EnvelopeClient, user: CurrentUser, batch_id: str, n: int
) -> tuple[Batch, list[str], EnvelopeOut]:
    """The batch, its envelope ids and its n-th envelope; 404 when there is none."""
    batch = await load_batch(service, user, batch_id)
    ids = envelope_ids(batch)
    if not 0 <= n < len(ids):
        raise HTTPException(status_code=404, detail="No such envelope in this batch.")
    env = await envelope.envelope(user.firm_id, ids[n])
    if env is None:
        raise HTTPException(status_code=404, detail="No such envelope.")
    return batch, ids, env


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
    batch: Batch,
    ids: list[str],
    n: int,
    env: EnvelopeOut,
    *,
    to: str,
    subject: str,
    body: str,
    preview: Any,
    delivery: str | None = None,
    pay_all: bool | None = None,
) -> dict[str, Any]:
    """What the review window and the confirmation both show."""
    return dict(
        batch_id=batch.id,
        n=n,
        count=len(ids),
        env=env,
        items=await invoices_of(envelope, user, env.invoice_ids),
        to=to,
        subject=subject,
        body=body,
        preview=preview,
        **send_settings(batch, env, delivery, pay_all),
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
    request: Request,
    batch_id: str,
    n: int,
    user: CurrentUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
) -> HTMLResponse:
    batch, ids, env = await batch_envelope(service, envelope, user, batch_id, n)
    context = await review_context(
        envelope, user, batch, ids, n, env,
        to=", ".join(env.to), subject=env.subject, body=env.body, preview=env.preview,
    )  # fmt: skip
    return await review_page(request, envelope, user, context)


@router.post("/batches/{batch_id}/{n}/continue", response_class=HTMLResponse)
async def review_continue(
    request: Request,
    batch_id: str,
    n: int,
    user: FormUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
    to: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    delivery: DeliveryField = "",
    pay_all_outstanding: DeliveryField = "",
) -> HTMLResponse:
    batch, ids, env = await batch_envelope(service, envelope, user, batch_id, n)
    errors: dict[str, str] = {}
    good, bad = parse_emails(to)
    if bad:
        errors["to"] = "Not an email address: " + ", ".join(bad)
    elif not good:
        errors["to"] = "Add at least one recipient."
    if not subject.strip():
        errors["subject"] = "The subject cannot be empty."
    if delivery and delivery not in DELIVERIES:
        errors["delivery"] = "Choose how to share the bill."
    preview: Any = env.preview
    try:
        preview = await envelope.preview(user.firm_id, env.id, subject, body)
    except Refused as refused:
        errors["body"] = "Template error: " + str(refused.detail)
    context = await review_context(
        envelope, user, batch, ids, n, env, to=to, subject=subject, body=body, preview=preview,
        delivery=delivery, pay_all=pay_all_checked(pay_all_outstanding),
    )  # fmt: skip
    if errors:
        return await review_page(request, envelope, user, context, errors)
    return show(
        request,
        "confirm.html",
        user,
        send_id=auth.new_id(),
        seq=await next_seq(service, env.id),
        balance=is_balance(batch),
        recipients=good,
        **context,
    )


@router.post("/batches/{batch_id}/{n}/back", response_class=HTMLResponse)
async def review_back(
    request: Request,
    batch_id: str,
    n: int,
    user: FormUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
    to: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    delivery: DeliveryField = "",
    pay_all_outstanding: DeliveryField = "",
) -> HTMLResponse:
    """Go Back: the review window again, with the edits kept."""
    batch, ids, env = await batch_envelope(service, envelope, user, batch_id, n)
    preview: Any = env.preview
    try:
        preview = await envelope.preview(user.firm_id, env.id, subject, body)
    except (Refused, httpx.HTTPStatusError):
        pass  # the envelope's own preview, as the review window first showed it
    context = await review_context(
        envelope, user, batch, ids, n, env, to=to, subject=subject, body=body, preview=preview,
        delivery=delivery, pay_all=pay_all_checked(pay_all_outstanding),
    )  # fmt: skip
    return await review_page(request, envelope, user, context)


@router.post("/batches/{batch_id}/{n}/template", response_class=HTMLResponse)
async def apply_template(
    request: Request,
    batch_id: str,
    n: int,
    user: FormUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
    to: Annotated[str, Form()] = "",
    template_id: Annotated[str, Form()] = "",
    delivery: DeliveryField = "",
    pay_all_outstanding: DeliveryField = "",
) -> HTMLResponse:
    """Email template: Subject and Message from the chosen template; To and the settings as
    they were."""
    chosen = await template_text(envelope, user.firm_id, template_id)
    return await review_back(
        request, batch_id, n, user, service, envelope, to=to, subject=chosen.subject,
        body=chosen.body, delivery=delivery, pay_all_outstanding=pay_all_outstanding,
    )  # fmt: skip


@router.post("/batches/{batch_id}/{n}/send")
async def send_now(
    batch_id: str,
    n: int,
    user: FormUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
    send_id: Annotated[str, Form()],
    seq: Annotated[int, Form()] = 1,
    to: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    delivery: DeliveryField = "",
    # Posted by the confirmation ("" when unchecked); absent, the batch's default.
    pay_all_outstanding: Annotated[str | None, Form()] = None,
) -> RedirectResponse:
    batch, ids, env = await batch_envelope(service, envelope, user, batch_id, n)
    good, bad = parse_emails(to)
    if bad or not good or not subject.strip() or (delivery and delivery not in DELIVERIES):
        return RedirectResponse(f"/batches/{batch_id}/{n}", status_code=303)
    pay_all = (
        is_balance(batch) if pay_all_outstanding is None else pay_all_checked(pay_all_outstanding)
    )
    send = Send(
        firm_id=user.firm_id,
        user_id=user.id,
        envelope=env,
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
