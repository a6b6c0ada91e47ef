"""Invoice PDFs rendered ahead of time, in a process pool, and cached by content.

When an invoice changes, its PDF is rendered in the background once the change has committed,
so a send or a View Invoice finds it ready. A PDF is stored under a hash of everything that
shapes it (pdf.pdf_cache_key): an identical PDF is never rendered twice, and a changed invoice,
firm profile or template gets a new key.

- Coalescing: an invoice scheduled again before its render started is rendered once, from the
  snapshot stored by then (the newest).
- Joining: a request for a PDF whose render is under way waits for that render (per key)
  instead of starting another.
- Priority: background renders hold at most `pdf_workers` pool slots, so a send or a click
  never queues behind a backlog of pre-renders.
- WeasyPrint is CPU bound and holds the GIL, so renders run in worker processes started by a
  forkserver (forking this process, with its threads and sockets, is not safe); workers
  import only services.envelope.pdf and get plain dicts.
- Client links: the PDF's pay link is the invoice's own derived link (a statement's, the
  statement's own, derived from its bills). Its Link row and paylink.issued event are
  registered once the PDF exists, ahead of time with it, so a send has nothing left to do.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from services.envelope.models import Invoice, Link, Pdf
from services.envelope.settings import EnvelopeSettings
from shared.events import FirmProfile, InvoiceSnapshot, PayLinkIssued, PayLinkItem
from shared.tokens import hash_token

if TYPE_CHECKING:
    from shared.runtime import Service

log = logging.getLogger(__name__)

PDF_MODULE = "services.envelope.pdf"
# Invoices worth rendering before anyone asks: those a firm sends. Other states (drafts, void,
# paid) render on demand.
PRERENDER_STATES = frozenset({"awaiting_payment"})
# Updates of one invoice arriving within this window are rendered once.
COALESCE_SECONDS = 0.2
INVOICE_LINK_DAYS = 365
_AFTER_COMMIT = "envelope.render_after_commit"


class LinkSource(Protocol):
    """What the renderer needs from the desk: the firm's profile and the invoice's links."""

    async def firm(self, s: AsyncSession, firm_id: str) -> FirmProfile: ...

    def invoice_token(self, firm_id: str, invoice_id: str) -> str: ...

    def statement_token(self, firm_id: str, invoice_ids: list[str]) -> str: ...

    def pay_url(self, token: str, invoice_id: str | None = None) -> str: ...


@dataclass(frozen=True)
class Job:
    """One PDF to render: `args` are what the worker gets and, with `kind`, what the key is of."""

    kind: str
    args: dict[str, Any]
    firm_id: str
    invoice_id: str | None
    key: str = field(default="")


@dataclass
class _InvoiceJob:
    job: Job
    invoice: Invoice
    snapshot: InvoiceSnapshot
    token: str
    has_link: bool


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


def new_link(
    *,
    token: str,
    link_id: str,
    invoices: list[Invoice],
    client_name: str,
    client_email: str | None,
    expires: datetime,
    envelope_id: str = "",
    send_id: str = "",
    pay_all_outstanding: bool = False,
) -> tuple[dict[str, Any], PayLinkIssued]:
    """A client link: its row for `links` (by the token's hash) and paylink.issued for
    payments, with each bill's balance as it stands."""
    token_hash = hash_token(token)
    row = {
        "token_hash": token_hash,
        "firm_id": invoices[0].firm_id,
        "envelope_id": envelope_id,
        "send_id": send_id,
        "invoice_ids": json.dumps([i.invoice_id for i in invoices]),
        "created_at": datetime.now(UTC),
        "expires_at": expires,
    }
    issued = PayLinkIssued(
        firm_id=invoices[0].firm_id,
        link_id=link_id,
        token_hash=token_hash,
        envelope_id=envelope_id,
        client_id=invoices[0].client_id,
        client_name=client_name,
        client_email=client_email,
        items=[
            PayLinkItem(
                invoice_id=i.invoice_id,
                number=i.number,
                kind=i.kind,  # type: ignore[arg-type]
                currency=i.currency,
                balance_minor=max(0, i.balance_minor - (i.paid_online_minor or 0)),
                due_at=i.due_at,
            )
            for i in invoices
        ],
        pay_all_outstanding=pay_all_outstanding,
        expires_at=expires,
    )
    return row, issued


async def issue_link(service: Service, s: AsyncSession, **link: Any) -> None:
    """A client link (`new_link`), written and its event staged in the caller's
    transaction."""
    row, issued = new_link(**link)
    await s.execute(insert(Link.__table__), row)
    await service.publish(s, issued)


def _pool_context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    # Workers fork from a server that imported the renderer once, so each starts in
    # milliseconds instead of importing WeasyPrint again (about 1.5 s).
    ctx.set_forkserver_preload([PDF_MODULE])
    return ctx


class Renderer:
    def __init__(self, service: Service, settings: EnvelopeSettings, links: LinkSource) -> None:
        self.service = service
        self.settings = settings
        self.links = links
        self.workers = max(1, settings.pdf_workers)
        self._pdf: ModuleType | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[tuple[str, str], float] = {}  # (firm, invoice) -> not before
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._background: set[asyncio.Task[None]] = set()
        self._sweeps: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        # For tests and metrics: PDFs rendered by this process's pool, and by which workers.
        self.renders = 0
        self.worker_pids: set[int] = set()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Run the background renderer as a task (tests; the service uses `run`)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="pdf-renderer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._close()

    async def run(self) -> None:
        """The background renderer: a long-running task (service.background)."""
        try:
            await self.warm_up()
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._dispatch()
        finally:
            await self._close()

    async def warm_up(self) -> None:
        """Load the renderer here and start every worker, so the first render waits for
        neither."""
        pdf = await self._module()
        pool = self._executor(pdf)
        loop = asyncio.get_running_loop()
        # One trivial job per worker: the pool starts a process for each while none is idle.
        await asyncio.gather(*(loop.run_in_executor(pool, os.getpid) for _ in range(self.workers)))

    async def _close(self) -> None:
        tasks = [*self._background, *self._sweeps]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def drain(self, timeout: float = 60) -> None:
        """Wait until nothing is scheduled or rendering (tests, benchmarks)."""
        async with asyncio.timeout(timeout):
            while True:
                tasks = {*self._sweeps, *self._background, *self._inflight.values()}
                if tasks:
                    await asyncio.wait(tasks)
                elif self._pending:
                    await asyncio.sleep(COALESCE_SECONDS / 4)  # until the next is dispatched
                else:
                    return

    # --- scheduling ----------------------------------------------------------------------

    def schedule(self, firm_id: str, invoice_id: str) -> None:
        """Render the invoice's PDF in the background, from its snapshot as stored by then."""
        due = asyncio.get_running_loop().time() + COALESCE_SECONDS
        self._pending.pop((firm_id, invoice_id), None)  # to the back of the queue
        self._pending[(firm_id, invoice_id)] = due
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
        while self._pending:
            now = loop.time()
            due = [item for item, at in self._pending.items() if at <= now]
            if not due:
                await asyncio.sleep(min(self._pending.values()) - now)
                continue
            for item in due:
                # Waiting for a slot lets later updates of the queued invoices coalesce.
                await self._slots.acquire()
                if self._pending.get(item, now + 1) > loop.time():
                    self._slots.release()  # rescheduled meanwhile: it comes round again
                    continue
                del self._pending[item]
                task = asyncio.create_task(self._prerender(*item))
                self._background.add(task)
                task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        self._slots.release()

    async def _prerender(self, firm_id: str, invoice_id: str) -> None:
        try:
            found = await self._invoice_job(firm_id, invoice_id)
            if found is None or found.snapshot.state not in PRERENDER_STATES:
                return
            await self._produce(found.job)
            # The PDF carries the invoice's pay link: register it now, ahead of time too,
            # so that handing the PDF out (a send) has nothing left to do.
            await self._ensure_invoice_link(found)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pdf: pre-rendering invoice %s of firm %s failed", invoice_id, firm_id)

    # --- on demand -----------------------------------------------------------------------

    async def ensure(self, firm_id: str, invoice_id: str) -> str:
        """The key of the invoice's current PDF, rendered now unless it is stored or under
        way; registers the invoice's pay link the first time the PDF is handed out."""
        keys = await self.ensure_many(firm_id, [invoice_id])
        if invoice_id not in keys:
            raise KeyError(invoice_id)
        return keys[invoice_id]

    async def _ensure_invoice_link(self, found: _InvoiceJob) -> None:
        if found.job.args["pay_url"] and not found.has_link:
            try:
                async with self.service.sessionmaker() as s, s.begin():
                    await self._register_invoice_link(
                        s, found.invoice.firm_id, found.invoice, found.snapshot, found.token
                    )
            except IntegrityError:
                pass  # registered concurrently

    async def ensure_many(self, firm_id: str, invoice_ids: list[str]) -> dict[str, str]:
        """`ensure` for several invoices of one firm. Returns invoice id -> PDF key; unknown
        invoices are left out."""
        async with self.service.sessionmaker() as s:
            invoices = list(
                await s.scalars(
                    select(Invoice).where(
                        Invoice.firm_id == firm_id, Invoice.invoice_id.in_(invoice_ids)
                    )
                )
            )
            firm = await self.links.firm(s, firm_id)
            keys, _ = await self.ensure_for_email(s, firm_id, invoices, firm)
        return keys

    async def ensure_for_email(
        self,
        s: AsyncSession,
        firm_id: str,
        invoices: list[Invoice],
        firm: FirmProfile,
        *,
        statement_of: str | None = None,
        statement_date: date | None = None,
    ) -> tuple[dict[str, str], str | None]:
        """An email's PDFs: each invoice's and, with `statement_of` (the client's name), the
        statement of them all; see `ensure_for_emails`. Returns (invoice id -> PDF key,
        statement key or None)."""
        (found,) = await self.ensure_for_emails(
            s, firm_id, firm, [(invoices, statement_of)], statement_date=statement_date
        )
        return found

    async def ensure_for_emails(
        self,
        s: AsyncSession,
        firm_id: str,
        firm: FirmProfile,
        emails: list[tuple[list[Invoice], str | None]],
        *,
        statement_date: date | None = None,
    ) -> list[tuple[dict[str, str], str | None]]:
        """The PDFs of several emails of one firm, each given as (its invoices, the client's
        name when it carries their statement). Two reads in the caller's session `s` for
        them all (which links exist, which PDFs are stored), which it leaves without a
        transaction; renders only what is missing (in parallel, joining renders under
        way); one transaction registers the links not yet registered. Returns, per email,
        (invoice id -> PDF key, statement key or None)."""
        statement_date = statement_date or datetime.now(UTC).date()
        tokens: dict[str, str] = {}
        statements: list[tuple[str, str] | None] = []  # per email: (token, its hash)
        for invoices, statement_of in emails:
            for inv in invoices:
                tokens.setdefault(inv.invoice_id, self.links.invoice_token(firm_id, inv.invoice_id))
            if statement_of is not None and invoices:
                token = self.links.statement_token(firm_id, [i.invoice_id for i in invoices])
                statements.append((token, hash_token(token)))
            else:
                statements.append(None)
        hashes = [hash_token(t) for t in tokens.values()] + [x[1] for x in statements if x]
        registered = set(
            await s.scalars(select(Link.token_hash).where(Link.token_hash.in_(hashes)))
        )
        firm_args = await self._firm_args(firm)
        found: dict[str, _InvoiceJob] = {}
        for invoices, _ in emails:
            for inv in invoices:
                if inv.invoice_id not in found:
                    found[inv.invoice_id] = await self._invoice_job_of(
                        inv, firm, tokens[inv.invoice_id], registered, firm_args=firm_args
                    )
        statement_jobs: list[Job | None] = []
        for (invoices, statement_of), stmt in zip(emails, statements, strict=True):
            statement_jobs.append(
                None
                if stmt is None
                else await self._statement_job(
                    firm_id,
                    firm_args,
                    [found[i.invoice_id].snapshot for i in invoices],
                    client_name=statement_of or "",
                    pay_url=self.links.pay_url(stmt[0]),
                    statement_date=statement_date,
                )
            )
        jobs = {f.job.key: f.job for f in found.values()}
        jobs.update({j.key: j for j in statement_jobs if j is not None})
        stored = set(await s.scalars(select(Pdf.key).where(Pdf.key.in_(list(jobs)))))
        await s.close()  # no transaction open while rendering
        await asyncio.gather(
            *(self._produce(j, known_missing=True) for k, j in jobs.items() if k not in stored)
        )
        unregistered = [f for f in found.values() if f.job.args["pay_url"] and not f.has_link]
        statements_unregistered: dict[str, tuple[list[Invoice], str]] = {}
        for (invoices, statement_of), stmt in zip(emails, statements, strict=True):
            if stmt is not None and stmt[1] not in registered:
                statements_unregistered.setdefault(stmt[1], (invoices, statement_of or ""))
        if unregistered or statements_unregistered:
            try:
                async with self.service.sessionmaker() as w, w.begin():
                    for f in unregistered:
                        await self._register_invoice_link(
                            w, firm_id, f.invoice, f.snapshot, f.token
                        )
                    for invoices, client_name in statements_unregistered.values():
                        await self._register_statement_link(w, firm_id, invoices, client_name)
            except IntegrityError:
                # Registered concurrently (another send of the same bills): one at a time.
                for f in unregistered:
                    await self._ensure_invoice_link(f)
                for invoices, client_name in statements_unregistered.values():
                    await self.register_statement_link(firm_id, invoices, client_name, None)
        return [
            (
                {i.invoice_id: found[i.invoice_id].job.key for i in invoices},
                job.key if job is not None else None,
            )
            for (invoices, _), job in zip(emails, statement_jobs, strict=True)
        ]

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
        today = datetime.now(UTC).date()
        for invoice_ids, client_name in groups:
            # Pre-renders hold at most the background share of the pool, as invoices do.
            async with self._slots:
                try:
                    await self.statement_for(
                        firm_id, invoice_ids, client_name, today, register_link=True
                    )
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("pdf: pre-rendering a statement of firm %s failed", firm_id)

    async def statement_for(
        self,
        firm_id: str,
        invoice_ids: list[str],
        client_name: str,
        statement_date: date,
        *,
        register_link: bool = False,
    ) -> str | None:
        """The key of the statement of these invoices as they stand, whose Pay All link is
        the statement's own (derived from the bills, like an invoice's): the same PDF for
        every email of the same bills on the same day, so it can be rendered ahead of time.
        The link is registered when the PDF is first handed out."""
        async with self.service.sessionmaker() as s:
            rows = {
                i.invoice_id: i
                for i in await s.scalars(
                    select(Invoice).where(
                        Invoice.firm_id == firm_id, Invoice.invoice_id.in_(invoice_ids)
                    )
                )
            }
            firm = await self.links.firm(s, firm_id)
        invoices = [rows[i] for i in invoice_ids if i in rows]
        if not invoices:
            return None
        token = self.links.statement_token(firm_id, [i.invoice_id for i in invoices])
        key = await self.ensure_statement(
            firm_id,
            firm,
            [InvoiceSnapshot.model_validate_json(i.snapshot) for i in invoices],
            client_name=client_name,
            pay_url=self.links.pay_url(token),
            statement_date=statement_date,
        )
        if register_link:
            await self.register_statement_link(firm_id, invoices, client_name, None)
        return key

    async def register_statement_link(
        self, firm_id: str, invoices: list[Invoice], client_name: str, client_email: str | None
    ) -> None:
        """Register the statement's Pay All link (once), when its PDF is handed out."""
        token = self.links.statement_token(firm_id, [i.invoice_id for i in invoices])
        async with self.service.sessionmaker() as s:
            # Usually registered already (at draft time, or by an earlier send): a read
            # says so without queueing for the write lock.
            if await s.scalar(select(Link.token_hash).where(Link.token_hash == hash_token(token))):
                return
        try:
            async with self.service.sessionmaker() as s, s.begin():
                if await s.get(Link, hash_token(token)) is not None:
                    return
                await self._register_statement_link(s, firm_id, invoices, client_name, client_email)
        except IntegrityError:
            pass  # registered concurrently

    async def _register_statement_link(
        self,
        s: AsyncSession,
        firm_id: str,
        invoices: list[Invoice],
        client_name: str,
        client_email: str | None = None,
    ) -> None:
        token = self.links.statement_token(firm_id, [i.invoice_id for i in invoices])
        await issue_link(
            self.service,
            s,
            token=token,
            link_id=f"statement:{hash_token(token)[:16]}",
            invoices=invoices,
            client_name=client_name,
            client_email=client_email,
            expires=datetime.now(UTC) + timedelta(days=INVOICE_LINK_DAYS),
        )

    async def ensure_statement(
        self,
        firm_id: str,
        firm: FirmProfile,
        invoices: list[InvoiceSnapshot],
        *,
        client_name: str,
        pay_url: str | None,
        statement_date: date,
    ) -> str:
        """The key of the combined statement of `invoices`, rendered unless stored."""
        job = await self._statement_job(
            firm_id,
            await self._firm_args(firm),
            invoices,
            client_name=client_name,
            pay_url=pay_url,
            statement_date=statement_date,
        )
        await self._produce(job)
        return job.key

    async def _statement_job(
        self,
        firm_id: str,
        firm_args: dict[str, Any],
        invoices: list[InvoiceSnapshot],
        *,
        client_name: str,
        pay_url: str | None,
        statement_date: date,
    ) -> Job:
        return await self._job(
            "statement",
            {
                "invoices": [i.model_dump(mode="json") for i in invoices],
                "firm": firm_args,
                "client_name": client_name,
                "pay_url": pay_url,
                "statement_date": statement_date.isoformat(),
            },
            firm_id,
            None,
        )

    # --- the work ------------------------------------------------------------------------

    async def _module(self) -> ModuleType:
        # Importing WeasyPrint takes over a second: never on the event loop.
        if self._pdf is None:
            self._pdf = await asyncio.to_thread(importlib.import_module, PDF_MODULE)
        return self._pdf

    async def _firm_args(self, firm: FirmProfile) -> dict[str, Any]:
        """The firm as a PDF sees it: the profile fields a PDF shows, the settings (combine,
        delivery) at their defaults, so changing a setting leaves every key as it was."""
        pdf = await self._module()
        shown = FirmProfile.model_validate(firm.model_dump(include=set(pdf.FIRM_FIELDS)))
        return shown.model_dump(mode="json")

    def _executor(self, pdf: ModuleType) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=_pool_context(), initializer=pdf.start_worker
            )
        return self._pool

    async def _job(
        self, kind: str, args: dict[str, Any], firm_id: str, invoice_id: str | None
    ) -> Job:
        pdf = await self._module()
        return Job(kind, args, firm_id, invoice_id, key=pdf.pdf_cache_key(kind, args))

    async def _invoice_job(self, firm_id: str, invoice_id: str) -> _InvoiceJob | None:
        async with self.service.sessionmaker() as s:
            inv = await s.scalar(
                select(Invoice).where(Invoice.firm_id == firm_id, Invoice.invoice_id == invoice_id)
            )
            if inv is None:
                return None
            firm = await self.links.firm(s, firm_id)
            token = self.links.invoice_token(firm_id, invoice_id)
            registered = set(
                await s.scalars(select(Link.token_hash).where(Link.token_hash == hash_token(token)))
            )
        return await self._invoice_job_of(inv, firm, token, registered)

    async def _invoice_job_of(
        self,
        inv: Invoice,
        firm: FirmProfile,
        token: str,
        registered: set[str],
        *,
        firm_args: dict[str, Any] | None = None,
    ) -> _InvoiceJob:
        snap = InvoiceSnapshot.model_validate_json(inv.snapshot)
        pay_url = self.links.pay_url(token) if snap.balance_minor > 0 else None
        # Keyed as pdf.invoice_cache_key(snap, <the firm as the PDF sees it>, pay_url=pay_url).
        args = {
            "invoice": snap.model_dump(mode="json"),
            "firm": firm_args if firm_args is not None else await self._firm_args(firm),
            "pay_url": pay_url,
            "view_url": None,
        }
        job = await self._job("invoice", args, inv.firm_id, inv.invoice_id)
        return _InvoiceJob(job, inv, snap, token, hash_token(token) in registered)

    async def _produce(self, job: Job, *, known_missing: bool = False) -> None:
        """Have the PDF of `job` stored: join the render of the same key if one is under way.
        `known_missing`: the caller just looked and found it not stored."""
        task = self._inflight.get(job.key)
        if task is None:
            if not known_missing:
                async with self.service.sessionmaker() as s:
                    stored = await s.scalar(select(Pdf.key).where(Pdf.key == job.key))
                if stored is not None:
                    return
            task = self._inflight.get(job.key)  # started while we looked
            if task is None:
                task = asyncio.create_task(self._render_and_store(job))
                self._inflight[job.key] = task
                task.add_done_callback(lambda t, key=job.key: self._forget(key, t))
        # Shielded: a caller that gives up does not cancel the render others are waiting for.
        await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
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

    async def _register_invoice_link(
        self, s: AsyncSession, firm_id: str, inv: Invoice, snap: InvoiceSnapshot, token: str
    ) -> None:
        # The PDF's pay link belongs to the invoice, not to one email, so a PDF rendered
        # ahead of time can carry it. It lives as long as the invoice is unpaid.
        await issue_link(
            self.service,
            s,
            token=token,
            link_id=f"invoice:{inv.invoice_id}",
            invoices=[inv],
            client_name=inv.client_name,
            client_email=snap.client_email,
            expires=datetime.now(UTC) + timedelta(days=INVOICE_LINK_DAYS),
        )
