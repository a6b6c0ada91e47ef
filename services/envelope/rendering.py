"""Invoice and statement PDFs, on demand and ahead of time, with the client links they carry.

When an invoice changes, its PDF is rendered in the background once the change has committed
(prerender.py), so a send or a View Invoice finds it ready; the process pool and the cache by
content are pdf_pool.py's. A changed invoice, firm profile or template gets a new key.

Client links: the PDF's pay link is the invoice's own derived link (a statement's, the
statement's own, derived from its bills). Its Link row and paylink.issued event
(paylinks.py) are registered once the PDF exists, ahead of time with it, so a send has
nothing left to do.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import reads
from services.envelope.links import Links
from services.envelope.models import Invoice, Link, Pdf
from services.envelope.paylinks import PayLinks
from services.envelope.pdf_pool import Job, PdfPool
from services.envelope.prerender import COALESCE_SECONDS, Scheduler
from services.envelope.rules import prerendered, shows_pay_link
from services.envelope.settings import EnvelopeSettings
from shared.events import FirmProfile, InvoiceSnapshot
from shared.runtime import Service
from shared.tokens import hash_token


@dataclass
class _InvoiceJob:
    job: Job
    invoice: Invoice
    snapshot: InvoiceSnapshot
    token: str
    has_link: bool

    @property
    def unregistered(self) -> bool:
        """Its PDF carries a pay link not registered yet."""
        return bool(self.job.args["pay_url"]) and not self.has_link


class Renderer:
    def __init__(
        self, service: Service, settings: EnvelopeSettings, links: Links, paylinks: PayLinks
    ) -> None:
        self.service = service
        self.links = links
        self.paylinks = paylinks
        workers = max(1, settings.pdf_workers)
        self.pool = PdfPool(service, workers)
        self.scheduler = Scheduler(service, workers, self._prerender, self._prerender_statement)
        self._task: asyncio.Task[None] | None = None

    @property
    def renders(self) -> int:
        return self.pool.renders

    @property
    def worker_pids(self) -> set[int]:
        return self.pool.worker_pids

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
            await self.pool.warm_up()
            await self.scheduler.loop()
        finally:
            await self._close()

    async def _close(self) -> None:
        await self.scheduler.cancel()
        await self.pool.close()

    async def drain(self, timeout: float = 60) -> None:
        """Wait until nothing is scheduled or rendering (tests, benchmarks)."""
        async with asyncio.timeout(timeout):
            while True:
                tasks = {*self.scheduler.tasks(), *self.pool.inflight.values()}
                if tasks:
                    await asyncio.wait(tasks)
                elif self.scheduler.pending:
                    await asyncio.sleep(COALESCE_SECONDS / 4)  # until the next is dispatched
                else:
                    return

    # --- ahead of time (called by the scheduler) ------------------------------------------

    async def _prerender(self, firm_id: str, invoice_id: str) -> None:
        found = await self._invoice_job(firm_id, invoice_id)
        if found is None or not prerendered(found.snapshot.state):
            return
        await self.pool.produce(found.job)
        # The PDF carries the invoice's pay link: register it now, ahead of time too,
        # so that handing the PDF out (a send) has nothing left to do.
        if found.unregistered:
            await self.paylinks.ensure_invoice(found.invoice, found.snapshot, found.token)

    async def _prerender_statement(
        self, firm_id: str, invoice_ids: list[str], client_name: str
    ) -> None:
        today = datetime.now(UTC).date()
        await self.statement_for(firm_id, invoice_ids, client_name, today, register_link=True)

    # --- on demand -----------------------------------------------------------------------

    async def ensure(self, firm_id: str, invoice_id: str) -> str:
        """The key of the invoice's current PDF, rendered now unless it is stored or under
        way; registers the invoice's pay link the first time the PDF is handed out."""
        keys = await self.ensure_many(firm_id, [invoice_id])
        if invoice_id not in keys:
            raise KeyError(invoice_id)
        return keys[invoice_id]

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
            firm = await reads.firm_profile(s, firm_id)
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
        firm_args = await self.pool.firm_args(firm)
        found: dict[str, _InvoiceJob] = {}
        for invoices, _ in emails:
            for inv in invoices:
                if inv.invoice_id not in found:
                    found[inv.invoice_id] = await self._invoice_job_of(
                        inv, tokens[inv.invoice_id], registered, firm_args
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
            *(self.pool.produce(j, known_missing=True) for k, j in jobs.items() if k not in stored)
        )
        statements_unregistered: dict[str, tuple[list[Invoice], str]] = {}
        for (invoices, statement_of), stmt in zip(emails, statements, strict=True):
            if stmt is not None and stmt[1] not in registered:
                statements_unregistered.setdefault(stmt[1], (invoices, statement_of or ""))
        await self.paylinks.ensure_many(
            firm_id,
            [(f.invoice, f.snapshot, f.token) for f in found.values() if f.unregistered],
            list(statements_unregistered.values()),
        )
        return [
            (
                {i.invoice_id: found[i.invoice_id].job.key for i in invoices},
                job.key if job is not None else None,
            )
            for (invoices, _), job in zip(emails, statement_jobs, strict=True)
        ]

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
            invoices = await reads.invoices(s, firm_id, invoice_ids)
            firm = await reads.firm_profile(s, firm_id)
        if not invoices:
            return None
        token = self.links.statement_token(firm_id, [i.invoice_id for i in invoices])
        job = await self._statement_job(
            firm_id,
            await self.pool.firm_args(firm),
            [InvoiceSnapshot.model_validate_json(i.snapshot) for i in invoices],
            client_name=client_name,
            pay_url=self.links.pay_url(token),
            statement_date=statement_date,
        )
        await self.pool.produce(job)
        if register_link:
            await self.paylinks.ensure_statement(firm_id, invoices, client_name, None)
        return job.key

    async def link_statement(self, token: str) -> str | None:
        """The key of the statement of every bill on a client link (as of today), or None
        when the link does not exist or no longer works."""
        async with self.service.sessionmaker() as s:
            link = await self.paylinks.live(s, token)
            if link is None:
                return None
            invoices = await reads.invoices(s, link.firm_id, json.loads(link.invoice_ids))
        if not invoices:
            return None
        return await self.statement_for(
            link.firm_id,
            [i.invoice_id for i in invoices],
            invoices[0].client_name,
            datetime.now(UTC).date(),
            register_link=True,
        )

    # --- jobs ----------------------------------------------------------------------------

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
        args = {
            "invoices": [i.model_dump(mode="json") for i in invoices],
            "firm": firm_args,
            "client_name": client_name,
            "pay_url": pay_url,
            "statement_date": statement_date.isoformat(),
        }
        return await self.pool.job("statement", args, firm_id, None)

    async def _invoice_job(self, firm_id: str, invoice_id: str) -> _InvoiceJob | None:
        async with self.service.sessionmaker() as s:
            inv = await reads.invoice(s, firm_id, invoice_id)
            if inv is None:
                return None
            firm = await reads.firm_profile(s, firm_id)
            token = self.links.invoice_token(firm_id, invoice_id)
            registered = set(
                await s.scalars(select(Link.token_hash).where(Link.token_hash == hash_token(token)))
            )
        return await self._invoice_job_of(inv, token, registered, await self.pool.firm_args(firm))

    async def _invoice_job_of(
        self, inv: Invoice, token: str, registered: set[str], firm_args: dict[str, Any]
    ) -> _InvoiceJob:
        snap = InvoiceSnapshot.model_validate_json(inv.snapshot)
        pay_url = self.links.pay_url(token) if shows_pay_link(snap.balance_minor) else None
        # Keyed as pdf.invoice_cache_key(snap, <the firm as the PDF sees it>, pay_url=pay_url).
        args = {
            "invoice": snap.model_dump(mode="json"),
            "firm": firm_args,
            "pay_url": pay_url,
            "view_url": None,
        }
        job = await self.pool.job("invoice", args, inv.firm_id, inv.invoice_id)
        return _InvoiceJob(job, inv, snap, token, hash_token(token) in registered)
