"""payments' internal API: the client's pay link and checkout, the firm's payments and
refunds, the accounts deposits go to, and test mode."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from shared.events import FirmProfile


class ItemOut(BaseModel):
    invoice_id: str
    number: str
    kind: str
    due_at: date | None
    currency: str
    balance_minor: int
    status: str  # unpaid, processing, paid, removed (voided or deleted in Clio)


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
