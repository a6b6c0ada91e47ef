"""When PDFs are rendered ahead of time: invoices once their change has committed, a firm's
unpaid invoices when its profile changes, combined envelopes' statements when they are
drafted; so a send or a View Invoice finds them ready.

- Coalescing: an invoice scheduled again before its render started is rendered once, from the
  snapshot stored by then (the newest).
- Priority: background renders hold at most `workers` pool slots, so a send or a click
  never queues behind a backlog of pre-renders.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.envelope.models import Invoice
from services.envelope.rules import PRERENDER_STATES
from shared.runtime import Service

log = logging.getLogger(__name__)

# Updates of one invoice arriving within this window are rendered once.
COALESCE_SECONDS = 0.2
_AFTER_COMMIT = "envelope.render_after_commit"

PrerenderInvoice = Callable[[str, str], Awaitable[None]]  # (firm id, invoice id)
PrerenderStatement = Callable[[str, list[str], str], Awaitable[None]]  # (firm, ids, client)


def _after_commit(s: AsyncSession, callback: Callable[[], None]) -> None:
    """Call `callback` once the session's transaction commits; never if it rolls back."""
    sync = s.sync_session
    callbacks: list[Callable[[], None]] | None = sync.info.get(_AFTER_COMMIT)
    if callbacks is None:
        callbacks = sync.info[_AFTER_COMMIT] = []

        def committed(session: Session) -> None:
            for call in session.info.pop(_AFTER_COMMIT, ()):
                call()

        def rolled_back(session: Session) -> None:
            session.info.pop(_AFTER_COMMIT, None)

        event.listen(sync, "after_commit", committed)
        event.listen(sync, "after_rollback", rolled_back)
    callbacks.append(callback)


class Scheduler:
    def __init__(
        self,
        service: Service,
        workers: int,
        invoice: PrerenderInvoice,
        statement: PrerenderStatement,
    ) -> None:
        self.service = service
        self._invoice = invoice
        self._statement = statement
        self.pending: dict[tuple[str, str], float] = {}  # (firm, invoice) -> not before
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(workers)
        self._background: set[asyncio.Task[None]] = set()
        self._sweeps: set[asyncio.Task[None]] = set()

    async def loop(self) -> None:
        """Dispatch what is scheduled, as it falls due, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._dispatch()

    def tasks(self) -> set[asyncio.Task[None]]:
        return {*self._sweeps, *self._background}

    async def cancel(self) -> None:
        tasks = [*self._background, *self._sweeps]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- invoices ------------------------------------------------------------------------

    def schedule(self, firm_id: str, invoice_id: str) -> None:
        """Render the invoice's PDF in the background, from its snapshot as stored by then."""
        due = asyncio.get_running_loop().time() + COALESCE_SECONDS
        self.pending.pop((firm_id, invoice_id), None)  # to the back of the queue
        self.pending[(firm_id, invoice_id)] = due
        self._wake.set()

    def schedule_after_commit(self, s: AsyncSession, firm_id: str, invoice_id: str) -> None:
        """Schedule once `s` commits (a rolled back change renders nothing): the render reads
        the invoice in its own session, outside the consumer's transaction."""
        _after_commit(s, lambda: self.schedule(firm_id, invoice_id))

    def firm_changed_after_commit(
        self, s: AsyncSession, firm_id: str, before: str | None, after: str
    ) -> None:
        """The firm's profile changed from `before` to `after` (JSON): once `s` commits, look
        at its unpaid invoices again. Only those whose PDF shows what changed (the keys hold
        just the profile fields a PDF shows) are rendered again."""
        if before != after:
            _after_commit(s, lambda: self._start_sweep(firm_id))

    def _start_sweep(self, firm_id: str) -> None:
        task = asyncio.create_task(self._sweep(firm_id))
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)

    async def _sweep(self, firm_id: str) -> None:
        async with self.service.sessionmaker() as s:
            ids = await s.scalars(
                select(Invoice.invoice_id)
                .where(Invoice.firm_id == firm_id, Invoice.state.in_(PRERENDER_STATES))
                .order_by(Invoice.due_at)
            )
            for invoice_id in ids:
                self.schedule(firm_id, invoice_id)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            now = loop.time()
            due = [item for item, at in self.pending.items() if at <= now]
            if not due:
                await asyncio.sleep(min(self.pending.values()) - now)
                continue
            for item in due:
                # Waiting for a slot lets later updates of the queued invoices coalesce.
                await self._slots.acquire()
                if self.pending.get(item, now + 1) > loop.time():
                    self._slots.release()  # rescheduled meanwhile: it comes round again
                    continue
                del self.pending[item]
                task = asyncio.create_task(self._prerender(*item))
                self._background.add(task)
                task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        self._slots.release()

    async def _prerender(self, firm_id: str, invoice_id: str) -> None:
        try:
            await self._invoice(firm_id, invoice_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pdf: pre-rendering invoice %s of firm %s failed", invoice_id, firm_id)

    # --- statements ----------------------------------------------------------------------

    def schedule_statements(self, firm_id: str, groups: list[tuple[list[str], str]]) -> None:
        """Render, in the background, the statements that combined envelopes will carry
        (`groups`: invoice ids and client name per envelope), so that a send with PDF
        attachments finds them ready. Started when the envelopes are drafted."""
        if groups:
            task = asyncio.create_task(self._prerender_statements(firm_id, groups))
            self._sweeps.add(task)
            task.add_done_callback(self._sweeps.discard)

    async def _prerender_statements(
        self, firm_id: str, groups: list[tuple[list[str], str]]
    ) -> None:
        for invoice_ids, client_name in groups:
            # Pre-renders hold at most the background share of the pool, as invoices do.
            async with self._slots:
                try:
                    await self._statement(firm_id, invoice_ids, client_name)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("pdf: pre-rendering a statement of firm %s failed", firm_id)
