"""A batch of envelopes: its overview, Send All Envelopes, and the live progress of a send."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from services.gateway.batches import envelope_ids, is_balance, load_batch
from services.gateway.clients.base import Refused
from services.gateway.clients.envelope import EnvelopeClient
from services.gateway.deps import (
    DELIVERIES,
    CurrentUser,
    EnvelopeClientDep,
    FormUser,
    ServiceDep,
    pay_all_checked,
    show,
)
from services.gateway.models import Batch, SendRequest
from services.gateway.sending import Send, next_seq, request_sends, run_send_id, sent_envelopes
from services.gateway.web_templates import template_choices, template_text
from shared.api.envelope import EnvelopeSummary
from shared.events import Delivery, SendStatus
from shared.runtime import Service

router = APIRouter()


def send_settings(
    batch: Batch,
    envelopes: list[EnvelopeSummary],
    delivery: str | None = None,
    pay_all: bool | None = None,
) -> dict[str, Any]:
    """Additional settings and Payment settings for every envelope of the form: as posted,
    else the firm's default delivery and, for a client balance, payment for all unpaid bills."""
    # A summary does not carry the envelope's delivery: the form starts on the secure link,
    # as it always has.
    return {
        "delivery": delivery if delivery in DELIVERIES else Delivery.link,
        "pay_all_outstanding": is_balance(batch) if pay_all is None else pay_all,
        "combined": any(len(e.invoice_ids) > 1 for e in envelopes),
        "many": len(envelopes) > 1,
    }


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
async def overview(
    request: Request,
    batch_id: str,
    user: CurrentUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
) -> HTMLResponse:
    batch = await load_batch(service, user, batch_id)
    ids = envelope_ids(batch)
    asked = await sent_envelopes(service, ids)
    envelopes = [
        e.model_dump() | {"index": ids.index(e.id), "asked": e.id in asked}
        for e in await envelope.summaries(user.firm_id, ids)
    ]
    unsent = [e for e in envelopes if not e["asked"]]
    return show(request, "batch.html", user, batch=batch, envelopes=envelopes, unsent=len(unsent))


@router.get("/batches/{batch_id}/send-all", response_class=HTMLResponse)
async def send_all_form(
    request: Request,
    batch_id: str,
    user: CurrentUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
    template: str | None = None,
) -> HTMLResponse:
    batch = await load_batch(service, user, batch_id)
    ids = envelope_ids(batch)
    asked = await sent_envelopes(service, ids)
    envelopes = [e for e in await envelope.summaries(user.firm_id, ids) if e.id not in asked]
    if not envelopes:
        return show(request, "send_all.html", user, batch=batch, envelopes=[], errors={},
                    subject="", body="", run_id="", expected="{}")  # fmt: skip
    # What this form will send, as it saw it: posting it twice, or from a second tab
    # showing the same form, sends nothing more.
    expected = {e.id: await next_seq(service, e.id) for e in envelopes}
    subject, body = envelopes[0].subject, envelopes[0].body
    if template is not None:
        chosen = await template_text(envelope, user.firm_id, template)
        subject, body = chosen.subject, chosen.body
    return show(
        request,
        "send_all.html",
        user,
        batch=batch,
        envelopes=envelopes,
        errors={},
        subject=subject,
        body=body,
        **send_settings(batch, envelopes),
        **await template_choices(envelope, user.firm_id, subject, body),
        run_id=str(uuid.uuid4()),
        expected=json.dumps(expected),
    )


async def template_error(
    envelope: EnvelopeClient, user: CurrentUser, first: EnvelopeSummary, subject: str, body: str
) -> str | None:
    """The template's error, checked once against the first envelope before anything is sent.
    Only a template error stops Send All."""
    try:
        await envelope.preview(user.firm_id, first.id, subject, body)
    except Refused as refused:
        return "Template error: " + str(refused.detail)
    except httpx.HTTPStatusError:
        pass
    return None


@router.post("/batches/{batch_id}/send-all", response_model=None)
async def send_all(
    request: Request,
    batch_id: str,
    user: FormUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
    run_id: Annotated[str, Form()],
    expected: Annotated[str, Form()],
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
    delivery: Annotated[str, Form()] = "",
    pay_all_outstanding: Annotated[str, Form()] = "",
) -> Response:
    batch = await load_batch(service, user, batch_id)
    try:
        uuid.UUID(run_id)
        seqs: dict[str, int] = {k: int(v) for k, v in json.loads(expected).items()}
    except (ValueError, AttributeError) as exc:
        raise HTTPException(status_code=400, detail="The form is damaged; reload it.") from exc
    ids = [i for i in envelope_ids(batch) if i in seqs]
    envelopes = await envelope.summaries(user.firm_id, ids)
    errors: dict[str, str] = {}
    if not subject.strip():
        errors["subject"] = "The subject cannot be empty."
    if delivery and delivery not in DELIVERIES:
        errors["delivery"] = "Choose how to share the bills."
    pay_all = pay_all_checked(pay_all_outstanding)
    if envelopes and not errors:
        if error := await template_error(envelope, user, envelopes[0], subject, body):
            errors["body"] = error
    if errors:
        return show(request, "send_all.html", user, status_code=422, batch=batch,
                    envelopes=envelopes, errors=errors, subject=subject, body=body,
                    run_id=run_id, expected=expected,
                    **send_settings(batch, envelopes, delivery, pay_all))  # fmt: skip
    sends = [
        Send(
            firm_id=user.firm_id,
            user_id=user.id,
            envelope=env,
            send_id=run_send_id(run_id, env.id),
            seq=seqs[env.id],
            to=env.to,
            subject=subject,
            body=body,
            batch_id=batch_id,
            run_id=run_id,
            pay_all_outstanding=pay_all,
            delivery=delivery or None,
        )
        for env in envelopes
        if env.to  # no recipient: shown as failed in the progress
    ]
    await request_sends(service, sends)
    return RedirectResponse(f"/batches/{batch_id}/runs/{run_id}", status_code=303)


async def run_progress(
    service: Service, envelope: EnvelopeClient, user: CurrentUser, run_id: str
) -> dict[str, Any]:
    async with service.sessionmaker() as s:
        requests = list(
            await s.scalars(
                select(SendRequest).where(
                    SendRequest.run_id == run_id, SendRequest.firm_id == user.firm_id
                )
            )
        )
    states = await envelope.send_states(user.firm_id, [r.send_id for r in requests])
    sent = sum(
        1 for r in requests if r.send_id in states and states[r.send_id].status == SendStatus.sent
    )
    failed = [
        {"envelope_id": r.envelope_id, "error": states[r.send_id].error}
        for r in requests
        if r.send_id in states and states[r.send_id].status == SendStatus.failed
    ]
    total = len(requests)
    return {
        "total": total,
        "sent": sent,
        "failed": len(failed),
        "queued": total - sent - len(failed),
        "done": total == sent + len(failed),
        "failures": failed,
    }


@router.get("/batches/{batch_id}/runs/{run_id}.json")
async def progress_json(
    batch_id: str, run_id: str, user: CurrentUser, service: ServiceDep, envelope: EnvelopeClientDep
) -> JSONResponse:
    await load_batch(service, user, batch_id)
    return JSONResponse(await run_progress(service, envelope, user, run_id))


@router.get("/batches/{batch_id}/runs/{run_id}", response_class=HTMLResponse)
async def progress_page(
    request: Request,
    batch_id: str,
    run_id: str,
    user: CurrentUser,
    service: ServiceDep,
    envelope: EnvelopeClientDep,
) -> HTMLResponse:
    batch = await load_batch(service, user, batch_id)
    progress = await run_progress(service, envelope, user, run_id)
    return show(request, "progress.html", user, batch=batch, run_id=run_id, p=progress)
