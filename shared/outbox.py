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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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
    event,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from shared.db import UTCDateTime
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


async def add_event(session: AsyncSession, outbox: Table, ev: Event) -> None:
    """Stage `ev` for publishing when (and only if) the session's transaction commits."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)  # the trace of the request or message that caused this event
    await session.execute(
        insert(outbox).values(
            event_id=str(ev.event_id),
            firm_id=ev.firm_id,
            routing_key=ev.routing_key,
            payload=ev.model_dump_json(),
            headers=json.dumps(carrier),
            created_at=datetime.now(UTC),
            attempts=0,
        )
    )
    session.sync_session.info[_PENDING] = True


async def seen(session: AsyncSession, inbox: Table, consumer: str, ev: Event) -> bool:
    """Whether `consumer` already applied `ev`. A read: it takes no write lock."""
    found = await session.execute(
        select(inbox.c.event_id).where(
            inbox.c.consumer == consumer, inbox.c.event_id == str(ev.event_id)
        )
    )
    return found.first() is not None


async def record(session: AsyncSession, inbox: Table, consumer: str, ev: Event) -> None:
    """Mark `ev` applied, in the transaction of its effects.

    Two deliveries racing past `seen` both try this insert; the second commit fails on the
    primary key, the message is redelivered, and `seen` then skips it.
    """
    await session.execute(
        insert(inbox).values(
            consumer=consumer,
            event_id=str(ev.event_id),
            firm_id=ev.firm_id,
            routing_key=ev.routing_key,
            handled_at=datetime.now(UTC),
        )
    )


async def claim(session: AsyncSession, inbox: Table, consumer: str, ev: Event) -> bool:
    """Record `ev` as applied by `consumer`, first thing in the transaction of its effects;
    False when it already was (or is being, by a delivery whose transaction then commits).

    One statement, INSERT .. ON CONFLICT DO NOTHING, where `seen` then `record` took two. A
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
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = pg_insert(inbox).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite_insert(inbox).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - the two backends above are the supported ones
        if await seen(session, inbox, consumer, ev):
            return False
        await record(session, inbox, consumer, ev)
        return True
    result = await session.execute(stmt)
    return bool(result.rowcount == 1)


Publish = Callable[[dict[str, Any], str, str, dict[str, str]], Awaitable[None]]
"""publish(body, routing_key, event_id, headers): returns once the broker has confirmed."""


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
    ) -> None:
        self._sessionmaker = sessionmaker
        self._outbox = outbox
        self._publish = publish
        self._poll_seconds = poll_seconds
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0

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

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        ob = self._outbox
        published = 0
        async with self._sessionmaker() as session, session.begin():
            # SKIP LOCKED lets several replicas relay one table on PostgreSQL without
            # publishing the same row twice at once; SQLite ignores it (one writer anyway).
            rows = (
                await session.execute(
                    select(ob)
                    .where(ob.c.published_at.is_(None))
                    .order_by(ob.c.id)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            done: list[int] = []
            failed: tuple[Any, Exception] | None = None
            for row in rows:
                headers = json.loads(row.headers or "{}")
                token = otel_context.attach(propagate.extract(headers))
                try:
                    await self._publish(
                        json.loads(row.payload), row.routing_key, row.event_id, headers
                    )
                except Exception as exc:
                    # Later rows wait: the events of one service keep their order.
                    failed = (row, exc)
                    break
                finally:
                    otel_context.detach(token)
                done.append(row.id)
            # One write at the end keeps SQLite's single write lock short.
            if done:
                await session.execute(
                    update(ob)
                    .where(ob.c.id.in_(done))
                    .values(published_at=datetime.now(UTC), attempts=ob.c.attempts + 1)
                )
            if failed is not None:
                row, exc = failed
                log.warning(
                    "outbox relay: %s %s not published: %r", row.routing_key, row.event_id, exc
                )
                await session.execute(
                    update(ob)
                    .where(ob.c.id == row.id)
                    .values(attempts=ob.c.attempts + 1, last_error=repr(exc)[:2000])
                )
            published = len(done)
        self.published += published
        return published
