"""The Invoices page's view of online payments: payment events come on separate queues, so
any order of them must give the same result. Both database backends."""

from __future__ import annotations

import itertools

from services.envelope import reads
from services.envelope.models import Invoice
from shared.events import (
    Allocation,
    PaymentEvent,
    PaymentFailed,
    PaymentProcessing,
    PaymentRefunded,
    PaymentSucceeded,
)
from tests.envelope import test_rendering as rendering
from tests.envelope.test_rendering import FIRM_ID, Harness, snapshot

harness = rendering.harness  # the envelope service's desk on a fresh database

INVOICE = snapshot(2001)


def _ev(cls: type[PaymentEvent], method: str, amount: int, **extra: object) -> PaymentEvent:
    return cls(
        firm_id=FIRM_ID,
        payment_id="pay_1",
        method=method,  # type: ignore[arg-type]
        currency="USD",
        amount_minor=amount,
        allocations=[Allocation(invoice_id=INVOICE.invoice_id, amount_minor=amount)],
        **extra,  # type: ignore[arg-type]
    )


async def _apply_all(h: Harness, events: list[PaymentEvent]) -> Invoice:
    for ev in events:
        async with h.service.sessionmaker() as s, s.begin():
            await h.desk.on_payment(s, ev)
    async with h.service.sessionmaker() as s:
        rows = await reads.invoices(s, FIRM_ID, [INVOICE.invoice_id])
    return rows[0]


async def _reset(h: Harness) -> None:
    async with h.service.sessionmaker() as s, s.begin():
        (inv,) = await reads.invoices(s, FIRM_ID, [INVOICE.invoice_id])
        inv.paid_online_minor = inv.processing_minor = inv.refunded_minor = 0
        inv.payment_status = None


async def test_ach_settled_then_refunded_gives_one_result_in_every_order(
    harness: Harness,
) -> None:
    await harness.invoice_updated(INVOICE)
    amount = INVOICE.balance_minor
    events = [
        _ev(PaymentProcessing, "ach", amount),
        _ev(PaymentSucceeded, "ach", amount),
        _ev(PaymentRefunded, "ach", amount, refund_id="re_1", refunded_minor=amount),
    ]
    for order in itertools.permutations(events):
        await _reset(harness)
        inv = await _apply_all(harness, list(order))
        assert (inv.paid_online_minor, inv.processing_minor, inv.refunded_minor) == (0, 0, amount)
        assert inv.payment_status == "refunded"


async def test_ach_states_as_the_firm_sees_them(harness: Harness) -> None:
    await harness.invoice_updated(INVOICE)
    amount = INVOICE.balance_minor
    processing = await _apply_all(harness, [_ev(PaymentProcessing, "ach", amount)])
    assert processing.payment_status == "processing"  # never "paid" before it settles
    failed = await _apply_all(
        harness, [_ev(PaymentFailed, "ach", amount, reason="R01", failure_code="R01")]
    )
    assert failed.payment_status is None and failed.paid_online_minor == 0  # owed again

    await _reset(harness)
    settled = await _apply_all(
        harness, [_ev(PaymentProcessing, "ach", amount), _ev(PaymentSucceeded, "ach", amount)]
    )
    assert settled.payment_status == "paid_online" and settled.paid_online_minor == amount
    returned = await _apply_all(
        harness, [_ev(PaymentFailed, "ach", amount, reason="R10", returned=True)]
    )
    assert returned.payment_status is None and returned.paid_online_minor == 0


async def test_a_partial_card_refund_keeps_the_rest_paid(harness: Harness) -> None:
    await harness.invoice_updated(INVOICE)
    amount = INVOICE.balance_minor
    inv = await _apply_all(
        harness,
        [
            _ev(PaymentRefunded, "card", 1000, refund_id="re_2", refunded_minor=1000),
            _ev(PaymentSucceeded, "card", amount),  # arriving after the refund
        ],
    )
    assert inv.paid_online_minor == amount - 1000
    assert inv.refunded_minor == 1000
    assert inv.payment_status == "paid_online"
