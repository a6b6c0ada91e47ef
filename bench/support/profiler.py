"""--py-spy: where the busiest services spent their CPU during a measured window."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from devtools.stack import Stack


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
