"""What a client still owes on each bill: the source's balance less what was paid here and not
yet recorded in Clio. Read by the pay page and checked again before every charge."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.models import Allocation, Bill, Firm, PayLink, Payment
from shared.events import FirmProfile, InvoiceState, PaymentStatus
from shared.schema import aware, stored_firm
from shared.tokens import hash_token

# Payments whose allocations hold a bill's balance: money taken or on its way. A failed or
# returned payment holds nothing, so the client can pay again.
HOLDING = (
    PaymentStatus.processing,
    PaymentStatus.succeeded,
    PaymentStatus.partially_refunded,
    PaymentStatus.refunded,
)


class ItemStatus(StrEnum):
    """A bill as the client sees it on the pay page."""

    unpaid = "unpaid"
    processing = "processing"  # an ACH debit for it has not settled
    paid = "paid"
    removed = "removed"  # voided or deleted in Clio: no longer payable


# A bill in these states left its source: nobody may pay it.
REMOVED_STATES = frozenset({InvoiceState.void, InvoiceState.deleted})


class LinkStatus(StrEnum):
    ok = "ok"
    expired = "expired"  # or revoked
    unknown = "unknown"


@dataclass
class ItemView:
    invoice_id: str
    number: str
    kind: str
    due_at: date | None
    currency: str
    balance_minor: int
    status: ItemStatus


@dataclass
class Outstanding:
    items: list[ItemView]
    total_minor: int


@dataclass
class LinkView:
    status: LinkStatus
    firm: FirmProfile | None = None
    client_name: str = ""
    items: list[ItemView] = field(default_factory=list)
    currency: str = "USD"
    total_due_minor: int = 0
    pay_all_outstanding: bool = False
    outstanding: Outstanding | None = None


async def firm_profile(s: AsyncSession, firm_id: str) -> FirmProfile:
    return await stored_firm(s, Firm, firm_id)


async def find_link(s: AsyncSession, token: str) -> PayLink | None:
    return await s.get(PayLink, hash_token(token))


def link_usable(link: PayLink, now: datetime | None = None) -> bool:
    return link.revoked_at is None and aware(link.expires_at) >= (now or datetime.now(UTC))


async def _held(s: AsyncSession, firm_id: str, invoice_ids: list[str]) -> dict[str, dict[str, int]]:
    """invoice_id -> {payment status: amount still held} over unreconciled allocations."""
    rows = await s.execute(
        select(
            Allocation.invoice_id,
            Payment.status,
            func.sum(Allocation.amount_minor - Allocation.refunded_minor),
        )
        .join(Payment, Payment.id == Allocation.payment_id)
        .where(
            Allocation.firm_id == firm_id,
            Allocation.invoice_id.in_(invoice_ids),
            Allocation.reconciled.is_(False),
            Payment.status.in_(HOLDING),
        )
        .group_by(Allocation.invoice_id, Payment.status)
    )
    held: dict[str, dict[str, int]] = {}
    for invoice_id, status, amount in rows:
        held.setdefault(invoice_id, {})[status] = int(amount or 0)
    return held


def item_view(bill: Bill, held: dict[str, int]) -> ItemView:
    """A bill as the client sees it. Processing (an ACH debit not settled) wins over unpaid so
    that nobody pays twice while the bank works; never below zero."""
    balance = max(0, bill.source_balance_minor - sum(held.values()))
    if bill.state in REMOVED_STATES:
        status, balance = ItemStatus.removed, 0
    elif held.get(PaymentStatus.processing):
        status = ItemStatus.processing
    elif balance > 0 and bill.state == InvoiceState.awaiting_payment:
        status = ItemStatus.unpaid
    else:
        status = ItemStatus.paid
    return ItemView(
        bill.invoice_id, bill.number, bill.kind, bill.due_at, bill.currency, balance, status
    )


async def item_views(s: AsyncSession, firm_id: str, invoice_ids: list[str]) -> list[ItemView]:
    """Views of the given bills, in the given order; bills not known here are left out."""
    if not invoice_ids:
        return []
    bills = {
        b.invoice_id: b
        for b in await s.scalars(
            select(Bill).where(Bill.firm_id == firm_id, Bill.invoice_id.in_(invoice_ids))
        )
    }
    held = await _held(s, firm_id, invoice_ids)
    unique = dict.fromkeys(invoice_ids)
    return [item_view(bills[i], held.get(i, {})) for i in unique if i in bills]


async def outstanding(s: AsyncSession, firm_id: str, client_id: str) -> Outstanding:
    """Every unpaid bill of one client across matters: "Accept payments for all unpaid
    bills" lets the client pay all of it at once."""
    ids = list(
        await s.scalars(
            select(Bill.invoice_id)
            .where(
                Bill.firm_id == firm_id,
                Bill.client_id == client_id,
                Bill.state == InvoiceState.awaiting_payment,
            )
            .order_by(Bill.due_at, Bill.number, Bill.invoice_id)
        )
    )
    items = [v for v in await item_views(s, firm_id, ids) if v.status == ItemStatus.unpaid]
    return Outstanding(items=items, total_minor=sum(i.balance_minor for i in items))


async def link_view(s: AsyncSession, token: str) -> LinkView:
    link = await find_link(s, token)
    if link is None:
        return LinkView(status=LinkStatus.unknown)
    firm = await firm_profile(s, link.firm_id)
    if not link_usable(link):
        return LinkView(status=LinkStatus.expired, firm=firm, client_name=link.client_name)
    items = await item_views(s, link.firm_id, json.loads(link.invoice_ids))
    view = LinkView(
        status=LinkStatus.ok,
        firm=firm,
        client_name=link.client_name,
        items=items,
        currency=items[0].currency if items else "USD",
        total_due_minor=sum(i.balance_minor for i in items if i.status == ItemStatus.unpaid),
        pay_all_outstanding=link.pay_all_outstanding,
    )
    if link.pay_all_outstanding:
        view.outstanding = await outstanding(s, link.firm_id, link.client_id)
    return view
