"""The inner shape every service shares: settings, database, bus, outbox relay, health,
tracing, and the `python -m services.<name> [serve|migrate]` entry point."""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from fastapi import APIRouter, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from shared.batching import Batcher, BatchFn, Consumer, Prepare
from shared.bus import Bus
from shared.db import make_engine, make_sessionmaker, ping
from shared.events import Event
from shared.migrations import upgrade, upgrade_async
from shared.outbox import (
    OutboxRelay,
    add_event,
    add_events,
    claim,
    inbox_table,
    outbox_table,
)
from shared.settings import ServiceSettings
from shared.telemetry import instrument_app, instrument_engine, setup_tracing
from shared.topology import SUBSCRIPTIONS

E = TypeVar("E", bound=Event)
log = logging.getLogger(__name__)


# The cyclic collector's thresholds for a running service: a young collection every 10,000
# allocations, not every 700. At hundreds of messages a second, objects alive for the moment
# a message is handled were caught by young collections and promoted, and the oldest
# generation grew until full collections of 150 to 230 ms ran during a Send All.
GC_THRESHOLDS = (10_000, 10, 10)


def settle_collector() -> None:
    """Once started: what exists now (modules, app, models, compiled statements) lives as
    long as the process, so it is frozen out of the collector's sight (full collections
    walk only what was made since), and the thresholds become GC_THRESHOLDS."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class Service:
    """One service's wiring. Handlers and routes stay in the service's own modules."""

    def __init__(self, settings: ServiceSettings, metadata: MetaData, migrations_dir: Path):
        self.settings = settings
        self.name = settings.service_name
        self.metadata = metadata
        self.migrations_dir = migrations_dir
        self.outbox = (
            metadata.tables["outbox"] if "outbox" in metadata.tables else outbox_table(metadata)
        )
        self.inbox = (
            metadata.tables["inbox"] if "inbox" in metadata.tables else inbox_table(metadata)
        )
        self.tracer_provider = setup_tracing(self.name, settings.otel_exporter_otlp_endpoint)
        self.engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        if settings.otel_exporter_otlp_endpoint:
            # A span per SQL statement is worth its cost only when someone collects it.
            instrument_engine(self.engine, self.tracer_provider)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.bus = Bus(
            service=self.name,
            amqp_url=settings.amqp_url,
            exchange=settings.exchange,
            delivery_limit=settings.delivery_limit,
            tracer_provider=self.tracer_provider,
            queue_expires_ms=settings.queue_expires_ms,
            prefetch=settings.bus_prefetch,
        )
        self.relay = OutboxRelay(
            self.sessionmaker,
            self.outbox,
            self.bus.publish_raw,
            poll_seconds=settings.outbox_poll_seconds,
            retention=timedelta(hours=settings.outbox_retention_hours),
        )
        self._background: list[Callable[[], Awaitable[None]]] = []
        # What batched handlers need to apply events once each, in their deliveries' traces.
        self.consumer = Consumer(self.sessionmaker, self.inbox, self.name)
        self._tasks: list[asyncio.Task[None]] = []
        self.bus_started = False

    # --- events -------------------------------------------------------------------------

    async def publish(self, session: AsyncSession, ev: Event) -> None:
        """Stage an event in this service's outbox, inside the caller's transaction."""
        await add_event(session, self.outbox, ev)

    async def publish_many(self, session: AsyncSession, evs: list[tuple[Event, Event]]) -> None:
        """Stage (event, cause) pairs in one statement: a batched handler's events, each in
        the trace of the event (of its batch) that caused it."""
        await add_events(session, self.outbox, [(ev, self.consumer.context_of(c)) for ev, c in evs])

    def handles(
        self, event_type: type[E]
    ) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Any]]:
        """Register `fn(session, event)`; it runs once per event id, in one transaction
        with the inbox record (claimed first: see `claim`) and any events it publishes.
        For events that come by the hundred, see `handles_batch`."""

        def register(fn: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
            async def apply(ev: E) -> None:
                async with self.sessionmaker() as session, session.begin():
                    if not await claim(session, self.inbox, self.name, ev):
                        log.info(
                            "%s: %s %s already handled", self.name, ev.routing_key, ev.event_id
                        )
                        return
                    log.debug("%s: handling %s %s", self.name, ev.routing_key, ev.event_id)
                    await fn(session, ev)

            self.bus.consume(event_type, apply)
            return fn

        return register

    def handles_batch(
        self,
        event_type: type[E],
        *,
        prepare: Prepare | None = None,
        max_batch: int | None = None,
        wait_seconds: float = 0.02,
    ) -> Callable[[BatchFn], BatchFn]:
        """Register `fn(session, events, prepared)`: the events of `event_type` delivered
        at about the same time, applied in one transaction (see `shared.batching`), each
        still at most once; `prepare(events)` runs first, outside it. A batch starts
        `wait_seconds` after its first event arrived, or once it is full: a longer wait
        makes bigger batches of events that trickle in, where nobody waits on them."""
        size = max_batch or self.settings.bus_batch

        def register(fn: BatchFn) -> BatchFn:
            batcher: Batcher[E] = Batcher(
                self.consumer, fn, prepare=prepare, max_batch=size, wait_seconds=wait_seconds
            )
            # Twice the batch in flight: the next batch gathers while one is applied.
            self.bus.consume(event_type, batcher.apply, prefetch=2 * size)
            return fn

        return register

    def consumes_batch(
        self,
        event_type: type[E],
        fn: Callable[[list[E]], Awaitable[None]],
        *,
        max_batch: int | None = None,
        wait_seconds: float = 0.02,
        then_concurrency: int = 0,
    ) -> None:
        """Hand `fn(events)` the events of `event_type` delivered at about the same time,
        as `handles_batch` gathers them, for a handler that applies them itself through
        `shared.batching.apply_once` (the mailer's, whose SMTP follows the commit). With
        `then_concurrency` > 0 the next batch starts once one committed, while it is in its
        `then` step, and that many may be in it at once (see `shared.batching`)."""
        size = max_batch or self.settings.bus_batch
        batcher: Batcher[E] = Batcher(
            self.consumer,
            fn,
            max_batch=size,
            wait_seconds=wait_seconds,
            claims=False,
            then_concurrency=then_concurrency,
        )
        # A batch gathering besides those applied or in their `then` step: deliveries are
        # acknowledged only once their batch ended.
        self.bus.consume(event_type, batcher.apply, prefetch=(max(1, then_concurrency) + 1) * size)

    def background(self, fn: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """A long-running task started with the service (a poller, a scheduler)."""
        self._background.append(fn)
        return fn

    # --- HTTP ---------------------------------------------------------------------------

    def require_internal(self) -> Callable[..., Awaitable[None]]:
        token = self.settings.internal_token

        async def check(x_internal_token: str = Header(default="")) -> None:
            if not hmac.compare_digest(x_internal_token.encode(), token.encode()):
                raise HTTPException(status_code=401, detail="internal token required")

        return check

    def health_router(self) -> APIRouter:
        router = APIRouter(tags=["health"])

        @router.get("/health/live")
        async def live() -> dict[str, str]:
            return {"status": "ok", "service": self.name}

        @router.get("/health/ready")
        async def ready() -> JSONResponse:
            checks: dict[str, str] = {}
            try:
                await asyncio.wait_for(ping(self.engine), timeout=3)
                checks["database"] = "ok"
            except Exception as exc:  # the point is to report it, whatever it is
                checks["database"] = f"down: {type(exc).__name__}"
            checks["broker"] = "ok" if self.bus_started and await self.bus.ping(2.0) else "down"
            ok = all(v == "ok" for v in checks.values())
            return JSONResponse(
                {"status": "ok" if ok else "unavailable", "service": self.name, "checks": checks},
                status_code=200 if ok else 503,
            )

        return router

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        if self.settings.migrate_on_start:
            await upgrade_async(self.migrations_dir, self.settings.database_url)
        await self._start_bus()
        self.relay.start()
        for fn in self._background:
            self._tasks.append(asyncio.create_task(self._guard(fn), name=fn.__name__))
        settle_collector()
        log.info("%s ready on %s:%s", self.name, self.settings.http_host, self.settings.http_port)
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.relay.stop()
            await self.bus.stop()
            await self.engine.dispose()
            self.tracer_provider.shutdown()

    async def _start_bus(self) -> None:
        # The broker may come up after us (compose, Kubernetes): wait for it, loudly.
        delay = 0.5
        while True:
            try:
                await self.bus.start(SUBSCRIPTIONS)
                self.bus_started = True
                return
            except Exception as exc:
                log.warning(
                    "%s: broker not reachable (%s); retrying in %.1fs", self.name, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _guard(self, fn: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: background task %s crashed; restarting", self.name, fn.__name__)
                await asyncio.sleep(2)

    def make_app(self, **kwargs: Any) -> FastAPI:
        app = FastAPI(title=f"envelopepay {self.name}", lifespan=self.lifespan, **kwargs)
        app.include_router(self.health_router())
        instrument_app(app, self.tracer_provider)
        app.state.service = self
        return app


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(
    settings: ServiceSettings, migrations_dir: Path, app_factory: Callable[[], FastAPI]
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m services.{settings.service_name}")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args()
    configure_logging(settings.log_level)
    if args.command == "migrate":
        upgrade(migrations_dir, settings.database_url)
        log.info("%s: database migrated", settings.service_name)
        return
    uvicorn.run(
        app_factory(),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
    )
