"""Conversions of payments' rows into the shapes of its internal API (declared in
`shared/api/payments.py`, which the gateway's client reads too). The routes are in
`routes.py`."""

from __future__ import annotations

from fastapi import HTTPException

from services.payments import reports
from services.payments.balances import ItemView
from services.payments.models import Allocation, Payment, Refund, RefundItem
from shared.api.payments import (
    AllocationOut,
    DepositOut,
    ItemOut,
    PaymentDetailOut,
    PaymentOut,
    RefundItemOut,
    RefundOut,
    TimelineOut,
)

# --- conversions --------------------------------------------------------------------------


def item_out(item: ItemView) -> ItemOut:
    return ItemOut(**item.__dict__)


def payment_out(p: Payment, allocations: list[Allocation]) -> PaymentOut:
    return PaymentOut(
        id=p.id,
        status=p.status,
        method=p.method,
        currency=p.currency,
        amount_minor=p.amount_minor,
        refunded_minor=p.refunded_minor,
        fee_minor=p.fee_minor,
        payer_name=p.payer_name,
        payer_email=p.payer_email,
        card_last4=p.card_last4,
        bank_last4=p.bank_last4,
        client_name=p.client_name,
        processor=p.processor,
        created_at=p.created_at,
        succeeded_at=p.succeeded_at,
        failure_reason=p.failure_reason,
        allocations=[
            AllocationOut(
                invoice_id=a.invoice_id,
                number=a.number,
                kind=a.kind,
                amount_minor=a.amount_minor,
                refunded_minor=a.refunded_minor,
            )
            for a in allocations
        ],
    )


def refund_out(r: Refund, items: list[RefundItem]) -> RefundOut:
    return RefundOut(
        id=r.id,
        amount_minor=r.amount_minor,
        status=r.status,
        created_at=r.created_at,
        requested_by=r.requested_by,
        failure_reason=r.failure_reason,
        items=[
            RefundItemOut(invoice_id=i.invoice_id, number=i.number, amount_minor=i.amount_minor)
            for i in items
        ],
    )


def detail_out(d: reports.PaymentDetail) -> PaymentDetailOut:
    base = payment_out(d.payment, d.allocations)
    return PaymentDetailOut(
        **base.model_dump(),
        deposits=[
            DepositOut(
                account=x.account,
                amount_minor=x.amount_minor,
                fee_minor=x.fee_minor,
                net_minor=x.net_minor,
                reversed_minor=x.reversed_minor,
                status=x.status,
                ref=x.ref,
            )
            for x in d.deposits
        ],
        refunds=[refund_out(r, items) for r, items in d.refunds],
        timeline=[TimelineOut(at=at, text=text) for at, text in d.timeline],
        refundable_minor=d.refundable_minor,
        partial_refund_allowed=d.payment.method != "ach",
        refund_block_reason=d.refund_block_reason,
    )


def field_error(status: int, field: str | None, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail={"field": field, "message": message})
