"""Bus topology: one durable topic exchange; per (service, event) a quorum queue with a
dead-letter exchange and a delivery limit; persistent messages with publisher confirms."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from faststream.middlewares import AckPolicy
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitMessage,
    RabbitQueue,
)
from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
from opentelemetry.trace import TracerProvider
from pydantic import ValidationError

from shared.events import Event

log = logging.getLogger(__name__)

# Bump when a queue's arguments change: RabbitMQ refuses to redeclare a queue with other
# arguments (PRECONDITION_FAILED), so changed queues get new names instead.
QUEUE_VERSION = "v1"


def queue_name(exchange: str, service: str, routing_key: str) -> str:
    # Prefixed by the exchange so that two systems on one broker (a dev run and a test
    # run, say) never share a queue.
    return f"{exchange}.{service}.{routing_key}.{QUEUE_VERSION}"


async def _decode_or_raw(
    msg: RabbitMessage, original: Callable[[RabbitMessage], Awaitable[Any]]
) -> Any:
    # FastStream's decoder raises on a body that is not JSON before the handler runs, and with
    # manual acks nobody would settle that message: it would sit unacknowledged until the
    # consumer restarts. Pass the bytes on instead; validation then dead-letters them.
    try:
        return await original(msg)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return msg.body


class Bus:
    def __init__(
        self,
        *,
        service: str,
        amqp_url: str,
        exchange: str,
        delivery_limit: int = 5,
        tracer_provider: TracerProvider | None = None,
        retry_delay: float = 0.5,
        queue_expires_ms: int | None = None,
        prefetch: int = 8,
    ) -> None:
        self.service = service
        self.delivery_limit = delivery_limit
        self.retry_delay = retry_delay
        # Test runs set this so their queues vanish once unused; production leaves it off.
        self.queue_expires_ms = queue_expires_ms
        self.prefetch = prefetch
        self.broker = RabbitBroker(
            amqp_url,
            middlewares=[RabbitTelemetryMiddleware(tracer_provider=tracer_provider)],
            graceful_timeout=15.0,
            logger=logging.getLogger(f"{service}.bus"),
            # "Received"/"Processed" per message, at DEBUG: at hundreds of messages a second
            # they cost real CPU and drown the log; errors are logged at their own levels.
            log_level=logging.DEBUG,
        )
        self.exchange = RabbitExchange(exchange, type=ExchangeType.TOPIC, durable=True)
        self.dlx = RabbitExchange(f"{exchange}.dlx", type=ExchangeType.DIRECT, durable=True)
        self._dead_letter_routes: list[str] = []

    def queue(self, routing_key: str, service: str | None = None) -> RabbitQueue:
        name = queue_name(self.exchange.name, service or self.service, routing_key)
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": self.dlx.name,
            "x-dead-letter-routing-key": name,
            "x-delivery-limit": self.delivery_limit,
        }
        if self.queue_expires_ms:
            arguments["x-expires"] = self.queue_expires_ms
        return RabbitQueue(
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=routing_key,
            arguments=arguments,  # type: ignore[arg-type]
        )

    def consume(
        self,
        event_type: type[Event],
        handler: Callable[[Any], Awaitable[None]],
        *,
        prefetch: int | None = None,
    ) -> None:
        """Subscribe `handler(event)` to `event_type`, at most `prefetch` (the bus's own by
        default) at once.

        A body that does not parse as the event is dead-lettered at once with the reason
        logged; a handler error requeues the message, and RabbitMQ dead-letters it once the
        queue's delivery limit is reached.
        """
        queue = self.queue(event_type.routing_key)
        self._dead_letter_routes.append(queue.name)
        context = self.broker.context

        @self.broker.subscriber(
            queue,
            self.exchange,
            ack_policy=AckPolicy.MANUAL,
            decoder=_decode_or_raw,
            # Bounded concurrency per queue; handlers do not rely on arrival order (events
            # carry occurred_at and stale ones are skipped where order matters).
            channel=Channel(prefetch_count=prefetch or self.prefetch),
        )
        async def _consume(body: Any) -> None:
            # The message from FastStream's context, not as a `msg: RabbitMessage` argument:
            # FastDepends resolves such an argument by running a function on a worker thread
            # for every message, which cost more than the rest of the delivery.
            msg: RabbitMessage = context.get_local("message")
            try:
                ev = event_type.model_validate(body)
            except ValidationError as exc:
                log.error(
                    "%s: %s %s is malformed, dead-lettered: %s",
                    self.service,
                    event_type.routing_key,
                    msg.message_id,
                    exc,
                )
                await msg.raw_message.reject(requeue=False)
                return
            try:
                await handler(ev)
            except Exception:
                log.exception(
                    "%s: handling %s %s failed; requeued",
                    self.service,
                    event_type.routing_key,
                    ev.event_id,
                )
                await asyncio.sleep(self.retry_delay)
                # reject (not nack) so quorum queues count the delivery toward the limit.
                await msg.raw_message.reject(requeue=True)
                return
            await msg.raw_message.ack()

    async def start(self, subscriptions: dict[str, tuple[type[Event], ...]] | None = None) -> None:
        # The whole topology first (every consumer's queue and dead-letter queue), so that
        # nothing published or rejected in the first moments is dropped.
        await self.declare_topology(subscriptions or {})
        await self.broker.start()

    async def declare_topology(self, subscriptions: dict[str, tuple[type[Event], ...]]) -> None:
        """Declare the exchanges, every consumer's queue with its binding and dead-letter
        queue, on a channel of their own that is closed afterwards.

        Not through `broker.declare_queue`: FastStream keeps each queue it declares, bound to
        the channel it was declared on, and a subscriber of that queue then consumes on that
        channel (the broker's publishing channel, without the subscriber's prefetch) instead
        of its own. Every handler of a service would run at once, unbounded, and publishing
        would share the channel with all deliveries."""
        connection = await self.broker.connect()
        channel = await connection.channel()
        try:
            exchange = await channel.declare_exchange(
                self.exchange.name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            dlx = await channel.declare_exchange(
                self.dlx.name, aio_pika.ExchangeType.DIRECT, durable=True
            )
            queues = [
                self.queue(event_type.routing_key, service)
                for service, events in subscriptions.items()
                for event_type in events
            ]
            for queue in queues:
                declared = await channel.declare_queue(
                    queue.name, durable=True, arguments=queue.arguments
                )
                await declared.bind(exchange, routing_key=queue.routing())
            # This service's own queues too, where `subscriptions` does not list them.
            for name in {q.name for q in queues} | set(self._dead_letter_routes):
                dlq = await channel.declare_queue(
                    name + ".dlq", durable=True, arguments=self._dlq_arguments()
                )
                await dlq.bind(dlx, routing_key=name)
        finally:
            await channel.close()

    def _dlq_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        if self.queue_expires_ms:
            arguments["x-expires"] = self.queue_expires_ms
        return arguments

    async def stop(self) -> None:
        await self.broker.stop()

    async def publish_raw(
        self,
        body: bytes | dict[str, Any],
        routing_key: str,
        event_id: str,
        headers: dict[str, str],
    ) -> None:
        """Publish one outbox row (its JSON as bytes, or a dict to encode); returns after the
        broker confirmed it."""
        await self.broker.publish(
            body,
            exchange=self.exchange,
            routing_key=routing_key,
            persist=True,
            message_id=event_id,
            message_type=routing_key,
            headers=headers,
            content_type="application/json",
        )

    async def ping(self, timeout: float = 2.0) -> bool:
        return await self.broker.ping(timeout)
