"""sync on the real RabbitMQ: a payment made online on a LEDES-imported invoice (which has no
source system to record it) reaches sync as payment.succeeded, once however often it is
delivered, and the invoice is then published as paid."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select

from services.sync.app import create_app
from services.sync.ledes_import import LedesImporter, invoice_id_for
from services.sync.models import LedesInvoice
from services.sync.settings import SyncSettings
from shared.api.ledes import ClientEmail, ImportOptions
from shared.bus import Bus
from shared.events import Allocation, InvoiceState, InvoiceUpdated, PaymentMethod, PaymentSucceeded
from shared.runtime import Service
from tests.conftest import AMQP_URL
from tests.integration.test_ledes_import import ledes_file

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")
FIRM = "firm-ledes-bus"


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 20) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_a_payment_on_the_bus_marks_the_invoice_paid_once(
    database_url: str, tmp_path: Path, unique_exchange: str
) -> None:
    settings = SyncSettings(
        database_url=database_url,
        environment="test",
        var_dir=tmp_path,
        amqp_url=AMQP_URL,
        exchange=unique_exchange,
        queue_expires_ms=30_000,
        outbox_poll_seconds=0.1,
        sync_interval_seconds=3600,
    )
    app = create_app(settings)
    service: Service = app.state.service
    importer: LedesImporter = app.state.ledes
    payments = Bus(service="ept-payments", amqp_url=AMQP_URL, exchange=unique_exchange)
    async with service.lifespan(app):
        await payments.start()
        try:
            await importer.import_file(FIRM, ledes_file(), ImportOptions())
            await importer.set_client(FIRM, ClientEmail(client_ref="GLOBEX", email="ap@g.test"))
            invoice_id = invoice_id_for(("12-3456789", "GLOBEX", "G-1"))
            ev = PaymentSucceeded(
                firm_id=FIRM,
                payment_id="pay-1",
                method=PaymentMethod.card,
                currency="USD",
                amount_minor=2000,
                allocations=[
                    Allocation(invoice_id=invoice_id, amount_minor=2000),
                    Allocation(invoice_id="clio:77", amount_minor=500),  # not sync's to count
                ],
            )

            async def publish(event: PaymentSucceeded) -> None:
                body = event.model_dump_json().encode()
                await payments.publish_raw(body, event.routing_key, str(event.event_id), {})

            async def paid_minor(invoice: str) -> int:
                async with service.sessionmaker() as s:
                    row = await s.scalar(
                        select(LedesInvoice).where(LedesInvoice.invoice_id == invoice)
                    )
                    return row.paid_minor if row else 0

            async def paid_events() -> list[InvoiceUpdated] | None:
                outbox = service.outbox
                async with service.sessionmaker() as s:
                    rows = await s.execute(
                        select(outbox.c.payload).where(outbox.c.routing_key == "invoice.updated")
                    )
                    evs = [InvoiceUpdated.model_validate(json.loads(r[0])) for r in rows]
                paid = [e for e in evs if e.invoice.state == InvoiceState.paid]
                return paid or None

            await publish(ev)
            (paid,) = await until(paid_events)
            assert (paid.invoice.invoice_id, paid.invoice.balance_minor) == (invoice_id, 0)
            # Delivered again (a redelivery after a lost ack), then another payment behind it.
            other = invoice_id_for(("12-3456789", "ACME", "INV-1"))
            marker = ev.model_copy(
                update={
                    "event_id": uuid.uuid4(),
                    "allocations": [Allocation(invoice_id=other, amount_minor=100)],
                }
            )
            await publish(ev)
            await publish(marker)

            async def marker_applied() -> bool:
                return await paid_minor(other) == 100

            await until(marker_applied)
            assert await paid_minor(invoice_id) == 2000
            assert len(await paid_events() or []) == 1
        finally:
            await payments.stop()
