"""The firm's view of its payments: the list, one payment in detail, and the CSV export of
payments to record in Clio. Read-only; every query is scoped by firm."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import rules
from services.payments.balances import aware
from services.payments.models import (
    Allocation,
    Deposit,
    Payment,
    ProcessorEventRecord,
    Refund,
    RefundItem,
)
from shared.events import PaymentMethod
from shared.money import format_money, to_decimal


@dataclass
class PaymentRecord:
    payment: Payment
    allocations: list[Allocation]


@dataclass
class PaymentDetail(PaymentRecord):
    deposits: list[Deposit] = field(default_factory=list)
    refunds: list[tuple[Refund, list[RefundItem]]] = field(default_factory=list)
    timeline: list[tuple[datetime, str]] = field(default_factory=list)
    refundable_minor: int = 0
    refund_block_reason: str | None = None


def _filtered(firm_id: str, status: str | None, q: str | None) -> Select[tuple[Payment]]:
    query = select(Payment).where(Payment.firm_id == firm_id)
    if status:
        query = query.where(Payment.status == status)
    if q and q.strip():
        like = f"%{q.strip().lower()}%"
        numbers = select(Allocation.payment_id).where(
            Allocation.firm_id == firm_id, Allocation.number.ilike(like)
        )
        query = query.where(
            or_(
                Payment.client_name.ilike(like),
                Payment.payer_name.ilike(like),
                Payment.payer_email.ilike(like),
                Payment.id.ilike(like),
                Payment.id.in_(numbers),
            )
        )
    return query.order_by(Payment.created_at.desc(), Payment.id.desc())


async def _allocations(s: AsyncSession, payment_ids: list[str]) -> dict[str, list[Allocation]]:
    out: dict[str, list[Allocation]] = {}
    if payment_ids:
        for a in await s.scalars(
            select(Allocation).where(Allocation.payment_id.in_(payment_ids)).order_by(Allocation.id)
        ):
            out.setdefault(a.payment_id, []).append(a)
    return out


async def allocations_of(s: AsyncSession, payment_id: str) -> list[Allocation]:
    return (await _allocations(s, [payment_id])).get(payment_id, [])


async def refund_items_of(s: AsyncSession, refund_id: str) -> list[RefundItem]:
    return list(
        await s.scalars(
            select(RefundItem).where(RefundItem.refund_id == refund_id).order_by(RefundItem.id)
        )
    )


async def list_payments(
    s: AsyncSession, firm_id: str, status: str | None = None, q: str | None = None
) -> list[PaymentRecord]:
    """Newest first."""
    payments = list(await s.scalars(_filtered(firm_id, status, q)))
    allocations = await _allocations(s, [p.id for p in payments])
    return [PaymentRecord(p, allocations.get(p.id, [])) for p in payments]


async def payment_detail(
    s: AsyncSession, firm_id: str, payment_id: str, refundable_minor: int
) -> PaymentDetail | None:
    payment = await s.get(Payment, payment_id)
    if payment is None or payment.firm_id != firm_id:
        return None
    allocations = (await _allocations(s, [payment.id])).get(payment.id, [])
    deposits = list(
        await s.scalars(
            select(Deposit).where(Deposit.payment_id == payment.id).order_by(Deposit.account)
        )
    )
    refunds = list(
        await s.scalars(
            select(Refund)
            .where(Refund.payment_id == payment.id)
            .order_by(Refund.created_at, Refund.id)
        )
    )
    items: dict[str, list[RefundItem]] = {}
    if refunds:
        for item in await s.scalars(
            select(RefundItem)
            .where(RefundItem.refund_id.in_([r.id for r in refunds]))
            .order_by(RefundItem.id)
        ):
            items.setdefault(item.refund_id, []).append(item)
    events = list(
        await s.scalars(
            select(ProcessorEventRecord)
            .where(ProcessorEventRecord.payment_id == payment.id)
            .order_by(ProcessorEventRecord.occurred_at, ProcessorEventRecord.id)
        )
    )
    return PaymentDetail(
        payment=payment,
        allocations=allocations,
        deposits=deposits,
        refunds=[(r, items.get(r.id, [])) for r in refunds],
        timeline=timeline(payment, events, refunds),
        refundable_minor=refundable_minor,
        refund_block_reason=rules.refund_block_reason(
            payment.status, payment.method, refundable_minor
        ),
    )


def _event_text(payment: Payment, kind: str, data: dict[str, Any]) -> str | None:
    money = format_money(payment.amount_minor, payment.currency)
    reason = data.get("failure_reason") or data.get("failure_code") or ""
    bank = payment.method == PaymentMethod.ach
    texts = {
        "payment.processing": f"Bank payment of {money} started (ACH): processing until it settles",
        "checkout.completed": f"Checkout completed for {money}",
        "payment.succeeded": (
            f"ACH payment of {money} settled" if bank else f"Card charged {money}"
        ),
        "payment.failed": f"Payment failed: {reason}".rstrip(": "),
        "payment.disputed": (
            f"Returned by the bank: {reason}" if bank else f"Disputed by the card holder: {reason}"
        ).rstrip(": "),
    }
    return texts.get(kind)


def timeline(
    payment: Payment, events: list[ProcessorEventRecord], refunds: list[Refund]
) -> list[tuple[datetime, str]]:
    """What happened, in the processor's time, each line once."""
    lines: list[tuple[datetime, str]] = []
    for row in events:
        text = _event_text(payment, row.kind, json.loads(row.data))
        if text:
            lines.append((aware(row.occurred_at), text))
    for refund in refunds:
        money = format_money(refund.amount_minor, payment.currency)
        lines.append(
            (aware(refund.created_at), f"Refund of {money} asked by {refund.requested_by}")
        )
        refund_events = [
            e
            for e in events
            if e.refund_id == refund.id
            or (refund.processor_ref and e.refund_ref == refund.processor_ref)
        ]
        for row in refund_events:
            at = aware(row.occurred_at)
            if row.kind == "refund.succeeded":
                lines.append((at, f"Refund of {money} succeeded"))
            elif row.kind == "refund.failed":
                lines.append((at, f"Refund of {money} failed: {refund.failure_reason or ''}"))
    lines.sort(key=lambda line: line[0])
    seen: set[str] = set()
    unique = []
    for at, text in lines:
        if text not in seen:
            seen.add(text)
            unique.append((at, text))
    return unique


# --- CSV ----------------------------------------------------------------------------------

CSV_HEADER = (
    "payment_id",
    "created_at",
    "succeeded_at",
    "client_name",
    "payer_name",
    "payer_email",
    "method",
    "status",
    "invoice_number",
    "kind",
    "account",
    "allocated",
    "refunded",
    "payment_amount",
    "fee",
    "currency",
)


def _cell(value: str | None) -> str:
    """Text a spreadsheet will not run as a formula (names come from clients)."""
    text = value or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _amount(minor: int, currency: str) -> str:
    return str(to_decimal(minor, currency))


def csv_rows(records: list[PaymentRecord]) -> Iterator[str]:
    """The export, one row per allocation, header first (also when there is nothing)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        out = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return out

    writer.writerow(CSV_HEADER)
    yield flush()
    for record in records:
        p = record.payment
        for a in record.allocations:
            writer.writerow(
                (
                    p.id,
                    aware(p.created_at).isoformat(),
                    aware(p.succeeded_at).isoformat() if p.succeeded_at else "",
                    _cell(p.client_name),
                    _cell(p.payer_name),
                    _cell(p.payer_email),
                    p.method,
                    p.status,
                    _cell(a.number),
                    a.kind,
                    a.account,
                    _amount(a.amount_minor, p.currency),
                    _amount(a.refunded_minor, p.currency),
                    _amount(p.amount_minor, p.currency),
                    _amount(p.fee_minor, p.currency),
                    p.currency,
                )
            )
        yield flush()
