"""A closed-loop load generator: each client sends its next request when its last one is
answered, for a fixed time after a warm-up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.support.report import latency_ms


def now() -> float:
    return time.perf_counter()


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
