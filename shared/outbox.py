"""Transactional outbox and consumer inbox.

A service writes each event it publishes into its `outbox` table in the same transaction as
the change that caused it; `OutboxRelay` publishes committed rows with publisher confirms and
marks them published, retrying whatever is left (after a crash, too). A consumer records every
event id it has applied in `inbox` in the same transaction as the effect, so a redelivered
event is skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    exists,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from shared.db import UTCDateTime, insert_unless_present, is_sqlite
from shared.events import Event

log = logging.getLogger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("firm_id", String(64), nullable=False, index=True),
        Column("routing_key", String(100), nullable=False),
        Column("payload", Text, nullable=False),
        Column("headers", Text, nullable=False, default="{}"),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("published_at", UTCDateTime(), nullable=True, index=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", Text, nullable=True),
    )


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("firm_id", String(64), nullable=False),
        Column("routing_key", String(100), nullable=False),
        Column("handled_at", UTCDateTime(), nullable=False),
    )


_PENDING = "outbox_pending"
_listeners: list[Callable[[], None]] = []


@event.listens_for(Session, "after_commit")
def _wake_relays(session: Session) -> None:
    if session.info.pop(_PENDING, False):
        for wake in _listeners:
            wake()


@event.listens_for(Session, "after_rollback")
def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _outbox_row(ev: Event, context: Any = None) -> dict[str, Any]:
    carrier: dict[str, str] = {}
    # The trace of the request or message that caused this event.
    propagate.inject(carrier, context=context)
    return {
        "event_id": str(ev.event_id),
        "firm_id": ev.firm_id,
        "routing_key": ev.routing_key,
        "payload": ev.model_dump_json(),
        "headers": json.dumps(carrier),
        "created_at": datetime.now(UTC),
        "attempts": 0,
    }


async def add_event(session: AsyncSession, outbox: Table, ev: Event) -> None:
    """Stage `ev` for publishing when (and only if) the session's transaction commits."""
    await session.execute(insert(outbox), _outbox_row(ev))
    session.sync_session.info[_PENDING] = True


async def add_events(session: AsyncSession, outbox: Table, evs: list[tuple[Event, Any]]) -> None:
    """Stage many events, each with its trace context (None: the current one), in one
    statement."""
    if not evs:
        return
    await session.execute(insert(outbox), [_outbox_row(ev, ctx) for ev, ctx in evs])
    session.sync_session.info[_PENDING] = True


def inbox_has(inbox: Table, consumer: str, ev: Event) -> Any:
    """EXISTS: whether `consumer` already applied `ev`, within a larger read."""
    return exists().where(inbox.c.consumer == consumer, inbox.c.event_id == str(ev.event_id))


async def claim(session: AsyncSession, inbox: Table, consumer: str, ev: Event) -> bool:
    """Record `ev` as applied by `consumer`, first thing in the transaction of its effects;
    False when it already was (or is being, by a delivery whose transaction then commits).

    One statement, INSERT .. ON CONFLICT DO NOTHING (`shared.db.insert_unless_present`). A
    duplicate delivered meanwhile waits on the row (PostgreSQL) or on the write lock
    (SQLite) until the first transaction ends: after a commit it finds the row and skips,
    after a rollback it claims the event itself."""
    values = {
        "consumer": consumer,
        "event_id": str(ev.event_id),
        "firm_id": ev.firm_id,
        "routing_key": ev.routing_key,
        "handled_at": datetime.now(UTC),
    }
    result = await session.execute(insert_unless_present(inbox), values)
    return bool(result.rowcount == 1)


async def already_applied(
    session: AsyncSession, inbox: Table, consumer: str, event_ids: list[str]
) -> set[str]:
    """Which of `event_ids` `consumer` already applied. A read: it takes no write lock."""
    rows = await session.scalars(
        select(inbox.c.event_id).where(
            inbox.c.consumer == consumer, inbox.c.event_id.in_(event_ids)
        )
    )
    return set(rows)


async def claim_many(
    session: AsyncSession, inbox: Table, consumer: str, evs: list[Event]
) -> set[str]:
    """`claim` for many events in one statement: the ids of those claimed now (the others
    were applied already, or are being, by a delivery whose transaction then commits)."""
    if not evs:
        return set()
    if len(evs) == 1:  # the statement for one row is built once and cached
        return {str(evs[0].event_id)} if await claim(session, inbox, consumer, evs[0]) else set()
    now = datetime.now(UTC)
    rows = [
        {
            "consumer": consumer,
            "event_id": str(ev.event_id),
            "firm_id": ev.firm_id,
            "routing_key": ev.routing_key,
            "handled_at": now,
        }
        for ev in evs
    ]
    # Executemany with RETURNING (SQLAlchemy's "insertmanyvalues": one INSERT of all the
    # rows, built from a statement compiled once and cached), not `.values(rows)`: a
    # multi-row VALUES is a new statement for every batch, compiled anew each time.
    result = await session.execute(_CLAIM_MANY[inbox], rows)
    return set(result.scalars())


class _ClaimStatements(dict[Table, Any]):
    """Each inbox's executemany claim, built once (its compiled form is cached by it)."""

    def __missing__(self, inbox: Table) -> Any:
        statement = insert_unless_present(inbox).returning(inbox.c.event_id)
        self[inbox] = statement
        return statement


_CLAIM_MANY = _ClaimStatements()


Publish = Callable[[bytes, str, str, dict[str, str]], Awaitable[None]]
"""publish(body, routing_key, event_id, headers): `body` is the event's JSON; returns once
the broker has confirmed."""

COMPLETE_CHUNK = 16

Complete = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any] | bytes]]]
"""complete(payloads) -> the same payloads with what the message carries beyond its row, as
dicts or as the message bodies (JSON) themselves: called by the relay just before
publishing, for one routing key, with a batch's events."""


class OutboxRelay:
    """Publishes committed outbox rows in order; wakes on commit, polls as a fallback."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Table,
        publish: Publish,
        *,
        poll_seconds: float = 1.0,
        batch: int = 100,
        retention: timedelta = timedelta(days=7),
        prune_every_seconds: float = 600.0,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._outbox = outbox
        self._publish = publish
        self._poll_seconds = poll_seconds
        self._batch = batch
        self._retention = retention
        self._prune_every = prune_every_seconds
        self._pruned_at = 0.0
        self._complete: dict[str, Complete] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0

    def completes(self, routing_key: str, complete: Complete) -> None:
        """Have `complete` add to each `routing_key` event, at publishing time, what its
        outbox row does not hold: content too big to be written twice to the outbox (an
        email with its PDFs), derived from committed data. A row whose completion fails is
        not published and is retried as a failed publish is."""
        self._complete[routing_key] = complete

    def wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        _listeners.append(self.wake)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self.wake in _listeners:
            _listeners.remove(self.wake)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        backoff = self._poll_seconds
        while True:
            self._wake.clear()
            try:
                count = await self.publish_pending()
                backoff = self._poll_seconds
                if count == 0 and time.monotonic() - self._pruned_at >= self._prune_every:
                    self._pruned_at = time.monotonic()
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay: publishing failed; will retry")
                count = 0
                backoff = min(backoff * 2, 30.0)
            if count >= self._batch:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass

    async def prune(self, now: datetime | None = None, batch: int = 1000) -> int:
        """Delete rows published longer ago than the retention, a batch per transaction
        (each holds SQLite's write lock only briefly); returns how many were deleted."""
        ob = self._outbox
        cutoff = (now or datetime.now(UTC)) - self._retention
        deleted = 0
        while True:
            async with self._sessionmaker() as session, session.begin():
                old = (
                    select(ob.c.id)
                    .where(ob.c.published_at.is_not(None), ob.c.published_at < cutoff)
                    .order_by(ob.c.id)
                    .limit(batch)
                )
                result = await session.execute(delete(ob).where(ob.c.id.in_(old)))
            deleted += result.rowcount or 0
            if (result.rowcount or 0) < batch:
                break
        if deleted:
            log.info("outbox: deleted %d rows published before %s", deleted, cutoff.isoformat())
        return deleted

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        if is_sqlite(self._sessionmaker.kw.get("bind")):
            return await self._publish_pending_sqlite()
        async with self._sessionmaker() as session, session.begin():
            # SKIP LOCKED lets several replicas relay one table on PostgreSQL without
            # publishing the same row twice at once.
            rows = (await session.execute(self._pending().with_for_update(skip_locked=True))).all()
            done, failed = await self._publish_rows(rows)
            await self._mark(session, done, failed)
        self.published += len(done)
        return len(done)

    async def _publish_pending_sqlite(self) -> int:
        """SQLite: one process writes each file, so no row locks are needed; the rows are
        read and published with no transaction open, and only marking them takes the
        write lock, briefly. Holding it across the broker's confirms would stop every
        handler of the service from writing meanwhile."""
        async with self._sessionmaker() as session:
            rows = (await session.execute(self._pending())).all()
        if not rows:
            return 0
        done, failed = await self._publish_rows(rows)
        async with self._sessionmaker() as session, session.begin():
            await self._mark(session, done, failed)
        self.published += len(done)
        return len(done)

    def _pending(self) -> Any:
        ob = self._outbox
        return select(ob).where(ob.c.published_at.is_(None)).order_by(ob.c.id).limit(self._batch)

    async def _bodies(self, rows: list[Any]) -> dict[int, bytes | Exception]:
        """Each row's message body: the payload as stored (JSON already, not parsed to be
        encoded again), or as completed for its routing key."""
        bodies: dict[int, bytes | Exception] = {}
        for key, complete in self._complete.items():
            mine = [row for row in rows if row.routing_key == key]
            if not mine:
                continue
            try:
                completed = await complete([json.loads(row.payload) for row in mine])
                for row, payload in zip(mine, completed, strict=True):
                    bodies[row.id] = (
                        payload
                        if isinstance(payload, bytes)
                        else json.dumps(payload, separators=(",", ":")).encode()
                    )
            except Exception as exc:
                log.exception("outbox relay: completing %s events failed", key)
                for row in mine:
                    bodies[row.id] = exc
        for row in rows:
            bodies.setdefault(row.id, row.payload.encode())
        return bodies

    async def _publish_rows(
        self, rows: list[Any]
    ) -> tuple[list[int], tuple[Any, Exception] | None]:
        """Publish `rows` in order, each once the one before was confirmed; a failure stops
        there (later rows wait, so the events of one service keep their order)."""
        done: list[int] = []
        bodies: dict[int, bytes | Exception] = {}
        for i, row in enumerate(rows):
            if i % COMPLETE_CHUNK == 0:
                # Completed a few at a time: a batch of emails with their PDFs is never all
                # in memory at once.
                bodies = await self._bodies(rows[i : i + COMPLETE_CHUNK])
            headers = json.loads(row.headers or "{}")
            token = otel_context.attach(propagate.extract(headers))
            try:
                body = bodies[row.id]
                if isinstance(body, Exception):
                    raise body
                await self._publish(body, row.routing_key, row.event_id, headers)
            except Exception as exc:
                return done, (row, exc)
            finally:
                otel_context.detach(token)
            done.append(row.id)
        return done, None

    async def _mark(
        self, session: AsyncSession, done: list[int], failed: tuple[Any, Exception] | None
    ) -> None:
        ob = self._outbox
        # One write at the end keeps SQLite's single write lock short.
        if done:
            await session.execute(
                update(ob)
                .where(ob.c.id.in_(done))
                .values(published_at=datetime.now(UTC), attempts=ob.c.attempts + 1)
            )
        if failed is not None:
            row, exc = failed
            log.warning("outbox relay: %s %s not published: %r", row.routing_key, row.event_id, exc)
            await session.execute(
                update(ob)
                .where(ob.c.id == row.id)
                .values(attempts=ob.c.attempts + 1, last_error=repr(exc)[:2000])
            )
