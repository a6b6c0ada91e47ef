"""What payments tells other services: each payment's transitions as `payment.*` events on
the bus, each once (the payment and refund rows remember what went out), in the order a
reader expects: an ACH debit is announced processing before it is announced settled,
whatever order its webhooks came in."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import rules
from services.payments.models import Allocation, Payment, Refund, RefundItem
from shared.events import Allocation as AllocationEvent
from shared.events import (
    PaymentFailed,
    PaymentMethod,
    PaymentProcessing,
    PaymentRefunded,
    PaymentSucceeded,
    RefundStatus,
)
from shared.runtime import Service


async def announce(
    service: Service,
    s: AsyncSession,
    payment: Payment,
    state: rules.PaymentState,
    allocations: list[Allocation],
    refunds: list[Refund],
    items: dict[str, list[RefundItem]],
) -> None:
    """Publish (through the outbox, in `s`) each transition of `payment` not announced yet."""
    common = {
        "firm_id": payment.firm_id,
        "payment_id": payment.id,
        "method": payment.method,
        "currency": payment.currency,
        "amount_minor": payment.amount_minor,
        "payer_name": payment.payer_name,
        "payer_email": payment.payer_email,
    }
    full = [
        AllocationEvent(invoice_id=a.invoice_id, amount_minor=a.amount_minor) for a in allocations
    ]
    if payment.method == PaymentMethod.ach and not payment.announced_processing:
        await service.publish(s, PaymentProcessing(**common, allocations=full))
        payment.announced_processing = True
    if state.rank >= rules.Progress.succeeded and not payment.announced_succeeded:
        await service.publish(s, PaymentSucceeded(**common, allocations=full))
        payment.announced_succeeded = True
    if rules.announces_failure(state.rank, payment.method) and not payment.announced_failed:
        await service.publish(
            s,
            PaymentFailed(
                **common,
                allocations=full,
                reason=payment.failure_reason or "",
                failure_code=payment.failure_code,
                returned=state.rank == rules.Progress.returned,
            ),
        )
        payment.announced_failed = True
    if not payment.announced_succeeded:
        return
    for refund in refunds:
        if refund.status != RefundStatus.succeeded or refund.announced:
            continue
        await service.publish(
            s,
            PaymentRefunded(
                **common,
                allocations=[
                    AllocationEvent(invoice_id=i.invoice_id, amount_minor=i.amount_minor)
                    for i in items.get(refund.id, [])
                ],
                refund_id=refund.id,
                refunded_minor=refund.amount_minor,
            ),
        )
        refund.announced = True
