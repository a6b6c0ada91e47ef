"""Read-only peeks into a service's database, SQLite file or PostgreSQL, while it runs."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any


class Db:
    """Queries take PostgreSQL's `$1` placeholders; on SQLite they become `?`."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite"):
            path = self.url.split(":///", 1)[1]
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                return list(conn.execute(sql.replace("$1", "?"), args).fetchall())
            finally:
                conn.close()
        return asyncio.run(self._pg(sql, *args))

    def count(self, sql: str, *args: Any) -> int:
        return int(self.rows(sql, *args)[0][0] or 0)

    async def _pg(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
