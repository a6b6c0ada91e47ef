"""Create the five databases that DATABASE_URL_TEMPLATE names, where they are missing.

`make run DATABASE_URL_TEMPLATE=postgresql+asyncpg://postgres@127.0.0.1:5432/envelopepay_{service}`
runs this before devtools.run: `{service}` becomes sync, envelope, mailer, payments and gateway,
one database each. A database that does not exist yet is created through the server's
`postgres` maintenance database, so the template's user needs CREATEDB for that (only) step.
Prints the names it created; never a URL, which may hold a password.
"""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg
from sqlalchemy.engine import URL, make_url

from devtools.stack import SERVICES


def _dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_databases(template: str) -> list[str]:
    """Create the missing per-service databases; returns the names created."""
    created: list[str] = []
    for service in SERVICES:
        url = make_url(template.format(service=service))
        if not url.database:
            raise ValueError("DATABASE_URL_TEMPLATE names no database")
        try:
            conn = await asyncpg.connect(_dsn(url), timeout=10)
        except asyncpg.InvalidCatalogNameError:
            admin = await asyncpg.connect(_dsn(url.set(database="postgres")), timeout=10)
            try:
                await admin.execute(f"CREATE DATABASE {_quote(url.database)}")
                created.append(url.database)
            except asyncpg.DuplicateDatabaseError:
                pass  # made by someone else in the meantime
            finally:
                await admin.close()
        else:
            await conn.close()
    return created


def main() -> int:
    template = os.environ.get("DATABASE_URL_TEMPLATE", "").strip()
    if not template:
        return 0
    if "{service}" not in template:
        print(
            "DATABASE_URL_TEMPLATE must contain {service}: one database per service",
            file=sys.stderr,
        )
        return 2
    url = make_url(template.format(service="sync"))
    if not url.drivername.startswith("postgresql"):
        return 0  # SQLite creates its files itself
    try:
        created = asyncio.run(ensure_databases(template))
    except (OSError, asyncpg.PostgresError, ValueError) as exc:
        where = f"{url.host or 'localhost'}:{url.port or 5432}"
        print(
            f"cannot prepare the databases on PostgreSQL at {where}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    for name in created:
        print(f"created PostgreSQL database {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
