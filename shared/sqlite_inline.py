"""SQLite for the async engine without a thread hop per statement.

aiosqlite runs every statement on a thread of its own and wakes the event loop for each
result: on a local file that hand-over costs more than the statement (measured with
bench/sqlite_driver.py: a transaction of seven small statements takes 1.5 to 3 times the
CPU through aiosqlite that it takes through sqlite3). This dialect keeps SQLAlchemy's async
API and runs sqlite3 directly in the event loop's thread.

That is safe only because nothing here waits on SQLite's locks inside a process:
- Readers never wait in WAL mode.
- Writers queue on `shared.db.WriteLock` (every `session.begin()` takes it) before their
  first statement, so a process never has two write transactions open at once.
A write lock held by another process (a migration run beside the service, say) would make
a statement wait up to `busy_timeout` with the loop blocked; each service owns its database
file, so in practice that happens only while a service is being migrated.

`make_engine` uses this dialect for `sqlite+aiosqlite://` URLs (and `sqlite+inline://`).

The classes below extend SQLAlchemy 2.0's aiosqlite adapter and rely on its internals (the
cursor's slots and `_rows`, the connection's `await_`, the DBAPI adapter's constructor), which
SQLAlchemy 2.1 rewrites: `WRITTEN_FOR` is the range this was written and checked for, and
tests/unit/test_shim_versions.py fails when the installed SQLAlchemy or the project's pin
leaves it. The aiosqlite package itself is not used here. Figures: docs/performance.md.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.engine.interfaces import AdaptedConnection
from sqlalchemy.util.concurrency import await_only, in_greenlet

# (distribution, lowest version included, first version excluded)
WRITTEN_FOR = ("sqlalchemy", "2.0.40", "2.1")


class _Ready:
    """An awaitable that is already done."""

    def __await__(self) -> Any:
        return iter(())


_READY = _Ready()


def _touch_async() -> None:
    """`AsyncConnection.execute` refuses a driver that never awaited (AwaitRequired). One
    switch to the greenlet's parent and back, with nothing to wait for, satisfies it for a
    few microseconds; the event loop is not entered."""
    if in_greenlet():
        await_only(_READY)


class InlineCursor(AsyncAdapt_aiosqlite_cursor):
    """The async adapter's cursor (rows fetched whole at execute, as before, so no statement
    is left open between awaits), executing through sqlite3 directly."""

    __slots__ = ()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        _touch_async()
        cursor = self._connection.cursor()
        try:
            if parameters is None:
                cursor.execute(operation)
            else:
                cursor.execute(operation, parameters)
            if cursor.description:
                self.description = cursor.description
                self.lastrowid = self.rowcount = -1
                self._rows = deque(cursor.fetchall())
            else:
                self.description = None
                self.lastrowid = cursor.lastrowid
                self.rowcount = cursor.rowcount
        finally:
            cursor.close()

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        _touch_async()
        cursor = self._connection.cursor()
        try:
            cursor.executemany(operation, seq_of_parameters)
            self.description = None
            self.lastrowid = cursor.lastrowid
            self.rowcount = cursor.rowcount
        finally:
            cursor.close()


class InlineConnection(AdaptedConnection):
    """The DBAPI connection SQLAlchemy's async engine sees: a sqlite3 connection whose calls
    return at once (no `await_only`, so no greenlet switch either)."""

    __slots__ = ("dbapi",)
    await_ = None  # read by the adapter cursor's constructor; never called here

    def __init__(self, dbapi: Any, connection: sqlite3.Connection) -> None:
        self.dbapi = dbapi
        self._connection = connection

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._connection.isolation_level = value

    def create_function(self, *args: Any, **kw: Any) -> None:
        self._connection.create_function(*args, **kw)

    def cursor(self, server_side: bool = False) -> InlineCursor:
        return InlineCursor(self)  # type: ignore[arg-type]

    def execute(self, *args: Any, **kw: Any) -> Any:
        _touch_async()
        return self._connection.execute(*args, **kw)

    def rollback(self) -> None:
        self._connection.rollback()

    def commit(self) -> None:
        self._connection.commit()

    def close(self) -> None:
        self._connection.close()

    def terminate(self) -> None:
        self._connection.close()


class InlineDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """sqlite3's names (errors, versions, Binary) under the async adapter's interface."""

    def __init__(self) -> None:
        super().__init__(sqlite3, sqlite3)
        self.has_stop = True

    def connect(self, *arg: Any, **kw: Any) -> InlineConnection:  # type: ignore[override]
        kw.pop("async_fallback", None)
        creator_fn = kw.pop("async_creator_fn", None)
        if creator_fn is not None:
            # create_async_engine(async_creator=...): the coroutine hands over the connection
            # itself, a sqlite3 one for this dialect (opened with check_same_thread=False).
            connection = await_only(creator_fn(*arg, **kw))
            if not isinstance(connection, sqlite3.Connection):
                raise TypeError(
                    "the inline SQLite dialect's async_creator must return a sqlite3.Connection,"
                    f" not {type(connection).__name__}"
                )
            return InlineConnection(self, connection)
        # Pooled connections may be checked out by another event loop's thread (Alembic runs
        # in one); each is used by one task at a time, which is all sqlite3 needs.
        kw["check_same_thread"] = False
        return InlineConnection(self, sqlite3.connect(*arg, **kw))


class SQLiteDialect_inline(SQLiteDialect_aiosqlite):
    driver = "inline"
    supports_statement_cache = True
    supports_server_side_cursors = False

    @classmethod
    def import_dbapi(cls) -> InlineDBAPI:  # type: ignore[override]
        return InlineDBAPI()

    def get_driver_connection(self, connection: Any) -> Any:
        return connection._connection

    def do_terminate(self, dbapi_connection: Any) -> None:
        dbapi_connection.terminate()


registry.register("sqlite.inline", __name__, "SQLiteDialect_inline")
