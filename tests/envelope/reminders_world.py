"""The envelope service's reminders on a fresh database, driven by a clock the test sets:
firms and bills arrive as their events, the scheduler runs one pass at a time, and the send
requests it stages go through the ordinary sending path when the test delivers them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import mail_reports
from services.envelope.app import MIGRATIONS
from services.envelope.desk import Desk
from services.envelope.models import Base, Envelope, Reminder, Suppression
from services.envelope.projections import Projections
from services.envelope.reminders import PassResult, Reminders
from services.envelope.settings import EnvelopeSettings
from shared.clock import ManualClock
from shared.events import (
    Allocation,
    EmailSent,
    EnvelopeSendRequested,
    FirmProfile,
    FirmUpdated,
    InvoiceSnapshot,
    InvoiceUpdated,
    PaymentProcessing,
    PaymentSucceeded,
    ReminderSettings,
)
from shared.migrations import upgrade_async
from shared.runtime import Service

FIRM_ID = "firm-remind"
PUBLIC = "https://pay.hartwell.test"


def firm(time_zone: str = "UTC", **reminders: Any) -> FirmProfile:
    return FirmProfile(
        name="Hartwell & Moreno LLP",
        email="billing@hartwellmoreno.test",
        time_zone=time_zone,
        reminders=ReminderSettings(enabled=True, **reminders),
    )


def bill(
    n: int,
    issued: dt.date,
    *,
    client: str = "77",
    due: dt.date | None = None,
    email: str | None = None,
    **changes: Any,
) -> InvoiceSnapshot:
    values: dict[str, Any] = {
        "invoice_id": f"clio:{n}",
        "source_id": str(n),
        "etag": f'"{n}-1"',
        "number": f"INV-{n}",
        "kind": "invoice",
        "state": "awaiting_payment",
        "client_id": client,
        "client_name": f"Client {client}",
        "client_email": email if email is not None else f"ap@client{client}.test",
        "issued_at": issued,
        "due_at": due or issued + timedelta(days=30),
        "total_minor": 100_000 + n,
        "balance_minor": 80_000 + n,
        "paid_minor": 20_000,
    }
    values.update(changes)
    return InvoiceSnapshot(**values)


def at(day: dt.date, hour: int = 10, minute: int = 0, tz: str = "UTC") -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(tz)).astimezone(UTC)


class _NoRender:
    """The PDF scheduler, left out: reminders are secure links, never attachments."""

    def schedule_after_commit(self, *_: Any) -> None:
        pass

    def firm_changed_after_commit(self, *_: Any) -> None:
        pass


class World:
    def __init__(self, service: Service, desk: Desk, clock: ManualClock) -> None:
        self.service = service
        self.desk = desk
        self.clock = clock
        self.reminders = Reminders(service, service.settings, clock)  # type: ignore[arg-type]
        self.projections = Projections(_NoRender())  # type: ignore[arg-type]
        self._event_at = datetime(2020, 1, 1, tzinfo=UTC)
        self.delivered: set[str] = set()

    def _tick(self) -> datetime:
        self._event_at += timedelta(seconds=1)
        return self._event_at

    async def firm(self, profile: FirmProfile, firm_id: str = FIRM_ID) -> None:
        ev = FirmUpdated(firm_id=firm_id, firm=profile, occurred_at=self._tick())
        async with self.service.sessionmaker() as s, s.begin():
            await self.projections.on_firm_updated(s, ev)

    async def bills(self, *snaps: InvoiceSnapshot, firm_id: str = FIRM_ID) -> None:
        async with self.service.sessionmaker() as s, s.begin():
            for snap in snaps:
                ev = InvoiceUpdated(firm_id=firm_id, invoice=snap, occurred_at=self._tick())
                await self.projections.on_invoice_updated(s, ev)

    async def pay(self, invoice_id: str, amount: int, *, ach: bool = False) -> None:
        cls = PaymentProcessing if ach else PaymentSucceeded
        ev = cls(
            firm_id=FIRM_ID,
            payment_id=f"pay_{uuid.uuid4().hex[:8]}",
            method="ach" if ach else "card",
            currency="USD",
            amount_minor=amount,
            allocations=[Allocation(invoice_id=invoice_id, amount_minor=amount)],
        )
        async with self.service.sessionmaker() as s, s.begin():
            await self.projections.on_payment(s, ev)

    async def run(self, moment: datetime | None = None) -> PassResult:
        if moment is not None:
            self.clock.set(moment)
        return await self.reminders.run_pass()

    async def manual_send(
        self, client: str, invoice_ids: list[str], moment: datetime, to: list[str] | None = None
    ) -> str:
        """A person's send of these bills at `moment`, through the sending path."""
        env_id = str(uuid.uuid4())
        async with self.service.sessionmaker() as s, s.begin():
            s.add(
                Envelope(
                    id=env_id,
                    firm_id=FIRM_ID,
                    client_id=client,
                    client_name=f"Client {client}",
                    invoice_ids=json.dumps(invoice_ids),
                    to=json.dumps([]),
                    subject="s",
                    body="b",
                    created_by="u-1",
                    created_at=moment,
                )
            )
        ev = EnvelopeSendRequested(
            firm_id=FIRM_ID,
            envelope_id=env_id,
            send_id=uuid.uuid4().hex,
            invoice_ids=invoice_ids,
            client_id=client,
            to=to if to is not None else [f"ap@client{client}.test"],
            subject="Invoices {{ invoice_numbers }}",
            body="Please pay.",
            requested_by="u-1",
            occurred_at=moment,
        )
        async with self.service.sessionmaker() as s, s.begin():
            await self.desk.on_sends_requested(s, [ev], None)
        self.delivered.add(str(ev.event_id))
        return ev.send_id

    async def outbox(self, routing_key: str) -> list[dict[str, Any]]:
        async with self.service.sessionmaker() as s:
            rows = await s.execute(
                select(self.service.outbox.c.event_id, self.service.outbox.c.payload)
                .where(self.service.outbox.c.routing_key == routing_key)
                .order_by(self.service.outbox.c.id)
            )
            return [json.loads(p) | {"_event_id": e} for e, p in rows]

    async def reminder_requests(self) -> list[dict[str, Any]]:
        return [
            e
            for e in await self.outbox(EnvelopeSendRequested.routing_key)
            if e["requested_by"] == "reminders"
        ]

    async def deliver(self) -> list[EnvelopeSendRequested]:
        """The send requests staged and not yet handled, handled as the consumer does."""
        evs = [
            EnvelopeSendRequested.model_validate({k: v for k, v in e.items() if k[0] != "_"})
            for e in await self.outbox(EnvelopeSendRequested.routing_key)
            if e["_event_id"] not in self.delivered
        ]
        if evs:
            async with self.service.sessionmaker() as s, s.begin():
                await self.desk.on_sends_requested(s, evs, None)
            self.delivered.update(str(ev.event_id) for ev in evs)
        return evs

    async def mailed(self, send_id: str, moment: datetime) -> None:
        ev = EmailSent(
            firm_id=FIRM_ID,
            email_id=send_id,
            message_id=f"<{send_id}@test>",
            to=["x@test"],
            sent_at=moment,
        )
        async with self.service.sessionmaker() as s, s.begin():
            await mail_reports.on_emails_sent(s, [ev])

    async def suppress(self, address: str) -> None:
        async with self.service.sessionmaker() as s, s.begin():
            s.add(
                Suppression(
                    firm_id=FIRM_ID,
                    address=address.lower(),
                    reason="550 5.1.1 no such user",
                    status="5.1.1",
                    created_at=self.clock.now(),
                )
            )

    async def rows(self, s: AsyncSession | None = None) -> list[Reminder]:
        async with self.service.sessionmaker() as s:
            return list(await s.scalars(select(Reminder).order_by(Reminder.id)))

    async def count(self, model: Any) -> int:
        async with self.service.sessionmaker() as s:
            return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def make_service(database_url: str, tmp_path: Path, **extra: Any) -> tuple[Service, Desk]:
    settings = EnvelopeSettings(
        database_url=database_url,
        environment=extra.pop("environment", "test"),
        public_base_url=PUBLIC,
        var_dir=tmp_path,
        **extra,
    )
    service = Service(settings, Base.metadata, MIGRATIONS)
    return service, Desk(service, settings)


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    await upgrade_async(MIGRATIONS, database_url)
    service, desk = await make_service(database_url, tmp_path)
    try:
        yield World(service, desk, ManualClock(datetime(2026, 11, 1, 10, tzinfo=UTC)))
    finally:
        await service.engine.dispose()
