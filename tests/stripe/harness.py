"""Test helpers for the Stripe sandbox: a webhook receiver that keeps the raw bodies and
signatures it is sent, the sandbox in a thread (with a clock the test controls) or as its
own process (`python -m sandbox.stripe`, as a deployment would run it).

This directory has no __init__.py on purpose: as a package named `stripe` it would hide
the stripe SDK from every test module pytest imports after it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    body: bytes
    signature: str | None
    content_type: str | None

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def event_type(self) -> str:
        return str(self.event["type"])


class WebhookReceiver:
    """An HTTP endpoint in a thread. `fail_next(n)` answers 500 to the next n deliveries,
    so retries can be watched."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.refused = 0
        self._fail = 0
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = receiver._record(
                    Received(
                        body, self.headers.get("Stripe-Signature"), self.headers.get("Content-Type")
                    )
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/stripe"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, item: Received) -> int:
        with self._lock:
            if self._fail > 0:
                self._fail -= 1
                self.refused += 1
                return 500
            self.received.append(item)
            self._lock.notify_all()
            return 200

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._fail = count

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self.refused = 0
            self._fail = 0

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    types = [item.event_type for item in self.received]
                    raise AssertionError(f"webhooks did not arrive in time; got {types}")
                self._lock.wait(left)
            return list(self.received)

    def matching(self, object_id: str) -> list[Received]:
        """Deliveries whose body mentions `object_id` (a session, intent or charge id)."""
        with self._lock:
            return [item for item in self.received if object_id.encode() in item.body]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def types_of(items: list[Received]) -> list[str]:
    return [item.event_type for item in items]


@contextmanager
def threaded_server(app: ASGIApp) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the sandbox did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def sandbox_process(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`python -m sandbox.stripe` on a free port; yields its base URL once it answers."""
    port = free_port()
    full_env = {**os.environ, **env, "STRIPE_SANDBOX_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.stripe"],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, proc, log_path)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the sandbox exited:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/sandbox/events", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the sandbox did not answer:\n{log_path.read_text()}")
