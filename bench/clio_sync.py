"""Benchmark of issue 16: a full Clio sync of a large firm, against paging the same API by hand.

    .venv/bin/python bench/clio_sync.py                        # 10,000 bills, 50,000 lines
    .venv/bin/python bench/clio_sync.py --bills 1000 --clients 300     # smoke
    .venv/bin/python bench/clio_sync.py --rate-limited         # + the same sync at 50/min

Starts the Clio sandbox itself (bench/support/clio_indexed.py's launcher, on a free port) with
the world made in-process before it listens: `--clients` contacts with an email, `--bills`
bills (one in ten a trust request with its single line, the others 5 or 6 lines: 5 a bill on
average, so 50,000 line items), and its rate limit off (bills' renderings memoized: see
`_memoize_bills`; one untimed pass of the listings warms the memo). Then, each in a fresh
child process, one after the other:

- baseline: plain httpx paging of the same three listings the sync reads (contacts, line
  items across bills, bills; the same `fields=`, 200 a page, following `meta.paging.next`,
  each body JSON-decoded), nothing stored;
- sync: `Syncer.sync_firm` on a fresh SQLite database (migrations run before the clock
  starts): every bill mapped with its lines and published to the outbox; then a second,
  incremental round with nothing changed.

Prints requests, seconds and bills per second of each, the sync's share of the baseline's rate
(target >= 0.8), the sync child's peak RSS (ru_maxrss) and, at Clio's 50 requests a minute,
the minutes the first sync needs (requests / 50). `--rate-limited` also runs the sync against
a sandbox limited to 50 requests a minute and reports the minutes it took (about requests/50:
long). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.support.common import VAR_ROOT, free_port, log  # noqa: E402

FIRM_ID = "firm-bench-sync"
RATE_OFF = 1_000_000_000  # requests a minute: no limit in practice, on every sandbox version


# --- the sandbox, in a child process ----------------------------------------------------------


def serve_sandbox(port: int, bills: int, lines: int, clients: int, rate: int) -> None:
    import uvicorn

    import bench.support.clio_indexed  # noqa: F401  (indexes line items by bill)
    from sandbox.clio.app import create_app
    from sandbox.clio.mutations import NewBill, NewContact, NewLineItem, create_bill, create_contact
    from sandbox.clio.settings import SandboxSettings
    from sandbox.clio.state import SandboxState

    _memoize_bills()
    state = SandboxState(settings=SandboxSettings(port=port, rate_limit=rate))
    world, rng = state.world, random.Random(16)
    # Records saved over the past weeks, a few minutes apart, as in a firm's real account.
    start = datetime.now(UTC) - timedelta(minutes=3 * (bills + clients))
    ids = [
        create_contact(
            world,
            NewContact(name=f"Client {n:05d}", primary_email_address=f"client{n}@example.com"),
            start + timedelta(minutes=3 * n),
        ).id
        for n in range(clients)
    ]
    for n in range(bills):
        issued = date(2026, 1, 1) + timedelta(days=n % 300)
        if n % 10 == 9:
            spec = NewBill(client_id=rng.choice(ids), total=Decimal("1500.00"), kind="trust_kind")
        else:
            items = [
                NewLineItem(
                    description=f"Work item {k}",
                    price=Decimal(rng.randrange(5_000, 90_000)) / 100,
                    quantity=Decimal(rng.choice((1, 2, 3))) / 2,
                    kind="Expense" if k % 4 == 3 else "Service",
                    date=issued,
                )
                # Four in nine revenue bills get one more: --bills lines each on average.
                for k in range(lines + (n % 9 < 4 and lines > 1))
            ]
            spec = NewBill(client_id=rng.choice(ids), line_items=items, issued_at=issued)
        create_bill(world, spec, start + timedelta(minutes=3 * (clients + n)))
    print("ready", len(world.bills), len(world.line_items), len(world.contacts), flush=True)
    uvicorn.run(create_app(state), host="127.0.0.1", port=port, log_level="warning")


def _memoize_bills() -> None:
    """The sandbox renders every bill of the world for each page of `bills.json` (seconds a page
    at 10,000 bills): keep each bill's rendering while the bill, its client, matters and
    lines are the same objects (the sandbox replaces a record's object when it changes it),
    so the listing, not the sandbox's rendering, is what both runs wait for. Same responses."""
    from sandbox.clio import render

    full = render.bill_full
    memo: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}

    def bill_full(world: Any, bill: Any) -> dict[str, Any]:
        lines = render.bill_line_items(world, bill.id)
        inputs = (
            world,
            bill,
            world.contacts.get(bill.client_id),
            *(world.matters.get(mid) for mid in bill.matter_ids),
            *lines,
        )
        hit = memo.get(id(bill))
        if hit is not None and len(hit[0]) == len(inputs):
            if all(a is b for a, b in zip(hit[0], inputs, strict=True)):
                return hit[1]
        row = full(world, bill)
        memo[id(bill)] = (inputs, row)
        return row

    render.bill_full = bill_full


class Sandbox:
    def __init__(self, args: argparse.Namespace, rate: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, __file__, "--role", "sandbox", "--port", str(self.port)]
        cmd += ["--bills", str(args.bills), "--lines-per-bill", str(args.lines_per_bill)]
        cmd += ["--clients", str(args.clients), "--rate", str(rate)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def wait(self) -> tuple[int, int, int]:
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().split()
        for _ in range(600):
            try:
                if httpx.post(f"{self.url}/sandbox/tokens").status_code == 200:
                    return int(ready[1]), int(ready[2]), int(ready[3])
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the sandbox did not start")

    def token(self) -> str:
        return str(httpx.post(f"{self.url}/sandbox/tokens").json()["access_token"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- the measured children --------------------------------------------------------------------


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _cpu_s() -> float:
    """The process's CPU seconds so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def baseline(url: str, token: str) -> dict[str, Any]:
    from services.sync.mapping import BILL_FIELDS, CONTACT_FIELDS, LINE_ITEM_BULK_FIELDS

    listings = [
        ("contacts.json", CONTACT_FIELDS),
        ("line_items.json", LINE_ITEM_BULK_FIELDS),
        ("bills.json", BILL_FIELDS),
    ]
    requests, bills = 0, 0
    cpu = _cpu_s()
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {token}"}) as http:
        for path, fields in listings:
            params: dict[str, Any] | None = {"fields": fields, "order": "id(asc)", "limit": 200}
            nxt: str | None = f"{url}/api/v4/{path}"
            while nxt:
                resp = await http.get(nxt, params=params)
                resp.raise_for_status()
                body = resp.json()
                requests += 1
                if path == "bills.json":
                    bills += len(body["data"])
                nxt, params = body["meta"]["paging"].get("next"), None
    seconds = time.perf_counter() - started
    cpu = _cpu_s() - cpu
    return {
        "requests": requests,
        "seconds": seconds,
        "cpu": cpu,
        "bills": bills,
        "peak_mb": _peak_mb(),
    }


async def sync(url: str, token: str, db: Path, rounds: int) -> dict[str, Any]:
    from services.sync.app import MIGRATIONS
    from services.sync.models import Base, ClioConnection
    from services.sync.settings import SyncSettings
    from services.sync.syncer import Syncer
    from shared.migrations import upgrade_async
    from shared.runtime import Service

    database_url = f"sqlite+aiosqlite:///{db}"
    await upgrade_async(MIGRATIONS, database_url)
    settings = SyncSettings(
        database_url=database_url, environment="test", var_dir=db.parent, clio_base_url=url
    )
    service = Service(settings, Base.metadata, MIGRATIONS)
    async with service.sessionmaker() as s, s.begin():
        s.add(
            ClioConnection(
                firm_id=FIRM_ID, base_url=url, access_token=token, connected_at=datetime.now(UTC)
            )
        )
    syncer = Syncer(service, settings)
    out: list[dict[str, Any]] = []
    for _ in range(rounds):
        cpu = _cpu_s()
        started = time.perf_counter()
        result = await syncer.sync_firm(FIRM_ID)
        seconds = time.perf_counter() - started
        cpu = _cpu_s() - cpu
        progress = await syncer.progress(FIRM_ID)
        out.append(
            {
                "seconds": seconds,
                "cpu": cpu,
                "requests": progress.requests,
                "bills": result.fetched,
                "changed": result.changed,
                "quarantined": result.quarantined,
                "error": result.error,
            }
        )
    await service.engine.dispose()
    return {"rounds": out, "peak_mb": _peak_mb()}


def child(role: str, url: str, token: str, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--role", role, "--url", url, "--token", token, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{role} failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bills", type=int, default=10_000)
    p.add_argument("--lines-per-bill", type=int, default=5, help="on average, over all bills")
    p.add_argument("--clients", type=int, default=2_000)
    p.add_argument("--rate-limited", action="store_true", help="also sync at 50 requests/min")
    p.add_argument("--role", default="main", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--rate", type=int, default=RATE_OFF, help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--token", default="", help=argparse.SUPPRESS)
    p.add_argument("--db", default="", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--profile", default="", help="cProfile the sync child into this file")
    args = p.parse_args()

    if args.role == "sandbox":
        serve_sandbox(args.port, args.bills, args.lines_per_bill, args.clients, args.rate)
        return
    if args.role == "baseline":
        print(json.dumps(asyncio.run(baseline(args.url, args.token))))
        return
    if args.role == "sync":
        run = sync(args.url, args.token, Path(args.db), args.rounds)
        if args.profile:
            import cProfile

            with cProfile.Profile() as prof:
                out = asyncio.run(run)
            prof.dump_stats(args.profile)
        else:
            out = asyncio.run(run)
        print(json.dumps(out))
        return

    work = VAR_ROOT / "clio_sync"
    work.mkdir(parents=True, exist_ok=True)
    log(f"sandbox: {args.clients} clients, {args.bills} bills, {args.lines_per_bill} lines each")
    sandbox = Sandbox(args, RATE_OFF)
    try:
        n_bills, n_lines, n_contacts = sandbox.wait()
        log(f"sandbox ready: {n_bills} bills, {n_lines} line items, {n_contacts} contacts")
        # Untimed: the sandbox memoizes its renderings; neither run may pay for the other's.
        child("baseline", sandbox.url, sandbox.token(), [])
        log("sandbox warmed up (one untimed pass of the listings)")
        base = child("baseline", sandbox.url, sandbox.token(), [])
        log(f"baseline: {base['requests']} requests in {base['seconds']:.1f}s")
        db = work / "sync.sqlite"
        db.unlink(missing_ok=True)
        extra = ["--db", str(db)] + (["--profile", args.profile] if args.profile else [])
        synced = child("sync", sandbox.url, sandbox.token(), extra)
    finally:
        sandbox.stop()
    first, second = synced["rounds"]
    limited: dict[str, Any] | None = None
    if args.rate_limited:
        log("the same sync against a sandbox at 50 requests a minute (minutes)")
        sandbox = Sandbox(args, 50)
        try:
            sandbox.wait()
            db = work / "sync-limited.sqlite"
            db.unlink(missing_ok=True)
            extra = ["--db", str(db), "--rounds", "1"]
            limited = child("sync", sandbox.url, sandbox.token(), extra)["rounds"][0]
        finally:
            sandbox.stop()

    base_rate = base["bills"] / base["seconds"]
    sync_rate = first["bills"] / first["seconds"]
    print()
    print(f"Clio sync: {n_bills} bills, {n_lines} line items, {n_contacts} contacts")
    head = f"{'requests':>10}{'seconds':>10}{'CPU s':>8}{'bills/s':>10}{'peak MB':>10}"
    print(f"{'run':<28}{head}")
    rows = [
        ("baseline (httpx paging)", base, base_rate, base["peak_mb"]),
        ("sync, first", first, sync_rate, synced["peak_mb"]),
        ("sync, nothing changed", second, None, None),
    ]
    for name, run, rate, mb in rows:
        rate_s = f"{rate:10.0f}" if rate is not None else f"{'':>10}"
        mb_s = f"{mb:10.1f}" if mb is not None else f"{'':>10}"
        req, sec, cpu = run["requests"], run["seconds"], run["cpu"]
        print(f"{name:<28}{req:>10}{sec:>10.1f}{cpu:>8.1f}{rate_s}{mb_s}")
    ideal = sum(-(-n // 200) for n in (n_contacts, n_lines, n_bills))
    print(f"sync / baseline bills per second: {sync_rate / base_rate:.2f} (target >= 0.80)")
    print(f"requests of the first sync: {first['requests']} (contacts+lines+bills / 200: {ideal})")
    print(f"published {first['changed']}, quarantined {first['quarantined']}")
    print(f"at 50 requests/min the first sync needs at least {first['requests'] / 50:.1f} min")
    if limited is not None:
        print(
            f"rate-limited sync: {limited['requests']} requests in "
            f"{limited['seconds'] / 60:.1f} min (error: {limited['error']})"
        )


if __name__ == "__main__":
    main()
