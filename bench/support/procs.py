"""CPU time and memory of a stack's processes, read from /proc.

ProcWatch samples every process of a stack and its descendants (a render pool's workers may
exit before the end, so their peaks are caught while they live); CpuWindow measures one
window of a run, the machine's other work included (it skews every figure)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from bench.support.common import machine_busy_ticks
from devtools.stack import Stack

TICK = os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int | None:
    """A figure of /proc/<pid>/status (VmHWM, Threads, ...), None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def rss_mb(pid: int) -> float | None:
    """Peak RSS (VmHWM) in MB."""
    kb = status_kb(pid, "VmHWM")
    return round(kb / 1024, 1) if kb is not None else None


def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def open_db_files(pid: int) -> int | None:
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


def children_map() -> dict[int, list[int]]:
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
            total += cpu_ticks(int(entry)) or 0
    return total


def merge_peaks(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    per = dict(a.get("per_process_mb", {}))
    for k, v in b.get("per_process_mb", {}).items():
        per[k] = max(per.get(k, 0), v)
    return {"per_process_mb": per, "sum_mb": round(sum(per.values()), 1)}


class ProcWatch:
    """Samples VmHWM and CPU time of every stack process and its descendants."""

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
        kids = children_map()
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
            hwm = status_kb(pid, "VmHWM")
            ticks = cpu_ticks(pid)
            threads = status_kb(pid, "Threads")
            db_files = open_db_files(pid) if "/" not in label else None
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

    def busy(self, window: float, prefix: str = "") -> float:
        """Cores used over `window` seconds by the processes whose label starts with
        `prefix` (every one by default)."""
        a = self.cpu_snapshot()
        time.sleep(window)
        b = self.cpu_snapshot()
        pids = [p for p in b if self.label.get(p, "").startswith(prefix)]
        return sum(b.get(p, 0) - a.get(p, 0) for p in pids) / TICK / window

    def wait_quiet(self, threshold: float = 0.15, window: float = 2.0, limit: float = 60) -> float:
        """Until the stack uses less than `threshold` of one core over `window` seconds."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if self.busy(window) < threshold:
                break
        return round(time.monotonic() - started, 1)


class CpuWindow:
    """CPU seconds of the stack's processes, of this process (the load generator) and of the
    whole machine over a measured window."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def _stack_ticks(self) -> dict[str, int]:
        return {n: cpu_ticks(p.pid) or 0 for n, p in self.stack.procs.items()}

    def __enter__(self) -> CpuWindow:
        self.t0 = time.perf_counter()
        self.procs0 = self._stack_ticks()
        self.machine0 = machine_busy_ticks()
        self.me0 = os.times()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.procs1 = self._stack_ticks()
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


@dataclass
class CpuMark:
    """CPU counters at one moment: per stack process, the machine, this process, RabbitMQ."""

    procs: dict[int, int]
    machine: int
    me: Any  # os.times()
    broker: int

    @classmethod
    def take(cls, watch: ProcWatch) -> CpuMark:
        return cls(watch.cpu_snapshot(), machine_busy_ticks(), os.times(), broker_ticks())


def machine_cpu(
    before: CpuMark, after: CpuMark, window: float, stack_cpu_by_process: dict[str, float]
) -> dict[str, Any]:
    """How busy the whole machine was over `window` seconds: the stack, this process,
    RabbitMQ and every other process (other work on the machine skews every figure)."""
    a, b = before, after
    machine = (b.machine - a.machine) / TICK
    stack_cpu = sum(stack_cpu_by_process.values())
    bench_cpu = (b.me.user + b.me.system) - (a.me.user + a.me.system)
    broker_cpu = (b.broker - a.broker) / TICK
    return {
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
