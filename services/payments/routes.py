"""payments' HTTP routes: the internal API the gateway's client and firm pages call
(`/internal`, X-Internal-Token), and the processor's webhook (`/webhooks/stripe`, whose
signature is its authentication). Each route turns its request into one call on the domain
and the result into a shape of `api.py`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse

from services.payments import reports, rules
from services.payments.api import detail_out, field_error, item_out, payment_out, refund_out
from services.payments.balances import link_view
from services.payments.checkout import (
    CheckoutError,
    ProcessorUnavailable,
    checkout_view,
    create_checkout,
)
from services.payments.ledger import Ledger
from services.payments.models import Payment
from services.payments.processors import CardInvalid, InvalidSignature
from services.payments.refunds import PaymentNotFound, RefundRequest, refundable, request_refund
from services.payments.testmode import CheckoutClosed, NotSettled, TestMode
from shared.api.payments import (
    AccountsBody,
    AchForm,
    CardForm,
    CheckoutBody,
    CheckoutOut,
    CheckoutStarted,
    LinkOut,
    OutstandingOut,
    PaymentDetailOut,
    PaymentOut,
    RefundBody,
    RefundOut,
    ReturnBody,
)
from shared.events import PaymentMethod
from shared.runtime import Service

log = logging.getLogger(__name__)


def router(service: Service, ledger: Ledger, testmode: TestMode | None) -> APIRouter:
    r = APIRouter(prefix="/internal", dependencies=[Depends(service.require_internal())])
    _client_routes(r, ledger, testmode)
    _firm_routes(r, ledger)
    if testmode is not None and ledger.settings.environment != "production":
        _testmode_routes(r, ledger, testmode)
    return r


def _client_routes(r: APIRouter, ledger: Ledger, testmode: TestMode | None) -> None:
    @r.get("/paylinks/{token}")
    async def link(token: str) -> LinkOut:
        async with ledger.service.sessionmaker() as s:
            view = await link_view(s, token)
        return LinkOut(
            status=view.status,
            firm=view.firm,
            client_name=view.client_name,
            items=[item_out(i) for i in view.items],
            currency=view.currency,
            total_due_minor=view.total_due_minor,
            pay_all_outstanding=view.pay_all_outstanding,
            outstanding=OutstandingOut(
                items=[item_out(i) for i in view.outstanding.items],
                total_minor=view.outstanding.total_minor,
            )
            if view.outstanding
            else None,
        )

    @r.post("/paylinks/{token}/checkout")
    async def start_checkout(token: str, body: CheckoutBody) -> CheckoutStarted:
        try:
            cs = await create_checkout(ledger, token, body.invoice_ids, body.scope)
        except CheckoutError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        except ProcessorUnavailable as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from exc
        return CheckoutStarted(session_id=cs.id, redirect_url=cs.redirect_url)

    @r.get("/checkout/{session_id}")
    async def get_checkout(session_id: str) -> CheckoutOut:
        view = await checkout_view(ledger, session_id)
        if view is None:
            raise HTTPException(status_code=404, detail="no such checkout")
        cs, payment = view.session, view.payment
        return CheckoutOut(
            id=cs.id,
            status=view.status,
            currency=cs.currency,
            amount_minor=cs.amount_minor,
            firm=view.firm,
            items=[item_out(i) for i in view.items],
            payment_id=payment.id if payment else None,
            payment_status=payment.status if payment else None,
            method=payment.method if payment else None,
            processor=cs.processor,
            methods=list(PaymentMethod),
            redirect_url=cs.redirect_url,
        )

    async def pay(session_id: str, how: PaymentMethod, form: dict[str, Any]) -> PaymentOut:
        if testmode is None:
            raise field_error(409, None, "Payment details are taken on the processor's page.")
        try:
            if how == PaymentMethod.card:
                payment = await testmode.pay_card(session_id, form)
            else:
                payment = await testmode.pay_ach(session_id, form)
        except LookupError as exc:
            raise HTTPException(status_code=404, detail="no such checkout") from exc
        except CardInvalid as exc:
            raise field_error(402, exc.field, str(exc)) from exc
        except CheckoutClosed as exc:
            raise field_error(409, None, str(exc)) from exc
        return await _payment_out(ledger, payment)

    @r.post("/checkout/{session_id}/card")
    async def pay_card(session_id: str, form: CardForm) -> PaymentOut:
        return await pay(session_id, PaymentMethod.card, form.model_dump())

    @r.post("/checkout/{session_id}/ach")
    async def pay_ach(session_id: str, form: AchForm) -> PaymentOut:
        return await pay(session_id, PaymentMethod.ach, form.model_dump())


async def _payment_out(ledger: Ledger, payment: Payment) -> PaymentOut:
    async with ledger.service.sessionmaker() as s:
        allocations = await reports.allocations_of(s, payment.id)
    return payment_out(payment, allocations)


def _firm_routes(r: APIRouter, ledger: Ledger) -> None:
    @r.get("/firms/{firm_id}/payments")
    async def payments(firm_id: str, status: str = "", q: str = "") -> list[PaymentOut]:
        async with ledger.service.sessionmaker() as s:
            records = await reports.list_payments(s, firm_id, status or None, q or None)
        return [payment_out(x.payment, x.allocations) for x in records]

    @r.get("/firms/{firm_id}/payments.csv")
    async def payments_csv(firm_id: str, status: str = "", q: str = "") -> StreamingResponse:
        async with ledger.service.sessionmaker() as s:
            records = await reports.list_payments(s, firm_id, status or None, q or None)
        return StreamingResponse(
            reports.csv_rows(records),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="payments.csv"'},
        )

    @r.get("/firms/{firm_id}/payments/{payment_id}")
    async def payment(firm_id: str, payment_id: str) -> PaymentDetailOut:
        async with ledger.service.sessionmaker() as s:
            found = await s.get(Payment, payment_id)
            left = await refundable(s, found) if found else 0
            detail = await reports.payment_detail(s, firm_id, payment_id, left)
        if detail is None:
            raise HTTPException(status_code=404, detail="no such payment")
        return detail_out(detail)

    @r.post("/firms/{firm_id}/payments/{payment_id}/refunds")
    async def refund(firm_id: str, payment_id: str, body: RefundBody) -> RefundOut:
        request = RefundRequest(
            refund_id=body.refund_id,
            requested_by=body.requested_by or "a firm user",
            full=body.full,
            items=[(i.invoice_id, i.amount_minor) for i in body.items],
        )
        try:
            made = await request_refund(ledger, firm_id, payment_id, request)
        except PaymentNotFound as exc:
            raise HTTPException(status_code=404, detail="no such payment") from exc
        except rules.RefundRefused as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        except rules.RefundInvalid as exc:
            raise field_error(422, exc.field, str(exc)) from exc
        async with ledger.service.sessionmaker() as s:
            items = await reports.refund_items_of(s, made.id)
        return refund_out(made, items)

    @r.put("/firms/{firm_id}/accounts")
    async def accounts(firm_id: str, body: AccountsBody) -> AccountsBody:
        row = await ledger.set_accounts(firm_id, body.operating_account, body.trust_account)
        return AccountsBody(
            operating_account=row.operating_account, trust_account=row.trust_account
        )


def _testmode_routes(r: APIRouter, ledger: Ledger, testmode: TestMode) -> None:
    @r.post("/testmode/payments/{payment_id}/return")
    async def simulate_return(payment_id: str, body: ReturnBody | None = None) -> PaymentOut:
        try:
            payment = await testmode.simulate_return(payment_id, (body or ReturnBody()).code)
        except LookupError as exc:
            raise HTTPException(status_code=404, detail="no such payment") from exc
        except NotSettled as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        return await _payment_out(ledger, payment)

    @r.post("/testmode/settle-due")
    async def settle_due() -> dict[str, int]:
        return {"settled": await testmode.settle_due()}


def webhook_router(ledger: Ledger) -> APIRouter:
    """The processor's webhooks. Verified on the raw body before anything is parsed."""
    r = APIRouter()

    @r.post("/webhooks/stripe")
    async def stripe_webhook(request: Request) -> dict[str, bool]:
        payload = await request.body()
        try:
            event = ledger.processor.parse_webhook(payload, request.headers.get("stripe-signature"))
        except InvalidSignature as exc:
            log.warning("webhook refused: %s", exc)
            raise HTTPException(status_code=400, detail="invalid signature") from exc
        if event is None:
            log.info("webhook of a type the ledger does not use: ignored")
            return {"received": True}
        await ledger.apply(event)
        return {"received": True}

    return r
