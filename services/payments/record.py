"""To record in Clio: the payments made here that the firm still has to enter in Clio (its
public API cannot record a payment against a bill), item by item. An item leaves the list when
Clio's synced figures show it (`reconcile`, after every invoice.updated and every payment that
succeeds) or when a firm user marks it recorded (`mark`). Either way envelope hears of it
(`payment.recorded`), so the Invoices page stops subtracting it from Clio's balance.
The rules are in record_rules.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from services.payments.models import Allocation, Bill, Payment, outbox
from services.payments.record_rules import ARRIVED, Held, RecordedHow, now_recorded, to_record
from shared.events import Allocation as AllocationEvent
from shared.events import PaymentRecorded
from shared.outbox import add_event


@dataclass(frozen=True)
class Item:
    allocation: Allocation
    payment: Payment
    bill: Bill | None
    amount_minor: int


class NotListed(LookupError):
    """An id that is none of the firm's items: nothing was changed."""


def _rows(firm_id: str) -> object:
    return (
        select(Allocation, Payment, Bill)
        .join(Payment, Payment.id == Allocation.payment_id)
        .outerjoin(
            Bill, (Bill.firm_id == Allocation.firm_id) & (Bill.invoice_id == Allocation.invoice_id)
        )
        .where(Allocation.firm_id == firm_id, Payment.firm_id == firm_id)
    )


async def pending(s: AsyncSession, firm_id: str) -> list[Item]:
    """The firm's items still to record, oldest payment first."""
    rows = await s.execute(
        _rows(firm_id)  # type: ignore[arg-type]
        .where(Allocation.reconciled.is_(False), Payment.status.in_(sorted(ARRIVED)))
        .order_by(Payment.succeeded_at, Payment.created_at, Allocation.id)
    )
    items = []
    for alloc, payment, bill in rows.tuples():
        amount = to_record(payment.status, alloc.amount_minor, alloc.refunded_minor)
        if amount > 0:
            items.append(Item(alloc, payment, bill, amount))
    return items


async def recorded(s: AsyncSession, firm_id: str, limit: int = 50) -> list[Item]:
    """The firm's latest recorded items, newest first: who or what took them off the list."""
    rows = await s.execute(
        _rows(firm_id)  # type: ignore[arg-type]
        .where(Allocation.reconciled.is_(True), Allocation.recorded_at.is_not(None))
        .order_by(Allocation.recorded_at.desc(), Allocation.id.desc())
        .limit(limit)
    )
    return [Item(a, p, b, max(0, a.amount_minor - a.refunded_minor)) for a, p, b in rows.tuples()]


async def _announce(
    s: AsyncSession, firm_id: str, done: Iterable[tuple[Allocation, int]], how: RecordedHow
) -> None:
    by_payment: dict[str, list[AllocationEvent]] = {}
    for alloc, amount in done:
        by_payment.setdefault(alloc.payment_id, []).append(
            AllocationEvent(invoice_id=alloc.invoice_id, amount_minor=amount)
        )
    for payment_id, allocations in by_payment.items():
        ev = PaymentRecorded(
            firm_id=firm_id, payment_id=payment_id, allocations=allocations, how=how
        )
        await add_event(s, outbox, ev)


async def _set_recorded(
    s: AsyncSession, alloc: Allocation, how: RecordedHow, by: str | None
) -> bool:
    """Take `alloc` off the list unless another transaction just did (a sync and a payment
    settling at once): True when this one did, and only then is it announced."""
    now = datetime.now(UTC)
    result = await s.execute(
        update(Allocation)
        .where(Allocation.id == alloc.id, Allocation.reconciled.is_(False))
        .values(reconciled=True, recorded_at=now, recorded_how=how, recorded_by=by)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    set_committed_value(alloc, "reconciled", True)
    set_committed_value(alloc, "recorded_at", now)
    set_committed_value(alloc, "recorded_how", how)
    set_committed_value(alloc, "recorded_by", by)
    return True


async def reconcile(s: AsyncSession, firm_id: str, invoice_ids: Iterable[str]) -> int:
    """Inside the caller's transaction: take off the list what Clio's figures of these bills
    now show. Returns how many items left."""
    done: list[tuple[Allocation, int]] = []
    for invoice_id in sorted(set(invoice_ids)):
        bill = await s.scalar(
            select(Bill).where(Bill.firm_id == firm_id, Bill.invoice_id == invoice_id)
        )
        if bill is None:
            continue
        rows = list(
            (
                await s.execute(
                    select(Allocation, Payment.status)
                    .join(Payment, Payment.id == Allocation.payment_id)
                    .where(Allocation.firm_id == firm_id, Allocation.invoice_id == invoice_id)
                    .order_by(Allocation.id)
                )
            ).tuples()
        )
        held = [
            Held(
                id=a.id,
                amount_minor=to_record(status, a.amount_minor, a.refunded_minor),
                paid_at_payment=a.source_paid_at_payment,
                balance_at_payment=a.source_balance_at_payment,
                recorded=a.reconciled,
            )
            for a, status in rows
        ]
        found = set(now_recorded(held, bill.source_paid_minor, bill.source_balance_minor))
        for (alloc, _status), h in zip(rows, held, strict=True):
            if alloc.id in found and await _set_recorded(s, alloc, RecordedHow.synced, None):
                done.append((alloc, h.amount_minor))
    await _announce(s, firm_id, done, RecordedHow.synced)
    return len(done)


async def mark(s: AsyncSession, firm_id: str, ids: list[int], by: str) -> int:
    """Inside the caller's transaction: a firm user says these items are recorded in Clio.
    Every id must be one of the firm's items (already recorded ones are left as they are);
    otherwise NotListed and nothing changes. Returns how many were marked now."""
    wanted = set(ids)
    rows = list(
        (
            await s.execute(
                select(Allocation, Payment)
                .join(Payment, Payment.id == Allocation.payment_id)
                .where(
                    Allocation.id.in_(sorted(wanted)),
                    Allocation.firm_id == firm_id,
                    Payment.firm_id == firm_id,
                )
            )
        ).tuples()
    )
    if {a.id for a, _ in rows} != wanted:
        raise NotListed("Some of these items are not on your list. Reload the page.")
    done: list[tuple[Allocation, int]] = []
    for alloc, payment in rows:
        amount = to_record(payment.status, alloc.amount_minor, alloc.refunded_minor)
        if alloc.reconciled or amount <= 0:
            continue
        if await _set_recorded(s, alloc, RecordedHow.marked, by):
            done.append((alloc, amount))
    await _announce(s, firm_id, done, RecordedHow.marked)
    return len(done)
