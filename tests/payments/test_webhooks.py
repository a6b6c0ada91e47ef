"""The webhook endpoint and the ledger behind it: verified on the raw body (a bad signature is
400 and changes nothing), unknown types ignored with 200, repeats applied once, events out of
order or about a payment not known yet ending in the same state. Test mode's webhooks are
signed as Stripe signs them, so these run offline."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.payments.models import Deposit, Payment, ProcessorEventRecord
from services.payments.testmode import TEST_WEBHOOK_SECRET, sign
from tests.payments.conftest import BillSpec, Payments, running

pytestmark = pytest.mark.timeout(120)

BILL = BillSpec("clio:501", "501", 80_000)
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def body(event_id: str, kind: str, at: datetime, **data: Any) -> bytes:
    return json.dumps(
        {"id": event_id, "type": kind, "created": int(at.timestamp()), "data": data}
    ).encode()


async def deliver(
    payments: Payments, payload: bytes, signature: str | None = None
) -> httpx.Response:
    headers = {
        "Stripe-Signature": signature
        if signature is not None
        else sign(payload, TEST_WEBHOOK_SECRET)
    }
    # No internal token: the signature is the webhook's authentication.
    return await payments.http.post(
        "/webhooks/stripe", content=payload, headers=headers | {"X-Internal-Token": ""}
    )


async def recorded(payments: Payments) -> int:
    async with payments.ledger.service.sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(ProcessorEventRecord)) or 0)


async def open_session(payments: Payments) -> str:
    await payments.bills(BILL)
    return await payments.session(await payments.link(BILL))


def ach_events(session_id: str) -> list[bytes]:
    ref = "pi_webhook_1"
    common = {"payment_ref": ref, "method": "ach", "amount_minor": 80_000}
    return [
        body(
            "evt_1",
            "payment.processing",
            T0,
            session_id=session_id,
            payer_name="Dana Whitfield",
            last4="6789",
            **common,
        ),
        body(
            "evt_2",
            "checkout.completed",
            T0 + timedelta(seconds=1),
            session_id=session_id,
            **common,
        ),
        body("evt_3", "payment.succeeded", T0 + timedelta(days=3), fee_minor=500, **common),
    ]


async def test_a_bad_signature_is_refused_and_changes_nothing(payments: Payments) -> None:
    session_id = await open_session(payments)
    [payload, *_] = ach_events(session_id)
    forged = sign(payload, "whsec_someone_else")
    assert (await deliver(payments, payload, forged)).status_code == 400
    assert (await deliver(payments, payload, "")).status_code == 400
    stale = sign(payload, TEST_WEBHOOK_SECRET, timestamp=int(time.time()) - 3600)
    assert (await deliver(payments, payload, stale)).status_code == 400
    tampered = payload.replace(b"80000", b"1")
    assert (
        await deliver(payments, tampered, sign(payload, TEST_WEBHOOK_SECRET))
    ).status_code == 400
    assert await recorded(payments) == 0
    assert await payments.published() == []


async def test_unknown_event_types_are_ignored_with_200(payments: Payments) -> None:
    payload = body("evt_x", "customer.created", T0, payment_ref="pi_1")
    resp = await deliver(payments, payload)
    assert resp.status_code == 200 and resp.json() == {"received": True}
    assert await recorded(payments) == 0


async def test_repeats_apply_once(payments: Payments) -> None:
    session_id = await open_session(payments)
    events = ach_events(session_id)
    for payload in events + events + [events[0]]:
        resp = await deliver(payments, payload)
        assert resp.status_code == 200
    assert await recorded(payments) == 3
    assert [k for k, _ in await payments.published()] == [
        "payment.processing",
        "payment.succeeded",
    ]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (2, 0, 1), (1, 2, 0)])
async def test_any_order_ends_in_the_same_state(payments: Payments, order: tuple[int, ...]) -> None:
    session_id = await open_session(payments)
    events = ach_events(session_id)
    for i in order:
        assert (await deliver(payments, events[i])).status_code == 200
    async with payments.ledger.service.sessionmaker() as s:
        [payment] = list(await s.scalars(select(Payment)))
    assert payment.status == "succeeded" and payment.method == "ach"
    assert payment.succeeded_at == T0 + timedelta(days=3)
    assert payment.created_at == T0 and payment.fee_minor == 500
    assert (payment.payer_name, payment.bank_last4) == ("Dana Whitfield", "6789")
    # Processing is announced before settlement whatever the arrival order.
    assert [k for k, _ in await payments.published()] == [
        "payment.processing",
        "payment.succeeded",
    ]


async def test_a_success_that_names_no_method_waits_for_one(payments: Payments) -> None:
    """Stripe's payment_intent.succeeded names no method when the intent allowed card and
    bank account. Arriving first, it must not make an ACH payment a card payment: no card
    fee, no deposit and no announcement until an event says how it was paid."""
    session_id = await open_session(payments)
    ref = "pi_webhook_nomethod"
    first = body(
        "evt_nm_3",
        "payment.succeeded",
        T0 + timedelta(days=3),
        session_id=session_id,
        payment_ref=ref,
        amount_minor=80_000,
    )
    assert (await deliver(payments, first)).status_code == 200
    async with payments.ledger.service.sessionmaker() as s:
        [payment] = list(await s.scalars(select(Payment)))
        assert payment.status == "processing"
        assert list(await s.scalars(select(Deposit))) == []
    assert await payments.published() == []

    later = body(
        "evt_nm_1",
        "payment.processing",
        T0,
        session_id=session_id,
        payment_ref=ref,
        method="ach",
        amount_minor=80_000,
    )
    assert (await deliver(payments, later)).status_code == 200
    async with payments.ledger.service.sessionmaker() as s:
        [payment] = list(await s.scalars(select(Payment)))
        deposits = list(await s.scalars(select(Deposit)))
    assert payment.status == "succeeded" and payment.method == "ach"
    assert payment.fee_minor == 500  # ACH: 0.8 % capped at $5.00, not the card's 2.9 % + 30c
    assert sum(d.fee_minor for d in deposits) == 500
    assert [k for k, _ in await payments.published()] == [
        "payment.processing",
        "payment.succeeded",
    ]


async def test_an_event_before_its_payment_waits_for_it(payments: Payments) -> None:
    """A return that arrives before anything else about its payment is kept, and applied
    when the payment appears."""
    session_id = await open_session(payments)
    dispute = body(
        "evt_d",
        "payment.disputed",
        T0 + timedelta(days=9),
        payment_ref="pi_webhook_1",
        failure_code="R10",
        failure_reason="Customer advises not authorized",
    )
    assert (await deliver(payments, dispute)).status_code == 200
    async with payments.ledger.service.sessionmaker() as s:
        assert list(await s.scalars(select(Payment))) == []
    for payload in ach_events(session_id):
        await deliver(payments, payload)
    async with payments.ledger.service.sessionmaker() as s:
        [payment] = list(await s.scalars(select(Payment)))
        waiting = await s.scalar(
            select(func.count())
            .select_from(ProcessorEventRecord)
            .where(ProcessorEventRecord.payment_id.is_(None))
        )
    assert payment.status == "returned" and waiting == 0
    published = await payments.published()
    assert [k for k, _ in published] == [
        "payment.processing",
        "payment.succeeded",
        "payment.failed",
    ]
    assert published[-1][1]["returned"] is True


async def test_a_card_retry_after_a_decline_succeeds(payments: Payments) -> None:
    """Stripe reports a declined attempt and then the successful one on the same intent,
    possibly in either order: the payment is succeeded, and a decline alone is not news."""
    session_id = await open_session(payments)
    common = {"session_id": session_id, "payment_ref": "pi_card", "method": "card"}
    declined = body("evt_f", "payment.failed", T0, failure_code="card_declined", **common)
    await deliver(payments, declined)
    async with payments.ledger.service.sessionmaker() as s:
        [payment] = list(await s.scalars(select(Payment)))
    assert payment.status == "failed"
    assert await payments.published() == []
    ok = body("evt_s", "payment.succeeded", T0 + timedelta(minutes=1), last4="4242", **common)
    await deliver(payments, ok)
    async with payments.ledger.service.sessionmaker() as s:
        [payment] = list(await s.scalars(select(Payment)))
    assert payment.status == "succeeded" and payment.card_last4 == "4242"
    assert payment.failure_reason is None
    assert [k for k, _ in await payments.published()] == ["payment.succeeded"]


async def test_concurrent_deliveries_of_one_event_apply_it_once(payments: Payments) -> None:
    session_id = await open_session(payments)
    events = ach_events(session_id)
    results = await asyncio.gather(*[deliver(payments, e) for e in events * 4])
    assert {r.status_code for r in results} == {200}
    assert await recorded(payments) == 3
    assert [k for k, _ in await payments.published()] == [
        "payment.processing",
        "payment.succeeded",
    ]


async def test_settlement_survives_a_restart(database_url: str) -> None:
    """An ACH debit started before a restart settles afterwards, by the background loop."""
    async with running(database_url, ach_settle_seconds=0.2) as before:
        await before.bills(BILL)
        paid = await before.pay_ach(await before.link(BILL))
    async with running(database_url, ach_settle_seconds=0.2, settle_poll_seconds=0.05) as after:
        loop = asyncio.create_task(after.app.state.testmode.settle_loop())
        try:
            for _ in range(100):
                if (await after.detail(paid["id"]))["status"] == "succeeded":
                    break
                await asyncio.sleep(0.05)
        finally:
            loop.cancel()
        assert (await after.detail(paid["id"]))["status"] == "succeeded"
