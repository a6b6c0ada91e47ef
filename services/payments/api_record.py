"""payments' internal API for "To record in Clio" (contract: shared/api/record.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from services.payments import record
from services.payments.ledger import Ledger
from shared.api.record import MarkBody, MarkOut, RecordItemOut, RecordListOut
from shared.events import PaymentMethod
from shared.runtime import Service


def item_out(item: record.Item) -> RecordItemOut:
    a, p, b = item.allocation, item.payment, item.bill
    return RecordItemOut(
        id=a.id,
        payment_id=p.id,
        invoice_id=a.invoice_id,
        source_id=b.source_id if b else None,
        number=a.number or (b.number if b else ""),
        kind=a.kind,
        client_name=p.client_name,
        currency=p.currency,
        amount_minor=item.amount_minor,
        paid_at=p.succeeded_at or p.created_at,
        method=p.method,
        last4=p.bank_last4 if p.method == PaymentMethod.ach else p.card_last4,
        payer_name=p.payer_name,
        payer_email=p.payer_email,
        reference=p.charge_ref or p.processor_ref or p.id,
        recorded_at=a.recorded_at,
        recorded_by=a.recorded_by,
        recorded_how=a.recorded_how,
    )


def router(service: Service, ledger: Ledger) -> APIRouter:
    r = APIRouter(prefix="/internal", dependencies=[Depends(service.require_internal())])

    @r.get("/firms/{firm_id}/record")
    async def to_record(firm_id: str) -> RecordListOut:
        async with service.sessionmaker() as s:
            pending = await record.pending(s, firm_id)
            done = await record.recorded(s, firm_id)
        return RecordListOut(
            pending=[item_out(i) for i in pending], recorded=[item_out(i) for i in done]
        )

    @r.post("/firms/{firm_id}/record/mark")
    async def mark(firm_id: str, body: MarkBody) -> MarkOut:
        """Every id must be one of the firm's items, or 404 and nothing changes."""
        try:
            async with ledger.tx() as s:
                marked = await record.mark(s, firm_id, body.ids, body.by)
        except record.NotListed as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        return MarkOut(marked=marked)

    return r
