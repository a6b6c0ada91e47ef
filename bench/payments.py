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
import hashlib
import hmac
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
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
    csrf_of,
    service_env,
)
from services.payments import rules  # noqa: E402
from shared.bus import Bus, queue_name  # noqa: E402
from shared.events import (  # noqa: E402
    Event,
    FirmProfile,
    FirmUpdated,
    InvoiceSnapshot,
    InvoiceUpdated,
    PayLinkIssued,
    PayLinkItem,
)
from shared.tokens import derive_token, hash_token  # noqa: E402
from shared.topology import SUBSCRIPTIONS  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
VAR_ROOT = ROOT / "var" / "bench"
INTERNAL = {"X-Internal-Token": "dev-internal-token"}
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_ADMIN = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SEED = 20_260_404
# The webhook endpoint's signing secret, given to the payments service as
# STRIPE_WEBHOOK_SECRET (test mode then verifies with it instead of its built-in one).
WEBHOOK_SECRET = "whsec_envelopepay_bench"  # noqa: S105 - a benchmark's own secret
LINK_SECRET = "bench-link-secret"  # noqa: S105 - how the bench derives link tokens
BENCH_FIRM_ID = "6b0e5c1e-0bec-4a7e-9d2f-000000000004"
TICK = os.sysconf("SC_CLK_TCK")

# What happens to one checkout session, as Stripe would report it, and how often.
STORIES = {
    "card": 0.55,  # paid by card
    "card_retry": 0.05,  # a card declined, then another card paid
    "card_refund": 0.10,  # paid by card, refunded later on Stripe's dashboard (part or all)
    "ach": 0.20,  # ACH debit, processing, settled three days later
    "ach_failed": 0.07,  # ACH debit returned R01 before it settled
    "ach_pending": 0.03,  # ACH debit still processing
}
UNIQUE_EVENTS = {
    "card": 2,
    "card_retry": 3,
    "card_refund": 3,
    "ach": 4,
    "ach_failed": 4,
    "ach_pending": 2,
}
# The bus events each story's payment must announce, in this order.
ANNOUNCED = {
    "card": ["payment.succeeded"],
    "card_retry": ["payment.succeeded"],
    "card_refund": ["payment.succeeded", "payment.refunded"],
    "ach": ["payment.processing", "payment.succeeded"],
    "ach_failed": ["payment.processing", "payment.failed"],
    "ach_pending": ["payment.processing"],
}


def now() -> float:
    return time.perf_counter()


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def latency_ms(values: list[float]) -> dict[str, Any]:
    v = sorted(values)
    out: dict[str, Any] = {"n": len(v)}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        x = pct(v, q)
        out[name] = round(x * 1000, 1) if x is not None else None
    out["max"] = round(v[-1] * 1000, 1) if v else None
    out["mean"] = round(sum(v) / len(v) * 1000, 1) if v else None
    return out


# --- processes and the machine -------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class CpuWindow:
    """CPU seconds of the stack's processes, of this process (the load generator) and of the
    whole machine over a measured window: other work on the machine skews every figure."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def __enter__(self) -> CpuWindow:
        self.t0 = now()
        self.procs0 = {n: cpu_ticks(p.pid) for n, p in self.stack.procs.items()}
        self.machine0 = machine_busy_ticks()
        self.me0 = os.times()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = now() - self.t0
        self.procs1 = {n: cpu_ticks(p.pid) for n, p in self.stack.procs.items()}
        self.machine1 = machine_busy_ticks()
        self.me1 = os.times()

    def report(self) -> dict[str, Any]:
        stack = {n: round((self.procs1.get(n, 0) - t) / TICK, 2) for n, t in self.procs0.items()}
        me = (self.me1.user - self.me0.user) + (self.me1.system - self.me0.system)
        busy = (self.machine1 - self.machine0) / TICK
        return {
            "seconds": round(self.seconds, 2),
            "stack_cpu_seconds": stack,
            "load_generator_cpu_seconds": round(me, 2),
            "machine_busy_cpu_seconds": round(busy, 2),
            "machine_capacity_cpu_seconds": round(self.seconds * (os.cpu_count() or 1), 2),
            "other_processes_cpu_seconds": round(max(busy - sum(stack.values()) - me, 0), 2),
        }


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def scan_log(path: Path, since: int = 0) -> dict[str, Any]:
    """Errors and tracebacks a service logged from byte `since` on (a 500's traceback is in
    the log, never shown to the client)."""
    if not path.exists():
        return {}
    with open(path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    errors = [
        line
        for line in text.splitlines()
        if " ERROR " in line or " CRITICAL " in line or line.startswith("ERROR:")
    ]
    out: dict[str, Any] = {"errors": len(errors), "tracebacks": text.count("Traceback")}
    if errors:
        out["first_error"] = errors[0][:400]
    return out


# --- databases ----------------------------------------------------------------------------


class Db:
    """Read-only peeks into a service's database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite"):
            path = self.url.split(":///", 1)[1]
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                return list(conn.execute(sql).fetchall())
            finally:
                conn.close()
        return asyncio.run(self._pg(sql))

    def count(self, sql: str) -> int:
        return int(self.rows(sql)[0][0] or 0)

    async def _pg(self, sql: str) -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
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


class BenchStack:
    """Only the services a part needs, on free ports, a unique exchange and fresh databases
    (SQLite files in the part's var dir, or PostgreSQL databases made for it and dropped)."""

    def __init__(
        self, var_dir: Path, services: tuple[str, ...], postgres: bool, env: dict[str, str]
    ) -> None:
        self.services = services
        self.pg_prefix = f"epb_{uuid.uuid4().hex[:10]}" if postgres else None
        template = None
        if self.pg_prefix:
            base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace(
                "postgresql://", "postgresql+asyncpg://", 1
            )
            template = f"{base}/{self.pg_prefix}_{{service}}"
        self.cfg = StackConfig(
            var_dir=var_dir,
            ports=fresh_ports(),
            amqp_url=AMQP_URL,
            database_url_template=template,
            exchange=f"bench.{uuid.uuid4().hex[:10]}",
            sync_interval_seconds=86_400,
            extra_env={s: dict(env) for s in services},
            queue_expires_ms=10 * 60 * 1000,
        )
        self.stack = Stack(self.cfg)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{getattr(self.cfg.ports, service)}"

    def db(self, service: str) -> Db:
        return Db(self.cfg.database_url(service))

    def start(self, demo_user: bool = False) -> None:
        if self.pg_prefix:
            asyncio.run(
                _pg_admin([f'CREATE DATABASE "{self.pg_prefix}_{s}"' for s in self.services])
            )
        for service in self.services:
            subprocess.run(
                [sys.executable, "-m", f"services.{service}", "migrate"],
                cwd=ROOT,
                env=service_env(self.cfg, service),
                check=True,
                capture_output=True,
            )
        if demo_user:
            self.stack.create_demo_user()
        self.stack.start_services(only=self.services)

    def stop(self) -> None:
        self.stack.stop()
        try:
            asyncio.run(delete_bus_objects(self.cfg.exchange))
        except Exception as exc:  # cleanup only: the queues expire on their own anyway
            log(f"could not delete the bench's queues: {exc}")
        if self.pg_prefix:
            asyncio.run(
                _pg_admin(
                    [
                        f'DROP DATABASE IF EXISTS "{self.pg_prefix}_{s}" WITH (FORCE)'
                        for s in self.services
                    ]
                )
            )


async def delete_bus_objects(exchange: str) -> None:
    import aio_pika

    conn = await aio_pika.connect(AMQP_URL)
    try:
        channel = await conn.channel()
        for service, events in SUBSCRIPTIONS.items():
            for ev in events:
                name = queue_name(exchange, service, ev.routing_key)
                await channel.queue_delete(name)
                await channel.queue_delete(name + ".dlq")
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(exchange + ".dlx")
    finally:
        await conn.close()


# --- the world: bills and pay links, published as sync and envelope publish them -----------


@dataclass
class BillSpec:
    invoice_id: str
    number: str
    kind: str
    client: int
    balance_minor: int
    due_at: date


@dataclass
class LinkSpec:
    token: str
    send_id: str
    client: int
    bills: list[BillSpec]
    pay_all_outstanding: bool = False

    @property
    def amount_minor(self) -> int:
        return sum(b.balance_minor for b in self.bills)


@dataclass
class World:
    firm_id: str
    clients: int
    links: list[LinkSpec] = field(default_factory=list)
    bills: list[BillSpec] = field(default_factory=list)

    @classmethod
    def make(
        cls,
        rng: random.Random,
        firm_id: str,
        links: int,
        items: list[int],
        pay_all_share: float,
        clients: int,
    ) -> World:
        """`links` links, the i-th with items[i] bills of its own, for `clients` clients
        (skewed: a few clients have many links, so their full balance is long)."""
        world = cls(firm_id=firm_id, clients=clients)
        weights = [1 / (i + 1) ** 0.8 for i in range(clients)]
        today = date.today()
        n = 0
        for i in range(links):
            client = i if i < clients else rng.choices(range(clients), weights=weights)[0]
            bills = []
            for _ in range(items[i]):
                n += 1
                trust = rng.random() < 0.1
                bill = BillSpec(
                    invoice_id=f"clio:{700_000 + n}",
                    number=f"{'TR' if trust else 'INV'}-{20_000 + n}",
                    kind="trust_request" if trust else "invoice",
                    client=client,
                    balance_minor=rng.randint(100, 5_000) * 100 + rng.choice([0, 50, 99]),
                    due_at=today + timedelta(days=rng.randint(-20, 40)),
                )
                bills.append(bill)
                world.bills.append(bill)
            send_id = str(uuid.UUID(int=rng.getrandbits(128)))
            world.links.append(
                LinkSpec(
                    # As envelope mints a send's link: derived from the send id.
                    token=derive_token(LINK_SECRET, "send", send_id),
                    send_id=send_id,
                    client=client,
                    bills=bills,
                    pay_all_outstanding=rng.random() < pay_all_share,
                )
            )
        return world

    def client_name(self, client: int) -> str:
        return f"Bench Client {client:04d} LLC"

    def client_email(self, client: int) -> str:
        return f"client{client:04d}@bench.example"

    def bill_events(self, firm: FirmProfile | None) -> list[Event]:
        """What sync publishes (and the gateway, for the firm): a firm.updated, and an
        invoice.updated per bill."""
        out: list[Event] = [FirmUpdated(firm_id=self.firm_id, firm=firm)] if firm else []
        for b in self.bills:
            out.append(
                InvoiceUpdated(
                    firm_id=self.firm_id,
                    invoice=InvoiceSnapshot(
                        invoice_id=b.invoice_id,
                        source_id=b.invoice_id.split(":")[1],
                        number=b.number,
                        kind=b.kind,  # type: ignore[arg-type]
                        state="awaiting_payment",
                        client_id=f"clio-contact:{b.client}",
                        client_name=self.client_name(b.client),
                        client_email=self.client_email(b.client),
                        issued_at=b.due_at - timedelta(days=30),
                        due_at=b.due_at,
                        currency="USD",
                        total_minor=b.balance_minor,
                        balance_minor=b.balance_minor,
                    ),
                )
            )
        return out

    def link_events(self) -> list[Event]:
        """What envelope publishes when it sends: a paylink.issued per link."""
        out: list[Event] = []
        expires = datetime.now(UTC) + timedelta(days=90)
        for link in self.links:
            out.append(
                PayLinkIssued(
                    firm_id=self.firm_id,
                    link_id=link.send_id,
                    token_hash=hash_token(link.token),
                    envelope_id=str(uuid.uuid5(uuid.NAMESPACE_URL, link.send_id)),
                    client_id=f"clio-contact:{link.client}",
                    client_name=self.client_name(link.client),
                    client_email=self.client_email(link.client),
                    items=[
                        PayLinkItem(
                            invoice_id=b.invoice_id,
                            number=b.number,
                            kind=b.kind,  # type: ignore[arg-type]
                            currency="USD",
                            balance_minor=b.balance_minor,
                            due_at=b.due_at,
                        )
                        for b in link.bills
                    ],
                    pay_all_outstanding=link.pay_all_outstanding,
                    expires_at=expires,
                )
            )
        return out


async def publish(exchange: str, events: list[Event], concurrency: int = 32) -> float:
    """Publish on the bus through the services' own publisher (persistent, confirmed)."""
    bus = Bus(service="bench", amqp_url=AMQP_URL, exchange=exchange)
    await bus.broker.connect()
    sem = asyncio.Semaphore(concurrency)
    started = now()

    async def one(ev: Event) -> None:
        async with sem:
            await bus.publish_raw(
                json.loads(ev.model_dump_json()), ev.routing_key, str(ev.event_id), {}
            )

    try:
        await asyncio.gather(*(one(ev) for ev in events))
    finally:
        await bus.stop()
    return now() - started


def wait_handled(db: Db, firm_id: str, routing_key: str, want: int, timeout: float) -> None:
    """Until payments' inbox has `want` events of this kind for the firm: handled, not only
    received (a handler that lost a race is rolled back and redelivered)."""
    started = now()
    handled = 0
    while now() - started < timeout:
        handled = db.count(
            f"SELECT count(*) FROM inbox WHERE routing_key = '{routing_key}' "
            f"AND firm_id = '{firm_id}'"
        )
        if handled >= want:
            return
        time.sleep(0.25)
    raise RuntimeError(f"payments handled {handled} of {want} {routing_key} in {timeout:.0f} s")


def seed(
    exchange: str, db: Db, world: World, firm: FirmProfile | None, timeout: float
) -> dict[str, Any]:
    """Bills first, as sync brings them in before anyone sends them; then the links, as
    envelope issues them when it sends. Each waited for until payments handled it all."""
    out: dict[str, Any] = {}
    bills = world.bill_events(firm)
    out["bill_events"] = len(bills)
    t = now()
    asyncio.run(publish(exchange, bills))
    if firm is not None:
        wait_handled(db, world.firm_id, "firm.updated", 1, timeout)
    wait_handled(db, world.firm_id, "invoice.updated", len(world.bills), timeout)
    out["bills_seconds"] = round(now() - t, 2)
    if firm is None:  # the firm comes from elsewhere (the gateway): it must be known too
        deadline = now() + timeout
        while not db.count(f"SELECT count(*) FROM firms WHERE firm_id = '{world.firm_id}'"):
            if now() > deadline:
                raise RuntimeError("payments never learnt the firm")
            time.sleep(0.25)
    links = world.link_events()
    out["link_events"] = len(links)
    t = now()
    asyncio.run(publish(exchange, links))
    wait_handled(db, world.firm_id, "paylink.issued", len(world.links), timeout)
    out["links_seconds"] = round(now() - t, 2)
    return out


# --- part 1: webhooks ---------------------------------------------------------------------


@dataclass
class Story:
    kind: str
    link: LinkSpec
    refund_minor: int = 0
    session_id: str = ""
    events: list[bytes] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    @property
    def unique_events(self) -> int:
        return UNIQUE_EVENTS[self.kind]

    @property
    def method(self) -> str:
        return "ach" if self.kind.startswith("ach") else "card"

    @property
    def status(self) -> str:
        if self.kind == "card_refund":
            full = self.refund_minor >= self.link.amount_minor
            return "refunded" if full else "partially_refunded"
        return {"ach_failed": "failed", "ach_pending": "processing"}.get(self.kind, "succeeded")

    @property
    def fee_minor(self) -> int:
        if self.status in ("failed", "processing"):
            return 0
        return rules.processing_fee(self.method, self.link.amount_minor)


def event_body(rng: random.Random, kind: str, at: datetime, **data: Any) -> tuple[str, bytes]:
    """A webhook body as test mode takes it (the ledger's normalised event, in Stripe's
    envelope: id, type, created, data); fields that are None are left out, as they are
    absent from the Stripe object they come from."""
    event_id = f"evt_{rng.getrandbits(96):024x}"
    body = {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": int(at.timestamp()),
        "livemode": False,
        "data": {k: v for k, v in data.items() if v is not None},
    }
    return event_id, json.dumps(body, separators=(",", ":")).encode()


def story_events(rng: random.Random, st: Story, t0: datetime) -> None:
    """The events Stripe sends for one checkout session, normalised as StripeProcessor
    normalises them: checkout.session.* carry our session id, the method and the payer;
    payment_intent.* carry the session id (from metadata) and the charge, and a method only
    when the event shows one (an intent that lists card and us_bank_account and succeeded
    names none); charge.refunded for a refund made on Stripe's dashboard names the intent,
    the charge and the amount, and none of our refund ids."""
    amount = st.link.amount_minor
    pi, ch = f"pi_{rng.getrandbits(96):024x}", f"ch_{rng.getrandbits(96):024x}"
    payer = {"payer_name": f"Payer {st.link.client:04d}", "payer_email": "payer@bench.example"}
    paid, later = t0 + timedelta(minutes=1), t0 + timedelta(days=3)
    Ev = tuple[str, datetime, dict[str, Any]]

    def session(kind: str, at: datetime, method: str, **extra: Any) -> Ev:
        ours = {"session_id": st.session_id, "payment_ref": pi, "method": method}
        return kind, at + timedelta(seconds=1), ours | {"amount_minor": amount} | payer | extra

    def intent(kind: str, at: datetime, **extra: Any) -> Ev:
        ours = {"session_id": st.session_id, "payment_ref": pi, "charge_ref": ch}
        return kind, at, ours | {"amount_minor": amount} | extra

    evs: list[Ev] = []
    if st.kind == "card_retry":  # payment_intent.payment_failed, the first card declined
        declined = {"failure_code": "card_declined", "failure_reason": "Your card was declined."}
        evs.append(
            intent(
                "payment.failed",
                t0,
                charge_ref=f"ch_{rng.getrandbits(96):024x}",
                method="card",
                last4="0002",
                **declined,
                **payer,
            )
        )
    if st.method == "card":  # checkout.session.completed (paid), payment_intent.succeeded
        evs += [session("payment.succeeded", paid, "card"), intent("payment.succeeded", paid)]
    else:  # checkout.session.completed (unpaid), payment_intent.processing
        evs += [
            session("payment.processing", paid, "ach"),
            intent("payment.processing", paid, method="ach"),
        ]
    if st.kind == "ach":  # checkout.session.async_payment_succeeded, payment_intent.succeeded
        evs += [session("payment.succeeded", later, "ach"), intent("payment.succeeded", later)]
    if st.kind == "ach_failed":  # ...async_payment_failed, payment_intent.payment_failed
        evs += [
            session("payment.failed", later, "ach", failure_reason="The bank payment failed."),
            intent(
                "payment.failed",
                later,
                method="ach",
                failure_code="R01",
                failure_reason="Insufficient funds.",
                last4="2227",
            ),
        ]
    if st.kind == "card_refund":  # charge.refunded
        refund = {"amount_minor": st.refund_minor, "refund_ref": f"re_{rng.getrandbits(96):024x}"}
        evs.append(
            (
                "refund.succeeded",
                t0 + timedelta(days=2),
                {"payment_ref": pi, "charge_ref": ch} | refund,
            )
        )
    assert len(evs) == st.unique_events
    for kind, at, data in evs:
        event_id, payload = event_body(rng, kind, at, **data)
        st.event_ids.append(event_id)
        st.events.append(payload)


def plan_stories(rng: random.Random, unique_target: int) -> tuple[World, list[Story]]:
    """Stories until their events reach `unique_target`; a pay link (1-3 bills) each."""
    kinds: list[str] = []
    total = 0
    names, weights = list(STORIES), list(STORIES.values())
    while total < unique_target:
        kind = rng.choices(names, weights=weights)[0]
        kinds.append(kind)
        total += UNIQUE_EVENTS[kind]
    items = [rng.choice([1, 1, 1, 2, 2, 3]) for _ in kinds]
    world = World.make(rng, BENCH_FIRM_ID, len(kinds), items, 0.0, clients=max(1, len(kinds) // 3))
    stories = []
    for kind, link in zip(kinds, world.links, strict=True):
        refund = 0
        if kind == "card_refund":
            refund = link.amount_minor if rng.random() < 0.3 else link.amount_minor // 2
        stories.append(Story(kind, link, refund_minor=refund))
    return world, stories


async def open_sessions(
    payments_url: str, stories: list[Story], concurrency: int = 8
) -> dict[str, int]:
    """A checkout session per link, through the internal API, as the gateway asks for one
    when the client clicks Pay (test mode opens no processor session, so no network). A
    5xx is tried again (as a client clicks Pay again), and counted."""
    sem = asyncio.Semaphore(concurrency)
    failures: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=payments_url, headers=INTERNAL, timeout=120) as client:

        async def one(st: Story) -> None:
            last = ""
            for _ in range(3):
                try:
                    async with sem:
                        resp = await client.post(
                            f"/internal/paylinks/{st.link.token}/checkout",
                            json={"invoice_ids": [], "scope": "items"},
                        )
                except httpx.TransportError as exc:
                    key = last = type(exc).__name__
                else:
                    if resp.status_code == 200:
                        st.session_id = resp.json()["session_id"]
                        return
                    key, last = str(resp.status_code), f"{resp.status_code} {resp.text[:300]}"
                    if resp.status_code < 500:
                        break
                failures[key] = failures.get(key, 0) + 1
            raise RuntimeError(f"checkout for a link: {last}")

        await asyncio.gather(*(one(st) for st in stories))
    return failures


def signature(payload: bytes, secret: str) -> str:
    """Stripe-Signature: t=<unix time>,v1=<HMAC-SHA256 of "<t>.<raw body>">, made at send time
    as Stripe does (a delivery repeated later carries a new timestamp, the same body)."""
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@dataclass
class Delivery:
    payload: bytes
    event_id: str
    first: bool  # the first delivery of its event in the sending order
    latency: float = 0.0
    status: str = ""
    sent_at: float = 0.0  # seconds from the start of the run
    detail: str = ""


async def deliver(url: str, deliveries: list[Delivery], concurrency: int) -> float:
    """Post every delivery, `concurrency` at a time (each worker a client waiting for its
    answer before the next); returns the wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    todo = iter(deliveries)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def worker() -> None:
            for d in todo:
                headers = {
                    "Stripe-Signature": signature(d.payload, WEBHOOK_SECRET),
                    "Content-Type": "application/json",
                }
                t = now()
                d.sent_at = t - started
                try:
                    resp = await client.post(url, content=d.payload, headers=headers)
                    d.status = str(resp.status_code)
                    if resp.status_code != 200:
                        d.detail = resp.text[:200]
                except httpx.HTTPError as exc:
                    d.status = type(exc).__name__
                    d.detail = repr(exc)[:200]
                d.latency = now() - t

        started = now()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return now() - started


def check_ledger(db: Db, stories: list[Story], unique: int) -> dict[str, Any]:
    """The ledger the events should make, compared with the one they made."""
    by_session = {st.session_id: st for st in stories}
    payments = {
        r[1]: r
        for r in db.rows(
            "SELECT id, session_id, status, method, amount_minor, refunded_minor, fee_minor "
            "FROM payments"
        )
    }
    deposits: dict[str, list[tuple[Any, ...]]] = {}
    for r in db.rows(
        "SELECT payment_id, account, amount_minor, fee_minor, transferred, status FROM deposits"
    ):
        deposits.setdefault(r[0], []).append(r)
    announced: dict[str, list[tuple[str, str]]] = {}
    for key, payload in db.rows(
        "SELECT routing_key, payload FROM outbox WHERE routing_key LIKE 'payment.%' ORDER BY id"
    ):
        body = json.loads(payload)
        announced.setdefault(body["payment_id"], []).append((key, body.get("method")))
    recorded = db.count("SELECT count(*) FROM processor_events")
    orphans = db.count("SELECT count(*) FROM processor_events WHERE payment_id IS NULL")
    sessions_left = db.count("SELECT count(*) FROM checkout_sessions WHERE payment_id IS NULL")

    mismatches: dict[str, list[str]] = {}

    def bad(what: str, detail: str) -> None:
        mismatches.setdefault(what, []).append(detail)

    as_expected = 0
    for session_id, st in by_session.items():
        row = payments.get(session_id)
        if row is None:
            bad("payment missing", f"{st.kind} {session_id}")
            continue
        pid, _, status, method, amount, refunded, fee = row
        ok = True
        want = (st.status, st.method, st.link.amount_minor, st.refund_minor, st.fee_minor)
        got = (status, method, amount, refunded, fee)
        if got != want:
            ok = False
            bad(
                "payment state",
                f"{st.kind} {pid}: (status, method, amount, refunded, fee) {got}, expected {want}",
            )
        if st.status in ("succeeded", "partially_refunded", "refunded"):
            rows = deposits.get(pid, [])
            pending = [r for r in rows if not bool(r[4])]
            dep_amount = sum(r[2] for r in rows)
            dep_fee = sum(r[3] for r in rows)
            if pending:
                ok = False
                bad("deposit not transferred", f"{st.kind} {pid}: {len(pending)} pending")
            if dep_amount != st.link.amount_minor or dep_fee != fee:
                ok = False
                bad(
                    "deposits disagree with the payment",
                    f"{st.kind} {pid} ({method}): deposits amount {dep_amount} fee {dep_fee}; "
                    f"payment amount {amount} fee {fee}",
                )
        elif deposits.get(pid):
            ok = False
            bad("deposit for an unpaid payment", f"{st.kind} {pid}: {deposits[pid]}")
        got_ann = announced.get(pid, [])
        want_ann = [(k, st.method) for k in ANNOUNCED[st.kind]]
        if got_ann != want_ann:
            ok = False
            bad("announcements", f"{st.kind} {pid}: {got_ann}, expected {want_ann}")
        as_expected += ok
    extra = set(payments) - set(by_session)
    if extra:
        bad("unexpected payments", f"{len(extra)} for sessions the bench did not open")
    counts = {
        "payments_expected": len(stories),
        "payments_found": len(payments),
        "payments_as_expected": as_expected,
        "events_recorded": recorded,
        "events_unique_sent": unique,
        "events_waiting_for_a_payment": orphans,
        "sessions_without_payment": sessions_left,
        "announcements": sum(len(v) for v in announced.values()),
        "announcements_expected": sum(len(ANNOUNCED[st.kind]) for st in stories),
    }
    counts["equal"] = (
        not mismatches
        and as_expected == len(stories)
        and recorded == unique
        and orphans == 0
        and sessions_left == 0
    )
    counts["mismatches"] = {
        k: {"count": len(v), "examples": v[:5]} for k, v in sorted(mismatches.items())
    }
    by_kind: dict[str, dict[str, int]] = {}
    for st in stories:
        row = payments.get(st.session_id)
        cell = by_kind.setdefault(st.kind, {"payments": 0, "wrong": 0})
        cell["payments"] += 1
        if row is None or (row[2], row[3], row[5], row[6]) != (
            st.status,
            st.method,
            st.refund_minor,
            st.fee_minor,
        ):
            cell["wrong"] += 1
    counts["state_by_story"] = by_kind
    return counts


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
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
    }
    bs = BenchStack(
        run_dir / "webhooks",
        ("payments",),
        args.postgres,
        # Test mode verifies with this secret; no ACH settles on its own during the run.
        {"STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET},
    )
    r["var_dir"] = str(bs.cfg.var_dir)
    r["exchange"] = bs.cfg.exchange
    payments_log = bs.cfg.var_dir / "logs" / "payments.log"
    log_mark = 0
    log(
        f"webhooks: {len(stories)} payments, {unique} unique events + {dups} repeats; "
        f"starting payments in {bs.cfg.var_dir}"
    )
    try:
        bs.start()
        db = bs.db("payments")
        firm = FirmProfile(name="Bench Law LLP", email="billing@benchlaw.example")
        r["seed"] = seed(bs.cfg.exchange, db, world, firm, args.seed_timeout)
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

        time.sleep(1.0)  # let the seeding's outbox relay and loops go quiet
        r["log_seeding"] = scan_log(payments_log)
        log_mark = log_size(payments_log)
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
        r["ledger"] = check_ledger(db, stories, unique)
        r["payments_peak_rss_mb"] = rss_mb(bs.stack.procs["payments"].pid)
    except Exception as exc:
        r["error"] = f"{type(exc).__name__}: {exc}"
        log(f"webhooks: FAILED: {exc}")
        for name in bs.stack.procs:
            log(f"--- {name} (last lines) ---\n{bs.stack.tail(name, 15)}")
    finally:
        bs.stop()
        r["log"] = scan_log(payments_log, log_mark)
    return r


# --- part 2: the pay page -----------------------------------------------------------------


async def closed_loop(
    base_url: str,
    clients: int,
    warmup: float,
    duration: float,
    request: Any,
    prepare: Any = None,
) -> dict[str, Any]:
    """`clients` clients, each with its own connection and cookies, each sending its next
    request when the last one is answered. Requests answered within the measured window
    (after the warm-up) count."""
    results: list[tuple[float, str]] = []
    started = now()
    measure_from = started + warmup
    stop_at = measure_from + duration
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as c:
            state = await prepare(c, i) if prepare else None
            k = 0
            while now() < stop_at:
                t = now()
                try:
                    status = await request(c, i, k, state)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                done = now()
                if measure_from <= done <= stop_at:
                    results.append((done - t, status))
                k += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    lat = [x for x, _ in results]
    statuses: dict[str, int] = {}
    for _, s in results:
        statuses[s] = statuses.get(s, 0) + 1
    ok = statuses.get("ok", 0)
    return {
        "clients": clients,
        "measured_seconds": duration,
        "warmup_seconds": warmup,
        "requests": len(results),
        "requests_per_second": round(len(results) / duration, 1),
        "latency_ms": latency_ms(lat),
        "errors": len(results) - ok,
        "statuses": statuses,
    }


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
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
    }
    bs = BenchStack(run_dir / "paypage", ("payments", "gateway"), args.postgres, {})
    r["var_dir"] = str(bs.cfg.var_dir)
    r["exchange"] = bs.cfg.exchange
    logs: dict[str, Path] = {}
    marks: dict[str, int] = {}
    log(
        f"pay page: {len(world.links)} links over {len(world.bills)} bills; starting payments "
        f"and gateway in {bs.cfg.var_dir}"
    )
    try:
        # The demo firm through the gateway: its firm.updated reaches payments over the bus.
        bs.start(demo_user=True)
        db = bs.db("payments")
        r["seed"] = seed(bs.cfg.exchange, db, world, None, args.seed_timeout)
        log(f"pay page: bills and links handled {r['seed']}")
        gw = bs.url("gateway")
        probe = httpx.get(f"{gw}/pay/{world.links[0].token}", timeout=30)
        if probe.status_code != 200 or world.client_name(world.links[0].client) not in probe.text:
            raise RuntimeError(f"the pay page does not show the link: {probe.status_code}")
        tokens = [lk.token for lk in world.links]
        marker = "Bills from"
        logs = {s: bs.cfg.var_dir / "logs" / f"{s}.log" for s in ("payments", "gateway")}
        r["log_seeding"] = {s: scan_log(path) for s, path in logs.items()}
        marks = {s: log_size(path) for s, path in logs.items()}

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
        with CpuWindow(bs.stack) as cpu:
            r["get"] = asyncio.run(
                closed_loop(gw, args.clients, args.warmup, args.duration, get_page)
            )
        r["get"]["cpu"] = cpu.report()

        if args.checkout_duration > 0:

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
            with CpuWindow(bs.stack) as cpu:
                r["checkout"] = asyncio.run(
                    closed_loop(
                        gw,
                        args.clients,
                        args.warmup,
                        args.checkout_duration,
                        start_checkout,
                        open_page,
                    )
                )
            r["checkout"]["cpu"] = cpu.report()
            r["checkout"]["sessions_opened"] = db.count("SELECT count(*) FROM checkout_sessions")
        r["peak_rss_mb"] = {n: rss_mb(p.pid) for n, p in bs.stack.procs.items()}
    except Exception as exc:
        r["error"] = f"{type(exc).__name__}: {exc}"
        log(f"pay page: FAILED: {exc}")
        for name in bs.stack.procs:
            log(f"--- {name} (last lines) ---\n{bs.stack.tail(name, 15)}")
    finally:
        bs.stop()
        r["log"] = {s: scan_log(path, marks.get(s, 0)) for s, path in logs.items()}
    return r


# --- report -------------------------------------------------------------------------------


def fmt_lat(lat: dict[str, Any]) -> str:
    return (
        f"p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, p99 {lat.get('p99')} ms, "
        f"max {lat.get('max')} ms"
    )


def fmt_cpu(cpu: dict[str, Any]) -> str:
    return (
        f"CPU s over {cpu['seconds']} s: stack {cpu['stack_cpu_seconds']}, load generator "
        f"{cpu['load_generator_cpu_seconds']}, other processes "
        f"{cpu['other_processes_cpu_seconds']} (machine {cpu['machine_busy_cpu_seconds']} of "
        f"{cpu['machine_capacity_cpu_seconds']})"
    )


def print_report(report: dict[str, Any]) -> None:
    print()
    print("=" * 100)
    code = report["code"]
    print(
        f"payments benchmark; code {code['commit']} (+{len(code['uncommitted_files'])} "
        f"uncommitted files outside bench/); {report['cpus']} CPUs; db {report['database']}"
    )
    w = report.get("webhooks")
    if w:
        print("-" * 100)
        print(
            f"WEBHOOKS: {w['deliveries']} signed deliveries ({w['unique_events']} unique events, "
            f"{w['duplicate_deliveries']} repeats = {w['duplicate_share'] * 100:.1f} %), "
            f"{w['payments']} payments, {w['concurrency']} concurrent clients"
        )
        if "wall_seconds" in w:
            print(
                f"  {w['wall_seconds']} s: {w['deliveries_per_second']} deliveries/s, "
                f"{w['unique_events_per_second']} unique events/s; errors {w['errors']} "
                f"{w['statuses']}"
            )
            print(f"  latency          {fmt_lat(w['latency_ms'])}")
            print(f"  first deliveries {fmt_lat(w['latency_ms_first_delivery'])}")
            print(f"  repeats          {fmt_lat(w['latency_ms_repeat'])}")
            print(f"  {fmt_cpu(w['cpu'])}")
        led = w.get("ledger")
        if led:
            print(
                f"  ledger {'EQUALS' if led['equal'] else 'DIFFERS FROM'} the expected one: "
                f"{led['payments_as_expected']}/{led['payments_expected']} payments as "
                f"expected; events recorded {led['events_recorded']}/"
                f"{led['events_unique_sent']}; waiting for a payment "
                f"{led['events_waiting_for_a_payment']}; announcements "
                f"{led['announcements']}/{led['announcements_expected']}"
            )
            for what, m in led["mismatches"].items():
                print(f"    {what}: {m['count']}, e.g. {m['examples'][0]}")
            wrong = {k: v for k, v in led["state_by_story"].items() if v["wrong"]}
            if wrong:
                print(f"    payment state wrong, by story: {wrong}")
        if w.get("open_sessions_failures"):
            print(f"  opening the checkouts first failed: {w['open_sessions_failures']}")
        if w.get("redelivered"):
            print(f"  redelivered after errors: {w['redelivered']}")
        if w.get("log", {}).get("errors"):
            print(f"  payments log during the deliveries: {w['log']}")
        if w.get("log_seeding", {}).get("errors"):
            print(f"  payments log while seeding: {w['log_seeding']}")
        if w.get("error"):
            print(f"  ERROR {w['error']}")
    p = report.get("pay_page")
    if p:
        print("-" * 100)
        print(
            f"PAY PAGE: {p['links']} links ({p['links_pay_all_outstanding']} with the full "
            f"balance) over {p['bills']} bills of {p['clients_with_bills']} clients"
        )
        for key, label in (("get", "GET /pay/{token}"), ("checkout", "POST /pay/{token}/checkout")):
            g = p.get(key)
            if not g:
                continue
            print(
                f"  {label}: {g['clients']} clients x {g['measured_seconds']} s: "
                f"{g['requests']} requests, {g['requests_per_second']} req/s, errors "
                f"{g['errors']} {g['statuses']}"
            )
            print(f"    {fmt_lat(g['latency_ms'])}")
            print(f"    {fmt_cpu(g['cpu'])}")
        for when, key in (("during the load", "log"), ("while seeding", "log_seeding")):
            for svc, found in (p.get(key) or {}).items():
                if found.get("errors"):
                    print(f"  {svc} log {when}: {found}")
        if p.get("error"):
            print(f"  ERROR {p['error']}")
    print("=" * 100)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
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
    args = p.parse_args()
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    for part in parts:
        if part not in ("webhooks", "paypage"):
            raise SystemExit(f"unknown part {part!r}; choose from webhooks, paypage")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = VAR_ROOT / f"payments-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS_DIR / f"payments-{stamp}.json"
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "cpus": os.cpu_count(),
        "database": "postgresql" if args.postgres else "sqlite",
        "code": code_version(),
        "args": vars(args),
        "var_dir": str(run_dir),
    }
    try:
        if "webhooks" in parts:
            report["webhooks"] = run_webhooks(args, run_dir)
            out_path.write_text(json.dumps(report, indent=2, default=str))
        if "paypage" in parts:
            report["pay_page"] = run_paypage(args, run_dir)
    finally:
        report["finished_at"] = datetime.now(UTC).isoformat()
        if report.get("webhooks") or report.get("pay_page"):
            print_report(report)
        out_path.write_text(json.dumps(report, indent=2, default=str))
        log(f"results: {out_path}")


if __name__ == "__main__":
    main()
