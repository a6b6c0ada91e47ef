"""LEDES 1998B import (issue 16 item 9): how long a file at the upload limit takes to parse
and to import (snapshots built, rows written, invoice.updated staged), on SQLite or PostgreSQL.

    .venv/bin/python bench/ledes_import.py                # SQLite, a file near 5 MB
    .venv/bin/python bench/ledes_import.py --postgres     # PostgreSQL (BENCH_POSTGRES_URL)
    .venv/bin/python bench/ledes_import.py --invoices 200 --lines 5   # smoke

Prints figures; asserts nothing."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support.pg import PgDatabases, pg_admin  # noqa: E402
from services.sync import ledes  # noqa: E402
from services.sync.app import MIGRATIONS  # noqa: E402
from services.sync.ledes_import import LedesImporter  # noqa: E402
from services.sync.models import Base  # noqa: E402
from services.sync.settings import SyncSettings  # noqa: E402
from shared.api.ledes import MAX_FILE_BYTES, ClientEmail, ImportOptions  # noqa: E402
from shared.migrations import upgrade_async  # noqa: E402
from shared.runtime import Service  # noqa: E402


def make_file(invoices: int, lines: int, clients: int) -> bytes:
    rows = []
    for n in range(invoices):
        for i in range(lines):
            rows.append(
                {
                    "INVOICE_DATE": "20261130",
                    "INVOICE_NUMBER": f"INV-{n:05d}",
                    "CLIENT_ID": f"CL{n % clients:04d}",
                    "LAW_FIRM_MATTER_ID": f"M-{n}",
                    "INVOICE_TOTAL": f"{lines * 125}.50",
                    "BILLING_START_DATE": "20261101",
                    "BILLING_END_DATE": "20261130",
                    "INVOICE_DESCRIPTION": "Professional services for November",
                    "LINE_ITEM_NUMBER": str(i + 1),
                    "EXP/FEE/INV_ADJ_TYPE": "F",
                    "LINE_ITEM_NUMBER_OF_UNITS": "0.5",
                    "LINE_ITEM_ADJUSTMENT_AMOUNT": "0",
                    "LINE_ITEM_TOTAL": "125.50" if i == 0 else "125.00",
                    "LINE_ITEM_DATE": "20261105",
                    "LINE_ITEM_TASK_CODE": "L110",
                    "LINE_ITEM_ACTIVITY_CODE": "A101",
                    "TIMEKEEPER_ID": "TK1",
                    "LINE_ITEM_DESCRIPTION": "Review and revise draft agreement; call with client",
                    "LAW_FIRM_ID": "12-3456789",
                    "LINE_ITEM_UNIT_COST": "250.00",
                    "TIMEKEEPER_NAME": "Ellis, Morgan",
                    "TIMEKEEPER_CLASSIFICATION": "PT",
                    "CLIENT_MATTER_ID": f"CM-{n}",
                }
            )
    return ledes.render(rows).encode()


async def run(args: argparse.Namespace) -> None:
    data = make_file(args.invoices, args.lines, args.clients)
    print(
        f"file: {len(data) / 1e6:.2f} MB ({len(data) / MAX_FILE_BYTES:.0%} of the limit), "
        f"{args.invoices} invoices x {args.lines} lines, {args.clients} clients"
    )
    t0 = time.perf_counter()
    parsed = ledes.parse(data)
    print(f"parse: {time.perf_counter() - t0:.2f} s, {len(parsed.good)} good invoices")
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            dbs = PgDatabases(("sync",))
            await pg_admin([f'CREATE DATABASE "{dbs.prefix}_sync"'])
            url = dbs.url_template.format(service="sync")
        else:
            url = f"sqlite+aiosqlite:///{tmp}/sync.db"
        try:
            await upgrade_async(MIGRATIONS, url)
            settings = SyncSettings(database_url=url, environment="test", var_dir=Path(tmp))
            service = Service(settings, Base.metadata, MIGRATIONS)
            importer = LedesImporter(service)
            for label in ("first import", "re-import (unchanged)"):
                t0 = time.perf_counter()
                result = await importer.import_file("bench", data, ImportOptions())
                print(f"{label}: {time.perf_counter() - t0:.2f} s, {len(result.imported)} invoices")
            t0 = time.perf_counter()
            for c in range(args.clients):
                await importer.set_client(
                    "bench", ClientEmail(client_ref=f"CL{c:04d}", email="a@b.co")
                )
            print(
                f"emails for {args.clients} clients (publishes every invoice): "
                f"{time.perf_counter() - t0:.2f} s"
            )
            await service.engine.dispose()
        finally:
            if args.postgres:
                await pg_admin([f'DROP DATABASE IF EXISTS "{dbs.prefix}_sync" WITH (FORCE)'])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--invoices", type=int, default=2700)
    p.add_argument("--lines", type=int, default=8)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--postgres", action="store_true")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
