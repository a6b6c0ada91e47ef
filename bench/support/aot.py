"""Waiting for the envelope service's ahead-of-time rendering before a click (send_all.py's
link and warm cases), and rendering what it left out through the on-demand endpoint."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx

from bench.support.common import INTERNAL, log
from bench.support.envelope_peek import EnvelopePeek
from bench.support.procs import ProcWatch


def now() -> float:
    return time.monotonic()


class AheadOfTime:
    """--settle-seconds, --sync-timeout and --no-prefetch come from `args`; `label` (the
    case) starts the log lines."""

    def __init__(
        self, label: str, envelope: EnvelopePeek, watch: ProcWatch, args: argparse.Namespace
    ) -> None:
        self.label = label
        self.envelope = envelope
        self.watch = watch
        self.args = args

    def settle_rendering(self, mine: set[str]) -> dict[str, Any]:
        """Wait until ahead-of-time rendering is done: every invoice has a PDF, or the count
        has not grown for --settle-seconds."""
        a = self.args
        started = now()
        last, last_change = -1, now()
        while True:
            have = len(self.envelope.pdf_invoice_ids() & mine)
            if have != last:
                last, last_change = have, now()
            if have >= len(mine) or now() - started > a.sync_timeout:
                break
            if now() - last_change >= a.settle_seconds:
                # No growth: settled only if the envelope service (and its pool) is idle too,
                # and, when nothing was rendered at all, after a generous start-up allowance.
                if have == 0 and now() - started < 60:
                    time.sleep(0.5)
                    continue
                if self.envelope_busy() < 0.1:
                    break
                last_change = now()
            time.sleep(0.5)
        out = {
            "pdfs_rendered_ahead": last,
            "of": len(mine),
            "seconds": round(now() - started, 1),
            "settled_by": "all rendered" if last >= len(mine) else "no growth",
        }
        log(f"{self.label}: ahead-of-time rendering settled: {out}")
        return out

    def settle_statements(self, expected: int) -> dict[str, Any]:
        """Wait until the statements drafted envelopes render ahead of time are stored:
        `expected` of them, or no growth for --settle-seconds with the envelope idle."""
        a = self.args
        started = now()
        base = 0
        last, last_change = -1, now()
        while True:
            have = self.envelope.statement_pdfs() - base
            if have != last:
                last, last_change = have, now()
            if have >= expected or now() - started > a.sync_timeout:
                break
            if now() - last_change >= a.settle_seconds and self.envelope_busy() < 0.1:
                break
            time.sleep(0.5)
        out = {"statements": last, "of": expected, "seconds": round(now() - started, 1)}
        log(f"{self.label}: statements rendered while reviewing: {out}")
        return out

    def envelope_busy(self, window: float = 2.0) -> float:
        """Cores used by the envelope service and its children over `window` seconds."""
        return self.watch.busy(window, "envelope")

    def prefetch_missing(self, mine: set[str]) -> dict[str, Any]:
        """Warm the PDF cache for what ahead-of-time rendering left out, through the
        product's own on-demand path (the envelope's invoice PDF endpoint, the same cache
        key the send uses). Reported, so a warm figure never hides missing AOT work."""
        missing = sorted(mine - self.envelope.pdf_invoice_ids())
        if not missing or self.args.no_prefetch:
            return {"prefetched": 0, "missing_after_aot": len(missing)}
        log(
            f"{self.label}: {len(missing)} PDFs missing after ahead-of-time rendering; "
            "rendering them through GET /internal/firms/{firm}/invoices/{id}/pdf"
        )
        started = now()
        port, firm = self.envelope.cfg.ports.envelope, self.envelope.firm_id
        base = f"http://127.0.0.1:{port}/internal/firms/{firm}"

        async def go() -> int:
            sem = asyncio.Semaphore(4)
            async with httpx.AsyncClient(base_url=base, headers=INTERNAL, timeout=600) as c:

                async def one(i: str) -> int:
                    async with sem:
                        return (await c.get(f"/invoices/{i}/pdf")).status_code

                codes = await asyncio.gather(*(one(i) for i in missing))
            return sum(1 for c in codes if c == 200)

        ok = asyncio.run(go())
        out = {
            "prefetched": ok,
            "missing_after_aot": len(missing),
            "seconds": round(now() - started, 1),
            "pdfs_per_second": round(ok / (now() - started), 2),
        }
        log(f"{self.label}: prefetch {out}")
        return out
