"""The bus on the real RabbitMQ: topology, persistence, retries and dead-lettering.

`TestRabbitBroker` ignores queue arguments, acks, rejects and dead-lettering, so these tests
declare real queues on a per-test exchange and delete them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import ChannelPreconditionFailed

from shared.bus import Bus
from shared.events import Event, InvoiceRemoved

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

pytestmark = pytest.mark.timeout(30)


class Rabbit:
    """Buses of the test's own, on its own exchange, and everything they declared."""

    def __init__(self, exchange: str, connection: AbstractConnection) -> None:
        self.exchange = exchange
        self.connection = connection
        self.buses: list[Bus] = []
        self.queues: set[str] = set()

    def bus(self, role: str, **kwargs: Any) -> Bus:
        kwargs.setdefault("delivery_limit", 2)
        kwargs.setdefault("retry_delay", 0.02)
        bus = Bus(
            service=f"ept-{role}-{uuid.uuid4().hex[:6]}",
            amqp_url=AMQP_URL,
            exchange=self.exchange,
            **kwargs,
        )
        self.buses.append(bus)
        return bus

    def consume(
        self, bus: Bus, event_type: type[Event], handler: Callable[[Any], Awaitable[None]]
    ) -> str:
        """bus.consume, remembering the queues to delete; returns the queue's name."""
        bus.consume(event_type, handler)
        name = bus.queue(event_type.routing_key).name
        self.queues.update({name, name + ".dlq"})
        return name

    async def channel(self) -> AbstractChannel:
        return await self.connection.channel()

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


async def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.01)


async def get_one(
    channel: AbstractChannel, queue: str, timeout: float = 10.0
) -> AbstractIncomingMessage:
    """The next message on `queue` (passively declared: it must exist), acked."""
    q = await channel.get_queue(queue, ensure=True)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await q.get(no_ack=True, fail=False)
        if message is not None:
            return message
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"no message on {queue} within {timeout}s")
        await asyncio.sleep(0.01)


async def message_count(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


def removed(firm_id: str = "firm-a", invoice_id: str = "clio:4821") -> InvoiceRemoved:
    return InvoiceRemoved(firm_id=firm_id, invoice_id=invoice_id, reason="deleted in Clio")


async def publish(bus: Bus, ev: Event) -> None:
    await bus.publish_raw(json.loads(ev.model_dump_json()), ev.routing_key, str(ev.event_id), {})


async def test_topology_quorum_queue_bound_by_routing_key_and_persistent_messages(
    rabbit: Rabbit,
) -> None:
    async def handle(ev: InvoiceRemoved) -> None:
        pass

    consumer = rabbit.bus("sync")
    queue = rabbit.consume(consumer, InvoiceRemoved, handle)
    await consumer.start()
    await consumer.stop()  # its queue stays, and now keeps what arrives

    publisher = rabbit.bus("gateway")
    await publisher.start()
    ev = removed()
    await publish(publisher, ev)
    await publisher.publish_raw({"firm_id": "firm-a"}, "invoice.updated", str(uuid.uuid4()), {})

    channel = await rabbit.channel()
    message = await get_one(channel, queue)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.routing_key == "invoice.removed"
    assert message.exchange == rabbit.exchange
    assert message.message_id == str(ev.event_id)
    assert message.content_type == "application/json"
    assert InvoiceRemoved.model_validate_json(message.body) == ev
    # only its routing key reaches the queue
    assert await message_count(channel, queue) == 0

    # RabbitMQ refuses the queue with any other arguments: it is a quorum queue with this DLX
    # and delivery limit, and the exchange is a durable topic exchange.
    arguments = dict(consumer.queue("invoice.removed").arguments or {})
    assert arguments["x-queue-type"] == "quorum"
    await channel.declare_queue(queue, durable=True, arguments=arguments)  # equivalent: accepted
    refused = [
        {**arguments, "x-queue-type": "classic"},
        {**arguments, "x-delivery-limit": 99},
        {**arguments, "x-dead-letter-exchange": "elsewhere"},
    ]
    for other in refused:
        probe = await rabbit.channel()
        with pytest.raises(ChannelPreconditionFailed):
            await probe.declare_queue(queue, durable=True, arguments=other)
    probe = await rabbit.channel()
    await probe.declare_exchange(rabbit.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    with pytest.raises(ChannelPreconditionFailed):
        await probe.declare_exchange(rabbit.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    # the dead-letter queue exists and is empty
    assert await message_count(await rabbit.channel(), queue + ".dlq") == 0


async def test_a_handled_event_is_acked_once(rabbit: Rabbit) -> None:
    seen: list[InvoiceRemoved] = []

    async def handle(ev: InvoiceRemoved) -> None:
        seen.append(ev)

    bus = rabbit.bus("envelope")
    queue = rabbit.consume(bus, InvoiceRemoved, handle)
    await bus.start()
    first, second = removed(invoice_id="clio:1"), removed(invoice_id="clio:2")
    await publish(bus, first)
    await publish(bus, second)
    await wait_for(lambda: len(seen) == 2, what="both events handled")
    # one consumer may handle several messages at once, so in either order
    assert sorted(seen, key=lambda e: e.invoice_id) == [first, second]
    await bus.stop()
    channel = await rabbit.channel()
    assert await message_count(channel, queue) == 0  # acked, not waiting for redelivery
    assert await message_count(channel, queue + ".dlq") == 0


async def test_prefetch_bounds_the_handlers_running_at_once(rabbit: Rabbit) -> None:
    """The whole topology (this service's queue included) is declared before the consumers
    start; each consumer must still get its own channel with the prefetch, or a burst of
    events would run every handler at once and starve the service's publishing."""
    running, peak, handled = 0, 0, 0
    release = asyncio.Event()

    async def handle(ev: InvoiceRemoved) -> None:
        nonlocal running, peak, handled
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        handled += 1

    bus = rabbit.bus("envelope", prefetch=3)
    queue = rabbit.consume(bus, InvoiceRemoved, handle)
    await bus.start({bus.service: (InvoiceRemoved,)})
    for i in range(12):
        await publish(bus, removed(invoice_id=f"clio:{i}"))
    await wait_for(lambda: running == 3, what="three handlers running")
    await asyncio.sleep(0.3)  # time for any delivery beyond the prefetch to arrive
    assert running == 3 and peak == 3
    channel = await rabbit.channel()
    assert await message_count(channel, queue) == 9  # the rest wait in the queue
    release.set()
    await wait_for(lambda: handled == 12, what="all twelve handled")
    assert peak == 3


async def test_a_failing_handler_is_retried_then_dead_lettered(rabbit: Rabbit) -> None:
    calls: list[uuid.UUID] = []

    async def handle(ev: InvoiceRemoved) -> None:
        calls.append(ev.event_id)
        raise RuntimeError("the database is down")

    bus = rabbit.bus("mailer", delivery_limit=2)
    queue = rabbit.consume(bus, InvoiceRemoved, handle)
    await bus.start()
    ev = removed()
    await publish(bus, ev)

    channel = await rabbit.channel()
    dead = await get_one(channel, queue + ".dlq")
    assert InvoiceRemoved.model_validate_json(dead.body) == ev
    assert dead.message_id == str(ev.event_id)
    assert dead.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    death = dead.headers["x-death"][0]  # type: ignore[index]
    assert death["queue"] == queue
    assert death["reason"] == "delivery_limit"
    # tried more than once, and no more than the limit allows
    assert 2 <= len(calls) <= 3
    assert set(calls) == {ev.event_id}
    tries = len(calls)
    await bus.stop()
    assert len(calls) == tries
    assert await message_count(channel, queue) == 0


async def test_a_handler_that_recovers_gets_the_event_again(rabbit: Rabbit) -> None:
    calls: list[uuid.UUID] = []

    async def handle(ev: InvoiceRemoved) -> None:
        calls.append(ev.event_id)
        if len(calls) == 1:
            raise ConnectionError("blip")

    bus = rabbit.bus("payments", delivery_limit=3)
    queue = rabbit.consume(bus, InvoiceRemoved, handle)
    await bus.start()
    ev = removed()
    await publish(bus, ev)
    await wait_for(lambda: len(calls) == 2, what="the retry")
    await bus.stop()
    assert calls == [ev.event_id, ev.event_id]
    channel = await rabbit.channel()
    assert await message_count(channel, queue) == 0
    assert await message_count(channel, queue + ".dlq") == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            json.dumps(
                {"event_id": str(uuid.uuid4()), "invoice_id": "clio:1", "reason": "x"}
            ).encode(),
            "application/json",
        ),  # no firm_id
        (b"[1, 2]", "application/json"),
        (b"this is not JSON {", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
    ],
    ids=["missing-firm-id", "not-an-object", "not-json", "not-utf8"],
)
async def test_a_malformed_message_is_dead_lettered_at_once(
    rabbit: Rabbit, body: bytes, content_type: str
) -> None:
    calls: list[InvoiceRemoved] = []

    async def handle(ev: InvoiceRemoved) -> None:
        calls.append(ev)

    bus = rabbit.bus("sync", delivery_limit=5)
    queue = rabbit.consume(bus, InvoiceRemoved, handle)
    await bus.start()
    channel = await rabbit.channel()
    exchange = await channel.get_exchange(rabbit.exchange)
    await exchange.publish(
        aio_pika.Message(
            body,
            content_type=content_type,
            message_id="bad-1",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key="invoice.removed",
    )
    dead = await get_one(channel, queue + ".dlq")
    assert dead.body == body
    assert dead.message_id == "bad-1"
    assert dead.headers["x-death"][0]["reason"] == "rejected"  # type: ignore[index]
    assert calls == []

    # the consumer is not stuck: the next good event is handled
    good = removed()
    await publish(bus, good)
    await wait_for(lambda: calls == [good], what="the good event after the bad one")
    await bus.stop()
    assert await message_count(channel, queue) == 0
