"""Refunds asked for from the firm's payment page.

The request is checked against the rules (`rules.plan_refund`) and recorded, committed, before
the processor is asked; the processor's answer comes back as a `ProcessorEvent` like any
webhook, so there is one path into the ledger. The refund id is the idempotency key all the
way down: a double submit, or a retry after a crash, refunds once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import deposit_rules, refund_state, rules
from services.payments.ledger import Ledger
from services.payments.models import (
    Allocation,
    Deposit,
    Payment,
    ProcessorEventRecord,
    Refund,
    RefundItem,
)
from services.payments.processors import Deposit as DepositOrder
from services.payments.processors import ProcessorError, ProcessorEvent, RefundOrder, RefundResult
from shared.events import RefundStatus

log = logging.getLogger(__name__)


class PaymentNotFound(LookupError):
    pass


@dataclass(frozen=True)
class RefundRequest:
    refund_id: str
    requested_by: str
    full: bool
    items: list[tuple[str, int]]


async def _payment_of(s: AsyncSession, firm_id: str, payment_id: str) -> Payment:
    payment = await s.get(Payment, payment_id)
    if payment is None or payment.firm_id != firm_id:
        raise PaymentNotFound(payment_id)
    return payment


async def _lefts(
    s: AsyncSession, payment: Payment
) -> tuple[list[Allocation], list[Refund], list[rules.AllocationLeft]]:
    allocations = list(
        await s.scalars(
            select(Allocation).where(Allocation.payment_id == payment.id).order_by(Allocation.id)
        )
    )
    refunds = list(await s.scalars(select(Refund).where(Refund.payment_id == payment.id)))
    committed = await refund_state.committed_per_item(s, refunds)
    lefts = [
        rules.AllocationLeft(a.invoice_id, a.kind, a.amount_minor, committed.get(a.invoice_id, 0))
        for a in allocations
    ]
    return allocations, refunds, lefts


async def refundable(s: AsyncSession, payment: Payment) -> int:
    """What can still be refunded: allocated less refunds that succeeded or are pending."""
    if payment.status not in rules.SETTLED:
        return 0
    _, _, lefts = await _lefts(s, payment)
    return sum(a.left_minor for a in lefts)


async def _reversals(
    s: AsyncSession, payment: Payment, refunds: list[Refund], new: list[RefundItem]
) -> list[DepositOrder]:
    """What to take back from each deposit for this refund: the items' accounts, capped
    cumulatively as `deposit_rules.reversed_by_refunds` caps them (operating gives back at most
    what it received)."""
    deposits = {
        d.account: d
        for d in await s.scalars(select(Deposit).where(Deposit.payment_id == payment.id))
    }
    live_ids = [r.id for r in refunds if r.status != RefundStatus.failed]
    before: dict[str, int] = {}
    if live_ids:
        for item in await s.scalars(select(RefundItem).where(RefundItem.refund_id.in_(live_ids))):
            before[item.account] = before.get(item.account, 0) + item.amount_minor
    now = dict(before)
    for item in new:
        now[item.account] = now.get(item.account, 0) + item.amount_minor
    orders = []
    for account, deposit in sorted(deposits.items()):
        if not deposit.transferred or not deposit.ref:
            continue
        args = (deposit.amount_minor, deposit.fee_minor)
        take = deposit_rules.reversed_by_refunds(account, now.get(account, 0), *args) - (
            deposit_rules.reversed_by_refunds(account, before.get(account, 0), *args)
        )
        if take > 0:
            orders.append(
                DepositOrder(
                    account=account,  # type: ignore[arg-type]
                    amount_minor=take,
                    fee_minor=0,
                    ref=deposit.ref,
                    destination=deposit.destination,
                )
            )
    return orders


async def record_refund(
    ledger: Ledger,
    s: AsyncSession,
    payment: Payment,
    request: RefundRequest,
    planned: list[tuple[str, int]],
    *,
    at: datetime | None = None,
) -> Refund:
    """Inside a `tx()`: the refund row and its items, then the payment derived again (an
    event naming this refund may have come first)."""
    allocations = list(
        await s.scalars(select(Allocation).where(Allocation.payment_id == payment.id))
    )
    refund = Refund(
        id=request.refund_id,
        payment_id=payment.id,
        firm_id=payment.firm_id,
        amount_minor=sum(a for _, a in planned),
        status=RefundStatus.pending,
        requested_by=request.requested_by[:300],
        created_at=at or datetime.now(UTC),
        submitted=False,
        announced=False,
    )
    s.add(refund)
    refund_state.add_items(s, refund.id, allocations, planned)
    for row in await s.scalars(
        select(ProcessorEventRecord).where(
            ProcessorEventRecord.refund_id == refund.id, ProcessorEventRecord.payment_id.is_(None)
        )
    ):
        row.payment_id, row.firm_id = payment.id, payment.firm_id
    await s.flush()
    await ledger.derive(s, payment)
    return refund


async def request_refund(
    ledger: Ledger, firm_id: str, payment_id: str, request: RefundRequest
) -> Refund:
    """Check, record, then ask the processor. Raises PaymentNotFound, rules.RefundRefused
    (409) or rules.RefundInvalid (422)."""
    async with ledger.tx() as s:
        payment = await _payment_of(s, firm_id, payment_id)
        existing = await s.get(Refund, request.refund_id)
        if existing is not None:
            if existing.payment_id != payment.id:
                raise rules.RefundRefused("That refund id belongs to another payment.")
            if existing.submitted:
                return existing
        else:
            allocations, refunds, lefts = await _lefts(s, payment)
            planned = rules.plan_refund(
                status=payment.status,
                method=payment.method,
                allocations=lefts,
                full=request.full,
                items=request.items,
            )
            existing = await record_refund(ledger, s, payment, request, planned)
    return await submit_refund(ledger, existing.id)


async def submit_refund(ledger: Ledger, refund_id: str) -> Refund:
    """Ask the processor for a recorded refund (again, after a crash: same idempotency key)
    and record its answer as an event."""
    async with ledger.service.sessionmaker() as s:
        refund = await s.get(Refund, refund_id)
        assert refund is not None
        payment = await s.get(Payment, refund.payment_id)
        assert payment is not None
        refunds = list(
            await s.scalars(
                select(Refund).where(Refund.payment_id == payment.id, Refund.id != refund.id)
            )
        )
        items = list(await s.scalars(select(RefundItem).where(RefundItem.refund_id == refund.id)))
        reversals = await _reversals(s, payment, refunds, items)
    try:
        result = await ledger.processor.refund(
            RefundOrder(
                refund_id=refund.id,
                payment_ref=payment.processor_ref or "",
                amount_minor=refund.amount_minor,
                currency=payment.currency,
                reversals=reversals,
                firm_id=payment.firm_id,
            )
        )
    except ProcessorError as exc:
        if exc.retryable:
            log.warning("refund %s not taken yet, will retry: %s", refund.id, exc)
            return refund
        result = RefundResult(ref="", status=RefundStatus.failed, failure_reason=str(exc))
    return await _record_result(ledger, refund.id, payment, result)


async def _record_result(
    ledger: Ledger, refund_id: str, payment: Payment, result: RefundResult
) -> Refund:
    async with ledger.tx() as s:
        refund = await s.get(Refund, refund_id)
        assert refund is not None
        refund.submitted = True
        refund.processor_ref = refund.processor_ref or result.ref or None
        if result.status != RefundStatus.pending:
            succeeded = result.status == RefundStatus.succeeded
            await ledger.record(
                s,
                ProcessorEvent(
                    event_id=f"refund-result:{refund_id}:{result.status}",
                    kind="refund.succeeded" if succeeded else "refund.failed",
                    occurred_at=datetime.now(UTC),
                    payment_ref=payment.processor_ref,
                    amount_minor=refund.amount_minor,
                    refund_ref=result.ref or None,
                    refund_id=refund_id,
                    failure_reason=result.failure_reason,
                    raw_type="refund result",
                ),
                payment.processor,
            )
        else:
            row = await s.get(Payment, payment.id)
            assert row is not None
            await ledger.derive(s, row)
    async with ledger.service.sessionmaker() as s:
        done = await s.get(Refund, refund_id)
        assert done is not None
        return done


async def refund_loop(ledger: Ledger) -> None:
    """Refunds recorded but never put to the processor (a crash, a processor outage)."""
    while True:
        await asyncio.sleep(ledger.settings.retry_seconds)
        cutoff = datetime.now(UTC) - timedelta(seconds=ledger.settings.retry_seconds)
        async with ledger.service.sessionmaker() as s:
            stuck = list(
                await s.scalars(
                    select(Refund.id).where(
                        Refund.submitted.is_(False),
                        Refund.status == RefundStatus.pending,
                        Refund.created_at <= cutoff,
                    )
                )
            )
        for refund_id in stuck:
            await submit_refund(ledger, refund_id)
