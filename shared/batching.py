"""Events of one kind applied together: one transaction for the events delivered at about
the same time, instead of one each.

A Send All turns into hundreds of events of each kind within seconds (a send request, a
pay link, an email sent per envelope), and the fixed cost of each (a session, a transaction
and its commit, the inbox record, every statement built and executed once per event) was
most of the work. `Batcher` collects the events that arrive while it waits a moment (or
until `max_batch` are there; while a batch is being applied, the next one gathers), then:

1. with a `prepare` step: reads which of them were applied before (one read), drops
   those, and runs `prepare(events)` outside any transaction (reads, rendering);
2. in one transaction claims them all in the inbox (one statement) and runs
   `fn(session, events, prepared)` for those it claimed.

A handler that keeps its own transactions (the mailer's, around its SMTP conversations) is
given the events alone, `fn(events)`, with `claims=False`, and records them in the inbox
itself.

Each delivery waits for its batch and is acknowledged (or rejected) on its own. When a
batch fails, each of its events is tried again alone, so that one bad event fails alone
and is dead-lettered alone, as it would have without batching.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from opentelemetry import context as otel_context

from shared.events import Event
from shared.outbox import already_applied, claim_many

if TYPE_CHECKING:
    from shared.runtime import Service

E = TypeVar("E", bound=Event)
log = logging.getLogger(__name__)

# fn(session, events, prepared), or fn(events) for a batcher with claims=False
BatchFn = Callable[..., Awaitable[None]]
Prepare = Callable[[list[Any]], Awaitable[Any]]


class Batcher(Generic[E]):
    def __init__(
        self,
        service: Service,
        fn: BatchFn,
        *,
        prepare: Prepare | None = None,
        max_batch: int = 16,
        wait_seconds: float = 0.02,
        claims: bool = True,
    ) -> None:
        self.service = service
        self.fn = fn
        self.prepare = prepare
        self.claims = claims
        self.max_batch = max(1, max_batch)
        self.wait_seconds = wait_seconds
        self._pending: list[tuple[E, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None

    async def apply(self, ev: E) -> None:
        """One delivery: returns once its event is applied (or was before); raises what
        applying it alone raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # The delivery's trace, for the events its handling publishes (`Service.publish`).
        self.service.contexts[str(ev.event_id)] = otel_context.get_current()
        self._pending.append((ev, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None and self._running is None:
            self._timer = loop.call_later(self.wait_seconds, self._flush)
        try:
            await future
        finally:
            self.service.contexts.pop(str(ev.event_id), None)

    def _flush(self) -> None:
        """Start a batch of what is waiting, unless one is being applied: then what gathers
        meanwhile goes as the next batch, the moment it is done (the busier the service,
        the bigger its batches)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running is not None or not self._pending:
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        self._running = asyncio.create_task(self._run(batch))
        self._running.add_done_callback(self._done)

    def _done(self, _task: asyncio.Task[None]) -> None:
        self._running = None
        self._flush()

    async def _run(self, batch: list[tuple[E, asyncio.Future[None]]]) -> None:
        try:
            try:
                await self._apply([ev for ev, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    return
                log.warning(
                    "%s: a batch of %d %s failed; applying each alone",
                    self.service.name,
                    len(batch),
                    batch[0][0].routing_key,
                    exc_info=True,
                )
                for ev, future in batch:
                    try:
                        await self._apply([ev])
                    except Exception as one:
                        _settle(future, one)
                    else:
                        _settle(future, None)
                return
            for _, future in batch:
                _settle(future, None)
        finally:
            for _, future in batch:  # cancelled (the service stopping): nothing settled
                if not future.done():
                    future.cancel()

    async def _apply(self, evs: list[E]) -> None:
        service = self.service
        unique: dict[str, E] = {}
        for ev in evs:
            unique.setdefault(str(ev.event_id), ev)  # the same event delivered twice
        fresh = list(unique.values())
        if not self.claims:
            await self.fn(fresh)
            return
        prepared = None
        if self.prepare is not None:
            # Not worth preparing what was applied before: one read says which.
            async with service.sessionmaker() as s:
                done = await already_applied(s, service.inbox, service.name, list(unique))
            fresh = [ev for ev in fresh if str(ev.event_id) not in done]
            if not fresh:
                return
            prepared = await self.prepare(fresh)
        async with service.sessionmaker() as s, s.begin():
            claimed = await claim_many(s, service.inbox, service.name, fresh)
            mine = [ev for ev in fresh if str(ev.event_id) in claimed]
            if mine:
                await self.fn(s, mine, prepared)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():  # its delivery was cancelled meanwhile
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
