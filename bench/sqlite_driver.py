"""CPU per small transaction on SQLite: aiosqlite (a thread per connection) against the inline
dialect the services use (shared/sqlite_inline.py), both through SQLAlchemy's async ORM.

    .venv/bin/python bench/sqlite_driver.py [--transactions N]

Each transaction reads three rows by primary key, inserts one and updates it, as a typical
event handler does; 200 untimed transactions first warm SQLAlchemy's caches. Prints CPU and
wall milliseconds per transaction; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import Integer, String, Text, event
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.db import make_engine, make_sessionmaker  # noqa: E402


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    firm_id: Mapped[str] = mapped_column(String(36), index=True)
    body: Mapped[str] = mapped_column(Text)
    n: Mapped[int] = mapped_column(Integer)


async def run(engine, sessionmaker, transactions: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    ids: list[str] = []
    warmup = min(200, transactions)  # statement caches filled before the clock starts
    for i in range(warmup + transactions):
        if i == warmup:
            cpu, wall = time.process_time(), time.perf_counter()
        async with sessionmaker() as s, s.begin():
            for k in range(1, 4):
                if ids:
                    await s.get(Row, ids[-min(k, len(ids))])
            row = Row(id=str(uuid.uuid4()), firm_id="firm", body="x" * 500, n=i)
            s.add(row)
            ids.append(row.id)
            await s.flush()
            row.n = i + 1
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await engine.dispose()
    return 1000 * cpu / transactions, 1000 * wall / transactions


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        threaded = create_async_engine(f"sqlite+aiosqlite:///{tmp}/threaded.db")

        @event.listens_for(threaded.sync_engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            # As make_engine sets them, so that only the driver differs.
            cursor = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        inline = make_engine(f"sqlite+aiosqlite:///{tmp}/inline.db")
        results = {
            "aiosqlite (thread per connection)": await run(
                threaded,
                async_sessionmaker(threaded, expire_on_commit=False),
                args.transactions,
            ),
            f"inline ({inline.dialect.driver}, with the write lock)": await run(
                inline, make_sessionmaker(inline), args.transactions
            ),
        }
    print(f"{args.transactions} transactions of 3 gets, 1 insert, 1 update")
    for name, (cpu, wall) in results.items():
        print(f"  {name:45s} {cpu:6.2f} ms CPU  {wall:6.2f} ms wall  per transaction")


if __name__ == "__main__":
    asyncio.run(main())
