"""The envelope service as it runs (its lifespan, the real RabbitMQ, a test's clock): the
scheduler's background loop finds the slot due, and the send request it stages travels the
bus back to the service's own sending consumer, which composes the reminder's email and
queues it for the mailer. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from services.envelope.app import create_app
from services.envelope.models import Email, EnvelopeSend, Reminder
from services.envelope.settings import EnvelopeSettings
from shared.clock import ManualClock
from shared.events import FirmUpdated, InvoiceUpdated
from shared.runtime import Service
from tests.conftest import AMQP_URL
from tests.envelope.reminders_world import PUBLIC, at, bill, firm
from tests.envelope.test_reminders import day

pytestmark = pytest.mark.timeout(90)


async def _until(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Poll for what another task does (the bus, the relay): no fixed sleep."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_the_running_service_sends_a_due_reminder_once(
    database_url: str, tmp_path: Path, unique_exchange: str
) -> None:
    settings = EnvelopeSettings(
        database_url=database_url,
        environment="test",
        public_base_url=PUBLIC,
        var_dir=tmp_path,
        amqp_url=AMQP_URL,
        exchange=unique_exchange,
        queue_expires_ms=30_000,
        pdf_workers=1,
        reminder_interval_seconds=0.05,
        outbox_poll_seconds=0.1,
    )
    clock = ManualClock(at(day(2)))
    app = create_app(settings, clock)
    service: Service = app.state.service
    async with service.lifespan(app):
        desk = app.state.desk
        async with service.sessionmaker() as s, s.begin():
            await desk.on_firm_updated(s, FirmUpdated(firm_id="firm-remind", firm=firm()))
        async with service.sessionmaker() as s, s.begin():
            await desk.on_invoice_updated(
                s, InvoiceUpdated(firm_id="firm-remind", invoice=bill(1, day(1)))
            )

        async def rows() -> list[Reminder]:
            async with service.sessionmaker() as s:
                return list(await s.scalars(select(Reminder)))

        # Nothing is due on the 2nd, however many passes run.
        await asyncio.sleep(0.3)
        assert await rows() == []
        clock.set(at(day(16)))
        [row] = await _until(rows)

        async def email() -> Email | None:
            async with service.sessionmaker() as s:
                return await s.scalar(select(Email).where(Email.email_id == row.send_id))

        mail = await _until(email)
        assert mail.subject.startswith("Reminder from Hartwell & Moreno LLP")
        assert json.loads(mail.to) == ["ap@client77.test"] and json.loads(mail.attachments) == []
        async with service.sessionmaker() as s:
            send = await s.get(EnvelopeSend, row.send_id)
        assert send is not None and send.requested_by == "reminders" and send.status == "queued"
        # The loop keeps running: still one reminder for the slot.
        await asyncio.sleep(0.3)
        assert len(await rows()) == 1
