"""A benchmark's own stack, on devtools.stack: free ports, a unique exchange, fresh databases
(SQLite files in its var dir, or PostgreSQL databases made for it), no periodic sync.

BenchStack is the whole system (the five services, the Clio sandbox, the mail sink);
ServicesStack only the services a part needs, migrated, started and cleaned up after."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

from bench.support.bus import delete_bus_objects
from bench.support.common import AMQP_URL, ROOT, fresh_ports, log
from bench.support.db import Db
from bench.support.pg import PgDatabases
from devtools.stack import Stack, StackConfig, service_env


def stack_config(
    var_dir: Path, database_url_template: str | None, extra_env: dict[str, dict[str, str]]
) -> StackConfig:
    return StackConfig(
        var_dir=var_dir,
        ports=fresh_ports(),
        amqp_url=AMQP_URL,
        database_url_template=database_url_template,
        exchange=fresh_exchange(),
        sync_interval_seconds=86_400,
        extra_env=extra_env,
        queue_expires_ms=10 * 60 * 1000,
    )


def fresh_exchange() -> str:
    return f"bench.{uuid.uuid4().hex[:10]}"


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

    def start_all(self) -> None:
        self.start_sandboxes()
        self.migrate()
        self.create_demo_user()
        self.start_services()


def log_tails(stack: Stack) -> None:
    """The last lines of every process's log, after a failure."""
    for name in stack.procs:
        log(f"--- {name} (last lines) ---\n{stack.tail(name, 15)}")


class ServicesStack:
    """Only the services a part needs (SQLite files in the part's var dir, or PostgreSQL
    databases made for it and dropped); its queues and exchanges are deleted at the end."""

    def __init__(
        self, var_dir: Path, services: tuple[str, ...], postgres: bool, env: dict[str, str]
    ) -> None:
        self.services = services
        self.pg = PgDatabases(services) if postgres else None
        template = self.pg.url_template if self.pg else None
        self.cfg = stack_config(var_dir, template, {s: dict(env) for s in services})
        self.stack = Stack(self.cfg)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{getattr(self.cfg.ports, service)}"

    def db(self, service: str) -> Db:
        return Db(self.cfg.database_url(service))

    def log_path(self, service: str) -> Path:
        return self.cfg.var_dir / "logs" / f"{service}.log"

    def start(self, demo_user: bool = False) -> None:
        if self.pg:
            self.pg.create()
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
        if self.pg:
            self.pg.drop()
