"""Envelope and the two events of issue 16: payment.recorded (a payment made here that Clio
now counts: never subtracted from Clio's balance twice) and invoice.removed (a bill voided
or deleted in Clio: on no unpaid list, in no reminder, left out of an envelope being sent,
never brought back by a stale snapshot). The double-counting test runs payments too: its
payment.* and payment.recorded events, as it publishes them, go to envelope's projections.
Both backends."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.envelope import reads
from services.envelope.models import Invoice
from services.envelope.rules import balance_due
from services.gateway.pages import invoice_state, unpaid
from shared.events import (
    Allocation,
    InvoiceRemoved,
    InvoiceState,
    InvoiceUpdated,
    PaymentRecorded,
    PaymentSucceeded,
)
from tests.conftest import create_pg_database, drop_pg_database
from tests.envelope.reminders_world import FIRM_ID, World, at, bill, firm, world  # noqa: F401
from tests.payments import conftest as pay
from tests.payments.conftest import BillSpec

DAY1 = datetime(2026, 3, 1, tzinfo=UTC).date()


@pytest.fixture
async def payments_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A second database, for payments beside envelope."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'payments.db'}"
        return
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


async def row(w: World, invoice_id: str) -> Invoice:
    async with w.service.sessionmaker() as s:
        found = await reads.invoice(s, FIRM_ID, invoice_id)
    assert found is not None
    return found


def shown(inv: Invoice) -> tuple[str, int]:
    """The Invoices page's State and Balance columns of a bill (invoices.html's figure)."""
    return invoice_state(inv)[0], balance_due(inv.balance_minor, inv.paid_online_minor)


async def deliver(w: World, key: str, body: dict[str, Any]) -> None:
    """One event payments published, handled by envelope's projection of it."""
    async with w.service.sessionmaker() as s, s.begin():
        if key == "payment.recorded":
            await w.projections.on_payment_recorded(s, PaymentRecorded.model_validate(body))
        else:
            await w.projections.on_payment(s, PaymentSucceeded.model_validate(body))


async def remove(w: World, invoice_id: str, at_: datetime, state: str = "void") -> None:
    ev = InvoiceRemoved(
        firm_id=FIRM_ID,
        invoice_id=invoice_id,
        reason="voided in Clio",
        state=state,  # type: ignore[arg-type]
        occurred_at=at_,
    )
    async with w.service.sessionmaker() as s, s.begin():
        await w.projections.on_invoice_removed(s, ev)


async def test_a_payment_recorded_in_clio_is_never_counted_twice(
    world: World,  # noqa: F811
    payments_url: str,
) -> None:
    """Paid here in full; the firm then records it in Clio and adds a new 300.00 charge:
    Clio's balance is 300.00 and the page must show 300.00 owed, not "Paid online"."""
    snap = bill(1, DAY1, client="c-dana", client_name="Dana Whitfield")
    await world.firm(firm())
    await world.bills(snap)
    async with pay.running(payments_url) as p:
        spec = BillSpec(snap.invoice_id, snap.number, snap.balance_minor, client_id="c-dana")
        await p.firm(pay.FIRM)
        await p.bills(spec, firm_id=pay.FIRM)
        token = await p.link(spec, firm_id=pay.FIRM)
        await p.pay_card(token)
        recorded_snap = snap.model_copy(
            update={
                "total_minor": snap.total_minor + 30_000,
                "balance_minor": 30_000,
                "paid_minor": snap.paid_minor + snap.balance_minor,
            }
        )
        ev = InvoiceUpdated(firm_id=pay.FIRM, invoice=recorded_snap)
        async with p.ledger.service.sessionmaker() as s, s.begin():
            await pay.mirror.on_invoice_updated(s, ev)
        published = [
            (key, body | {"firm_id": FIRM_ID})
            for key, body in await p.published()
            if key in ("payment.succeeded", "payment.recorded")
        ]
    assert [k for k, _ in published] == ["payment.succeeded", "payment.recorded"]
    await deliver(world, *published[0])
    assert shown(await row(world, snap.invoice_id)) == ("Paid online", 0)
    # Clio's sync reaches envelope: before payment.recorded, and after it.
    await world.bills(recorded_snap)
    await deliver(world, *published[1])
    inv = await row(world, snap.invoice_id)
    assert shown(inv) == ("Unpaid", 30_000)
    assert unpaid(inv)
    listed, _ = await reads.list_invoices(world.service, FIRM_ID, state="unpaid")
    assert [i.invoice_id for i in listed] == [snap.invoice_id]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_recorded_payments_give_one_result_in_every_order(
    world: World,  # noqa: F811
    order: tuple[int, ...],
) -> None:
    """payment.succeeded, the sync and payment.recorded arrive in any order."""
    snap = bill(2, DAY1)
    await world.bills(snap)
    paid = snap.balance_minor
    alloc = [Allocation(invoice_id=snap.invoice_id, amount_minor=paid)]
    common = {"firm_id": FIRM_ID, "payment_id": "pay_1", "allocations": alloc}
    synced = snap.model_copy(
        update={"state": InvoiceState.paid, "balance_minor": 0, "paid_minor": snap.total_minor}
    )
    steps = [
        lambda: deliver(
            world,
            "payment.succeeded",
            common | {"method": "card", "currency": "USD", "amount_minor": paid},
        ),
        lambda: world.bills(synced),
        lambda: deliver(world, "payment.recorded", common | {"how": "synced"}),
    ]
    for i in order:
        await steps[i]()
    inv = await row(world, snap.invoice_id)
    assert shown(inv) == ("Paid", 0)
    assert (inv.paid_online_minor, inv.recorded_online_minor) == (0, paid)


async def test_a_removed_bill_leaves_the_unpaid_lists_and_reminders(
    world: World,  # noqa: F811
) -> None:
    await world.firm(firm())
    await world.bills(bill(3, DAY1, client="a"), bill(4, DAY1, client="b"))
    await remove(world, "clio:4", datetime.now(UTC))
    inv = await row(world, "clio:4")
    assert inv.state == "void" and shown(inv)[0] == "Void" and not unpaid(inv)
    listed, _ = await reads.list_invoices(world.service, FIRM_ID, state="unpaid")
    assert [i.invoice_id for i in listed] == ["clio:3"]
    # Reminders select by state: client b (only the voided bill) is never reminded.
    assert (await world.run(at(DAY1 + timedelta(days=16)))).queued == 1
    [req] = await world.reminder_requests()
    assert req["client_id"] == "a" and req["invoice_ids"] == ["clio:3"]


async def test_an_envelope_being_sent_leaves_a_removed_bill_out(
    world: World,  # noqa: F811
) -> None:
    await world.firm(firm())
    await world.bills(bill(5, DAY1), bill(6, DAY1))
    await remove(world, "clio:6", datetime.now(UTC), state="deleted")
    await world.manual_send("77", ["clio:5", "clio:6"], at(DAY1 + timedelta(days=2)))
    [email] = await world.outbox("email.requested")
    assert "INV-5" in email["subject"] and "INV-6" not in email["subject"]


async def test_a_stale_snapshot_does_not_bring_a_removed_bill_back(
    world: World,  # noqa: F811
) -> None:
    snap = bill(7, DAY1)
    seen = datetime.now(UTC)
    async with world.service.sessionmaker() as s, s.begin():
        await world.projections.on_invoice_updated(
            s, InvoiceUpdated(firm_id=FIRM_ID, invoice=snap, occurred_at=seen)
        )
    await remove(world, snap.invoice_id, seen + timedelta(seconds=2))
    # Seen by sync before the removal, delivered after it: skipped.
    async with world.service.sessionmaker() as s, s.begin():
        await world.projections.on_invoice_updated(
            s,
            InvoiceUpdated(firm_id=FIRM_ID, invoice=snap, occurred_at=seen + timedelta(seconds=1)),
        )
    assert (await row(world, snap.invoice_id)).state == "void"
    # Seen after it: Clio shows the bill payable again.
    async with world.service.sessionmaker() as s, s.begin():
        await world.projections.on_invoice_updated(
            s,
            InvoiceUpdated(firm_id=FIRM_ID, invoice=snap, occurred_at=seen + timedelta(seconds=3)),
        )
    assert (await row(world, snap.invoice_id)).state == "awaiting_payment"
