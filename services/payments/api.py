"""The shapes of payments' internal API (what the gateway sends and gets back) and the
conversions of payments' rows into them. The routes themselves are in `routes.py`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from fastapi import HTTPException
from pydantic import BaseModel, Field

from services.payments import reports
from services.payments.balances import ItemView
from services.payments.models import Allocation, Payment, Refund, RefundItem
from shared.events import FirmProfile

# --- shapes -------------------------------------------------------------------------------


class ItemOut(BaseModel):
    invoice_id: str
    number: str
    kind: str
    due_at: date | None
    currency: str
    balance_minor: int
    status: str  # unpaid, processing, paid


class OutstandingOut(BaseModel):
    items: list[ItemOut]
    total_minor: int


class LinkOut(BaseModel):
    status: str  # ok, expired, unknown
    firm: FirmProfile | None
    client_name: str
    items: list[ItemOut]
    currency: str
    total_due_minor: int
    pay_all_outstanding: bool
    outstanding: OutstandingOut | None


class CheckoutBody(BaseModel):
    invoice_ids: list[str] = []
    scope: Literal["items", "outstanding"] = "items"


class CheckoutStarted(BaseModel):
    session_id: str
    redirect_url: str | None


class CheckoutOut(BaseModel):
    id: str
    status: str  # open, complete, expired
    currency: str
    amount_minor: int
    firm: FirmProfile
    items: list[ItemOut]
    payment_id: str | None
    payment_status: str | None
    method: str | None
    processor: str
    methods: list[str]
    redirect_url: str | None


class CardForm(BaseModel):
    name: str = ""
    email: str = ""
    card_number: str = ""
    exp: str = ""
    cvc: str = ""


class AchForm(BaseModel):
    name: str = ""
    email: str = ""
    routing_number: str = ""
    account_number: str = ""
    account_type: str = "checking"


class AllocationOut(BaseModel):
    invoice_id: str
    number: str
    kind: str
    amount_minor: int
    refunded_minor: int


class PaymentOut(BaseModel):
    id: str
    status: str
    method: str
    currency: str
    amount_minor: int
    refunded_minor: int
    fee_minor: int
    payer_name: str | None
    payer_email: str | None
    card_last4: str | None
    bank_last4: str | None
    client_name: str
    processor: str
    created_at: datetime
    succeeded_at: datetime | None
    failure_reason: str | None
    allocations: list[AllocationOut]


class DepositOut(BaseModel):
    account: str
    amount_minor: int
    fee_minor: int
    net_minor: int
    reversed_minor: int
    status: str
    ref: str | None


class RefundItemOut(BaseModel):
    invoice_id: str
    number: str
    amount_minor: int


class RefundOut(BaseModel):
    id: str
    amount_minor: int
    status: str  # pending, succeeded, failed
    created_at: datetime
    requested_by: str
    failure_reason: str | None
    items: list[RefundItemOut]


class TimelineOut(BaseModel):
    at: datetime
    text: str


class PaymentDetailOut(PaymentOut):
    deposits: list[DepositOut]
    refunds: list[RefundOut]
    timeline: list[TimelineOut]
    refundable_minor: int
    partial_refund_allowed: bool
    refund_block_reason: str | None


class RefundItemIn(BaseModel):
    invoice_id: str
    amount_minor: int


class RefundBody(BaseModel):
    refund_id: str = Field(min_length=1, max_length=100)
    requested_by: str = ""
    full: bool = False
    items: list[RefundItemIn] = []


class AccountsBody(BaseModel):
    operating_account: str = Field(min_length=1, max_length=100)
    trust_account: str = Field(min_length=1, max_length=100)


class ReturnBody(BaseModel):
    code: str = Field(default="R10", pattern=r"^R\d{2}$")


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
