"""RabbitMQ for a benchmark's stack: publishing as the services do, what is left in its
queues, and deleting its queues and exchanges at the end."""

from __future__ import annotations

import asyncio
import json
import time

from bench.support.common import AMQP_URL
from shared.bus import Bus, queue_name
from shared.events import Event
from shared.topology import SUBSCRIPTIONS


async def publish(exchange: str, events: list[Event], concurrency: int = 32) -> float:
    """Publish on the bus through the services' own publisher (persistent, confirmed)."""
    bus = Bus(service="bench", amqp_url=AMQP_URL, exchange=exchange)
    await bus.broker.connect()
    sem = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(ev: Event) -> None:
        async with sem:
            await bus.publish_raw(
                json.loads(ev.model_dump_json()), ev.routing_key, str(ev.event_id), {}
            )

    try:
        await asyncio.gather(*(one(ev) for ev in events))
    finally:
        await bus.stop()
    return time.perf_counter() - started


async def queue_depths(amqp_url: str, names: list[str]) -> dict[str, int | None]:
    """Messages waiting in each queue (passive declare; None if it does not exist)."""
    import aiormq

    out: dict[str, int | None] = {}
    conn = await aiormq.connect(amqp_url)
    try:
        for name in names:
            channel = await conn.channel()
            try:
                ok = await channel.queue_declare(name, passive=True)
                out[name] = ok.message_count
            except aiormq.exceptions.ChannelNotFoundEntity:
                out[name] = None
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await conn.close()
    return out


async def delete_bus_objects(exchange: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(AMQP_URL)
    try:
        channel = await conn.channel()
        for service, events in SUBSCRIPTIONS.items():
            for ev in events:
                name = queue_name(exchange, service, ev.routing_key)
                await channel.queue_delete(name)
                await channel.queue_delete(name + ".dlq")
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(exchange + ".dlx")
    finally:
        await conn.close()


def bus_prefetch() -> int:
    """The consumers' prefetch (per queue), which the mailer's SMTP concurrency follows."""
    import inspect

    from shared.bus import Bus
    from shared.settings import ServiceSettings

    field = ServiceSettings.model_fields.get("bus_prefetch")
    if field is not None and isinstance(field.default, int):
        return field.default
    return int(inspect.signature(Bus.__init__).parameters["prefetch"].default)
