"""Outbox and inbox on real databases (SQLite and PostgreSQL) and the real RabbitMQ: an event
committed before a crash is still published, a failed publish is retried in order, an event
delivered twice is applied once, and the trace of the cause travels with the event."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import shared.runtime
from services.sync.models import outbox as sync_outbox
from shared.bus import Bus
from shared.db import make_engine, make_sessionmaker, new_metadata
from shared.events import Event, InvoiceRemoved
from shared.migrations import upgrade_async
from shared.outbox import OutboxRelay, add_event, inbox_table, outbox_table
from shared.runtime import Service
from shared.settings import ServiceSettings

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SYNC_MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "sync" / "migrations"

pytestmark = pytest.mark.timeout(60)


# --- the broker -------------------------------------------------------------------------


class Rabbit:
    """Buses on the test's own exchange; deletes every queue they declared."""

    def __init__(self, exchange: str, connection: AbstractConnection) -> None:
        self.exchange = exchange
        self.connection = connection
        self.buses: list[Bus] = []
        self.queues: set[str] = set()

    def bus(self, role: str, **kwargs: Any) -> Bus:
        kwargs.setdefault("delivery_limit", 3)
        kwargs.setdefault("retry_delay", 0.02)
        bus = Bus(
            service=f"ept-{role}-{uuid.uuid4().hex[:6]}",
            amqp_url=AMQP_URL,
            exchange=self.exchange,
            **kwargs,
        )
        return self.adopt(bus)

    def adopt(self, bus: Bus) -> Bus:
        self.buses.append(bus)
        return bus

    def track(self, bus: Bus, event_type: type[Event]) -> str:
        name = bus.queue(event_type.routing_key).name
        self.queues.update({name, name + ".dlq"})
        return name

    def collect(self, bus: Bus, event_type: type[Event]) -> list[Any]:
        """Consume `event_type` on `bus` into the returned list."""
        received: list[Any] = []

        async def handle(ev: Any) -> None:
            received.append(ev)

        bus.consume(event_type, handle)
        self.track(bus, event_type)
        return received

    async def cleanup(self) -> None:
        for bus in self.buses:
            await bus.stop()
        channel = await self.connection.channel()
        for name in sorted(self.queues):
            await channel.queue_delete(name)
        await channel.exchange_delete(self.exchange)
        await channel.exchange_delete(self.exchange + ".dlx")
        await channel.close()


@pytest.fixture
async def rabbit(unique_exchange: str) -> AsyncIterator[Rabbit]:
    connection = await aio_pika.connect(AMQP_URL)
    harness = Rabbit(unique_exchange, connection)
    try:
        yield harness
    finally:
        await harness.cleanup()
        await connection.close()


async def message_count(rabbit: Rabbit, queue: str) -> int:
    channel = await rabbit.connection.channel()
    declared = await channel.declare_queue(queue, passive=True)
    await channel.close()
    return int(declared.declaration_result.message_count or 0)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Tap:
    """An exclusive queue bound to every routing key of the exchange: what was published, in
    the order the broker received it."""

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue

    @classmethod
    async def on(cls, rabbit: Rabbit) -> Tap:
        channel = await rabbit.connection.channel()
        exchange = await channel.declare_exchange(
            rabbit.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="#")
        return cls(queue)

    async def take(self, n: int, timeout: float = 10.0) -> list[AbstractIncomingMessage]:
        got: list[AbstractIncomingMessage] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < n:
            message = await self.queue.get(no_ack=True, fail=False)
            if message is not None:
                got.append(message)
            elif asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{len(got)} of {n} messages published within {timeout}s")
            else:
                await asyncio.sleep(0.01)
        return got


def removed(invoice_id: str, firm_id: str = "firm-a") -> InvoiceRemoved:
    return InvoiceRemoved(firm_id=firm_id, invoice_id=invoice_id, reason="deleted in Clio")


# --- the sync service's database, migrated ----------------------------------------------


@pytest.fixture
async def sync_db(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await upgrade_async(SYNC_MIGRATIONS, database_url)
    engine = make_engine(database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def outbox_rows(sm: async_sessionmaker[AsyncSession]) -> list[Any]:
    async with sm() as s:
        return list((await s.execute(select(sync_outbox).order_by(sync_outbox.c.id))).all())


async def stage(sm: async_sessionmaker[AsyncSession], *events: Event) -> None:
    """Commit `events` to the outbox, as a service does with its own change."""
    async with sm() as s, s.begin():
        for ev in events:
            await add_event(s, sync_outbox, ev)


class Publisher:
    """Wraps Bus.publish_raw: records every attempt, fails the ones it is told to, once."""

    def __init__(self, bus: Bus, fail_once: set[str] | None = None) -> None:
        self.bus = bus
        self.fail_once = set(fail_once or ())
        self.attempts: list[str] = []

    async def __call__(
        self, body: bytes, routing_key: str, event_id: str, headers: dict[str, str]
    ) -> None:
        self.attempts.append(event_id)
        if event_id in self.fail_once:
            self.fail_once.discard(event_id)
            raise ConnectionError("broker unreachable")
        await self.bus.publish_raw(body, routing_key, event_id, headers)


# --- outbox -----------------------------------------------------------------------------


async def test_an_event_committed_before_a_crash_is_published_after_restart(
    rabbit: Rabbit, sync_db: async_sessionmaker[AsyncSession]
) -> None:
    consumer = rabbit.bus("envelope")
    received = rabbit.collect(consumer, InvoiceRemoved)
    await consumer.start()

    # The sync process commits its change and event, then dies before any relay ran.
    ev = removed("clio:4821")
    await stage(sync_db, ev)
    [row] = await outbox_rows(sync_db)
    assert row.published_at is None

    # The restarted process starts a fresh relay.
    publisher = rabbit.bus("sync")
    await publisher.start()
    relay = OutboxRelay(sync_db, sync_outbox, publisher.publish_raw, poll_seconds=0.05)
    relay.start()
    try:

        async def arrived() -> bool:
            return len(received) == 1

        async def marked() -> bool:
            return (await outbox_rows(sync_db))[0].published_at is not None

        await eventually(arrived, "the event on the envelope service's queue")
        await eventually(marked, "published_at on the outbox row")
    finally:
        await relay.stop()
    assert received == [ev]
    [row] = await outbox_rows(sync_db)
    assert row.attempts == 1 and row.last_error is None
    assert relay.published == 1

    # Another relay run (a second replica, the next restart) publishes nothing more.
    again = Publisher(publisher)
    assert await OutboxRelay(sync_db, sync_outbox, again).publish_pending() == 0
    assert again.attempts == []


async def test_a_failed_publish_is_kept_retried_and_holds_back_later_events(
    rabbit: Rabbit, sync_db: async_sessionmaker[AsyncSession]
) -> None:
    tap = await Tap.on(rabbit)
    publisher = rabbit.bus("sync")
    await publisher.start()

    first, second, third = removed("clio:1"), removed("clio:2"), removed("clio:3")
    await stage(sync_db, first, second, third)
    flaky = Publisher(publisher, fail_once={str(second.event_id)})
    relay = OutboxRelay(sync_db, sync_outbox, flaky)

    assert await relay.publish_pending() == 1
    assert flaky.attempts == [str(first.event_id), str(second.event_id)]  # third held back
    rows = await outbox_rows(sync_db)
    assert [r.event_id for r in rows] == [str(e.event_id) for e in (first, second, third)]
    assert rows[0].published_at is not None and rows[0].attempts == 1
    assert rows[1].published_at is None and rows[1].attempts == 1
    assert "broker unreachable" in rows[1].last_error
    assert rows[2].published_at is None and rows[2].attempts == 0 and rows[2].last_error is None

    assert await relay.publish_pending() == 2
    rows = await outbox_rows(sync_db)
    assert all(r.published_at is not None for r in rows)
    assert rows[1].attempts == 2
    assert await relay.publish_pending() == 0

    # On the exchange: each event once, in the order they were committed.
    published = await tap.take(3)
    assert [m.message_id for m in published] == [str(e.event_id) for e in (first, second, third)]
    assert [InvoiceRemoved.model_validate_json(m.body) for m in published] == [first, second, third]
    assert await tap.queue.get(no_ack=True, fail=False) is None


async def test_a_completed_event_is_published_as_completed_and_a_failed_completion_waits(
    rabbit: Rabbit, sync_db: async_sessionmaker[AsyncSession]
) -> None:
    tap = await Tap.on(rabbit)
    publisher = rabbit.bus("sync")
    await publisher.start()
    first, second = removed("clio:1"), removed("clio:2")
    await stage(sync_db, first, second)
    relay = OutboxRelay(sync_db, sync_outbox, publisher.publish_raw)
    calls: list[list[str]] = []
    broken = True

    async def complete(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        calls.append([p["invoice_id"] for p in payloads])
        if broken:
            raise RuntimeError("the content is not readable yet")
        return [{**p, "reason": p["reason"] + " (completed)"} for p in payloads]

    relay.completes(InvoiceRemoved.routing_key, complete)
    assert await relay.publish_pending() == 0
    rows = await outbox_rows(sync_db)
    assert all(r.published_at is None for r in rows)
    assert "not readable yet" in rows[0].last_error
    # The rows keep what was committed; completion happens on the way out only.
    assert "completed" not in rows[0].payload

    broken = False
    assert await relay.publish_pending() == 2
    assert calls == [["clio:1", "clio:2"], ["clio:1", "clio:2"]]
    published = await tap.take(2)
    assert [InvoiceRemoved.model_validate_json(m.body).reason for m in published] == [
        "deleted in Clio (completed)",
        "deleted in Clio (completed)",
    ]
    assert [m.message_id for m in published] == [str(first.event_id), str(second.event_id)]
    assert "completed" not in (await outbox_rows(sync_db))[0].payload


async def test_published_rows_are_pruned_after_the_retention_and_no_others(
    sync_db: async_sessionmaker[AsyncSession],
) -> None:
    old, recent, unpublished = removed("clio:old"), removed("clio:recent"), removed("clio:new")
    await stage(sync_db, old, recent, unpublished)
    now = datetime.now(UTC)
    async with sync_db() as s, s.begin():
        for ev, published_at in ((old, now - timedelta(days=8)), (recent, now - timedelta(days=6))):
            await s.execute(
                update(sync_outbox)
                .where(sync_outbox.c.event_id == str(ev.event_id))
                .values(published_at=published_at)
            )
        # An unpublished row is never pruned, however old.
        await s.execute(
            update(sync_outbox)
            .where(sync_outbox.c.event_id == str(unpublished.event_id))
            .values(created_at=now - timedelta(days=30))
        )

    async def nothing(*_: Any) -> None:
        raise AssertionError("prune publishes nothing")

    relay = OutboxRelay(sync_db, sync_outbox, nothing, retention=timedelta(days=7))
    assert await relay.prune(now) == 1
    assert [r.event_id for r in await outbox_rows(sync_db)] == [
        str(recent.event_id),
        str(unpublished.event_id),
    ]
    assert await relay.prune(now) == 0
    # In batches, all of them.
    assert await relay.prune(now + timedelta(days=2), batch=1) == 1
    assert [r.event_id for r in await outbox_rows(sync_db)] == [str(unpublished.event_id)]


async def test_a_commit_wakes_the_relay_and_a_rollback_publishes_nothing(
    rabbit: Rabbit, sync_db: async_sessionmaker[AsyncSession]
) -> None:
    consumer = rabbit.bus("envelope")
    received = rabbit.collect(consumer, InvoiceRemoved)
    await consumer.start()
    publisher = rabbit.bus("sync")
    await publisher.start()
    # It would poll only every minute: a prompt publish means the commit woke it.
    relay = OutboxRelay(sync_db, sync_outbox, publisher.publish_raw, poll_seconds=60)
    relay.start()
    try:
        await asyncio.sleep(0)  # its first, empty, pass

        rolled_back = removed("clio:rolled-back")
        with pytest.raises(RuntimeError):
            async with sync_db() as s, s.begin():
                await add_event(s, sync_outbox, rolled_back)
                raise RuntimeError("the change failed")
        kept = removed("clio:kept")
        await stage(sync_db, kept)

        async def arrived() -> bool:
            return len(received) == 1

        await eventually(arrived, "the committed event", timeout=5.0)
    finally:
        await relay.stop()
    assert received == [kept]
    assert [r.event_id for r in await outbox_rows(sync_db)] == [str(kept.event_id)]


async def test_the_trace_of_the_cause_travels_with_the_event(
    rabbit: Rabbit, sync_db: async_sessionmaker[AsyncSession]
) -> None:
    provider = TracerProvider()
    consumer = rabbit.bus("envelope", tracer_provider=provider)
    traces_seen: list[int] = []

    async def handle(ev: InvoiceRemoved) -> None:
        traces_seen.append(trace.get_current_span().get_span_context().trace_id)

    consumer.consume(InvoiceRemoved, handle)
    rabbit.track(consumer, InvoiceRemoved)
    await consumer.start()

    tap = await Tap.on(rabbit)  # to read the message headers as they travel

    with provider.get_tracer("test").start_as_current_span("firm user deletes a bill") as span:
        cause = span.get_span_context().trace_id
        ev = removed("clio:traced")
        await stage(sync_db, ev)
    [row] = await outbox_rows(sync_db)
    assert f"{cause:032x}" in json.loads(row.headers)["traceparent"]

    # Published later, by a relay running outside that span.
    publisher = rabbit.bus("sync", tracer_provider=provider)
    await publisher.start()
    assert trace.get_current_span().get_span_context().is_valid is False
    assert await OutboxRelay(sync_db, sync_outbox, publisher.publish_raw).publish_pending() == 1

    [message] = await tap.take(1)
    traceparent = str((message.headers or {})["traceparent"])
    assert traceparent.split("-")[1] == f"{cause:032x}"

    async def handled() -> bool:
        return len(traces_seen) == 1

    await eventually(handled, "the consumer")
    assert traces_seen == [cause]  # the consumer works inside the same trace


# --- inbox ------------------------------------------------------------------------------


def inbox_service(database_url: str, exchange: str, name: str) -> tuple[Service, Table]:
    """A service of the shared runtime with an outbox, an inbox and a table of effects."""
    metadata: MetaData = new_metadata()
    outbox_table(metadata)
    inbox_table(metadata)
    effects = Table(
        "effects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False),
        Column("invoice_id", String(100), nullable=False),
    )
    settings_type = type("InboxTestSettings", (ServiceSettings,), {"service_name": name})
    settings = settings_type(
        database_url=database_url,
        amqp_url=AMQP_URL,
        exchange=exchange,
        delivery_limit=3,
        environment="test",
    )
    service = Service(settings, metadata, SYNC_MIGRATIONS)
    service.bus.retry_delay = 0.02
    return service, effects


async def count(service: Service, table: Table, **where: str) -> int:
    async with service.sessionmaker() as s:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return int((await s.execute(query)).scalar_one())


@pytest.fixture
async def services(
    database_url: str, rabbit: Rabbit
) -> AsyncIterator[Callable[[str], tuple[Service, Table]]]:
    made: list[Service] = []

    def make(name: str) -> tuple[Service, Table]:
        service, effects = inbox_service(database_url, rabbit.exchange, name)
        made.append(service)
        rabbit.adopt(service.bus)
        return service, effects

    yield make
    for service in made:
        await service.bus.stop()
        await service.engine.dispose()


async def publish_event(bus: Bus, ev: Event) -> None:
    await bus.publish_raw(json.loads(ev.model_dump_json()), ev.routing_key, str(ev.event_id), {})


@pytest.fixture
def skipped(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Event ids a Service.handles consumer found already handled and skipped."""
    found_ids: list[str] = []
    real_claim = shared.runtime.claim

    async def claim_spy(session: AsyncSession, inbox: Table, consumer: str, ev: Event) -> bool:
        claimed = await real_claim(session, inbox, consumer, ev)
        if not claimed:
            found_ids.append(str(ev.event_id))
        return claimed

    monkeypatch.setattr(shared.runtime, "claim", claim_spy)
    return found_ids


async def test_an_event_delivered_twice_is_applied_once(
    services: Callable[[str], tuple[Service, Table]], rabbit: Rabbit, skipped: list[str]
) -> None:
    service, effects = services(f"ept-inbox-{uuid.uuid4().hex[:6]}")
    async with service.engine.begin() as conn:
        await conn.run_sync(service.metadata.create_all)

    @service.handles(InvoiceRemoved)
    async def forget_invoice(session: AsyncSession, ev: InvoiceRemoved) -> None:
        await session.execute(
            insert(effects).values(event_id=str(ev.event_id), invoice_id=ev.invoice_id)
        )

    queue = rabbit.track(service.bus, InvoiceRemoved)
    await service.bus.start()
    ev, other = removed("clio:twice"), removed("clio:other")
    await publish_event(service.bus, ev)
    await publish_event(service.bus, ev)  # the broker lost an ack, say
    await publish_event(service.bus, other)

    async def settled() -> bool:
        return str(ev.event_id) in skipped and await count(service, effects) == 2

    await eventually(settled, "the duplicate to be skipped")
    assert await count(service, effects, invoice_id="clio:twice") == 1
    assert await count(service, effects, invoice_id="clio:other") == 1
    assert await count(service, service.inbox, consumer=service.name) == 2
    await service.bus.stop()
    assert await message_count(rabbit, queue) == 0
    assert await message_count(rabbit, queue + ".dlq") == 0


async def test_two_replicas_racing_on_one_event_apply_it_once(
    services: Callable[[str], tuple[Service, Table]], rabbit: Rabbit, skipped: list[str]
) -> None:
    """Two replicas get the same event at once. The first claims it in the inbox as its
    transaction starts; the second waits for that transaction (on the inbox row in
    PostgreSQL, on the database's write lock in SQLite), then finds the claim and skips."""
    name = f"ept-inbox-{uuid.uuid4().hex[:6]}"
    one, effects = services(name)
    two, _ = services(name)  # a second replica on the same queue and database
    async with one.engine.begin() as conn:
        await conn.run_sync(one.metadata.create_all)

    inside = 0
    overlapped = 0
    started = 0

    async def forget_invoice(session: AsyncSession, ev: InvoiceRemoved) -> None:
        nonlocal inside, overlapped, started
        started += 1
        inside += 1
        overlapped = max(overlapped, inside)
        await asyncio.sleep(0.3)  # room for the other delivery to barge in, if it could
        await session.execute(
            insert(effects).values(event_id=str(ev.event_id), invoice_id=ev.invoice_id)
        )
        inside -= 1

    one.handles(InvoiceRemoved)(forget_invoice)
    two.handles(InvoiceRemoved)(forget_invoice)
    queue = rabbit.track(one.bus, InvoiceRemoved)
    await one.bus.start()
    await two.bus.start()

    ev = removed("clio:raced")
    await publish_event(one.bus, ev)
    await publish_event(one.bus, ev)

    async def settled() -> bool:
        return str(ev.event_id) in skipped

    await eventually(settled, "the second delivery to be skipped")
    assert (started, overlapped) == (1, 1), "the handler ran twice or both ran at once"
    assert await count(one, effects, invoice_id="clio:raced") == 1
    assert await count(one, one.inbox, event_id=str(ev.event_id)) == 1
    await one.bus.stop()
    await two.bus.stop()
    assert await message_count(rabbit, queue) == 0
    assert await message_count(rabbit, queue + ".dlq") == 0


async def test_batched_events_share_a_transaction_and_a_bad_one_fails_alone(
    services: Callable[[str], tuple[Service, Table]], rabbit: Rabbit
) -> None:
    """Events of a batched handler delivered together are applied in a few transactions,
    each still once (a duplicate delivery is skipped); an event whose handling fails makes
    its batch fall back to one event at a time, so the others are applied and only it is
    dead-lettered."""
    service, effects = services(f"ept-batch-{uuid.uuid4().hex[:6]}")
    async with service.engine.begin() as conn:
        await conn.run_sync(service.metadata.create_all)
    sizes: list[int] = []

    @service.handles_batch(InvoiceRemoved, max_batch=8)
    async def forget_invoices(session: AsyncSession, evs: list[InvoiceRemoved], _: None) -> None:
        sizes.append(len(evs))
        for ev in evs:
            if ev.invoice_id == "clio:poison":
                raise ValueError("cannot apply this one")
            await session.execute(
                insert(effects).values(event_id=str(ev.event_id), invoice_id=ev.invoice_id)
            )

    queue = rabbit.track(service.bus, InvoiceRemoved)
    events = [removed(f"clio:b{i}") for i in range(20)]
    # Published before the consumer starts: they are waiting when it does, as in a burst.
    await service.bus.broker.connect()
    await service.bus.declare_topology({service.name: (InvoiceRemoved,)})
    for ev in [*events[:10], removed("clio:poison"), events[3], *events[10:]]:
        await publish_event(service.bus, ev)
    await service.bus.start()

    async def settled() -> bool:
        return (
            await count(service, effects) == 20 and await message_count(rabbit, queue + ".dlq") == 1
        )

    await eventually(settled, "the good events applied and the bad one dead-lettered")
    for ev in events:
        assert await count(service, effects, invoice_id=ev.invoice_id) == 1
    assert await count(service, effects, invoice_id="clio:poison") == 0
    assert max(sizes) > 1, f"never batched: {sizes}"
    assert await count(service, service.inbox, consumer=service.name) == 20
    await service.bus.stop()
    assert await message_count(rabbit, queue) == 0
