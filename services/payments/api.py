"""payments' internal HTTP API, called by the gateway's client pages and firm pages."""

from __future__ import annotations

from datetime import date, datetime

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel
from sqlalchemy import select

from services.payments.ledger import CheckoutError, ItemView, Ledger
from services.payments.models import Allocation, Payment
from services.payments.processors import CardInvalid
from shared.events import FirmProfile
from shared.runtime import Service


class ItemOut(BaseModel):
    invoice_id: str
    number: str
    kind: str
    due_at: date | None
    currency: str
    balance_minor: int
    status: str


class LinkOut(BaseModel):
    status: str
    firm: FirmProfile | None
    client_name: str
    items: list[ItemOut]
    currency: str
    total_due_minor: int


class CheckoutRequest(BaseModel):
    invoice_ids: list[str] = []


class CheckoutOut(BaseModel):
    id: str
    status: str
    currency: str
    amount_minor: int
    firm: FirmProfile
    items: list[ItemOut]
    payment_id: str | None
    processor: str


class CardForm(BaseModel):
    name: str = ""
    email: str = ""
    card_number: str = ""
    exp: str = ""
    cvc: str = ""


class PaymentOut(BaseModel):
    id: str
    status: str
    method: str
    currency: str
    amount_minor: int
    payer_name: str | None
    card_last4: str | None
    created_at: datetime
    allocations: list[dict[str, object]] = []


def _items(items: list[ItemView]) -> list[ItemOut]:
    return [ItemOut(**i.__dict__) for i in items]


def _payment(p: Payment, allocations: list[Allocation] | None = None) -> PaymentOut:
    return PaymentOut(
        id=p.id,
        status=p.status,
        method=p.method,
        currency=p.currency,
        amount_minor=p.amount_minor,
        payer_name=p.payer_name,
        card_last4=p.card_last4,
        created_at=p.created_at,
        allocations=[
            {"invoice_id": a.invoice_id, "amount_minor": a.amount_minor, "kind": a.kind}
            for a in allocations or []
        ],
    )


def router(service: Service, ledger: Ledger) -> APIRouter:
    r = APIRouter(prefix="/internal", dependencies=[Depends(service.require_internal())])

    @r.get("/paylinks/{token}")
    async def link(token: str) -> LinkOut:
        view = await ledger.link_view(token)
        return LinkOut(
            status=view.status,
            firm=view.firm,
            client_name=view.client_name,
            items=_items(view.items),
            currency=view.currency,
            total_due_minor=view.total_due_minor,
        )

    @r.post("/paylinks/{token}/checkout")
    async def checkout(token: str, body: CheckoutRequest) -> dict[str, str]:
        try:
            cs = await ledger.create_checkout(token, body.invoice_ids)
        except CheckoutError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        return {"session_id": cs.id}

    @r.get("/checkout/{session_id}")
    async def get_checkout(session_id: str) -> CheckoutOut:
        found = await ledger.checkout(session_id)
        if found is None:
            raise HTTPException(status_code=404, detail="no such checkout")
        cs, firm, items = found
        return CheckoutOut(
            id=cs.id,
            status=cs.status,
            currency=cs.currency,
            amount_minor=cs.amount_minor,
            firm=firm,
            items=_items(items),
            payment_id=cs.payment_id,
            processor=ledger.settings.payments_processor,
        )

    @r.post("/checkout/{session_id}/card")
    async def pay_card(session_id: str, form: CardForm) -> PaymentOut:
        try:
            payment = await ledger.pay_card(session_id, form.model_dump())
        except CardInvalid as exc:
            raise HTTPException(
                status_code=402, detail={"field": exc.field, "message": str(exc)}
            ) from exc
        except CheckoutError as exc:
            raise HTTPException(
                status_code=409, detail={"field": None, "message": str(exc)}
            ) from exc
        return _payment(payment)

    @r.get("/firms/{firm_id}/payments")
    async def payments(firm_id: str) -> list[PaymentOut]:
        async with service.sessionmaker() as s:
            rows = list(
                await s.scalars(
                    select(Payment)
                    .where(Payment.firm_id == firm_id)
                    .order_by(Payment.created_at.desc())
                )
            )
            allocs = await s.scalars(
                select(Allocation).where(Allocation.payment_id.in_([p.id for p in rows]))
            )
            by_payment: dict[str, list[Allocation]] = {}
            for a in allocs:
                by_payment.setdefault(a.payment_id, []).append(a)
        return [_payment(p, by_payment.get(p.id)) for p in rows]

    return r
