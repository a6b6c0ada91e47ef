"""Benchmark of issue 3: Send All Envelopes for 1,000 unpaid invoices of 300 clients, combine on.

    .venv/bin/python bench/send_all.py                      # all three cases + raw baselines
    .venv/bin/python bench/send_all.py --cases link,cold    # some cases only
    .venv/bin/python bench/send_all.py --postgres           # the services on PostgreSQL

Per case a fresh stack (devtools.stack: five services, Clio sandbox, mail sink as real
processes, free ports, a unique exchange, fresh databases) is seeded through the Clio
sandbox hooks, Clio is connected (the first sync brings the invoices in), and the firm user
selects the 1,000 invoices, reviews them and posts the Send All form. Measured: the time from
that POST until the mail sink accepted every message, and the peak RSS of each process.

Cases: link (secure-link delivery), warm (PDF attachments, PDFs rendered ahead of time and
settled before the click), cold (PDF attachments, clicked the moment the invoices arrived).
Baselines in the same run: WeasyPrint rendering the same 1,000 invoice snapshots alone in one
process, and aiosmtplib sending the same number of messages alone to a fresh sink.

Prints figures and asserts nothing: the targets are shown next to them. Results go to
bench/results/send_all-<timestamp>.json; each stack's var dir (logs, databases, mail) stays
under var/bench/ for inspection.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html as htmllib
import json
import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.support.common import (  # noqa: E402
    code_version,
    fresh_ports,
    log,
    machine_busy_ticks,
)
from devtools.stack import (  # noqa: E402
    DEMO_FIRM_ID,
    Stack,
    StackConfig,
    connect_clio,
    csrf_of,
    login,
)

RESULTS_DIR = ROOT / "bench" / "results"
VAR_ROOT = ROOT / "var" / "bench"
INTERNAL = {"X-Internal-Token": "dev-internal-token"}
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_ADMIN = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CLIENT_PREFIX = "Bench Client"
SEED = 20_250_517
MAX_PER_ENVELOPE = 10  # EnvelopeSettings.max_items_per_envelope

TARGET_FAST_S = 10.0  # secure-link and warm: all delivered within 10 s
TARGET_COLD_RATIO = 0.8  # cold throughput >= 0.8 x raw single-process rendering throughput

CASES = {
    "link": "secure-link delivery",
    "warm": "PDF attachments, rendered ahead of time (warm)",
    "cold": "PDF attachments, clicked as the invoices arrive (cold)",
}


def now() -> float:
    return time.monotonic()


class BenchStack(Stack):
    """The stack, with the Clio sandbox started through bench/support/clio_indexed.py (same
    app, same answers, without its O(lines^2) line-item listing) unless --stock-clio."""

    stock_clio = False

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        if name == "clio" and not self.stock_clio:
            args = [str(ROOT / "bench" / "support" / "clio_indexed.py")]
        super()._spawn(name, args, env)

    def wait_http(self, name: str, url: str, timeout: float = 60, any_status: bool = False) -> None:
        # On a busy machine five services importing at once can take more than the 60 s the
        # stack allows for readiness.
        super().wait_http(name, url, max(timeout, 240), any_status)


# --- the world to seed ------------------------------------------------------------------


@dataclass
class Plan:
    """Deterministic: every case seeds the same clients and bills."""

    clients: int
    invoices: int
    per_client: list[int] = field(default_factory=list)
    bills: list[dict[str, Any]] = field(default_factory=list)  # per bill, client index + spec

    @classmethod
    def make(cls, clients: int, invoices: int, trust_share: float = 0.1) -> Plan:
        if invoices < clients:
            raise SystemExit("need at least one invoice per client")
        rng = random.Random(SEED)
        counts = [1] * clients
        # The rest skewed (a few large clients with more than ten bills, most with one to
        # three), so combine makes both single and split envelopes.
        weights = [1 / (i + 1) ** 0.9 for i in range(clients)]
        for i in rng.choices(range(clients), weights=weights, k=invoices - clients):
            counts[i] += 1
        plan = cls(clients=clients, invoices=invoices, per_client=counts)
        today = date.today()
        for client, n in enumerate(counts):
            for _ in range(n):
                issued = today - timedelta(days=rng.randint(1, 90))
                if rng.random() < trust_share:
                    spec: dict[str, Any] = {
                        "kind": "trust_kind",
                        "total": f"{rng.randint(5, 100) * 100}.00",
                        "issued_at": issued.isoformat(),
                    }
                else:
                    lines = []
                    for _ in range(rng.randint(2, 6)):
                        expense = rng.random() < 0.25
                        lines.append(
                            {
                                "description": rng.choice(
                                    ["Filing fee", "Courier", "Copies", "Travel"]
                                )
                                if expense
                                else rng.choice(
                                    [
                                        "Draft and revise motion to compel",
                                        "Telephone conference with client",
                                        "Review discovery responses",
                                        "Research: statute of limitations",
                                        "Prepare for and attend deposition",
                                    ]
                                ),
                                "price": f"{rng.randint(20, 450)}.00",
                                "quantity": "1" if expense else f"{rng.randint(1, 24) / 4:.2f}",
                                "kind": "Expense" if expense else "Service",
                                "date": (issued - timedelta(days=rng.randint(0, 20))).isoformat(),
                            }
                        )
                    spec = {"line_items": lines, "issued_at": issued.isoformat()}
                plan.bills.append({"client": client, "spec": spec})
        return plan

    @property
    def envelopes(self) -> int:
        return sum(math.ceil(n / MAX_PER_ENVELOPE) for n in self.per_client)


async def seed_clio(clio_url: str, plan: Plan, concurrency: int = 32) -> dict[str, Any]:
    """Contacts and bills through the sandbox hooks, concurrently."""
    sem = asyncio.Semaphore(concurrency)
    started = now()
    async with httpx.AsyncClient(base_url=clio_url, timeout=60) as client:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with sem:
                resp = await client.post(path, json=body)
            if resp.status_code != 201:
                raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:300]}")
            return resp.json()["data"]

        contacts = await asyncio.gather(
            *(
                post(
                    "/sandbox/contacts",
                    {
                        "type": "Company",
                        "name": f"{CLIENT_PREFIX} {i:03d} LLC",
                        "primary_email_address": f"client{i:03d}@bench.example",
                    },
                )
                for i in range(plan.clients)
            )
        )
        ids = [c["id"] for c in contacts]
        bills = await asyncio.gather(
            *(
                post("/sandbox/bills", {"client_id": ids[b["client"]], **b["spec"]})
                for b in plan.bills
            )
        )
    return {
        "seconds": round(now() - started, 2),
        "contacts": len(contacts),
        "bills": len(bills),
        "trust_requests": sum(1 for b in plan.bills if b["spec"].get("kind") == "trust_kind"),
    }


# --- watching the processes -------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _open_db_files(pid: int) -> int | None:
    """Open file descriptors on a *.db file: one per open SQLite connection."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    n = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(".db"):
                n += 1
        except OSError:
            continue
    return n


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(entry))
    return out


TICK = os.sysconf("SC_CLK_TCK")


def broker_ticks() -> int:
    """CPU ticks of the RabbitMQ server (shared by every stack on the machine)."""
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != "beam.smp":
                        continue
            except OSError:
                continue
            total += _cpu_ticks(int(entry)) or 0
    return total


async def queue_depths(amqp_url: str, names: list[str]) -> dict[str, int | None]:
    """Messages waiting in each queue (passive declare; None if it does not exist)."""
    import aiormq

    out: dict[str, int | None] = {}
    conn = await aiormq.connect(amqp_url)
    try:
        for name in names:
            channel = await conn.channel()
            try:
                ok = await channel.queue_declare(name, passive=True)
                out[name] = ok.message_count
            except aiormq.exceptions.ChannelNotFoundEntity:
                out[name] = None
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await conn.close()
    return out


class ProcWatch:
    """Samples VmHWM and CPU time of every stack process and its descendants (a process
    pool's workers may exit before the end, so their peaks are caught while they live)."""

    def __init__(self, stack: Stack, interval: float = 0.25) -> None:
        self.stack = stack
        self.interval = interval
        self.hwm: dict[int, int] = {}  # pid -> VmHWM kB, highest seen
        self.label: dict[int, str] = {}
        self.cpu: dict[int, int] = {}  # pid -> last seen cpu ticks
        # Peaks per service: threads (aiosqlite runs a thread per connection) and open
        # SQLite main-database files (one per open connection).
        self.threads: dict[str, int] = {}
        self.db_conns: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def pids(self) -> dict[int, str]:
        roots = {p.pid: name for name, p in self.stack.procs.items() if p.poll() is None}
        kids = _children_map()
        found: dict[int, str] = {}
        for pid, name in roots.items():
            found[pid] = name
            todo = list(kids.get(pid, []))
            while todo:
                child = todo.pop()
                found[child] = f"{name}/child"
                todo.extend(kids.get(child, []))
        return found

    def sample(self) -> None:
        for pid, label in self.pids().items():
            hwm = _status_kb(pid, "VmHWM")
            ticks = _cpu_ticks(pid)
            threads = _status_kb(pid, "Threads")
            db_files = _open_db_files(pid) if "/" not in label else None
            with self._lock:
                self.label.setdefault(pid, label)
                if hwm is not None:
                    self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
                if ticks is not None:
                    self.cpu[pid] = max(self.cpu.get(pid, 0), ticks)
                if "/" not in label:
                    if threads is not None:
                        self.threads[label] = max(self.threads.get(label, 0), threads)
                    if db_files is not None:
                        self.db_conns[label] = max(self.db_conns.get(label, 0), db_files)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def reset_peaks(self) -> dict[str, Any]:
        """Write 5 to clear_refs (resets VmHWM to the current RSS); returns the peaks so far."""
        self.sample()
        before = self.report()
        with self._lock:
            for pid in list(self.hwm):
                try:
                    with open(f"/proc/{pid}/clear_refs", "w") as f:
                        f.write("5")
                except OSError:
                    pass
            self.hwm.clear()
        self.sample()
        return before

    def cpu_snapshot(self) -> dict[int, int]:
        self.sample()
        with self._lock:
            return dict(self.cpu)

    def report(self) -> dict[str, Any]:
        with self._lock:
            per: dict[str, int] = {}
            children: dict[str, list[int]] = {}
            for pid, kb in self.hwm.items():
                label = self.label.get(pid, "?")
                if label.endswith("/child"):
                    children.setdefault(label, []).append(kb)
                else:
                    per[label] = kb
        out: dict[str, Any] = {"per_process_mb": {k: round(v / 1024, 1) for k, v in per.items()}}
        for label, kbs in children.items():
            # Pool workers, the forkserver, the resource tracker: summed (RSS counts the
            # pages they share with each other once per process).
            out["per_process_mb"][f"{label}ren (sum)"] = round(sum(kbs) / 1024, 1)
            out.setdefault("children", {})[label] = len(kbs)
        out["sum_mb"] = round(sum(out["per_process_mb"].values()), 1)
        return out

    def cpu_seconds_between(self, a: dict[int, int], b: dict[int, int]) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, ticks in b.items():
            label = self.label.get(pid, "?")
            out[label] = out.get(label, 0) + (ticks - a.get(pid, 0)) / TICK
        return {k: round(v, 2) for k, v in sorted(out.items())}

    def wait_quiet(self, threshold: float = 0.15, window: float = 2.0, limit: float = 60) -> float:
        """Until the stack uses less than `threshold` of one core over `window` seconds."""
        started = now()
        while now() - started < limit:
            a = self.cpu_snapshot()
            time.sleep(window)
            b = self.cpu_snapshot()
            busy = sum(b.get(p, 0) - a.get(p, 0) for p in b) / TICK / window
            if busy < threshold:
                break
        return round(now() - started, 1)


class SinkCounter:
    """Counts messages the sink accepted by following its log: it logs 'mailsink stored'
    once a message is on disk, just before answering 250. Cheaper than listing the API."""

    def __init__(self, log_path: Path) -> None:
        self.path = log_path
        self.offset = log_path.stat().st_size if log_path.exists() else 0
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._buf = b""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def count(self) -> int:
        return len(self.times)

    def _run(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while not self._stop.is_set():
                chunk = f.read()
                if chunk:
                    t = now()
                    self._buf += chunk
                    *lines, self._buf = self._buf.split(b"\n")
                    self.times.extend(t for line in lines if b"mailsink stored" in line)
                else:
                    time.sleep(0.01)


class Profiler:
    """Optional (--py-spy): sample the busiest processes during the send and keep a
    summary of where their CPU went. py-spy is not a project dependency: install it
    anywhere (`pip install --target /tmp/pyspy py-spy`) and pass the binary."""

    SERVICES = ("envelope", "mailer", "gateway", "mailsink", "payments")

    def __init__(self, binary: str | None, stack: Stack, out_dir: Path) -> None:
        self.binary = binary
        self.stack = stack
        self.out_dir = out_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        if not self.binary:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name in self.SERVICES:
            proc = self.stack.procs.get(name)
            if proc is None:
                continue
            self.procs[name] = subprocess.Popen(
                [self.binary, "record", "--pid", str(proc.pid), "--rate", "100", "--gil",
                 "--format", "raw", "--nonblocking", "--output",
                 str(self.out_dir / f"{name}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=open(self.out_dir / f"{name}.err", "wb"),  # noqa: SIM115
            )  # fmt: skip

    def stop(self) -> dict[str, Any] | None:
        if not self.procs:
            return None
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)
        out: dict[str, Any] = {}
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out[name] = summarize_profile(self.out_dir / f"{name}.txt")
        out["files"] = str(self.out_dir)
        return out


def summarize_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """Collapsed stacks -> the functions with the most samples, on their own (self) and
    counting what they call (inclusive, project code only)."""
    if not path.exists():
        return {"error": "no profile written"}
    self_count: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f.strip()) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        self_count[frames[-1]] = self_count.get(frames[-1], 0) + count
        for f in set(frames):
            if f.startswith(("main (shared/runtime.py)", "<module>")):
                continue  # every sample is under the entry point
            if "services/" in f or "shared/" in f:
                incl[f] = incl.get(f, 0) + count

    def best(d: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [(k, round(100 * v / total, 1)) for k, v in ranked]

    return {"samples": total, "self_pct": best(self_count), "inclusive_project_pct": best(incl)}


# --- databases --------------------------------------------------------------------------


class Db:
    """Read-only peeks into a service's database (SQLite file or PostgreSQL)."""

    def __init__(self, cfg: StackConfig, service: str) -> None:
        self.url = cfg.database_url(service)

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite"):
            path = self.url.split(":///", 1)[1]
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                return list(conn.execute(sql.replace("$1", "?"), args).fetchall())
            finally:
                conn.close()
        return asyncio.run(self._pg(sql, *args))

    async def _pg(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()


class PgConnWatch:
    """--postgres: peak connections per service database, and on the whole server, sampled
    from pg_stat_activity every 0.5 s."""

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
                total = 0
                for row in rows:
                    total += row["n"]
                    name = row["datname"] or ""
                    if name.startswith(self.prefix + "_"):
                        svc = name[len(self.prefix) + 1 :]
                        self.peak[svc] = max(self.peak.get(svc, 0), row["n"])
                self.peak["server_total"] = max(self.peak.get("server_total", 0), total)
                await asyncio.sleep(0.5)
        finally:
            await conn.close()


async def _pg_admin(statements: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        for st in statements:
            await conn.execute(st)
    finally:
        await conn.close()


# --- one case ---------------------------------------------------------------------------


def error_text(resp: httpx.Response) -> str:
    """`status title: message` of a gateway error page (or the start of any other body)."""
    body = resp.text
    m = re.search(r"<h1>(.*?)</h1>\s*<p>(.*?)</p>", body, re.S)
    if m:
        text = f"{htmllib.unescape(m.group(1))}: {htmllib.unescape(m.group(2))}"
    else:
        text = " ".join(re.sub(r"<[^>]+>", " ", body).split())
    return f"{resp.status_code} {text[:200]}"


def parse_send_all_form(page: str) -> dict[str, str]:
    def hidden(name: str) -> str:
        m = re.search(rf'name="{name}" value="([^"]*)"', page)
        if not m:
            raise RuntimeError(f"no {name} on the Send All form")
        return htmllib.unescape(m.group(1))

    subject = hidden("subject")
    m = re.search(r'<textarea name="body"[^>]*>(.*?)</textarea>', page, re.S)
    body = htmllib.unescape(m.group(1)) if m else ""
    return {
        "csrf_token": csrf_of(page),
        "run_id": hidden("run_id"),
        "expected": hidden("expected"),
        "subject": subject,
        "body": body,
    }


class Case:
    def __init__(self, name: str, plan: Plan, args: argparse.Namespace, run_dir: Path) -> None:
        self.name = name
        self.plan = plan
        self.args = args
        self.var_dir = run_dir / name
        self.delivery = "link" if name == "link" else "attachment"
        self.result: dict[str, Any] = {"case": name, "description": CASES[name]}
        self.pg_prefix: str | None = None

    # -- helpers --

    def envelope_api(self, path: str, **params: Any) -> Any:
        resp = httpx.get(
            f"http://127.0.0.1:{self.cfg.ports.envelope}/internal{path}",
            params=params,
            headers=INTERNAL,
            timeout=60,
        )
        resp.raise_for_status()
        return resp.json()

    def my_unpaid_total(self) -> int:
        page = self.envelope_api(
            f"/firms/{DEMO_FIRM_ID}/invoices", state="unpaid", q=CLIENT_PREFIX, per_page=1
        )
        return int(page["total"])

    def my_invoices(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.envelope_api(
                f"/firms/{DEMO_FIRM_ID}/invoices",
                state="unpaid",
                q=CLIENT_PREFIX,
                per_page=200,
                page=page,
            )
            out.extend(data["items"])
            if page * 200 >= data["total"]:
                return out
            page += 1

    def pdf_invoice_ids(self) -> set[str]:
        return {r[0] for r in self.envelope_db.rows("SELECT invoice_id FROM pdfs") if r[0]}

    def statement_pdfs(self) -> int:
        rows = self.envelope_db.rows("SELECT count(*) FROM pdfs WHERE invoice_id IS NULL")
        return int(rows[0][0])

    def firm_profile(self) -> dict[str, Any] | None:
        rows = self.envelope_db.rows("SELECT profile FROM firms WHERE firm_id = $1", DEMO_FIRM_ID)
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    # -- the run --

    def run(self) -> dict[str, Any]:
        a = self.args
        template = None
        if a.postgres:
            self.pg_prefix = f"epb_{uuid.uuid4().hex[:10]}"
            asyncio.run(
                _pg_admin(
                    [
                        f'CREATE DATABASE "{self.pg_prefix}_{s}"'
                        for s in ("sync", "envelope", "mailer", "payments", "gateway")
                    ]
                )
            )
            base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace(
                "postgresql://", "postgresql+asyncpg://", 1
            )
            template = f"{base}/{self.pg_prefix}_{{service}}"
        self.cfg = StackConfig(
            var_dir=self.var_dir,
            ports=fresh_ports(),
            amqp_url=AMQP_URL,
            database_url_template=template,
            exchange=f"bench.{uuid.uuid4().hex[:10]}",
            sync_interval_seconds=86_400,
            extra_env=parse_service_env(a.service_env),
            queue_expires_ms=10 * 60 * 1000,
        )
        self.envelope_db = Db(self.cfg, "envelope")
        self.stack = BenchStack(self.cfg)
        self.watch = ProcWatch(self.stack)
        self.result["var_dir"] = str(self.var_dir)
        self.result["loadavg_before"] = open("/proc/loadavg").read().split()[:3]
        try:
            self._run()
        except Exception as exc:
            self.result["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{self.name}: FAILED: {exc}")
            for name in self.stack.procs:
                log(f"--- {name} (last lines) ---\n{self.stack.tail(name, 15)}")
        finally:
            self.watch.stop()
            if getattr(self, "pg_watch", None) is not None:
                self.result["pg_connections"] = self.pg_watch.stop()
            self.stack.stop()
            if self.pg_prefix:
                asyncio.run(
                    _pg_admin(
                        [
                            f'DROP DATABASE IF EXISTS "{self.pg_prefix}_{s}" WITH (FORCE)'
                            for s in ("sync", "envelope", "mailer", "payments", "gateway")
                        ]
                    )
                )
            self.result["log_findings"] = scan_logs(
                self.cfg.var_dir / "logs", getattr(self, "log_ends", None)
            )
        return self.result

    def _run(self) -> None:
        a, plan, r = self.args, self.plan, self.result
        for attempt in (1, 2):
            log(f"{self.name}: starting a fresh stack in {self.cfg.var_dir}")
            try:
                self.stack.start_sandboxes()
                self.stack.migrate()
                self.stack.create_demo_user()
                self.stack.start_services()
                break
            except RuntimeError as exc:
                # Seen when the shared broker is slow to accept connections (other stacks on
                # the machine): the services wait for it past the stack's 60 s readiness wait.
                first = str(exc).splitlines()[0][:200]
                r.setdefault("start_retries", []).append(first)
                if attempt == 2:
                    raise
                log(f"{self.name}: stack did not start ({first}); once more")
                self.stack.stop()
                self.cfg.var_dir = self.var_dir.with_name(self.name + "-retry")
                self.cfg.ports = fresh_ports()
                self.cfg.exchange = f"bench.{uuid.uuid4().hex[:10]}"
                self.stack = BenchStack(self.cfg)
                self.watch = ProcWatch(self.stack)
                self.envelope_db = Db(self.cfg, "envelope")
                r["var_dir"] = str(self.cfg.var_dir)
        self.watch.start()
        if self.pg_prefix:
            self.pg_watch: PgConnWatch | None = PgConnWatch(self.pg_prefix)
            self.pg_watch.start()
        clio = f"http://127.0.0.1:{self.cfg.ports.clio}"
        r["seed"] = asyncio.run(seed_clio(clio, plan))
        log(
            f"{self.name}: seeded {r['seed']['bills']} bills for {plan.clients} clients "
            f"in {r['seed']['seconds']} s"
        )

        gw = httpx.Client(base_url=f"http://127.0.0.1:{self.cfg.ports.gateway}", timeout=300)
        csrf = login(gw)
        # Settings first: the firm profile is part of every PDF's cache key, so PDFs rendered
        # ahead of time are only reusable if they were rendered with the final settings.
        resp = gw.post(
            "/settings",
            data={
                "csrf_token": csrf,
                "name": "Demo Law LLP",
                "email": "billing@demolaw.example",
                "phone": "(555) 010-2030",
                "address": "100 Main Street, Suite 400\nSpringfield, IL 62701",
                "website": "",
                "combine_envelopes": "on",
                "default_delivery": self.delivery,
            },
        )
        if resp.status_code != 303:
            raise RuntimeError(f"settings: {error_text(resp)}")
        deadline = now() + 60
        while True:
            prof = self.firm_profile()
            if (
                prof
                and prof.get("combine_envelopes")
                and prof.get("default_delivery") == (self.delivery)
            ):
                break
            if now() > deadline:
                raise RuntimeError(f"envelope never saw the settings (profile {prof})")
            time.sleep(0.2)

        t_connect = now()
        connect_clio(self.cfg, gw, csrf)
        poll = 0.05 if self.name == "cold" else 0.5
        deadline = now() + a.sync_timeout
        total = 0
        while total < plan.invoices:
            try:
                total = self.my_unpaid_total()
            except httpx.HTTPError as exc:
                # Counted, not fatal: the envelope service failing requests while the first
                # sync floods it is itself a finding.
                errs = r.setdefault("envelope_api_errors_during_sync", {})
                key = str(exc).split(" for url")[0][:80]
                errs[key] = errs.get(key, 0) + 1
            if now() > deadline:
                raise RuntimeError(f"sync brought only {total} of {plan.invoices} invoices")
            if total < plan.invoices:
                time.sleep(poll)
        t_arrived = now()
        r["sync_seconds"] = round(t_arrived - t_connect, 2)
        pdfs_at_arrival = len(self.pdf_invoice_ids())
        log(
            f"{self.name}: {total} invoices arrived {r['sync_seconds']} s after connecting; "
            f"{pdfs_at_arrival} PDFs rendered by then"
        )

        mine = {i["invoice_id"] for i in self.my_invoices()} if self.name != "cold" else None
        if self.name in ("link", "warm"):
            r["render_settle"] = self.settle_rendering(mine or set())
            if self.name == "warm":
                r["prefetch"] = self.prefetch_missing(mine or set())
            r["quiet_wait_seconds"] = self.watch.wait_quiet()

        # Select all, review, open Send All.
        t_sel = now()
        invoices = self.my_invoices()
        by_client: dict[str, list[str]] = {}
        for inv in sorted(invoices, key=lambda i: (i["client_name"], i["invoice_id"])):
            by_client.setdefault(inv["client_id"], []).append(inv["invoice_id"])
        ids = [i for group in by_client.values() for i in group]
        batches, review = self.review(gw, csrf, ids, by_client)
        r["review"] = review
        forms = []
        for batch_id in batches:
            page = gw.get(f"/batches/{batch_id}/send-all")
            page.raise_for_status()
            forms.append((batch_id, parse_send_all_form(page.text)))
        expected_msgs = sum(len(json.loads(f["expected"])) for _, f in forms)
        r["envelopes"] = expected_msgs
        r["envelopes_by_grouping"] = plan.envelopes
        r["select_review_open_seconds"] = round(now() - t_sel, 2)
        if self.name == "warm":
            # Drafting the envelopes renders their statements (a combined envelope's PDF of
            # all its bills), while the firm user reviews them: warm means those too.
            combined = sum(
                math.ceil(len(g) / MAX_PER_ENVELOPE) - (1 if len(g) % MAX_PER_ENVELOPE == 1 else 0)
                for g in by_client.values()
                if len(g) > 1
            )
            r["statement_settle"] = self.settle_statements(combined)
            r["quiet_wait_seconds_after_review"] = self.watch.wait_quiet()
        pdfs_at_click = len(self.pdf_invoice_ids() & set(ids))
        r["pdfs_ready_at_click"] = pdfs_at_click
        statements_at_click = self.statement_pdfs()
        if self.name == "cold":
            r["click_after_arrival_seconds"] = round(now() - t_arrived, 2)
        log(
            f"{self.name}: {len(ids)} invoices -> {expected_msgs} envelopes in "
            f"{len(batches)} batch(es); {pdfs_at_click} of their PDFs ready; clicking"
        )

        # The click.
        r["peak_before_click"] = self.watch.reset_peaks()
        counter = SinkCounter(self.stack.logs["mailsink"])
        counter.start()
        cpu0 = self.watch.cpu_snapshot()
        machine0, me0, broker0 = machine_busy_ticks(), os.times(), broker_ticks()
        t0 = now()
        post_latency = []
        posted = []
        profiler = Profiler(self.args.py_spy, self.stack, self.cfg.var_dir / "profiles")
        profiler.start()
        for batch_id, form in forms:
            ts = now()
            try:
                resp = gw.post(f"/batches/{batch_id}/send-all", data=form)
                status = error_text(resp) if resp.status_code != 303 else "303"
            except httpx.HTTPError as exc:
                status = f"{type(exc).__name__}: {exc}"
            post_latency.append(round(now() - ts, 3))
            if status == "303":
                posted.append((batch_id, form))
            else:
                # Recorded, and the rest measured: what a user sees after such a click.
                r.setdefault("post_errors", []).append(status)
                log(f"{self.name}: Send All POST of batch {batch_id} failed: {status}")
        r["post_seconds"] = post_latency
        if not posted:
            profiler.stop()
            raise RuntimeError(f"every Send All POST failed: {r['post_errors']}")
        forms = posted
        expected_all, expected_msgs = (
            expected_msgs,
            sum(len(json.loads(f["expected"])) for _, f in forms),
        )
        r["envelopes_posted"] = expected_msgs
        progress: dict[str, Any] = {}
        t_done = None
        t_all = None
        pdf_timeline = []
        deadline = t0 + a.send_timeout
        next_progress = now()
        seen_state: tuple[Any, ...] = ()
        last_move = now()
        while now() < deadline:
            if counter.count >= expected_msgs and t_all is None:
                t_all = counter.times[expected_msgs - 1]
            state = (counter.count, progress.get("sent"), progress.get("failed"))
            if state != seen_state:
                seen_state, last_move = state, now()
            elif now() - last_move > a.stall_seconds:
                r["stalled_after_seconds"] = round(last_move - t0, 1)
                log(f"{self.name}: nothing moved for {a.stall_seconds:.0f} s; giving up")
                break
            if now() >= next_progress:
                next_progress = now() + 1.0
                progress = self.progress(gw, forms)
                if self.delivery == "attachment":
                    pdf_timeline.append(
                        (
                            round(now() - t0, 1),
                            len(self.pdf_invoice_ids() & set(ids)),
                            self.statement_pdfs(),
                            counter.count,
                        )
                    )
                if progress["done"] and t_done is None:
                    t_done = now()
                if progress["failed"] and progress["done"]:
                    break  # the missing messages will never come
            if t_all is not None and (t_done is not None or now() - t_all > 30):
                break
            time.sleep(0.05)
        cpu1 = self.watch.cpu_snapshot()
        machine1, me1, broker1 = machine_busy_ticks(), os.times(), broker_ticks()
        counter.stop()
        r["profile"] = profiler.stop()
        end = t_all if t_all is not None else now()
        elapsed = end - t0
        r["delivered"] = counter.count
        r["complete"] = t_all is not None
        r["seconds"] = round(elapsed, 2)
        r["messages_per_second"] = round(counter.count / elapsed, 2) if elapsed else None
        r["invoices_per_second"] = (
            round(len(ids) * counter.count / expected_all / elapsed, 2) if elapsed else None
        )
        r["progress_done_seconds"] = round(t_done - t0, 2) if t_done else None
        r["progress"] = {k: progress.get(k) for k in ("total", "sent", "failed", "queued")}
        r["failures_sample"] = (progress.get("failures") or [])[:3]
        if counter.times:
            ts = counter.times
            r["accept_timeline_s"] = {
                "first": round(ts[0] - t0, 2),
                "p50": round(ts[len(ts) // 2] - t0, 2),
                "p90": round(ts[int(len(ts) * 0.9) - 1] - t0, 2) if len(ts) > 1 else None,
                "last": round(ts[-1] - t0, 2),
            }
        r["pdf_timeline"] = pdf_timeline[:: max(1, len(pdf_timeline) // 40)]
        r["cpu_seconds_during_send"] = self.watch.cpu_seconds_between(cpu0, cpu1)
        window = now() - t0
        machine = (machine1 - machine0) / TICK
        stack_cpu = sum(r["cpu_seconds_during_send"].values())
        bench_cpu = (me1.user + me1.system) - (me0.user + me0.system)
        broker_cpu = (broker1 - broker0) / TICK
        r["machine_cpu_during_send"] = {
            "rabbitmq_cpu_seconds": round(broker_cpu, 2),
            "window_seconds": round(window, 2),
            "capacity_cpu_seconds": round(window * (os.cpu_count() or 1), 2),
            "busy_cpu_seconds": round(machine, 2),
            "stack_cpu_seconds": round(stack_cpu, 2),
            "bench_process_cpu_seconds": round(bench_cpu, 2),
            "other_processes_cpu_seconds": round(
                max(0.0, machine - stack_cpu - bench_cpu - broker_cpu), 2
            ),
        }
        if self.delivery == "attachment":
            r["pdfs_rendered_during_send"] = {
                "invoices": len(self.pdf_invoice_ids() & set(ids)) - pdfs_at_click,
                "statements": self.statement_pdfs() - statements_at_click,
            }
        self.watch.sample()
        r["peak_since_click"] = self.watch.report()
        r["peak_threads"] = dict(sorted(self.watch.threads.items()))
        if not self.args.postgres:
            r["peak_sqlite_connections"] = dict(sorted(self.watch.db_conns.items()))
        r["peak_lifetime"] = merge_peaks(r["peak_before_click"], r["peak_since_click"])
        sink_api = httpx.get(
            f"http://127.0.0.1:{self.cfg.ports.mailview}/api/messages", timeout=60
        ).json()
        r["sink_api_count"] = len(sink_api)
        r["sink_attachments"] = sum(len(m.get("attachments") or []) for m in sink_api)
        r["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        # What is left on the bus: sends still queued, and sends dead-lettered after the
        # queue's delivery limit (lost unless someone replays them).
        names = [
            f"{self.cfg.exchange}.{svc}.{key}.v1{suffix}"
            for svc, key in (("envelope", "envelope.send_requested"), ("mailer", "email.requested"))
            for suffix in ("", ".dlq")
        ]
        try:
            r["queues_at_end"] = asyncio.run(queue_depths(self.cfg.amqp_url, names))
        except Exception as exc:  # a figure, not a reason to lose the run
            r["queues_at_end"] = {"error": repr(exc)}
        # Log findings are counted up to here: stopping the stack adds its own noise.
        self.log_ends = {n: p.stat().st_size for n, p in self.stack.logs.items() if p.exists()}
        log(
            f"{self.name}: {counter.count}/{expected_msgs} accepted in {r['seconds']} s "
            f"(POST {post_latency} s; progress done at {r['progress_done_seconds']} s; "
            f"failed {progress.get('failed')})"
        )
        if self.args._dump_for_baselines:
            self.dump_for_baselines(set(ids))

    def settle_rendering(self, mine: set[str]) -> dict[str, Any]:
        """Wait until ahead-of-time rendering is done: every invoice has a PDF, or the count
        has not grown for --settle-seconds."""
        a = self.args
        started = now()
        last, last_change = -1, now()
        while True:
            have = len(self.pdf_invoice_ids() & mine)
            if have != last:
                last, last_change = have, now()
            if have >= len(mine) or now() - started > a.sync_timeout:
                break
            if now() - last_change >= a.settle_seconds:
                # No growth: settled only if the envelope service (and its pool) is idle too,
                # and, when nothing was rendered at all, after a generous start-up allowance.
                if have == 0 and now() - started < 60:
                    time.sleep(0.5)
                    continue
                if self.envelope_busy() < 0.1:
                    break
                last_change = now()
            time.sleep(0.5)
        out = {
            "pdfs_rendered_ahead": last,
            "of": len(mine),
            "seconds": round(now() - started, 1),
            "settled_by": "all rendered" if last >= len(mine) else "no growth",
        }
        log(f"{self.name}: ahead-of-time rendering settled: {out}")
        return out

    def settle_statements(self, expected: int) -> dict[str, Any]:
        """Wait until the statements drafted envelopes render ahead of time are stored:
        `expected` of them, or no growth for --settle-seconds with the envelope idle."""
        a = self.args
        started = now()
        base = 0
        last, last_change = -1, now()
        while True:
            have = self.statement_pdfs() - base
            if have != last:
                last, last_change = have, now()
            if have >= expected or now() - started > a.sync_timeout:
                break
            if now() - last_change >= a.settle_seconds and self.envelope_busy() < 0.1:
                break
            time.sleep(0.5)
        out = {"statements": last, "of": expected, "seconds": round(now() - started, 1)}
        log(f"{self.name}: statements rendered while reviewing: {out}")
        return out

    def envelope_busy(self, window: float = 2.0) -> float:
        """Cores used by the envelope service and its children over `window` seconds."""
        a = self.watch.cpu_snapshot()
        time.sleep(window)
        b = self.watch.cpu_snapshot()
        pids = [p for p, lab in self.watch.label.items() if lab.startswith("envelope")]
        return sum(b.get(p, 0) - a.get(p, 0) for p in pids) / TICK / window

    def prefetch_missing(self, mine: set[str]) -> dict[str, Any]:
        """Warm the PDF cache for what ahead-of-time rendering left out, through the
        product's own on-demand path (the envelope's invoice PDF endpoint, the same cache
        key the send uses). Reported, so a warm figure never hides missing AOT work."""
        missing = sorted(mine - self.pdf_invoice_ids())
        if not missing or self.args.no_prefetch:
            return {"prefetched": 0, "missing_after_aot": len(missing)}
        log(
            f"{self.name}: {len(missing)} PDFs missing after ahead-of-time rendering; "
            "rendering them through GET /internal/firms/{firm}/invoices/{id}/pdf"
        )
        started = now()
        base = f"http://127.0.0.1:{self.cfg.ports.envelope}/internal/firms/{DEMO_FIRM_ID}"

        async def go() -> int:
            sem = asyncio.Semaphore(4)
            async with httpx.AsyncClient(base_url=base, headers=INTERNAL, timeout=600) as c:

                async def one(i: str) -> int:
                    async with sem:
                        return (await c.get(f"/invoices/{i}/pdf")).status_code

                codes = await asyncio.gather(*(one(i) for i in missing))
            return sum(1 for c in codes if c == 200)

        ok = asyncio.run(go())
        out = {
            "prefetched": ok,
            "missing_after_aot": len(missing),
            "seconds": round(now() - started, 1),
            "pdfs_per_second": round(ok / (now() - started), 2),
        }
        log(f"{self.name}: prefetch {out}")
        return out

    def review(
        self, gw: httpx.Client, csrf: str, ids: list[str], by_client: dict[str, list[str]]
    ) -> tuple[list[str], dict[str, Any]]:
        """One POST /envelopes/review with every id. Should the gateway refuse that, the
        refusal is recorded and the selection is posted in chunks of whole clients (so the
        grouping is the same), giving more than one batch to Send All."""
        info: dict[str, Any] = {"invoices": len(ids)}
        t = now()
        resp = gw.post("/envelopes/review", data={"csrf_token": csrf, "invoice_ids": ids})
        info["single_post_status"] = resp.status_code
        info["single_post_seconds"] = round(now() - t, 2)
        if resp.status_code == 303:
            return [resp.headers["location"].split("/")[2]], info
        info["single_post_error"] = error_text(resp)
        log(
            f"{self.name}: review of {len(ids)} invoices in one POST refused: "
            f"{info['single_post_error']}; posting in chunks of whole clients"
        )
        chunks: list[list[str]] = [[]]
        for group in by_client.values():
            if len(chunks[-1]) + len(group) > self.args.chunk:
                chunks.append([])
            chunks[-1].extend(group)
        batches = []
        t = now()
        for chunk in chunks:
            resp = gw.post("/envelopes/review", data={"csrf_token": csrf, "invoice_ids": chunk})
            if resp.status_code != 303:
                raise RuntimeError(f"review: {error_text(resp)}")
            batches.append(resp.headers["location"].split("/")[2])
        info["chunked_posts"] = [len(c) for c in chunks]
        info["chunked_seconds"] = round(now() - t, 2)
        return batches, info

    def progress(self, gw: httpx.Client, forms: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
        agg: dict[str, Any] = {"total": 0, "sent": 0, "failed": 0, "queued": 0, "failures": []}
        done = True
        for batch_id, form in forms:
            try:
                p = gw.get(f"/batches/{batch_id}/runs/{form['run_id']}.json", timeout=30).json()
            except (httpx.HTTPError, ValueError):
                return {**agg, "done": False}
            for k in ("total", "sent", "failed", "queued"):
                agg[k] += p[k]
            agg["failures"] += p["failures"]
            done = done and p["done"]
        agg["done"] = done and agg["total"] > 0
        return agg

    def dump_for_baselines(self, ids: set[str]) -> None:
        """The same invoice snapshots and emails, for the raw baselines."""
        rows = self.envelope_db.rows("SELECT invoice_id, snapshot FROM invoices")
        snaps = {i: s for i, s in rows if i in ids}
        emails = self.envelope_db.rows(
            'SELECT e.email_id, e.envelope_id, e."to", e.from_name, e.reply_to, e.subject, '
            "e.html, e.text, v.invoice_ids FROM emails e JOIN envelopes v ON v.id = e.envelope_id"
        )
        out = {
            "firm_id": DEMO_FIRM_ID,
            "firm": self.firm_profile(),
            "public_base_url": f"http://127.0.0.1:{self.cfg.ports.gateway}",
            "snapshots": snaps,
            "emails": [
                dict(
                    zip(
                        (
                            "email_id",
                            "envelope_id",
                            "to",
                            "from_name",
                            "reply_to",
                            "subject",
                            "html",
                            "text",
                            "invoice_ids",
                        ),
                        e,
                        strict=True,
                    )
                )
                for e in emails
            ],
        }
        path = self.var_dir.parent / "baseline-input.json"
        path.write_text(json.dumps(out))
        self.args._baseline_input = path
        self.args._dump_for_baselines = False


def merge_peaks(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    per = dict(a.get("per_process_mb", {}))
    for k, v in b.get("per_process_mb", {}).items():
        per[k] = max(per.get(k, 0), v)
    return {"per_process_mb": per, "sum_mb": round(sum(per.values()), 1)}


LOG_PATTERNS = {
    "errors": re.compile(r" ERROR "),
    "warnings": re.compile(r" WARNING "),
    "tracebacks": re.compile(r"^Traceback"),
    "requeued": re.compile(r"failed; requeued"),
    "database_locked": re.compile(r"database is locked"),
    "retrying": re.compile(r"retrying in"),
    "clio_429": re.compile(r"Clio answered 429"),
    "db_pool_timeouts": re.compile(r"QueuePool limit"),
    "upstream_timeouts": re.compile(r"is not answering"),
    "render_pool_broke": re.compile(r"render pool broke"),
}


def scan_logs(log_dir: Path, ends: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if not log_dir.exists():
        return out
    for path in sorted(log_dir.glob("*.log")):
        counts: dict[str, Any] = {}
        first_error = None
        raw = path.read_bytes()
        if ends and path.stem in ends:
            raw = raw[: ends[path.stem]]
        for line in raw.decode(errors="replace").splitlines():
            for key, pat in LOG_PATTERNS.items():
                if pat.search(line):
                    counts[key] = counts.get(key, 0) + 1
                    if key == "errors" and first_error is None:
                        first_error = line[:300]
        if first_error:
            counts["first_error"] = first_error
        if counts:
            out[path.stem] = counts
    return out


# --- raw baselines ----------------------------------------------------------------------


def render_worker(input_path: str, out_dir: str) -> None:
    """Child process: render every snapshot once with render_invoice_pdf, as the envelope
    service would for an attachment (same firm profile, same pay link)."""
    from services.envelope import pdf
    from shared.events import FirmProfile, InvoiceSnapshot
    from shared.tokens import derive_token

    data = json.loads(Path(input_path).read_text())
    shown = getattr(pdf, "FIRM_FIELDS", None)  # the profile fields a PDF shows, if declared
    firm = FirmProfile.model_validate(
        {k: v for k, v in data["firm"].items() if shown is None or k in shown}
    )
    snaps = [InvoiceSnapshot.model_validate_json(s) for s in data["snapshots"].values()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rss_start = _status_kb(os.getpid(), "VmHWM") or 0
    t = now()
    first = None
    total_bytes = 0
    for snap in snaps:
        token = derive_token("dev-link-secret", "invoice", data["firm_id"], snap.invoice_id)
        pay_url = f"{data['public_base_url']}/pay/{token}" if snap.balance_minor > 0 else None
        content = pdf.render_invoice_pdf(snap, firm, pay_url=pay_url)
        if first is None:
            first = now() - t
        total_bytes += len(content)
        (out / f"{snap.invoice_id.replace(':', '_')}.pdf").write_bytes(content)
    elapsed = now() - t
    # The statements of combined envelopes (one per envelope of more than one bill), which
    # the send renders too: their pay link is the send's own, so none can be made ahead.
    by_id = {s.invoice_id: s for s in snaps}
    groups = [json.loads(e["invoice_ids"]) for e in data["emails"]]
    groups = [[by_id[i] for i in g if i in by_id] for g in groups if len(g) > 1]
    st = now()
    for group in groups:
        if hasattr(pdf, "render_statement_pdf"):
            pdf.render_statement_pdf(
                group,
                firm,
                client_name=group[0].client_name,
                pay_url=f"{data['public_base_url']}/pay/{'x' * 43}",
                statement_date=date.today(),
            )
    st_elapsed = now() - st
    print(
        json.dumps(
            {
                "statements": len(groups),
                "statement_seconds": round(st_elapsed, 2),
                "statements_per_second": round(len(groups) / st_elapsed, 2) if groups else None,
                "pdfs": len(snaps),
                "seconds": round(elapsed, 2),
                "pdfs_per_second": round(len(snaps) / elapsed, 2),
                "first_pdf_seconds": round(first or 0, 3),
                "mean_pdf_kb": round(total_bytes / max(1, len(snaps)) / 1024, 1),
                "peak_rss_mb": round((_status_kb(os.getpid(), "VmHWM") or 0) / 1024, 1),
                "rss_after_imports_mb": round(rss_start / 1024, 1),
            }
        )
    )


def render_baseline(input_path: Path, out_dir: Path) -> dict[str, Any]:
    log("baseline: rendering the same PDFs with render_invoice_pdf in one process")
    proc = subprocess.run(
        [sys.executable, __file__, "--render-worker", str(input_path), str(out_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"baseline: render {result}")
    return result


def build_messages(data: dict[str, Any], pdf_dir: Path | None) -> list[Any]:
    from services.mailer.message import build_message, message_id_for

    msgs = []
    for e in data["emails"]:
        attachments = []
        if pdf_dir is not None:
            for inv_id in json.loads(e["invoice_ids"]):
                path = pdf_dir / f"{inv_id.replace(':', '_')}.pdf"
                attachments.append(
                    {
                        "filename": f"invoice-{inv_id.split(':')[-1]}.pdf",
                        "content_type": "application/pdf",
                        "content_b64": base64.b64encode(path.read_bytes()).decode(),
                    }
                )
        content = {
            "to": json.loads(e["to"]),
            "cc": [],
            "from_name": e["from_name"],
            "reply_to": e["reply_to"],
            "subject": e["subject"],
            "html": e["html"],
            "text": e["text"],
            "attachments": attachments,
        }
        msgs.append(
            build_message(
                content,
                mail_from="billing@envelopepay.test",
                message_id=message_id_for(e["email_id"], "envelopepay.test"),
            )
        )
    return msgs


def smtp_baseline(
    data: dict[str, Any], pdf_dir: Path | None, concurrency: int, var_dir: Path
) -> dict[str, Any]:
    """aiosmtplib.send of the mailer's own MIME bytes, a connection per message (the mailer
    keeps its connections open: this is the plainer way), to a fresh sink."""
    import aiosmtplib

    msgs = build_messages(data, pdf_dir)
    cfg = StackConfig(var_dir=var_dir, ports=fresh_ports())
    stack = BenchStack(cfg)
    try:
        stack.start_sandboxes()
        counter = SinkCounter(stack.logs["mailsink"])
        counter.start()

        async def go() -> float:
            sem = asyncio.Semaphore(concurrency)

            async def one(m: Any) -> None:
                async with sem:
                    await aiosmtplib.send(
                        m.data,
                        sender=m.mail_from,
                        recipients=m.recipients,
                        hostname="127.0.0.1",
                        port=cfg.ports.smtp,
                        timeout=60,
                    )

            t = now()
            await asyncio.gather(*(one(m) for m in msgs))
            return now() - t

        elapsed = asyncio.run(go())
        deadline = now() + 10
        while counter.count < len(msgs) and now() < deadline:
            time.sleep(0.01)
        counter.stop()
        sink_pid = stack.procs["mailsink"].pid
        result = {
            "messages": len(msgs),
            "attachments": pdf_dir is not None,
            "concurrency": concurrency,
            "seconds": round(elapsed, 2),
            "messages_per_second": round(len(msgs) / elapsed, 1),
            "mean_message_kb": round(sum(len(m.data) for m in msgs) / len(msgs) / 1024, 1),
            "sink_cpu_seconds": round((_cpu_ticks(sink_pid) or 0) / TICK, 2),
            "sink_peak_rss_mb": round((_status_kb(sink_pid, "VmHWM") or 0) / 1024, 1),
        }
    finally:
        stack.stop()
    log(f"baseline: smtp {result}")
    return result


# --- report -----------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    cases = report["cases"]
    base = report.get("baselines", {})
    raw_pdf = (base.get("render") or {}).get("pdfs_per_second")
    print()
    print("=" * 100)
    print(
        f"code {report['code']['commit']} (+{len(report['code']['uncommitted_files'])} "
        f"uncommitted files outside bench/); bus prefetch {report['bus_prefetch']}"
        + (f"; service env {report['service_env']}" if report.get("service_env") else "")
    )
    print(
        f"Send All benchmark: {report['invoices']} unpaid invoices, {report['clients']} "
        f"clients, combine on -> {report['envelopes_expected']} envelopes; "
        f"{report['cpus']} CPUs; db {report['database']}"
    )
    print("-" * 100)
    hdr = f"{'case':<6}{'msgs':>10}{'time s':>9}{'msg/s':>8}{'inv/s':>8}{'POST s':>8}"
    hdr += f"{'done s':>8}{'pdf@clk':>8}{'peak MB':>9}  target"
    print(hdr)
    for c in cases:
        if "error" in c and "seconds" not in c:
            print(f"{c['case']:<6} ERROR {c['error']}")
            continue
        msgs = f"{c.get('delivered')}/{c.get('envelopes')}"
        if c["case"] in ("link", "warm"):
            ok = c.get("complete") and c["seconds"] < TARGET_FAST_S
            target = f"< {TARGET_FAST_S:.0f} s: {'MET' if ok else 'MISSED'}"
        else:
            ratio = (c.get("invoices_per_second") or 0) / raw_pdf if raw_pdf else None
            c["ratio_to_raw_render"] = round(ratio, 2) if ratio is not None else None
            ok = ratio is not None and ratio >= TARGET_COLD_RATIO and c.get("complete")
            target = (
                f">= {TARGET_COLD_RATIO} x raw {raw_pdf} pdf/s: ratio "
                f"{c['ratio_to_raw_render']} {'MET' if ok else 'MISSED'}"
            )
        print(
            f"{c['case']:<6}{msgs:>10}{c['seconds']:>9}{c.get('messages_per_second') or 0:>8}"
            f"{c.get('invoices_per_second') or 0:>8}{sum(c.get('post_seconds') or [0]):>8.2f}"
            f"{c.get('progress_done_seconds') or '-':>8}{c.get('pdfs_ready_at_click', '-'):>8}"
            f"{c['peak_lifetime']['sum_mb']:>9}  {target}"
        )
    print("-" * 100)
    print("peak RSS per process, MB (lifetime / since the click):")
    names = sorted({n for c in cases for n in c.get("peak_lifetime", {}).get("per_process_mb", {})})
    print(f"  {'process':<28}" + "".join(f"{c['case']:>18}" for c in cases))
    for n in names:
        cells = []
        for c in cases:
            life = c.get("peak_lifetime", {}).get("per_process_mb", {}).get(n)
            since = c.get("peak_since_click", {}).get("per_process_mb", {}).get(n)
            cells.append(
                f"{life if life is not None else '-'} / {since if since is not None else '-'}"
            )
        print(f"  {n:<28}" + "".join(f"{x:>18}" for x in cells))
    sums = [
        f"{c.get('peak_lifetime', {}).get('sum_mb', '-')} / "
        f"{c.get('peak_since_click', {}).get('sum_mb', '-')}"
        for c in cases
    ]
    print(f"  {'SUM':<28}" + "".join(f"{x:>18}" for x in sums))
    print("CPU seconds per process during the send (click -> last message):")
    for c in cases:
        print(f"  {c['case']:<6} {c.get('cpu_seconds_during_send')}")
        m = c.get("machine_cpu_during_send")
        if m:
            print(
                f"         machine: {m['busy_cpu_seconds']} of {m['capacity_cpu_seconds']} "
                f"CPU-s busy; stack {m['stack_cpu_seconds']}, RabbitMQ "
                f"{m.get('rabbitmq_cpu_seconds')}, other processes on the machine "
                f"{m['other_processes_cpu_seconds']}"
            )
        q = {k.split(".", 2)[2]: v for k, v in (c.get("queues_at_end") or {}).items() if v}
        if q:
            print(f"         left on the bus at the end: {q}")
        if c.get("pdfs_rendered_during_send"):
            print(f"         PDFs rendered after the click: {c['pdfs_rendered_during_send']}")
    print("-" * 100)
    if base:
        r = base.get("render", {})
        print(
            f"raw render (1 process): {r.get('pdfs')} invoice PDFs in {r.get('seconds')} s = "
            f"{r.get('pdfs_per_second')} PDFs/s; peak RSS {r.get('peak_rss_mb')} MB; "
            f"mean {r.get('mean_pdf_kb')} KB/PDF; + {r.get('statements')} statements at "
            f"{r.get('statements_per_second')}/s"
        )
        for s in base.get("smtp", []):
            print(
                f"raw SMTP ({'attachments' if s.get('attachments') else 'link-style'}, "
                f"concurrency {s.get('concurrency')}): {s.get('messages')} msgs in "
                f"{s.get('seconds')} s = {s.get('messages_per_second')} msg/s; "
                f"mean {s.get('mean_message_kb')} KB; sink CPU {s.get('sink_cpu_seconds')} s"
            )
    for c in cases:
        notes = []
        if c.get("review", {}).get("single_post_status") not in (None, 303):
            notes.append(
                f"review of all in one POST refused ({c['review'].get('single_post_error')}); "
                f"posted in chunks of {c['review'].get('chunked_posts')} invoices"
            )
        if c.get("peak_sqlite_connections"):
            notes.append(
                f"peak open SQLite connections {c['peak_sqlite_connections']}; "
                f"peak threads {c.get('peak_threads')}"
            )
        if c.get("pg_connections"):
            notes.append(f"PostgreSQL connections: {c['pg_connections']}")
        if c.get("envelope_api_errors_during_sync"):
            notes.append(f"envelope API errors during sync: {c['envelope_api_errors_during_sync']}")
        if c.get("render_settle"):
            notes.append(f"AOT rendering: {c['render_settle']}")
        if c.get("statement_settle"):
            notes.append(f"statements rendered while reviewing: {c['statement_settle']}")
        if c.get("prefetch", {}).get("prefetched"):
            notes.append(f"prefetched via on-demand endpoint: {c['prefetch']}")
        if c.get("log_findings"):
            counts = {
                k: {kk: vv for kk, vv in v.items() if kk != "first_error"}
                for k, v in c["log_findings"].items()
            }
            notes.append(f"logs up to the end of the send: {counts}")
        for err in c.get("post_errors", []):
            notes.append(f"Send All POST failed: {err}")
        if c.get("stalled_after_seconds") is not None:
            notes.append(f"stalled: nothing moved after {c['stalled_after_seconds']} s")
        for svc, prof in (c.get("profile") or {}).items():
            if isinstance(prof, dict) and prof.get("samples"):
                top = "; ".join(f"{f} {pct}%" for f, pct in prof["inclusive_project_pct"][:6])
                notes.append(f"profile {svc} ({prof['samples']} samples): {top}")
        if c.get("progress", {}).get("failed"):
            notes.append(f"failures: {c.get('failures_sample')}")
        for n in notes:
            print(f"  [{c['case']}] {n}")
    print("=" * 100)


def parse_service_env(items: list[str]) -> dict[str, dict[str, str]]:
    """--service-env envelope:DB_MAX_OVERFLOW=200 -> {"envelope": {"DB_MAX_OVERFLOW": "200"}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        service, _, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not (service and key and eq):
            raise SystemExit(f"--service-env wants SERVICE:KEY=VALUE, not {item!r}")
        out.setdefault(service, {})[key] = value
    return out


def bus_prefetch() -> int:
    """The consumers' prefetch (per queue), which the mailer's SMTP concurrency follows."""
    import inspect

    from shared.bus import Bus
    from shared.settings import ServiceSettings

    field = ServiceSettings.model_fields.get("bus_prefetch")
    if field is not None and isinstance(field.default, int):
        return field.default
    return int(inspect.signature(Bus.__init__).parameters["prefetch"].default)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", default="link,warm,cold")
    p.add_argument("--invoices", type=int, default=1000)
    p.add_argument("--clients", type=int, default=300)
    p.add_argument("--postgres", action="store_true", help="services on PostgreSQL")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument(
        "--baseline-input",
        help="baselines only, from an earlier run's var dir file baseline-input.json",
    )
    p.add_argument(
        "--stock-clio",
        action="store_true",
        help="the Clio sandbox as is (its line-item listing makes a 1,000-bill sync take ~30 min)",
    )
    p.add_argument(
        "--no-prefetch",
        action="store_true",
        help="warm case: do not render PDFs that ahead-of-time rendering left out",
    )
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=15,
        help="ahead-of-time rendering counts as settled after this long without growth",
    )
    p.add_argument("--sync-timeout", type=float, default=600)
    p.add_argument("--send-timeout", type=float, default=1200)
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=150,
        help="stop waiting when no message and no progress moved for this long",
    )
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="SERVICE:KEY=VALUE",
        help="extra environment for one service, e.g. envelope:DB_MAX_OVERFLOW=200 "
        "(diagnosis: shown in the results next to the figures)",
    )
    p.add_argument(
        "--py-spy",
        metavar="PATH",
        help="py-spy binary: profile envelope, mailer and gateway during each send "
        "(diagnosis only: it takes CPU from the stack)",
    )
    p.add_argument(
        "--smtp-concurrency",
        type=int,
        default=None,
        help="raw SMTP baseline concurrency (default: the bus prefetch, as the mailer)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=900,
        help="invoices per review POST, only if one POST of all is refused",
    )
    p.add_argument("--render-worker", nargs=2, metavar=("INPUT", "OUT_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.render_worker:
        render_worker(*args.render_worker)
        return
    BenchStack.stock_clio = args.stock_clio
    # Stop cleanly (every stack stopped in its finally) on Ctrl-C and on kill, also when
    # started in the background, where SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.baseline_input:
        cases = []  # baselines only
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    # The seeding and the first sync are not what is measured: let the sandbox serve the
    # 1,000+ line-item requests of the first sync without Clio's 600-per-minute limit.
    os.environ["CLIO_SANDBOX_RATE_LIMIT"] = "1000000"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = VAR_ROOT / f"send_all-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan.make(args.clients, args.invoices)
    args._dump_for_baselines = not args.no_baselines
    args._baseline_input = args.baseline_input
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "invoices": args.invoices,
        "clients": args.clients,
        "envelopes_expected": plan.envelopes,
        "largest_client_bills": max(plan.per_client),
        "cpus": os.cpu_count(),
        "database": "postgresql" if args.postgres else "sqlite",
        "code": code_version(),
        "bus_prefetch": bus_prefetch(),
        "service_env": parse_service_env(args.service_env),
        "var_dir": str(run_dir),
        "targets": {
            "link_and_warm_seconds_below": TARGET_FAST_S,
            "cold_ratio_to_raw_render_at_least": TARGET_COLD_RATIO,
        },
        "cases": [],
    }
    log(
        f"plan: {args.invoices} invoices for {args.clients} clients -> {plan.envelopes} "
        f"envelopes (largest client {max(plan.per_client)} bills); var dir {run_dir}"
    )
    out_path = RESULTS_DIR / f"send_all-{stamp}.json"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    try:
        for name in cases:
            report["cases"].append(Case(name, plan, args, run_dir).run())
            out_path.write_text(json.dumps(report, indent=2, default=str))
        if not args.no_baselines and args._baseline_input:
            data = json.loads(Path(args._baseline_input).read_text())
            pdf_dir = run_dir / "baseline-pdfs"
            base: dict[str, Any] = {"loadavg_before": open("/proc/loadavg").read().split()[:3]}
            base["render"] = render_baseline(args._baseline_input, pdf_dir)
            concurrency = args.smtp_concurrency or bus_prefetch()
            base["smtp"] = [
                smtp_baseline(data, None, 1, run_dir / "smtp-link-seq"),
                smtp_baseline(data, None, concurrency, run_dir / "smtp-link"),
            ]
            if "error" not in base["render"]:
                base["smtp"].append(
                    smtp_baseline(data, pdf_dir, concurrency, run_dir / "smtp-attach")
                )
            report["baselines"] = base
    finally:
        report["finished_at"] = datetime.now(UTC).isoformat()
        if report["cases"]:
            print_report(report)
        elif report.get("baselines"):
            print(json.dumps(report["baselines"], indent=2, default=str))
        out_path.write_text(json.dumps(report, indent=2, default=str))
        log(f"results: {out_path}")


if __name__ == "__main__":
    main()
