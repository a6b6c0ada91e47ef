"""The whole system as real processes: five services, the Clio sandbox, the mail sink,
against the real RabbitMQ and a real database per service (SQLite files or PostgreSQL)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.stack import Ports, Stack, StackConfig, connect_clio, login
from tests.conftest import AMQP_URL, POSTGRES_URL, _asyncpg_dsn
from tests.support.otlp import OtlpReceiver

SERVICES = ("sync", "envelope", "mailer", "payments", "gateway")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _create_databases(prefix: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
    try:
        for service in SERVICES:
            await conn.execute(f'CREATE DATABASE "{prefix}_{service}"')
    finally:
        await conn.close()
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{prefix}_{{service}}"


async def _drop_databases(prefix: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
    try:
        for service in SERVICES:
            await conn.execute(f'DROP DATABASE IF EXISTS "{prefix}_{service}" WITH (FORCE)')
    finally:
        await conn.close()


def wait_for_sync(ports: Ports, at_least: int = 44, timeout: float = 60) -> None:
    """Connecting Clio starts the first sync; tests start once all the sandbox seed's bills
    have reached the envelope service: 45, less the one seeded void, which is never
    published (a bill first seen void has nothing to remove)."""
    import time

    from devtools.stack import DEMO_FIRM_ID

    url = f"http://127.0.0.1:{ports.envelope}/internal/firms/{DEMO_FIRM_ID}/invoices"
    headers = {"X-Internal-Token": "dev-internal-token"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Envelope may answer slowly while it renders the first PDFs on a busy machine: a
        # slow answer is waited for, up to the deadline, not taken as a failure.
        try:
            resp = httpx.get(url, params={"per_page": 1}, headers=headers, timeout=30)
        except httpx.TimeoutException:
            continue
        if resp.status_code == 200 and resp.json()["total"] >= at_least:
            return
        time.sleep(0.25)
    raise RuntimeError("the first sync did not bring the seeded bills in time")


@dataclass
class RunningSystem:
    stack: Stack
    cfg: StackConfig
    otlp: OtlpReceiver
    backend: str

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.cfg.ports.gateway}"

    @property
    def mail_api(self) -> str:
        return f"http://127.0.0.1:{self.cfg.ports.mailview}/api/messages"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway, timeout=30)


# The `system` fixture is registered in tests/conftest.py, not here: a fixture defined (or
# imported) in two conftests is two fixtures, and tests/e2e and tests/browser would each start
# their own stack per backend.
def running_system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    backend = str(request.param)
    tmp: Path = tmp_path_factory.mktemp(f"e2e-{backend}")
    prefix = f"ept_{uuid.uuid4().hex[:10]}"
    template = asyncio.run(_create_databases(prefix)) if backend == "postgresql" else None
    ports = Ports(**{name: free_port() for name in vars(Ports())})
    with OtlpReceiver() as otlp:
        cfg = StackConfig(
            var_dir=tmp,
            ports=ports,
            amqp_url=AMQP_URL,
            database_url_template=template,
            exchange=f"ept.e2e.{uuid.uuid4().hex[:10]}",
            otlp_endpoint=otlp.endpoint,
            sync_interval_seconds=3600,
            queue_expires_ms=10 * 60 * 1000,
        )
        stack = Stack(cfg)
        try:
            stack.start_sandboxes()
            stack.migrate()
            stack.create_demo_user()
            stack.start_services()
            with httpx.Client(base_url=f"http://127.0.0.1:{ports.gateway}", timeout=30) as client:
                connect_clio(cfg, client, login(client))
            wait_for_sync(ports)
            yield RunningSystem(stack, cfg, otlp, backend)
        except Exception:
            for name in stack.procs:
                print(f"--- {name} ---\n{stack.tail(name, 60)}")
            raise
        finally:
            stack.stop()
            if backend == "postgresql":
                asyncio.run(_drop_databases(prefix))
