"""Events of one kind applied together: one transaction for the events delivered at about
the same time, instead of one each.

A Send All turns into hundreds of events of each kind within seconds (a send request, a
pay link, an email sent per envelope), and the fixed cost of each (a session, a transaction
and its commit, the inbox record, every statement built and executed once per event) was
most of the work. `Batcher` collects the events that arrive while it waits a moment (or
until `max_batch` are there; while a batch is being applied, the next one gathers), then
applies them once each (`apply_once`):

1. with a `prepare` step: reads which of them were applied before (one read), drops
   those, and runs `prepare(events)` outside any transaction (reads, rendering);
2. in one transaction claims them all in the inbox (one statement) and runs
   `fn(session, events, prepared)` for those it claimed;
3. with a `then` step: once that transaction committed, runs `then(result)` with what
   `fn` returned (work that must not hold a transaction open: the mailer's SMTP).

A handler that calls `apply_once` itself (the mailer's, which tests also call directly) is
given the events alone, `fn(events)`, with `claims=False`.

With a `then` step, batches may overlap (`then_concurrency` > 0; 0, the default, keeps them
one after another): once a batch's transaction committed, the next batch starts (its read of
what was applied, its `prepare`) while this one's `then` runs, and its own transaction waits
until fewer than `then_concurrency` batches are in their `then` step. With 1, what a
transaction sees is what it saw without the overlap and one batch at a time is past its
commit; with 2, a batch is applied while the one before is in its `then` (for the mailer:
the next emails built and committed while the relay takes the last ones, which needs a
relay pool of twice a batch for every email committed as `sending` to be in its SMTP
conversation).

Each delivery waits for its batch and is acknowledged (or rejected) on its own. When a
batch fails, each of its events is tried again alone, so that one bad event fails alone
and is dead-lettered alone, as it would have without batching.

`Consumer` is what this needs of its service, built by `shared.runtime.Service`: its
sessions, its inbox, its name there, and the trace of each delivery being applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from opentelemetry import context as otel_context
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events import Event
from shared.outbox import already_applied, claim_many

E = TypeVar("E", bound=Event)
log = logging.getLogger(__name__)

# fn(session, events, prepared), or fn(events) for a batcher with claims=False
BatchFn = Callable[..., Awaitable[Any]]
Prepare = Callable[[list[Any]], Awaitable[Any]]
Then = Callable[[Any], Awaitable[None]]


@dataclass
class Consumer:
    """A service as the consumer of events: where it records those it applied (`inbox`,
    under `name`), and the trace context of each delivery being applied in a batch, by
    event id, so that what its handling publishes or does stays in that delivery's trace."""

    sessionmaker: async_sessionmaker[AsyncSession]
    inbox: Table
    name: str
    contexts: dict[str, Any] = field(default_factory=dict)

    def context_of(self, ev: Event) -> Any:
        """The trace context of the delivery that brought `ev`; None outside a batch."""
        return self.contexts.get(str(ev.event_id))

    @contextmanager
    def in_trace_of(self, ev: Event) -> Iterator[None]:
        """Run the block in the trace of the delivery that brought `ev` (if batched)."""
        cause = self.context_of(ev)
        token = otel_context.attach(cause) if cause is not None else None
        try:
            yield
        finally:
            if token is not None:
                otel_context.detach(token)

    async def applied(self, event_ids: list[str]) -> set[str]:
        """Which of `event_ids` were applied before. A read: it takes no write lock."""
        async with self.sessionmaker() as s:
            return await already_applied(s, self.inbox, self.name, event_ids)

    async def claim(self, session: AsyncSession, evs: list[Any]) -> set[str]:
        """Record `evs` as applied in `session`'s transaction: the ids of those claimed now."""
        return await claim_many(session, self.inbox, self.name, evs)


@dataclass
class _Stage:
    """Where a batch of a `Batcher` stands, for `apply_once` in its task: `committed()`
    lets the Batcher start the next batch; `after_commit` counts the Batcher's batches from
    their transaction to the end of their `then` step."""

    committed: Callable[[], None]
    after_commit: asyncio.Semaphore


_STAGE: ContextVar[_Stage | None] = ContextVar("batching_stage", default=None)


async def apply_once(
    consumer: Consumer,
    evs: list[E],
    fn: BatchFn,
    *,
    prepare: Prepare | None = None,
    then: Then | None = None,
) -> None:
    """Apply `evs` once each (see the module's docstring for the steps): `fn(session,
    events, prepared)` in the transaction that claims them, for those it claimed;
    `then(result)` after that transaction committed, when `fn` ran."""
    unique: dict[str, E] = {}
    for ev in evs:
        unique.setdefault(str(ev.event_id), ev)  # the same event delivered twice
    fresh = list(unique.values())
    prepared = None
    if prepare is not None:
        # Not worth preparing what was applied before: one read says which.
        done = await consumer.applied(list(unique))
        fresh = [ev for ev in fresh if str(ev.event_id) not in done]
        if not fresh:
            return
        prepared = await prepare(fresh)
    stage = _STAGE.get()
    if then is None or stage is None:
        result, ran = await _claim_and_apply(consumer, fresh, fn, prepared)
        if ran and then is not None:
            await then(result)
        return
    # In a Batcher's batch: the transaction waits for the batch before to finish its `then`
    # (see the module's docstring); once it committed, the next batch may start.
    async with stage.after_commit:
        result, ran = await _claim_and_apply(consumer, fresh, fn, prepared)
        stage.committed()
        if ran:
            await then(result)


async def _claim_and_apply(
    consumer: Consumer, evs: list[E], fn: BatchFn, prepared: Any
) -> tuple[Any, bool]:
    """One transaction: `evs` claimed, `fn` for those claimed now; (its result, whether it ran)."""
    async with consumer.sessionmaker() as s, s.begin():
        claimed = await consumer.claim(s, evs)
        mine = [ev for ev in evs if str(ev.event_id) in claimed]
        if not mine:
            return None, False
        return await fn(s, mine, prepared), True


class Batcher(Generic[E]):
    def __init__(
        self,
        consumer: Consumer,
        fn: BatchFn,
        *,
        prepare: Prepare | None = None,
        max_batch: int = 16,
        wait_seconds: float = 0.02,
        claims: bool = True,
        then_concurrency: int = 0,
    ) -> None:
        self.consumer = consumer
        self.fn = fn
        self.prepare = prepare
        self.claims = claims
        self.max_batch = max(1, max_batch)
        self.wait_seconds = wait_seconds
        self._pending: list[tuple[E, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        # The batch before its commit (at most one); batches past it, in their `then`.
        self._running: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        self.then_concurrency = max(0, then_concurrency)
        self._after_commit: asyncio.Semaphore | None = None

    async def apply(self, ev: E) -> None:
        """One delivery: returns once its event is applied (or was before); raises what
        applying it alone raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # The delivery's trace, for the events its handling publishes (`Service.publish`).
        self.consumer.contexts[str(ev.event_id)] = otel_context.get_current()
        self._pending.append((ev, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None and self._running is None:
            self._timer = loop.call_later(self.wait_seconds, self._flush)
        try:
            await future
        finally:
            self.consumer.contexts.pop(str(ev.event_id), None)

    def _flush(self) -> None:
        """Start a batch of what is waiting, unless one is being applied (up to its commit):
        then what gathers meanwhile goes as the next batch, the moment that one committed
        or ended (the busier the service, the bigger its batches)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running is not None or not self._pending:
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        if self._after_commit is None and self.then_concurrency:
            self._after_commit = asyncio.Semaphore(self.then_concurrency)
        task = asyncio.create_task(self._run(batch, self._after_commit))
        self._running = task
        task.add_done_callback(self._done)

    def _committed(self, task: asyncio.Task[None]) -> None:
        """`task`'s batch committed (or ended): the next one may start."""
        if self._running is task:
            self._running = None
            self._finishing.add(task)
            self._flush()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._committed(task)
        self._finishing.discard(task)

    async def _run(
        self, batch: list[tuple[E, asyncio.Future[None]]], after_commit: asyncio.Semaphore | None
    ) -> None:
        task = asyncio.current_task()
        if after_commit is not None and task is not None:
            _STAGE.set(_Stage(lambda: self._committed(task), after_commit))
        try:
            try:
                await self._apply([ev for ev, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    return
                log.warning(
                    "%s: a batch of %d %s failed; applying each alone",
                    self.consumer.name,
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
        if self.claims:
            await apply_once(self.consumer, evs, self.fn, prepare=self.prepare)
            return
        unique: dict[str, E] = {}
        for ev in evs:
            unique.setdefault(str(ev.event_id), ev)  # the same event delivered twice
        await self.fn(list(unique.values()))


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():  # its delivery was cancelled meanwhile
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)
