"""Benchmark of issue 15 (1): the reminder scheduler for 10,000 clients with 50,000 unpaid bills.

    .venv/bin/python bench/reminders.py                       # SQLite and PostgreSQL
    .venv/bin/python bench/reminders.py --backends sqlite     # one backend
    .venv/bin/python bench/reminders.py --clients 2000 --bills 5 --compose

In process, on a fresh envelope database per backend (a SQLite file under var/bench/, or a new
PostgreSQL database dropped after): the firm (reminders on, 15/15, 3 days before due) and the
bills are inserted directly, every client with a slot due (issue dates 15 to 200 days back,
so most clients have missed slots to catch up). Then one scheduler pass as of that moment,
timed in its two parts:

- plan: compute the due set (read the bills, switches, recorded slots, recent manual sends,
  suppressions and addresses; decide per client);
- claim: queue every reminder, in one transaction: each slot's row (INSERT .. ON CONFLICT DO
  NOTHING), the reminder's envelope, and its envelope.send_requested outbox row. That outbox
  row is the compact work item: the envelope service's own batched consumer composes the
  email from it afterwards (sending.py), exactly once per send id.

Then a second pass the same minute (nothing left to do: the cost of a pass every minute),
and with --compose the sending path run over every queued request in batches of 100, as
the consumer would (the asynchronous part, for scale). Prints figures; asserts nothing.
Target: plan + claim under 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from bench.support.pg import POSTGRES_ADMIN, pg_admin  # noqa: E402
from services.envelope.app import MIGRATIONS  # noqa: E402
from services.envelope.desk import Desk  # noqa: E402
from services.envelope.models import Base, Envelope, Firm, Invoice, Reminder  # noqa: E402
from services.envelope.reminders import Reminders  # noqa: E402
from services.envelope.settings import EnvelopeSettings  # noqa: E402
from shared.clock import ManualClock  # noqa: E402
from shared.events import EnvelopeSendRequested, FirmProfile, ReminderSettings  # noqa: E402
from shared.migrations import upgrade_async  # noqa: E402
from shared.runtime import Service, settle_collector  # noqa: E402

FIRM_ID = "firm-bench"
AS_OF = datetime(2026, 12, 16, 10, 0, tzinfo=UTC)


def log(msg: str) -> None:
    print(msg, flush=True)


async def seed(service: Service, clients: int, per_client: int) -> None:
    rng = random.Random(15)
    today = AS_OF.date()
    profile = FirmProfile(
        name="Benchmark & Partners LLP",
        email="billing@bench.test",
        reminders=ReminderSettings(enabled=True, before_due_days=3),
    )
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    n = 0
    for c in range(clients):
        client_id = f"cl-{c:05d}"
        name = f"Client {c:05d}"
        email = f"ap{c:05d}@client.test"
        for _ in range(per_client):
            n += 1
            issued = today - timedelta(days=rng.randint(15, 200))
            due = issued + timedelta(days=30)
            snap = {
                "invoice_id": f"clio:{n}",
                "source_id": str(n),
                "number": f"INV-{n}",
                "kind": "invoice",
                "state": "awaiting_payment",
                "client_id": client_id,
                "client_name": name,
                "client_email": email,
                "matter_number": f"{c:05d}-M",
                "issued_at": issued.isoformat(),
                "due_at": due.isoformat(),
                "currency": "USD",
                "total_minor": 100_000,
                "balance_minor": 80_000,
                "paid_minor": 20_000,
                "line_items": [],
            }
            rows.append(
                {
                    "firm_id": FIRM_ID,
                    "invoice_id": f"clio:{n}",
                    "snapshot": json.dumps(snap),
                    "client_id": client_id,
                    "client_name": name,
                    "number": f"INV-{n}",
                    "kind": "invoice",
                    "state": "awaiting_payment",
                    "issued_at": issued,
                    "due_at": due,
                    "currency": "USD",
                    "total_minor": 100_000,
                    "balance_minor": 80_000,
                    "paid_online_minor": 0,
                    "processing_minor": 0,
                    "refunded_minor": 0,
                    "updated_at": now,
                }
            )
    async with service.sessionmaker() as s, s.begin():
        await s.execute(
            insert(Firm.__table__),
            {"firm_id": FIRM_ID, "profile": profile.model_dump_json(), "updated_at": now},
        )
        for i in range(0, len(rows), 5_000):
            await s.execute(insert(Invoice.__table__), rows[i : i + 5_000])


async def counts(service: Service) -> dict[str, int]:
    async with service.sessionmaker() as s:
        outbox = service.outbox
        return {
            "reminder rows": int(await s.scalar(select(func.count()).select_from(Reminder)) or 0),
            "queued rows": int(
                await s.scalar(
                    select(func.count()).select_from(Reminder).where(Reminder.status == "queued")
                )
                or 0
            ),
            "envelopes": int(await s.scalar(select(func.count()).select_from(Envelope)) or 0),
            "send requests": int(
                await s.scalar(
                    select(func.count())
                    .select_from(outbox)
                    .where(outbox.c.routing_key == EnvelopeSendRequested.routing_key)
                )
                or 0
            ),
        }


async def compose_all(service: Service, desk: Desk) -> tuple[float, int]:
    async with service.sessionmaker() as s:
        payloads = list(
            await s.scalars(
                select(service.outbox.c.payload)
                .where(service.outbox.c.routing_key == EnvelopeSendRequested.routing_key)
                .order_by(service.outbox.c.id)
            )
        )
    evs = [EnvelopeSendRequested.model_validate_json(p) for p in payloads]
    t0 = time.perf_counter()
    for i in range(0, len(evs), 100):
        async with service.sessionmaker() as s, s.begin():
            await desk.on_sends_requested(s, evs[i : i + 100], None)
    return time.perf_counter() - t0, len(evs)


async def run_backend(backend: str, clients: int, per_client: int, compose: bool) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    pg_name = None
    if backend == "sqlite":
        var = ROOT / "var" / "bench" / f"reminders-{stamp}"
        var.mkdir(parents=True, exist_ok=True)
        url = f"sqlite+aiosqlite:///{var / 'envelope.db'}"
    else:
        var = ROOT / "var" / "bench" / f"reminders-pg-{stamp}"
        var.mkdir(parents=True, exist_ok=True)
        pg_name = f"epb_rem_{uuid.uuid4().hex[:10]}"
        await pg_admin([f'CREATE DATABASE "{pg_name}"'])
        base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        url = f"{base}/{pg_name}"
    try:
        await upgrade_async(MIGRATIONS, url)
        settings = EnvelopeSettings(database_url=url, environment="test", var_dir=var)
        service = Service(settings, Base.metadata, MIGRATIONS)
        desk = Desk(service, settings)
        reminders = Reminders(service, settings, ManualClock(AS_OF))
        t0 = time.perf_counter()
        await seed(service, clients, per_client)
        seeded = time.perf_counter() - t0
        bills = clients * per_client
        log(f"[{backend}] seeded {clients:,} clients, {bills:,} bills in {seeded:.1f} s")

        if backend == "postgresql":
            # Statistics, as autovacuum keeps them in a database that has been running (a
            # table filled in one go and never analyzed gets sequential scans).
            async with service.engine.begin() as conn:
                await conn.exec_driver_sql("ANALYZE")
        settle_collector()  # as a running service does once started
        async with service.sessionmaker() as s:
            profile = FirmProfile.model_validate_json(
                await s.scalar(select(Firm.profile).where(Firm.firm_id == FIRM_ID))
            )
        t0, c0 = time.perf_counter(), time.process_time()
        plan = await reminders.plan(FIRM_ID, profile, AS_OF)
        t_plan, c_plan = time.perf_counter() - t0, time.process_time() - c0
        assert plan is not None
        t0, c0 = time.perf_counter(), time.process_time()
        result = await reminders.claim(plan)
        t_claim, c_claim = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        again = await reminders.run_pass(AS_OF + timedelta(minutes=1))
        t_again = time.perf_counter() - t0
        t0 = time.perf_counter()
        next_day = await reminders.run_pass(AS_OF + timedelta(days=1))
        t_next = time.perf_counter() - t0
        figures: dict[str, Any] = {
            "backend": backend,
            "clients": clients,
            "bills": clients * per_client,
            "due clients": len(plan.decisions),
            "plan_s": round(t_plan, 3),
            "claim_s": round(t_claim, 3),
            "total_s": round(t_plan + t_claim, 3),
            "this process's CPU_s (plan + claim)": round(c_plan + c_claim, 3),
            "load average (1 min)": os.getloadavg()[0],
            "queued": result.queued,
            "skipped (caught up)": result.skipped,
            "second pass same minute_s": round(t_again, 3),
            "second pass queued": again.queued,
            "next day pass_s": round(t_next, 3),
            "next day queued": next_day.queued,
        }
        figures.update(await counts(service))
        if compose:
            t_compose, n = await compose_all(service, desk)
            figures["compose_s (sending path, async)"] = round(t_compose, 2)
            figures["composed per s"] = round(n / t_compose) if t_compose else None
        await service.engine.dispose()
        return figures
    finally:
        if pg_name is not None:
            await pg_admin([f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--bills", type=int, default=5, help="unpaid bills per client")
    ap.add_argument("--compose", action="store_true", help="also run the sending path")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    for backend in [b for b in args.backends.split(",") if b]:
        figures = asyncio.run(run_backend(backend, args.clients, args.bills, args.compose))
        width = max(len(k) for k in figures)
        log(f"\n== {backend}: reminder scheduler (target: plan + claim < 10 s) ==")
        for k, v in figures.items():
            log(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    _ = date  # dates are the firm's (UTC here)
    main()
