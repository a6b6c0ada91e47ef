"""Two schedulers at once (two replicas of the envelope service, each with its own engine,
on one database) claim each reminder slot once: the database's unique slot key decides, not
timing. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select

from services.envelope.models import Envelope, Reminder
from services.envelope.reminders import Reminders
from shared.clock import ManualClock
from tests.conftest import ROOT
from tests.envelope.reminders_world import World, at, bill, firm, make_service, world
from tests.envelope.test_reminders import day

__all__ = ["world"]

CLIENTS = 40


async def test_two_schedulers_at_once_send_one_reminder_per_slot(
    world: World, database_url: str, tmp_path: Path
) -> None:
    await world.firm(firm(every_days=7, before_due_days=2))
    await world.bills(
        *[
            bill(n, day(1) + timedelta(days=n % 7), client=f"c{n:03d}", due=day(20 + n % 9))
            for n in range(CLIENTS)
        ]
    )
    other_service, _ = await make_service(database_url, tmp_path / "replica")
    replica = Reminders(other_service, other_service.settings, ManualClock(at(day(1))))  # type: ignore[arg-type]
    try:
        queued = lost = 0
        for d in range(14, 40):
            for minute in (0, 1):
                moment = at(day(d), 9, minute)
                a, b = await asyncio.gather(
                    world.reminders.run_pass(moment), replica.run_pass(moment)
                )
                queued += a.queued + b.queued
                lost += a.lost + b.lost
    finally:
        await other_service.engine.dispose()

    async with world.service.sessionmaker() as s:
        rows = list(await s.scalars(select(Reminder)))
        envelopes = await s.scalar(
            select(func.count()).select_from(Envelope).where(Envelope.created_by == "reminders")
        )
    sent = [r for r in rows if r.status == "queued"]
    requests = await world.reminder_requests()
    # The two passes did race for the same slots (each read before the other wrote) ...
    assert lost > 0
    # ... and every slot went once.
    assert queued == len(sent) == len(requests) == envelopes
    assert len(sent) >= 3 * CLIENTS  # each client had several slots in those weeks
    # Each slot once, each client at most once a day, and each send request once.
    assert len({(r.client_id, r.slot) for r in rows}) == len(rows)
    assert len({(r.client_id, r.sent_on) for r in sent}) == len(sent)
    assert len({r["send_id"] for r in requests}) == len(requests)
    assert {r.send_id for r in sent} == {r["send_id"] for r in requests}


async def test_two_replicas_in_two_processes_send_one_reminder_per_slot(
    world: World, database_url: str
) -> None:
    await world.firm(firm(every_days=7))
    await world.bills(
        *[bill(n, day(1) + timedelta(days=n % 7), client=f"c{n:03d}") for n in range(200)]
    )
    moments = [at(day(d), 9).isoformat() for d in range(16, 30)]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.envelope.reminder_replica",
            database_url,
            *moments,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout is not None and (await p.stdout.readline()).strip() == b"ready"
    for p in procs:  # go, both at once
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        await p.stdin.drain()
    outs = [json.loads((await p.communicate())[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)

    rows = await world.rows()
    sent = [r for r in rows if r.status == "queued"]
    requests = await world.reminder_requests()
    assert sum(o["queued"] for o in outs) == len(sent) == len(requests) == 2 * 200
    assert len({(r.client_id, r.slot) for r in rows}) == len(rows)
    assert {r.send_id for r in sent} == {r["send_id"] for r in requests}
