"""Benchmark of issue 4: the payments service's webhooks, and the client pay page.

    .venv/bin/python bench/payments.py                        # both parts, SQLite
    .venv/bin/python bench/payments.py --parts webhooks       # one part
    .venv/bin/python bench/payments.py --postgres             # the services on PostgreSQL
    .venv/bin/python bench/payments.py --events 200 --links 60 --duration 5 --checkout-duration 3

webhooks: the payments service alone as a real process (`python -m services.payments`, a free
port, a fresh database, a unique exchange). Firm, bills and pay links reach it over RabbitMQ
as sync and envelope publish them; a checkout session per link is opened through its
internal API, as the gateway does when a client clicks Pay. Then N signed webhook deliveries
(default 2,000; 30 % of them repeats of another delivery's event), shuffled, posted to
POST /webhooks/stripe by C concurrent clients (default 16). The events are shaped as
StripeProcessor.normalise_event turns Stripe's (checkout.session.*, payment_intent.*,
charge.refunded) into the ledger's, which is what test mode's webhook takes, and signed as
Stripe signs. Measured: deliveries/s, unique events/s, handling latency. Then the ledger is
compared with the one the events should make (reported, not asserted).

pay page: payments and the gateway as real processes (devtools.stack, only those two), the
demo firm created through the gateway, bills and pay links published on the bus as sync and
envelope publish them; then 50 concurrent clients load GET /pay/{token} over distinct links
for a fixed time, and then start checkouts (POST /pay/{token}/checkout) for a fixed time.

Prints figures and asserts nothing. Results go to bench/results/payments-<timestamp>.json;
the var dirs (logs, SQLite files) stay under var/bench/ for inspection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.support.common import (  # noqa: E402
    code_version,
    loadavg,
    log,
    stop_cleanly_on_signals,
)
from bench.support.ledger_check import check_ledger  # noqa: E402
from bench.support.load import closed_loop  # noqa: E402
from bench.support.logs import log_size, scan_log  # noqa: E402
from bench.support.paylinks import World, seed  # noqa: E402
from bench.support.payments_report import print_report  # noqa: E402
from bench.support.procs import CpuWindow, rss_mb  # noqa: E402
from bench.support.report import latency_ms  # noqa: E402
from bench.support.results import Results  # noqa: E402
from bench.support.stack import ServicesStack, log_tails  # noqa: E402
from bench.support.stripe_webhooks import (  # noqa: E402
    STORIES,
    WEBHOOK_SECRET,
    Delivery,
    Story,
    deliver,
    open_sessions,
    plan_stories,
    story_events,
)
from devtools.stack import DEMO_FIRM_ID, csrf_of  # noqa: E402
from shared.events import FirmProfile  # noqa: E402

SEED = 20_260_404


def now() -> float:
    return time.perf_counter()


# --- part 1: webhooks ---------------------------------------------------------------------


def run_webhooks(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    rng = random.Random(SEED)
    n = args.events
    unique_target = max(1, round(n * (1 - args.duplicates)))
    world, stories = plan_stories(rng, unique_target)
    unique = sum(st.unique_events for st in stories)
    dups = max(0, n - unique)
    r: dict[str, Any] = {
        "deliveries": unique + dups,
        "unique_events": unique,
        "duplicate_deliveries": dups,
        "duplicate_share": round(dups / (unique + dups), 3),
        "concurrency": args.concurrency,
        "payments": len(stories),
        "stories": {k: sum(1 for s in stories if s.kind == k) for k in STORIES},
        "bills": len(world.bills),
        "loadavg_before": loadavg(),
    }
    bs = ServicesStack(
        run_dir / "webhooks",
        ("payments",),
        args.postgres,
        # Test mode verifies with this secret; no ACH settles on its own during the run.
        {"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET},
    )
    r["var_dir"] = str(bs.cfg.var_dir)
    r["exchange"] = bs.cfg.exchange
    log_mark = 0
    log(
        f"webhooks: {len(stories)} payments, {unique} unique events + {dups} repeats; "
        f"starting payments in {bs.cfg.var_dir}"
    )
    try:
        deliveries = webhooks_seed(args, bs, rng, world, stories, dups, r)
        time.sleep(1.0)  # let the seeding's outbox relay and loops go quiet
        r["log_seeding"] = scan_log(bs.log_path("payments"))
        log_mark = log_size(bs.log_path("payments"))
        webhooks_deliver(args, bs, deliveries, unique, r)
        r["ledger"] = check_ledger(bs.db("payments"), stories, unique)
        r["payments_peak_rss_mb"] = rss_mb(bs.stack.procs["payments"].pid)
    except Exception as exc:
        r["error"] = f"{type(exc).__name__}: {exc}"
        log(f"webhooks: FAILED: {exc}")
        log_tails(bs.stack)
    finally:
        bs.stop()
        r["log"] = scan_log(bs.log_path("payments"), log_mark)
    return r


def webhooks_seed(
    args: argparse.Namespace,
    bs: ServicesStack,
    rng: random.Random,
    world: World,
    stories: list[Story],
    dups: int,
    r: dict[str, Any],
) -> list[Delivery]:
    """Start payments, seed its bills and links, open a checkout per story; returns the
    deliveries to post: every event once, plus `dups` repeats, shuffled."""
    bs.start()
    firm = FirmProfile(name="Bench Law LLP", email="billing@benchlaw.example")
    r["seed"] = seed(bs.cfg.exchange, bs.db("payments"), world, firm, args.seed_timeout)
    log(f"webhooks: bills and links handled {r['seed']}; opening {len(stories)} checkouts")
    t = now()
    r["open_sessions_failures"] = asyncio.run(open_sessions(bs.url("payments"), stories))
    r["open_sessions_seconds"] = round(now() - t, 2)

    t0 = datetime.now(UTC) - timedelta(days=5)
    for st in stories:
        story_events(rng, st, t0 + timedelta(seconds=rng.randint(0, 3600)))
    pool = [(p, e) for st in stories for p, e in zip(st.events, st.event_ids, strict=True)]
    sends = pool + [rng.choice(pool) for _ in range(dups)]
    rng.shuffle(sends)
    seen: set[str] = set()
    deliveries = []
    for payload, event_id in sends:
        deliveries.append(Delivery(payload, event_id, first=event_id not in seen))
        seen.add(event_id)
    return deliveries


def webhooks_deliver(
    args: argparse.Namespace,
    bs: ServicesStack,
    deliveries: list[Delivery],
    unique: int,
    r: dict[str, Any],
) -> None:
    """The timed part: every delivery posted, `--concurrency` at a time."""
    log(f"webhooks: posting {len(deliveries)} deliveries, {args.concurrency} at a time")
    url = f"{bs.url('payments')}/webhooks/stripe"
    with CpuWindow(bs.stack) as cpu:
        wall = asyncio.run(deliver(url, deliveries, args.concurrency))
    r["cpu"] = cpu.report()
    r["wall_seconds"] = round(wall, 3)
    r["deliveries_per_second"] = round(len(deliveries) / wall, 1)
    r["unique_events_per_second"] = round(unique / wall, 1)
    r["latency_ms"] = latency_ms([d.latency for d in deliveries])
    r["latency_ms_first_delivery"] = latency_ms([d.latency for d in deliveries if d.first])
    r["latency_ms_repeat"] = latency_ms([d.latency for d in deliveries if not d.first])
    statuses: dict[str, int] = {}
    for d in deliveries:
        statuses[d.status] = statuses.get(d.status, 0) + 1
    r["statuses"] = statuses
    failed = [d for d in deliveries if d.status != "200"]
    r["errors"] = len(failed)
    r["failed_deliveries"] = [
        {
            "event_id": d.event_id,
            "status": d.status,
            "sent_at_s": round(d.sent_at, 3),
            "latency_s": round(d.latency, 3),
            "detail": d.detail,
        }
        for d in failed[:50]
    ]
    if failed:
        # As Stripe does: a delivery not answered 2xx is sent again later (not timed).
        log(f"webhooks: {len(failed)} deliveries not answered 200; sending them again")
        again = [Delivery(d.payload, d.event_id, d.first) for d in failed]
        asyncio.run(deliver(url, again, min(args.concurrency, 4)))
        r["redelivered"] = {
            "deliveries": len(again),
            "still_failing": sum(1 for d in again if d.status != "200"),
        }


# --- part 2: the pay page -----------------------------------------------------------------


def run_paypage(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    rng = random.Random(SEED + 1)
    # Links as Send All makes them: mostly one bill, some combined up to ten.
    items = rng.choices(range(1, 11), weights=[40, 20, 12, 8, 5, 4, 3, 3, 2, 3], k=args.links)
    world = World.make(
        rng,
        DEMO_FIRM_ID,
        args.links,
        items,
        args.pay_all_share,
        clients=max(1, args.links * 2 // 3),
    )
    r: dict[str, Any] = {
        "links": len(world.links),
        "bills": len(world.bills),
        "clients_with_bills": world.clients,
        "links_pay_all_outstanding": sum(1 for lk in world.links if lk.pay_all_outstanding),
        "loadavg_before": loadavg(),
    }
    bs = ServicesStack(run_dir / "paypage", ("payments", "gateway"), args.postgres, {})
    r["var_dir"] = str(bs.cfg.var_dir)
    r["exchange"] = bs.cfg.exchange
    logs: dict[str, Path] = {}
    marks: dict[str, int] = {}
    log(
        f"pay page: {len(world.links)} links over {len(world.bills)} bills; starting payments "
        f"and gateway in {bs.cfg.var_dir}"
    )
    try:
        paypage_seed(args, bs, world, r)
        logs = {s: bs.log_path(s) for s in ("payments", "gateway")}
        r["log_seeding"] = {s: scan_log(path) for s, path in logs.items()}
        marks = {s: log_size(path) for s, path in logs.items()}
        r["get"] = load_pay_pages(args, bs, world)
        if args.checkout_duration > 0:
            r["checkout"] = start_checkouts(args, bs, world)
        r["peak_rss_mb"] = {n: rss_mb(p.pid) for n, p in bs.stack.procs.items()}
    except Exception as exc:
        r["error"] = f"{type(exc).__name__}: {exc}"
        log(f"pay page: FAILED: {exc}")
        log_tails(bs.stack)
    finally:
        bs.stop()
        r["log"] = {s: scan_log(path, marks.get(s, 0)) for s, path in logs.items()}
    return r


def paypage_seed(
    args: argparse.Namespace, bs: ServicesStack, world: World, r: dict[str, Any]
) -> None:
    """Start payments and the gateway with the demo firm (its firm.updated reaches payments
    over the bus), seed the bills and links, and check a pay page shows its link."""
    bs.start(demo_user=True)
    r["seed"] = seed(bs.cfg.exchange, bs.db("payments"), world, None, args.seed_timeout)
    log(f"pay page: bills and links handled {r['seed']}")
    probe = httpx.get(f"{bs.url('gateway')}/pay/{world.links[0].token}", timeout=30)
    if probe.status_code != 200 or world.client_name(world.links[0].client) not in probe.text:
        raise RuntimeError(f"the pay page does not show the link: {probe.status_code}")


def load_pay_pages(args: argparse.Namespace, bs: ServicesStack, world: World) -> dict[str, Any]:
    tokens = [lk.token for lk in world.links]
    marker = "Bills from"

    async def get_page(c: httpx.AsyncClient, i: int, k: int, _: Any) -> str:
        # Client i walks its own links: i, i + clients, i + 2 * clients, ...
        token = tokens[(i + k * args.clients) % len(tokens)]
        resp = await c.get(f"/pay/{token}")
        if resp.status_code == 200 and marker in resp.text:
            return "ok"
        return str(resp.status_code)

    log(
        f"pay page: {args.clients} clients loading /pay/{{token}} for "
        f"{args.warmup:g} + {args.duration:g} s"
    )
    gw = bs.url("gateway")
    with CpuWindow(bs.stack) as cpu:
        out = asyncio.run(closed_loop(gw, args.clients, args.warmup, args.duration, get_page))
    out["cpu"] = cpu.report()
    return out


def start_checkouts(args: argparse.Namespace, bs: ServicesStack, world: World) -> dict[str, Any]:
    tokens = [lk.token for lk in world.links]

    async def open_page(c: httpx.AsyncClient, i: int) -> str:
        resp = await c.get(f"/pay/{tokens[i % len(tokens)]}")
        return csrf_of(resp.text)  # the ep_csrf cookie is now in c's jar

    async def start_checkout(c: httpx.AsyncClient, i: int, k: int, csrf: str) -> str:
        link = world.links[(i + k * args.clients) % len(world.links)]
        resp = await c.post(
            f"/pay/{link.token}/checkout",
            data={"csrf_token": csrf, "invoice_ids": [b.invoice_id for b in link.bills]},
        )
        location = resp.headers.get("location", "")
        if resp.status_code == 303 and location.startswith("/checkout/chk_"):
            return "ok"
        return str(resp.status_code)

    log(
        f"pay page: {args.clients} clients starting checkouts for "
        f"{args.warmup:g} + {args.checkout_duration:g} s"
    )
    gw = bs.url("gateway")
    with CpuWindow(bs.stack) as cpu:
        out = asyncio.run(
            closed_loop(
                gw, args.clients, args.warmup, args.checkout_duration, start_checkout, open_page
            )
        )
    out["cpu"] = cpu.report()
    out["sessions_opened"] = bs.db("payments").count("SELECT count(*) FROM checkout_sessions")
    return out


# --- the run ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--parts", default="webhooks,paypage", help="webhooks, paypage or both")
    p.add_argument("--postgres", action="store_true", help="the services on PostgreSQL")
    p.add_argument("--events", type=int, default=2000, help="webhook deliveries in all")
    p.add_argument(
        "--duplicates", type=float, default=0.3, help="share of deliveries that are repeats"
    )
    p.add_argument("--concurrency", type=int, default=16, help="concurrent webhook clients")
    p.add_argument("--links", type=int, default=500, help="pay links for the pay page part")
    p.add_argument(
        "--pay-all-share",
        type=float,
        default=0.25,
        help="share of links that offer the client's full balance",
    )
    p.add_argument("--clients", type=int, default=50, help="concurrent pay page clients")
    p.add_argument("--duration", type=float, default=20, help="seconds of pay page loads")
    p.add_argument(
        "--checkout-duration",
        type=float,
        default=10,
        help="seconds of checkout starts (0: skip)",
    )
    p.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before each")
    p.add_argument("--seed-timeout", type=float, default=600)
    return p


def main() -> None:
    args = parser().parse_args()
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    for part in parts:
        if part not in ("webhooks", "paypage"):
            raise SystemExit(f"unknown part {part!r}; choose from webhooks, paypage")
    stop_cleanly_on_signals()
    results = Results("payments")
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "database": "postgresql" if args.postgres else "sqlite",
        "code": code_version(),
        "args": vars(args),
        "var_dir": str(results.run_dir),
    }
    try:
        if "webhooks" in parts:
            report["webhooks"] = run_webhooks(args, results.run_dir)
            results.write(report)
        if "paypage" in parts:
            report["pay_page"] = run_paypage(args, results.run_dir)
    finally:
        report["finished_at"] = datetime.now(UTC).isoformat()
        if report.get("webhooks") or report.get("pay_page"):
            print_report(report)
        results.write(report)
        results.announce()


if __name__ == "__main__":
    main()
