"""What every benchmark under bench/ needs: a log line, free ports for a stack of its own, the
machine's busy CPU ticks, the code version the figures belong to, and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from devtools.stack import Ports

ROOT = Path(__file__).resolve().parents[2]
VAR_ROOT = ROOT / "var" / "bench"
INTERNAL = {"X-Internal-Token": "dev-internal-token"}
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# What `make run` listens on: a benchmark's stack never takes these.
RESERVED_PORTS = set(range(8000, 8005)) | {8090, 1025, 8025}


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def fresh_ports() -> Ports:
    ports: set[int] = set()
    while len(ports) < len(vars(Ports())):
        ports.add(free_port())
    return Ports(**dict(zip(vars(Ports()), sorted(ports), strict=True)))


def machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        cols = [int(x) for x in f.readline().split()[1:9]]
    return sum(cols) - cols[3] - cols[4]  # all but idle and iowait


def loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def code_version() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout

    # Porcelain lines are "XY path": the status columns may start with a space.
    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_files": [f for f in changed if not f.startswith("bench/")],
    }


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def stop_cleanly_on_signals() -> None:
    """Ctrl-C and kill both raise KeyboardInterrupt, so every stack is stopped in its
    finally; also when started in the background, where SIGINT arrives ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
