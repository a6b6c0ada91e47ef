"""Clio freshness (issue 16): how long after a change in Clio the gateway's Invoices page shows
it, with no one pressing Sync. Target: p95 at most 2 s.

A fresh stack (devtools.stack: the five services, the Clio sandbox, the mail sink, on free
ports, SQLite by default) with the periodic sync at a day, so only the webhooks bring changes
in: sync registers them with the sandbox, which posts each change to the gateway's
/webhooks/clio/<key>. After Clio is connected and the webhooks are active, a bill of the
bench's own is changed `--changes` times (its due date, one day later each time), one change
at a time; each is timed from just before the sandbox's PATCH until the gateway's Invoices
page (GET /invoices?q=<number>, logged in as the demo user, polled every `--poll-ms`) shows
the new date. The sandbox's rate limit is lifted unless --keep-rate-limit (each change costs
sync two Clio reads: the bill and its lines).

    .venv/bin/python bench/clio_freshness.py                 # 100 changes, SQLite
    .venv/bin/python bench/clio_freshness.py --changes 20 --postgres
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support.common import AMQP_URL, fresh_ports, log  # noqa: E402
from bench.support.pg import PgDatabases  # noqa: E402
from devtools.stack import (  # noqa: E402
    SERVICES,
    Stack,
    StackConfig,
    connect_clio,
    login,
    wait_for_webhooks,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


def shown(client: httpx.Client, number: str, text: str) -> bool:
    page = client.get("/invoices", params={"q": number, "state": "all", "kind": "all"})
    if page.status_code != 200:
        return False
    for row in page.text.split("<tr ")[1:]:
        if f">{number}</a>" in row:
            return text in row
    return False


def wait_shown(client: httpx.Client, number: str, text: str, poll: float, limit: float) -> float:
    start = time.monotonic()
    while not shown(client, number, text):
        if time.monotonic() - start > limit:
            raise RuntimeError(f"{number} did not show {text!r} within {limit}s")
        time.sleep(poll)
    return time.monotonic() - start


def run(args: argparse.Namespace, template: str | None) -> dict[str, object]:
    var_dir = ROOT / "var" / "bench" / f"clio_freshness-{int(time.time())}"
    cfg = StackConfig(
        var_dir=var_dir,
        ports=fresh_ports(),
        amqp_url=AMQP_URL,
        database_url_template=template,
        exchange=f"bench.{int(time.time() * 1000) % 10**10}",
        sync_interval_seconds=86_400,
        queue_expires_ms=10 * 60 * 1000,
    )
    stack = Stack(cfg)
    if not args.keep_rate_limit:
        os.environ["CLIO_SANDBOX_RATE_LIMIT"] = "1000000"  # the sandbox inherits this env
    clio = f"http://127.0.0.1:{cfg.ports.clio}"
    try:
        stack.start_sandboxes()
        stack.migrate()
        stack.create_demo_user()
        stack.start_services()
        gateway = httpx.Client(base_url=f"http://127.0.0.1:{cfg.ports.gateway}", timeout=30)
        connect_clio(cfg, gateway, login(gateway))
        state = wait_for_webhooks(cfg, timeout=60)
        if state.get("mode") != "webhooks":
            raise RuntimeError(f"webhooks are not active: {state}")
        log(f"webhooks active: {state}")
        contact = httpx.post(
            f"{clio}/sandbox/contacts",
            # With an email: a bill whose client has none is held back (Sync issues).
            json={
                "type": "Company",
                "name": "Freshness Bench LLC",
                "primary_email_address": "billing@freshness.example",
            },
            timeout=10,
        ).json()["data"]
        number = "FRESH-1"
        first = date(2031, 1, 1)
        bill = httpx.post(
            f"{clio}/sandbox/bills",
            json={
                "client_id": contact["id"],
                "number": number,
                "total": "100.00",
                "due_at": first.isoformat(),
            },
            timeout=10,
        ).json()["data"]
        created = wait_shown(gateway, number, fmt(first), args.poll_ms / 1000, 60)
        log(f"the new bill showed after {created:.3f}s")
        times: list[float] = []
        for i in range(1, args.changes + 1):
            due = first + timedelta(days=i)
            t0 = time.monotonic()
            resp = httpx.patch(
                f"{clio}/sandbox/bills/{bill['id']}", json={"due_at": due.isoformat()}, timeout=10
            )
            resp.raise_for_status()
            wait_shown(gateway, number, fmt(due), args.poll_ms / 1000, 60)
            times.append(time.monotonic() - t0)
            if i % 10 == 0:
                log(f"{i} changes: last {times[-1]:.3f}s")
        return {
            "changes": len(times),
            "backend": "postgresql" if template else "sqlite",
            "poll_ms": args.poll_ms,
            "rate_limit_lifted": not args.keep_rate_limit,
            "p50_s": round(statistics.median(times), 3),
            "p95_s": round(percentile(times, 0.95), 3),
            "max_s": round(max(times), 3),
            "mean_s": round(statistics.fmean(times), 3),
            "first_show_s": round(created, 3),
        }
    except Exception:
        for name in stack.procs:
            print(f"--- {name} ---\n{stack.tail(name, 30)}", file=sys.stderr)
        raise
    finally:
        stack.stop()


def fmt(d: date) -> str:
    return d.strftime("%b %-d, %Y")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--poll-ms", type=float, default=25.0)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--keep-rate-limit", action="store_true")
    args = parser.parse_args()
    if args.postgres:
        pg = PgDatabases(SERVICES)
        pg.create()
        try:
            result = run(args, pg.url_template)
        finally:
            pg.drop()
    else:
        result = run(args, None)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "clio_freshness.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
