"""SQLite under concurrent writers: the inline dialect and the per-database write lock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.exc import OperationalError

from shared import db
from shared.db import make_engine, make_sessionmaker, ping, write_lock

metadata = MetaData()
rows = Table(
    "rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("writer", String(20), nullable=False),
)


@pytest.fixture
async def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def test_sqlite_urls_run_inline(engine) -> None:  # type: ignore[no-untyped-def]
    assert engine.dialect.driver == "inline"
    await ping(engine)  # AsyncConnection.execute: refuses a driver that never awaits
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 41 + 1"))).scalar() == 42


async def test_an_async_creator_hands_over_its_own_connection(tmp_path: Path) -> None:
    import sqlite3

    from sqlalchemy.ext.asyncio import create_async_engine

    import shared.sqlite_inline  # noqa: F401  (registers sqlite+inline)

    path = tmp_path / "created.db"

    async def opened() -> sqlite3.Connection:
        return sqlite3.connect(path, check_same_thread=False)

    engine = create_async_engine("sqlite+inline://", async_creator=opened)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        await conn.execute(text("INSERT INTO t VALUES (7)"))
    await engine.dispose()
    assert sqlite3.connect(path).execute("SELECT x FROM t").fetchall() == [(7,)]

    async def wrong() -> object:
        return object()

    engine = create_async_engine("sqlite+inline://", async_creator=wrong)
    with pytest.raises(TypeError, match="must return a sqlite3.Connection"):
        async with engine.connect():
            pass
    await engine.dispose()


async def test_many_writers_queue_instead_of_failing(engine) -> None:  # type: ignore[no-untyped-def]
    """Fifty transactions that read, wait, then write: without the lock SQLite would make
    them sleep in its busy handler or fail the stale ones with "database is locked"."""
    sm = make_sessionmaker(engine)
    inside = 0
    most = 0

    async def writer(n: int) -> None:
        nonlocal inside, most
        async with sm() as s, s.begin():
            inside += 1
            most = max(most, inside)
            count = await s.scalar(select(rows.c.id).order_by(rows.c.id.desc()).limit(1))
            await asyncio.sleep(0.001)  # another task runs here
            await s.execute(insert(rows).values(id=(count or 0) + 1, writer=f"w{n}"))
            inside -= 1

    await asyncio.gather(*(writer(n) for n in range(50)))
    assert most == 1
    async with sm() as s:
        ids = list(await s.scalars(select(rows.c.id).order_by(rows.c.id)))
    assert ids == list(range(1, 51))  # every read saw the write before it


async def test_a_helper_inside_a_transaction_does_not_wait_for_its_caller(engine) -> None:  # type: ignore[no-untyped-def]
    sm = make_sessionmaker(engine)
    async with sm() as outer, outer.begin():
        await outer.execute(insert(rows).values(id=1, writer="outer"))
        async with sm() as inner, inner.begin():  # same task: the lock is taken again
            assert (await inner.scalar(select(rows.c.id).where(rows.c.id == 1))) is None
    async with sm() as s:
        assert await s.scalar(select(rows.c.writer)) == "outer"


async def test_a_stuck_writer_fails_its_waiters_clearly(
    engine, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(db, "SQLITE_LOCK_TIMEOUT", 0.2)
    lock = write_lock(engine)
    await lock.acquire()  # held by this task: as if a transaction never ended
    sm = make_sessionmaker(engine)

    async def other() -> None:
        async with sm() as s, s.begin():
            await s.execute(insert(rows).values(id=9, writer="late"))

    with pytest.raises(OperationalError, match="database is locked"):
        await asyncio.create_task(other())
    lock.release()
    await other()  # free again
