"""Database engines and sessions: SQLite files by default, PostgreSQL when a URL says so."""

from __future__ import annotations

import asyncio
import weakref
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import DateTime, MetaData, Table, TypeDecorator, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    AsyncSessionTransaction,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ClauseElement

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    # Named constraints keep Alembic migrations portable between SQLite and PostgreSQL.
    return MetaData(naming_convention=NAMING_CONVENTION)


class ServiceBase(DeclarativeBase):
    """Each service declares `class Base(ServiceBase): metadata = new_metadata()`."""

    __abstract__ = True


def _sqlite_path(url: str) -> Path | None:
    marker = ":///"
    if marker not in url or url.endswith(":memory:"):
        return None
    return Path(url.split(marker, 1)[1].split("?", 1)[0])


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        # Statements run in the loop's thread (see shared.sqlite_inline), not aiosqlite's.
        import shared.sqlite_inline  # noqa: F401  (registers the dialect)

        url = "sqlite+inline" + url[url.index(":") :]
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # A consumer's handler may hold one connection while a helper it calls opens
        # another: the pool must cover twice the bus prefetch or handlers starve each other.
        if "poolclass" not in kwargs:
            kwargs.setdefault("pool_size", 20)
            kwargs.setdefault("max_overflow", 40)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets the relay read while a handler writes; busy_timeout waits out short locks.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 30)
    return create_async_engine(url, **kwargs)


# --- one writer at a time on SQLite ---------------------------------------------------------
#
# SQLite lets one connection write at a time. Left to itself, a writer that finds the lock
# taken sleeps in SQLite's busy handler, in steps that grow to 100 ms, while holding a pooled
# connection: under a burst of events the waits add up to seconds, the pool runs dry and a
# transaction whose snapshot went stale while it waited fails with "database is locked".
# Inside one process the writers can queue instead: every `session.begin()` on a SQLite
# engine first takes that engine's write lock, an asyncio lock handed over in FIFO order the
# moment the holder commits, and takes a connection only once it holds it. Transactions
# started without `begin()` only read and take no lock. PostgreSQL is left alone.

SQLITE_LOCK_TIMEOUT = 30.0  # as long as busy_timeout: a stuck holder fails its waiters
# One lock per database file (two engines on one file share it) and event loop.
_write_locks: dict[str, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteLock]] = {}


class WriteLock:
    """An asyncio lock that the task holding it may take again (a helper that opens its own
    transaction inside its caller's must not wait for its caller)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    async def acquire(self, timeout: float | None = None) -> None:
        task = asyncio.current_task()
        if self._owner is task and task is not None:
            self._depth += 1
            return
        if not self._lock.locked():
            await self._lock.acquire()  # free: no timer needed
        else:
            await self._wait(SQLITE_LOCK_TIMEOUT if timeout is None else timeout)
        self._owner, self._depth = task, 1

    async def _wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout)
        except TimeoutError:
            raise OperationalError(
                "BEGIN", None, Exception(f"database is locked (waited {timeout:g} s)")
            ) from None

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()


def write_lock(engine: AsyncEngine) -> WriteLock:
    database = engine.url.database or ""
    key = str(Path(database).resolve()) if database and database != ":memory:" else str(id(engine))
    loops = _write_locks.setdefault(key, weakref.WeakKeyDictionary())
    loop = asyncio.get_running_loop()
    lock = loops.get(loop)
    if lock is None:
        lock = loops[loop] = WriteLock()
    return lock


class _LockedBegin:
    def __init__(self, lock: WriteLock, tx: AsyncSessionTransaction) -> None:
        self.lock, self.tx = lock, tx

    async def __aenter__(self) -> AsyncSessionTransaction:
        await self.lock.acquire()
        try:
            return await self.tx.__aenter__()
        except BaseException:
            self.lock.release()
            raise

    async def __aexit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.tx.__aexit__(typ, exc, tb)
        finally:
            self.lock.release()


def is_sqlite(bind: Any) -> bool:
    return isinstance(bind, AsyncEngine) and bind.dialect.name == "sqlite"


class Session(AsyncSession):
    """`AsyncSession` whose `begin()` queues for the write lock on SQLite (see above)."""

    def begin(self) -> Any:
        tx = super().begin()
        if is_sqlite(self.bind):
            return _LockedBegin(write_lock(self.bind), tx)  # type: ignore[arg-type]
        return tx


class _OnConflictDoNothing(ClauseElement):
    """`ON CONFLICT DO NOTHING` with no conflict target: the same words on PostgreSQL and
    SQLite (3.24+), placed by the INSERT compiler before any RETURNING."""

    __visit_name__ = "ep_on_conflict_do_nothing"
    inherit_cache = True
    _traverse_internals = []  # type: ignore[var-annotated]


@compiles(_OnConflictDoNothing)
def _compile_do_nothing(_element: Any, _compiler: Any, **_kw: Any) -> str:
    return "ON CONFLICT DO NOTHING"


class InsertUnlessPresent(Insert):
    inherit_cache = True
    _post_values_clause = _OnConflictDoNothing()


def insert_unless_present(table: Table) -> Insert:
    """INSERT .. ON CONFLICT DO NOTHING into `table`, on PostgreSQL or SQLite: a row that
    is already there (by any unique key) is left as it is and the result's rowcount is 0;
    with RETURNING, only the rows inserted come back.

    Not the dialects' own `insert(..).on_conflict_do_nothing()`: SQLAlchemy does not cache
    those (they have no cache key), so each execution compiled the statement anew, and
    this runs at least once per event every service handles."""
    return InsertUnlessPresent(table)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=Session, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, on SQLite (which keeps no zone) as on
    PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
