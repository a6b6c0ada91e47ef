"""Invoice PDF throughput of the envelope renderer, with 1 and with 2 pool workers.

    .venv/bin/python bench/render_pdfs.py [--count 200] [--workers 1 2]

Each worker count runs in a fresh process, on a fresh SQLite database, through Renderer as
the service uses it:
- cold: as right after a start, before warm-up: loading WeasyPrint, starting the forkserver
  and the workers are included; `count` different invoices requested at once
- warm: the same pool, `count` other invoices requested at once
- ahead: `count` invoice.updated events, rendered in the background (start to last stored)
- cached: the same `count` invoices requested again: all stored, nothing rendered
Prints figures; asserts nothing. (Pool workers import this file again as __mp_main__: its
top level stays light, everything else is imported inside functions.)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from services.envelope.desk import Desk
    from shared.events import InvoiceSnapshot
    from shared.runtime import Service

FIRM_ID = "bench"
SERVICES = ("Review of lease", "Call with client", "Draft amendment", "Research memo")


def invoice(n: int, series: int) -> InvoiceSnapshot:
    from shared.events import InvoiceSnapshot, LineItem

    lines = [
        LineItem(
            kind="fee",
            date=dt.date(2025, 3, 1 + i),
            description=SERVICES[i % len(SERVICES)],
            quantity=f"{1 + i % 3}.{i % 10}",
            rate_minor=42_500,
            total_minor=42_500 * (1 + i % 3) + 4_250 * (i % 10),
        )
        for i in range(5)
    ] + [
        LineItem(
            kind="expense", description="Courier", quantity="1", rate_minor=4_500, total_minor=4_500
        )
    ]
    total = sum(i.total_minor for i in lines)
    return InvoiceSnapshot(
        invoice_id=f"clio:{series}-{n}",
        source_id=f"{series}-{n}",
        number=f"INV-{series}{n:04d}",
        kind="invoice",
        state="awaiting_payment",
        client_id=f"c{n % 17}",
        client_name=f"Client {n % 17} Holdings, Inc.",
        matter_number=f"{n:05d}-Matter",
        matter_description="General counsel",
        issued_at=dt.date(2025, 4, 1),
        due_at=dt.date(2025, 5, 1),
        total_minor=total,
        balance_minor=total,
        line_items=lines,
    )


async def publish(service: Service, desk: Desk, snaps: list[InvoiceSnapshot]) -> None:
    from shared.events import InvoiceUpdated

    for snap in snaps:
        async with service.sessionmaker() as s, s.begin():
            await desk.on_invoice_updated(s, InvoiceUpdated(firm_id=FIRM_ID, invoice=snap))


async def bench(workers: int, count: int, tmp: Path) -> dict[str, float]:
    from services.envelope.app import MIGRATIONS
    from services.envelope.desk import Desk
    from services.envelope.models import Base
    from services.envelope.settings import EnvelopeSettings
    from shared.events import FirmProfile, FirmUpdated
    from shared.migrations import upgrade_async
    from shared.runtime import Service

    firm = FirmProfile(
        name="Hartwell & Moreno LLP",
        email="billing@hartwellmoreno.test",
        phone="(415) 555-0182",
        address="450 Mission Street, Suite 1200\nSan Francisco, CA 94105",
    )
    url = f"sqlite+aiosqlite:///{tmp / f'bench-{workers}.db'}"
    await upgrade_async(MIGRATIONS, url)
    settings = EnvelopeSettings(
        database_url=url, environment="test", pdf_workers=workers, var_dir=tmp
    )
    service = Service(settings, Base.metadata, MIGRATIONS)
    desk = Desk(service, settings)
    renderer = desk.renderer
    async with service.sessionmaker() as s, s.begin():
        await desk.on_firm_updated(s, FirmUpdated(firm_id=FIRM_ID, firm=firm))
    figures: dict[str, float] = {}

    async def timed(name: str, ids: list[str]) -> None:
        before = renderer.renders
        started = time.perf_counter()
        await asyncio.gather(*(renderer.ensure(FIRM_ID, i) for i in ids))
        elapsed = time.perf_counter() - started
        figures[name] = count / elapsed
        print(
            f"  {name:<7} {count / elapsed:7.1f} PDFs/s  {elapsed:6.2f} s"
            f"  ({renderer.renders - before} rendered)"
        )

    cold, warm, ahead = ([invoice(n, series) for n in range(count)] for series in (1, 2, 3))
    # Published while no background renderer runs: the first two series render on request.
    await publish(service, desk, cold + warm)
    await renderer.stop()
    await timed("cold", [s.invoice_id for s in cold])
    await timed("warm", [s.invoice_id for s in warm])

    renderer.start()
    await renderer.drain()  # the two series published above are stored: nothing to do
    before = renderer.renders
    started = time.perf_counter()
    await publish(service, desk, ahead)
    await renderer.drain(timeout=600)
    elapsed = time.perf_counter() - started
    figures["ahead"] = count / elapsed
    print(
        f"  {'ahead':<7} {count / elapsed:7.1f} PDFs/s  {elapsed:6.2f} s"
        f"  ({renderer.renders - before} rendered)"
    )
    await timed("cached", [s.invoice_id for s in warm])
    print(f"  worker pids: {sorted(renderer.worker_pids)} (this process: {os.getpid()})")
    await renderer.stop()
    await service.engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(bench(args.workers[0], args.count, Path(tmp)))
        print(json.dumps(figures))
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.count} invoice PDFs (6 line items each), {os.cpu_count()} CPUs, load {load}")
    results: dict[int, dict[str, Any]] = {}
    for workers in args.workers:
        print(f"pdf_workers={workers}", flush=True)
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--count", str(args.count)]
            + ["--workers", str(workers)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        *lines, last = done.stdout.rstrip().splitlines()
        print("\n".join(lines))
        results[workers] = json.loads(last)
    print("load afterwards: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    if 1 in results:
        for workers, figures in results.items():
            if workers != 1:
                ratios = ", ".join(f"{k} x{v / results[1][k]:.2f}" for k, v in figures.items())
                print(f"{workers} workers over 1: {ratios}")


if __name__ == "__main__":
    main()
