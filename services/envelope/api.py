"""envelope's internal HTTP API: for the gateway (invoices, drafts, previews, client PDFs)
and for the mailer (the content of an email)."""

from __future__ import annotations

import base64
import json

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from services.envelope import reads
from services.envelope.compose import AUTOFILL_FIELDS, TemplateInvalid, check_template
from services.envelope.desk import Desk
from services.envelope.models import Envelope, Invoice, Pdf
from services.envelope.rules import bill_filename, matter_label
from shared.api.envelope import (
    AttachmentOut,
    DraftRequest,
    EmailContent,
    EnvelopeOut,
    InvoiceOut,
    InvoicePage,
    PreviewRequest,
    SendOut,
)
from shared.runtime import Service


def _invoice_out(i: Invoice) -> InvoiceOut:
    snap = json.loads(i.snapshot)
    matter = matter_label(snap.get("matter_number"), snap.get("matter_description"))
    return InvoiceOut(
        invoice_id=i.invoice_id,
        number=i.number,
        kind=i.kind,
        state=i.state,
        client_id=i.client_id,
        client_name=i.client_name,
        matter=matter,
        issued_at=i.issued_at,
        due_at=i.due_at,
        currency=i.currency,
        total_minor=i.total_minor,
        balance_minor=i.balance_minor,
        paid_online_minor=i.paid_online_minor or 0,
        payment_status=i.payment_status,
        last_sent_at=i.last_sent_at,
        email_status=i.email_status,
    )


def _envelope_out(e: Envelope) -> EnvelopeOut:
    return EnvelopeOut(
        id=e.id,
        client_id=e.client_id,
        client_name=e.client_name,
        invoice_ids=json.loads(e.invoice_ids),
        to=json.loads(e.to),
        cc=json.loads(e.cc),
        subject=e.subject,
        body=e.body,
        delivery=e.delivery,
        status=e.status,
        last_sent_at=e.last_sent_at,
    )


def router(service: Service, desk: Desk) -> APIRouter:
    r = APIRouter(prefix="/internal", dependencies=[Depends(service.require_internal())])

    @r.get("/firms/{firm_id}/invoices")
    async def invoices(
        firm_id: str,
        q: str = "",
        state: str = "all",
        kind: str = "all",
        page: int = Query(1, ge=1),
        per_page: int = Query(25, ge=1, le=200),
        ids: str = "",
    ) -> InvoicePage:
        rows, total = await reads.list_invoices(
            service,
            firm_id,
            q=q,
            state=state,
            kind=kind,
            page=page,
            per_page=per_page,
            ids=[i for i in ids.split(",") if i] or None,
        )
        return InvoicePage(
            items=[_invoice_out(i) for i in rows], total=total, page=page, per_page=per_page
        )

    @r.post("/firms/{firm_id}/envelopes/drafts")
    async def drafts(firm_id: str, body: DraftRequest) -> list[EnvelopeOut]:
        envelopes = await desk.create_drafts(firm_id, body.invoice_ids, body.created_by)
        return [_envelope_out(e) for e in envelopes]

    @r.get("/firms/{firm_id}/envelopes/{envelope_id}")
    async def envelope(firm_id: str, envelope_id: str) -> EnvelopeOut:
        env = await desk.envelope(firm_id, envelope_id)
        if env is None:
            raise HTTPException(status_code=404, detail="no such envelope")
        out = _envelope_out(env)
        out.preview = await desk.preview(firm_id, env)
        out.sends = [
            SendOut(
                send_id=s.send_id,
                requested_at=s.requested_at,
                to=json.loads(s.to),
                subject=s.subject,
                status=s.status,
                sent_at=s.sent_at,
                error=s.error,
            )
            for s in await desk.sends(firm_id, envelope_id)
        ]
        return out

    @r.post("/firms/{firm_id}/envelopes/{envelope_id}/preview")
    async def preview(firm_id: str, envelope_id: str, body: PreviewRequest) -> dict[str, str]:
        env = await desk.envelope(firm_id, envelope_id)
        if env is None:
            raise HTTPException(status_code=404, detail="no such envelope")
        try:
            check_template(body.subject)
            check_template(body.body)
            return await desk.preview(firm_id, env, body.subject, body.body)
        except TemplateInvalid as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc

    @r.get("/autofill-fields")
    async def autofill_fields() -> dict[str, str]:
        return AUTOFILL_FIELDS

    @r.get("/emails/{email_id}", response_model=EmailContent)
    async def email(email_id: str) -> Response:
        found = await desk.email_content(email_id)
        if found is None:
            raise HTTPException(status_code=404, detail="no such email")
        email, files = found
        # Serialized once by pydantic's core (an email with ten PDFs is half a megabyte of
        # base64): not validated again and re-encoded by FastAPI's response handling.
        out = EmailContent(
            email_id=email.email_id,
            to=json.loads(email.to),
            cc=json.loads(email.cc),
            from_name=email.from_name,
            reply_to=email.reply_to,
            subject=email.subject,
            html=email.html,
            text=email.text,
            attachments=[
                AttachmentOut(
                    filename=name,
                    content_type="application/pdf",
                    content_b64=base64.b64encode(content).decode(),
                )
                for name, content in files
            ],
        )
        return Response(out.model_dump_json(), media_type="application/json")

    async def stored_pdf(key: str, filename: str) -> Response:
        async with service.sessionmaker() as s:
            pdf = await s.get(Pdf, key)
        assert pdf is not None
        return Response(
            pdf.content,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{filename}"'},
        )

    async def pdf_response(inv: Invoice) -> Response:
        key = await desk.renderer.ensure(inv.firm_id, inv.invoice_id)
        return await stored_pdf(key, bill_filename(inv.kind, inv.number))

    @r.get("/links/{token}")
    async def link_issued(token: str) -> dict[str, bool]:
        """Whether this client link was issued (and still works): the gateway asks when
        payments does not know a link yet, which it learns from paylink.issued a moment
        after the email is sent."""
        if not await desk.link_issued(token):
            raise HTTPException(status_code=404, detail="this link has expired or does not exist")
        return {"issued": True}

    @r.get("/links/{token}/statement.pdf")
    async def link_statement(token: str) -> Response:
        key = await desk.link_statement(token)
        if key is None:
            raise HTTPException(status_code=404, detail="this link has expired or does not exist")
        return await stored_pdf(key, "statement.pdf")

    @r.get("/links/{token}/invoices/{invoice_id}/pdf")
    async def link_pdf(token: str, invoice_id: str) -> Response:
        inv = await desk.link_invoice(token, invoice_id)
        if inv is None:
            raise HTTPException(status_code=404, detail="this link has expired or does not exist")
        return await pdf_response(inv)

    @r.get("/firms/{firm_id}/invoices/{invoice_id}/pdf")
    async def firm_pdf(firm_id: str, invoice_id: str) -> Response:
        async with service.sessionmaker() as s:
            inv = await reads.invoice(s, firm_id, invoice_id)
        if inv is None:
            raise HTTPException(status_code=404, detail="no such invoice")
        return await pdf_response(inv)

    return r
