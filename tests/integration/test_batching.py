"""Batches of events applied once each (`shared.batching`): the inbox claim of many events in
one statement, on SQLite and PostgreSQL, and batches with a `then` step overlapping as far as
their Batcher's `then_concurrency` lets them, each event still applied once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.batching import Batcher, Consumer, apply_once
from shared.db import make_engine, make_sessionmaker, new_metadata
from shared.events import InvoiceRemoved
from shared.outbox import claim_many, inbox_table

pytestmark = pytest.mark.timeout(60)


def removed(n: int) -> InvoiceRemoved:
    return InvoiceRemoved(firm_id="firm-b", invoice_id=f"clio:{n}", reason="deleted")


async def _consumer(url: str) -> tuple[Consumer, Any]:
    metadata = new_metadata()
    inbox = inbox_table(metadata)
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return Consumer(make_sessionmaker(engine), inbox, "ept-batching"), engine


@pytest.fixture
async def consumer(database_url: str) -> AsyncIterator[Consumer]:
    made, engine = await _consumer(database_url)
    yield made
    await engine.dispose()


@pytest.fixture
async def sqlite_consumer(tmp_path: Any) -> AsyncIterator[Consumer]:
    """On SQLite (statements run in the loop's thread): a few turns of the loop are enough
    for every batch that may go on to do so."""
    made, engine = await _consumer(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    yield made
    await engine.dispose()


async def inbox_rows(consumer: Consumer) -> int:
    async with consumer.sessionmaker() as s:
        return int(await s.scalar(select(func.count()).select_from(consumer.inbox)) or 0)


async def test_claiming_many_returns_only_the_events_not_claimed_before(
    consumer: Consumer,
) -> None:
    evs = [removed(i) for i in range(6)]
    async with consumer.sessionmaker() as s, s.begin():
        first = await claim_many(s, consumer.inbox, consumer.name, evs[:3])
    async with consumer.sessionmaker() as s, s.begin():
        second = await claim_many(s, consumer.inbox, consumer.name, evs[1:])
    async with consumer.sessionmaker() as s, s.begin():
        third = await claim_many(s, consumer.inbox, consumer.name, evs)
    assert first == {str(ev.event_id) for ev in evs[:3]}
    assert second == {str(ev.event_id) for ev in evs[3:]}
    assert third == set()
    assert await inbox_rows(consumer) == 6


async def turns(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


class Pipeline:
    """A handler as the mailer's: `apply_once` with a prepare step, a transaction and a
    `then` step that waits until the test lets each batch go."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.log: list[tuple[str, int]] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.applied: list[str] = []

    def _batch_no(self, evs: list[InvoiceRemoved]) -> int:
        return int(evs[0].invoice_id.split(":")[1]) // 2  # batches of two: 0-1, 2-3, ...

    async def handle(self, evs: list[InvoiceRemoved]) -> None:
        await apply_once(self.consumer, evs, self._apply, prepare=self._prepare, then=self._then)

    async def _prepare(self, evs: list[InvoiceRemoved]) -> int:
        self.log.append(("prepare", self._batch_no(evs)))
        return self._batch_no(evs)

    async def _apply(self, _s: AsyncSession, evs: list[InvoiceRemoved], no: int) -> int:
        self.log.append(("apply", no))
        self.applied += [ev.invoice_id for ev in evs]
        return no

    async def _then(self, no: int) -> None:
        self.log.append(("then", no))
        await self.gates.setdefault(no, asyncio.Event()).wait()
        self.log.append(("done", no))

    def release(self, no: int) -> None:
        self.gates.setdefault(no, asyncio.Event()).set()


async def start(consumer: Consumer, pipeline: Pipeline, k: int) -> list[asyncio.Task[None]]:
    batcher: Batcher[InvoiceRemoved] = Batcher(
        consumer, pipeline.handle, max_batch=2, claims=False, then_concurrency=k
    )
    tasks = [asyncio.create_task(batcher.apply(removed(i))) for i in range(6)]
    await turns()
    return tasks


async def finish(pipeline: Pipeline, tasks: list[asyncio.Task[None]]) -> None:
    for no in range(3):
        pipeline.release(no)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert sorted(pipeline.applied) == sorted(f"clio:{i}" for i in range(6))


async def test_without_overlap_a_batch_starts_once_the_one_before_ended(
    sqlite_consumer: Consumer,
) -> None:
    pipeline = Pipeline(sqlite_consumer)
    tasks = await start(sqlite_consumer, pipeline, k=0)
    assert pipeline.log == [("prepare", 0), ("apply", 0), ("then", 0)]
    pipeline.release(0)
    await turns()
    assert pipeline.log[3:] == [("done", 0), ("prepare", 1), ("apply", 1), ("then", 1)]
    await finish(pipeline, tasks)
    assert await inbox_rows(sqlite_consumer) == 6


async def test_with_one_the_next_batch_is_prepared_but_applied_after_the_then_before(
    sqlite_consumer: Consumer,
) -> None:
    pipeline = Pipeline(sqlite_consumer)
    tasks = await start(sqlite_consumer, pipeline, k=1)
    # Batch 1 prepared while batch 0 is in its `then`; not applied; batch 2 not started.
    assert pipeline.log == [("prepare", 0), ("apply", 0), ("then", 0), ("prepare", 1)]
    pipeline.release(0)
    await turns()
    assert pipeline.log[4:] == [("done", 0), ("apply", 1), ("then", 1), ("prepare", 2)]
    await finish(pipeline, tasks)
    assert await inbox_rows(sqlite_consumer) == 6


async def test_with_two_a_batch_is_applied_while_the_one_before_is_in_its_then(
    sqlite_consumer: Consumer,
) -> None:
    pipeline = Pipeline(sqlite_consumer)
    tasks = await start(sqlite_consumer, pipeline, k=2)
    assert pipeline.log == [
        ("prepare", 0),
        ("apply", 0),
        ("then", 0),
        ("prepare", 1),
        ("apply", 1),
        ("then", 1),
        ("prepare", 2),  # prepared; its transaction waits for a batch to leave its `then`
    ]
    pipeline.release(1)
    await turns()
    assert pipeline.log[7:] == [("done", 1), ("apply", 2), ("then", 2)]
    await finish(pipeline, tasks)
    assert await inbox_rows(sqlite_consumer) == 6


async def test_overlapping_batches_still_apply_a_redelivered_event_once(
    sqlite_consumer: Consumer,
) -> None:
    """An event delivered again while its first delivery's batch is in its `then` is
    claimed already: the later batch skips it."""
    pipeline = Pipeline(sqlite_consumer)
    batcher: Batcher[InvoiceRemoved] = Batcher(
        sqlite_consumer, pipeline.handle, max_batch=2, claims=False, then_concurrency=2
    )
    first, second = removed(0), removed(1)
    tasks = [asyncio.create_task(batcher.apply(ev)) for ev in (first, second)]
    await turns()
    again = asyncio.create_task(batcher.apply(first))  # the broker lost an ack, say
    await turns()
    pipeline.release(0)
    await asyncio.wait_for(asyncio.gather(*tasks, again), 10)
    assert pipeline.applied == ["clio:0", "clio:1"]
    assert await inbox_rows(sqlite_consumer) == 2
