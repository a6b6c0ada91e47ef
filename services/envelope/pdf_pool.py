"""The PDF process pool: renders jobs in worker processes and stores each PDF under a hash of
everything that shapes it (pdf.pdf_cache_key), so an identical PDF is never rendered twice.

- Joining: a request for a PDF whose render is under way waits for that render (per key)
  instead of starting another.
- WeasyPrint is CPU bound and holds the GIL, so renders run in worker processes started by a
  forkserver (forking this process, with its threads and sockets, is not safe); workers
  import only services.envelope.pdf and get plain dicts.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.envelope.models import Pdf
from shared.events import FirmProfile
from shared.runtime import Service

log = logging.getLogger(__name__)

PDF_MODULE = "services.envelope.pdf"


@dataclass(frozen=True)
class Job:
    """One PDF to render: `args` are what the worker gets and, with `kind`, what the key is of."""

    kind: str
    args: dict[str, Any]
    firm_id: str
    invoice_id: str | None
    key: str = field(default="")


def _pool_context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    # Workers fork from a server that imported the renderer once, so each starts in
    # milliseconds instead of importing WeasyPrint again (about 1.5 s).
    ctx.set_forkserver_preload([PDF_MODULE])
    return ctx


class PdfPool:
    def __init__(self, service: Service, workers: int) -> None:
        self.service = service
        self.workers = workers
        self._pdf: ModuleType | None = None
        self._pool: ProcessPoolExecutor | None = None
        self.inflight: dict[str, asyncio.Task[None]] = {}
        # For tests and metrics: PDFs rendered by this process's pool, and by which workers.
        self.renders = 0
        self.worker_pids: set[int] = set()

    async def warm_up(self) -> None:
        """Load the renderer here and start every worker, so the first render waits for
        neither."""
        pdf = await self._module()
        pool = self._executor(pdf)
        loop = asyncio.get_running_loop()
        # One trivial job per worker: the pool starts a process for each while none is idle.
        await asyncio.gather(*(loop.run_in_executor(pool, os.getpid) for _ in range(self.workers)))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def _module(self) -> ModuleType:
        # Importing WeasyPrint takes over a second: never on the event loop.
        if self._pdf is None:
            self._pdf = await asyncio.to_thread(importlib.import_module, PDF_MODULE)
        return self._pdf

    async def firm_args(self, firm: FirmProfile) -> dict[str, Any]:
        """The firm as a PDF sees it: the profile fields a PDF shows, the settings (combine,
        delivery) at their defaults, so changing a setting leaves every key as it was."""
        pdf = await self._module()
        shown = FirmProfile.model_validate(firm.model_dump(include=set(pdf.FIRM_FIELDS)))
        return shown.model_dump(mode="json")

    async def job(
        self, kind: str, args: dict[str, Any], firm_id: str, invoice_id: str | None
    ) -> Job:
        pdf = await self._module()
        return Job(kind, args, firm_id, invoice_id, key=pdf.pdf_cache_key(kind, args))

    def _executor(self, pdf: ModuleType) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=_pool_context(), initializer=pdf.start_worker
            )
        return self._pool

    async def produce(self, job: Job, *, known_missing: bool = False) -> None:
        """Have the PDF of `job` stored: join the render of the same key if one is under way.
        `known_missing`: the caller just looked and found it not stored."""
        task = self.inflight.get(job.key)
        if task is None:
            if not known_missing:
                async with self.service.sessionmaker() as s:
                    stored = await s.scalar(select(Pdf.key).where(Pdf.key == job.key))
                if stored is not None:
                    return
            task = self.inflight.get(job.key)  # started while we looked
            if task is None:
                task = asyncio.create_task(self._render_and_store(job))
                self.inflight[job.key] = task
                task.add_done_callback(lambda t, key=job.key: self._forget(key, t))
        # Shielded: a caller that gives up does not cancel the render others are waiting for.
        await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self.inflight.get(key) is task:
            del self.inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here too, should every waiter have gone

    async def _render_and_store(self, job: Job) -> None:
        async with self.service.sessionmaker() as s:
            if await s.scalar(select(Pdf.key).where(Pdf.key == job.key)) is not None:
                return  # stored by another process of this service meanwhile
        content = await self._render(job)
        try:
            async with self.service.sessionmaker() as s, s.begin():
                s.add(
                    Pdf(
                        key=job.key,
                        firm_id=job.firm_id,
                        invoice_id=job.invoice_id,
                        content=content,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            pass  # another process of this service stored the same bytes

    async def _render(self, job: Job) -> bytes:
        pdf = await self._module()
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._executor(pdf)
            try:
                content, pid = await loop.run_in_executor(pool, pdf.render_job, job.kind, job.args)
            except BrokenProcessPool:
                # A worker died (killed, out of memory): start a new pool, try once more.
                log.warning("pdf: the render pool broke (attempt %d)", attempt)
                if self._pool is pool:
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
                if attempt == 2:
                    raise
                continue
            self.renders += 1
            self.worker_pids.add(pid)
            return bytes(content)
        raise AssertionError("unreachable")
