"""Start the five services, the Clio sandbox and the mail sink as real processes.

Used by `make run` (through devtools.run) and by the end-to-end tests.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("sync", "envelope", "mailer", "payments", "gateway")
DEMO_FIRM_ID = "5f0c6a53-8d2b-4c57-9b1a-2d7c3e9f4a10"
DEMO_EMAIL = "demo@demolaw.example"
DEMO_PASSWORD = "demo-password"


@dataclass
class Ports:
    gateway: int = 8000
    sync: int = 8001
    envelope: int = 8002
    mailer: int = 8003
    payments: int = 8004
    clio: int = 8090
    smtp: int = 1025
    mailview: int = 8025
    # The mailer's bounce intake (SMTP): the mail sink sends its DSNs there.
    bounces: int = 2525


@dataclass
class StackConfig:
    var_dir: Path
    ports: Ports = field(default_factory=Ports)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # {service} is replaced by the service's name; None means one SQLite file each.
    database_url_template: str | None = None
    exchange: str = "envelopepay"
    otlp_endpoint: str | None = None
    sync_interval_seconds: float = 30.0
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    log_level: str = "INFO"
    queue_expires_ms: int | None = None
    # The mail sink answers NOTIFY=SUCCESS with a "delivered" DSN: `make run` turns it on;
    # off by default, so that the benchmarks' sinks measure sending alone.
    mailsink_success_dsn: bool = False
    # Clio webhooks: sync registers them with the sandbox, which posts to the gateway's own
    # URL (the public URL in dev), so a change in Clio shows without pressing Sync.
    clio_webhooks: bool = True

    def database_url(self, service: str) -> str:
        if self.database_url_template:
            return self.database_url_template.format(service=service)
        return f"sqlite+aiosqlite:///{self.var_dir / (service + '.db')}"


def service_env(cfg: StackConfig, service: str) -> dict[str, str]:
    p = cfg.ports
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "ENVIRONMENT": "development",
        "DATABASE_URL": cfg.database_url(service),
        "AMQP_URL": cfg.amqp_url,
        "EXCHANGE": cfg.exchange,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(getattr(p, service)),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{p.gateway}",
        "VAR_DIR": str(cfg.var_dir),
        "LOG_LEVEL": cfg.log_level,
        "SYNC_URL": f"http://127.0.0.1:{p.sync}",
        "ENVELOPE_URL": f"http://127.0.0.1:{p.envelope}",
        "MAILER_URL": f"http://127.0.0.1:{p.mailer}",
        "PAYMENTS_URL": f"http://127.0.0.1:{p.payments}",
        "CLIO_BASE_URL": f"http://127.0.0.1:{p.clio}",
        "SYNC_INTERVAL_SECONDS": str(cfg.sync_interval_seconds),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(p.smtp),
        "OUTBOX_POLL_SECONDS": "0.5",
    }
    if service == "sync" and cfg.clio_webhooks:
        env["CLIO_WEBHOOK_URL"] = f"http://127.0.0.1:{p.gateway}"
        env["CLIO_WEBHOOK_CHECK_SECONDS"] = "2"
    elif service == "sync":
        env.pop("CLIO_WEBHOOK_URL", None)
    if service == "mailer":
        env["BOUNCE_INTAKE"] = "smtp"
        env["BOUNCE_SMTP_HOST"] = "127.0.0.1"
        env["BOUNCE_SMTP_PORT"] = str(p.bounces)
    if cfg.queue_expires_ms:
        env["QUEUE_EXPIRES_MS"] = str(cfg.queue_expires_ms)
    if cfg.otlp_endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = cfg.otlp_endpoint
    else:
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.update(cfg.extra_env.get(service, {}))
    return env


class Stack:
    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        cfg.var_dir.mkdir(parents=True, exist_ok=True)
        (cfg.var_dir / "logs").mkdir(exist_ok=True)

    @staticmethod
    def port_free(port: int) -> bool:
        import socket

        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def check_ports(self) -> None:
        busy = [
            f"{name} ({port})"
            for name, port in vars(self.cfg.ports).items()
            if not self.port_free(port)
        ]
        if busy:
            raise RuntimeError(
                "these ports are already in use: "
                + ", ".join(busy)
                + ". Is another `make run` still running? Stop it first."
            )

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log_path = self.cfg.var_dir / "logs" / f"{name}.log"
        self.logs[name] = log_path
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        self.procs[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_sandboxes(self) -> None:
        self.check_ports()
        p = self.cfg.ports
        base = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._spawn(
            "clio",
            ["-m", "sandbox.clio"],
            {
                **base,
                "CLIO_SANDBOX_PORT": str(p.clio),
                "CLIO_SANDBOX_PUBLIC_URL": f"http://127.0.0.1:{p.clio}",
                # Clio's 50 a minute would throttle the stack's tests; keep the old default.
                "CLIO_SANDBOX_RATE_LIMIT": base.get("CLIO_SANDBOX_RATE_LIMIT", "600"),
            },
        )
        self._spawn(
            "mailsink",
            ["-m", "sandbox.mailsink"],
            {
                **base,
                "MAILSINK_SMTP_PORT": str(p.smtp),
                "MAILSINK_HTTP_PORT": str(p.mailview),
                "MAILSINK_DIR": str(self.cfg.var_dir / "mailsink"),
                # Its DSNs (bounce@example.com, delivered notices) go to the mailer's intake.
                "MAILSINK_BOUNCE_HOST": "127.0.0.1",
                "MAILSINK_BOUNCE_PORT": str(p.bounces),
                "MAILSINK_SUCCESS_DSN": "true" if self.cfg.mailsink_success_dsn else "false",
            },
        )
        self.wait_http("clio", f"http://127.0.0.1:{p.clio}/sandbox/requests")
        self.wait_http("mailsink", f"http://127.0.0.1:{p.mailview}/health")

    def migrate(self) -> None:
        """Each service migrates its own database, so the five run at once."""
        running = {
            service: subprocess.Popen(
                [sys.executable, "-m", f"services.{service}", "migrate"],
                cwd=ROOT,
                env=service_env(self.cfg, service),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for service in SERVICES
        }
        failed = []
        for service, proc in running.items():
            out, _ = proc.communicate()
            if proc.returncode != 0:
                failed.append(f"{service} migrate exited with {proc.returncode}:\n{out.decode()}")
        if failed:
            raise RuntimeError("\n".join(failed))

    def create_demo_user(self) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "services.gateway",
                "create-user",
                "--email",
                DEMO_EMAIL,
                "--password",
                DEMO_PASSWORD,
                "--name",
                "Dana Demo",
                "--firm",
                "Demo Law LLP",
                "--firm-id",
                DEMO_FIRM_ID,
                "--firm-email",
                "billing@demolaw.example",
                "--firm-phone",
                "(555) 010-2030",
                "--firm-address",
                "100 Main Street, Suite 400\nSpringfield, IL 62701",
            ],
            cwd=ROOT,
            env=service_env(self.cfg, "gateway"),
            check=True,
            capture_output=True,
        )

    def start_services(self, only: tuple[str, ...] = SERVICES) -> None:
        for service in only:
            self._spawn(service, ["-m", f"services.{service}"], service_env(self.cfg, service))
        for service in only:
            self.wait_http(
                service, f"http://127.0.0.1:{getattr(self.cfg.ports, service)}/health/ready"
            )

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop_service(name)

    def wait_http(
        self, name: str, url: str, timeout: float = 120, any_status: bool = False
    ) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            try:
                resp = httpx.get(url, timeout=2)
                if resp.status_code == 200 or (any_status and resp.status_code < 500):
                    return
                last = f"{resp.status_code} {resp.text[:200]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(
            f"{name} not ready at {url} after {timeout}s ({last}):\n{self.tail(name)}"
        )

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs.get(name)
        if not path or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    if not m:
        raise RuntimeError("no CSRF token on the page")
    return m.group(1)


def login(client: httpx.Client, email: str = DEMO_EMAIL, password: str = DEMO_PASSWORD) -> str:
    """Log in through the real form; returns the session's CSRF token."""
    page = client.get("/login")
    resp = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf_of(page.text)}
    )
    if resp.status_code != 303:
        raise RuntimeError(f"login failed: {resp.status_code}")
    return csrf_of(client.get("/invoices").text)


def connect_clio(cfg: StackConfig, client: httpx.Client, csrf: str) -> None:
    """Connect Clio the way a firm user does: Settings > Connect Clio > Allow access."""
    resp = client.post("/settings/clio/connect", data={"csrf_token": csrf})
    authorize = resp.headers["location"]
    consent = httpx.get(authorize)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', consent.text))
    import html as _html

    fields = {k: _html.unescape(v) for k, v in fields.items()}
    decision = httpx.post(
        f"http://127.0.0.1:{cfg.ports.clio}/oauth/authorize", data={**fields, "decision": "allow"}
    )
    callback = decision.headers["location"]
    path = callback.split(f"127.0.0.1:{cfg.ports.gateway}", 1)[1]
    done = client.get(path)
    if done.status_code != 303:
        raise RuntimeError(f"Clio connection failed: {done.status_code} {done.text[:300]}")


def wait_for_webhooks(cfg: StackConfig, timeout: float = 15.0) -> dict[str, object]:
    """The demo firm's Clio webhook state (sync's internal API) once its webhooks are active,
    or as it is when `timeout` runs out (e.g. "polling" with the reason)."""
    url = f"http://127.0.0.1:{cfg.ports.sync}/internal/firms/{DEMO_FIRM_ID}/clio/webhooks"
    headers = {"X-Internal-Token": "dev-internal-token"}
    deadline = time.monotonic() + timeout
    state: dict[str, object] = {}
    while time.monotonic() < deadline:
        resp = httpx.get(url, headers=headers, timeout=10)
        if resp.status_code == 200:
            state = resp.json()
            if state.get("mode") == "webhooks" or not cfg.clio_webhooks:
                return state
        time.sleep(0.2)
    return state


def clio_connected(client: httpx.Client) -> bool:
    return "Connected" in client.get("/settings").text


__all__ = ["Stack", "StackConfig", "Ports", "login", "connect_clio", "urlencode"]
