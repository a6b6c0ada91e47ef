"""payments' "To record in Clio" API, for the gateway: the payments made here that the firm
still has to enter in Clio, item by item (a bill or trust request of one payment), the ones
recorded lately, and marking items recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

# How many items one request may mark recorded.
MAX_MARK = 1000
# An item id as the databases hold it (a 32-bit integer key).
ItemId = Annotated[int, Field(ge=1, le=2**31 - 1)]


class RecordItemOut(BaseModel):
    id: int  # the item's id (one allocation of one payment)
    payment_id: str
    invoice_id: str
    source_id: str | None  # the bill's id in Clio (its link), when known
    number: str
    kind: str
    client_name: str
    currency: str
    amount_minor: int  # what to enter in Clio: the payment's part for this bill, less refunds
    paid_at: datetime | None
    method: str  # card, ach
    last4: str | None = None
    payer_name: str | None = None
    payer_email: str | None = None
    reference: str | None = None  # the processor's reference of the payment
    recorded_at: datetime | None = None
    recorded_by: str | None = None
    recorded_how: str | None = None  # synced, marked


class RecordListOut(BaseModel):
    pending: list[RecordItemOut]
    recorded: list[RecordItemOut]


class MarkBody(BaseModel):
    ids: list[ItemId] = Field(min_length=1, max_length=MAX_MARK)
    by: str = Field(min_length=1, max_length=300)


class MarkOut(BaseModel):
    marked: int
