"""PostgreSQL for a benchmark's stack (--postgres): a database per service, made for one stack
and dropped after it, and the connections the services hold, sampled while it runs.

The admin URL comes from BENCH_POSTGRES_URL (a user that may create databases)."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from typing import Any

POSTGRES_ADMIN = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def pg_admin(statements: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        for st in statements:
            await conn.execute(st)
    finally:
        await conn.close()


class PgDatabases:
    """`<prefix>_<service>` for each service, on the admin URL's server."""

    def __init__(self, services: tuple[str, ...]) -> None:
        self.services = services
        self.prefix = f"epb_{uuid.uuid4().hex[:10]}"

    @property
    def url_template(self) -> str:
        """A DATABASE_URL per service, as devtools.stack's StackConfig takes it."""
        base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        return f"{base}/{self.prefix}_{{service}}"

    def create(self) -> None:
        asyncio.run(pg_admin([f'CREATE DATABASE "{self.prefix}_{s}"' for s in self.services]))

    def drop(self) -> None:
        asyncio.run(
            pg_admin(
                [f'DROP DATABASE IF EXISTS "{self.prefix}_{s}" WITH (FORCE)' for s in self.services]
            )
        )


class PgConnWatch:
    """Peak connections per service database, and on the whole server, sampled from
    pg_stat_activity every 0.5 s."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.peak: dict[str, int] = {}
        self.max_connections: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        return {"peak": dict(sorted(self.peak.items())), "max_connections": self.max_connections}

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            self.max_connections = int(await conn.fetchval("SHOW max_connections"))
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT datname, count(*) AS n FROM pg_stat_activity GROUP BY datname"
                )
                self._record(rows)
                await asyncio.sleep(0.5)
        finally:
            await conn.close()

    def _record(self, rows: list[Any]) -> None:
        total = 0
        for row in rows:
            total += row["n"]
            name = row["datname"] or ""
            if name.startswith(self.prefix + "_"):
                svc = name[len(self.prefix) + 1 :]
                self.peak[svc] = max(self.peak.get(svc, 0), row["n"])
        self.peak["server_total"] = max(self.peak.get("server_total", 0), total)
