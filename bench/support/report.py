"""Pieces of the printed reports that every benchmark shares: the rules, the code version
line, latency percentiles and a CPU window in one line."""

from __future__ import annotations

import math
from typing import Any

WIDTH = 100


def rule(char: str = "-") -> None:
    print(char * WIDTH)


def code_text(code: dict[str, Any]) -> str:
    return (
        f"code {code['commit']} (+{len(code['uncommitted_files'])} "
        "uncommitted files outside bench/)"
    )


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
