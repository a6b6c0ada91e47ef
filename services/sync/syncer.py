"""Pulls a firm's bills, line items and contacts from Clio into the mirror and publishes what
changed, in as few requests as Clio allows: every listing 200 a page with only the fields
read, `updated_since` (less an overlap) after the first sync, and line items listed across
bills rather than per bill. Each firm polls on its own task."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync import bills
from services.sync import lines as line_store
from services.sync.clio import ClioClient, ClioError
from services.sync.connection import Connections
from services.sync.contacts import sync_contacts
from services.sync.mapping import (
    REMOVED_STATES,
    MalformedBill,
    bill_currency,
    bill_to_snapshot,
    check_deliverable,
    invoice_id_for,
    parse_ts,
)
from services.sync.models import ClioConnection, Contact, Invoice, Quarantined, SyncRun
from services.sync.progress import RunState, SyncResult, finished, running
from services.sync.settings import SyncSettings
from shared.api.sync import SyncProgress
from shared.events import (
    Event,
    InvoiceRemoved,
    InvoiceSnapshot,
    InvoiceState,
    InvoiceUpdated,
    LineItem,
)
from shared.runtime import Service

log = logging.getLogger(__name__)

NOT_CONNECTED = "Clio is not connected"
__all__ = ["NOT_CONNECTED", "SyncResult", "Syncer", "parse_ts"]


def _comparable(snapshot: InvoiceSnapshot) -> str:
    # etag and updated_at change on edits we do not show; publishing for them is noise.
    return snapshot.model_dump_json(exclude={"etag", "source_updated_at"})


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sync: a started sync failed", exc_info=task.exception())


class Syncer:
    def __init__(
        self, service: Service, settings: SyncSettings, connections: Connections | None = None
    ) -> None:
        self.service = service
        self.settings = settings
        self.connections = connections or Connections(service, settings)
        self._locks: dict[str, asyncio.Lock] = {}
        self._runs: dict[str, RunState] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}  # Sync now, by firm
        self._pollers: dict[str, asyncio.Task[Any]] = {}

    def client(self, conn: ClioConnection) -> ClioClient:
        return self.connections.client(conn)

    def _lock(self, firm_id: str) -> asyncio.Lock:
        return self._locks.setdefault(firm_id, asyncio.Lock())

    # --- scheduling -----------------------------------------------------------------------

    async def _firm_ids(self) -> list[str]:
        async with self.service.sessionmaker() as s:
            return list((await s.scalars(select(ClioConnection.firm_id))).all())

    async def sync_all(self) -> None:
        """One round for every connected firm, one after the other (tests, scripts)."""
        for firm_id in await self._firm_ids():
            await self.sync_firm(firm_id)

    async def run_forever(self) -> None:
        """Keep one polling task per connected firm, so a firm's long first sync never holds
        back another firm's poll; a firm connected later gets its task within an interval."""
        try:
            while True:
                try:
                    for firm_id in await self._firm_ids():
                        task = self._pollers.get(firm_id)
                        if task is None or task.done():
                            self._pollers[firm_id] = asyncio.create_task(self._poll(firm_id))
                except Exception:
                    log.exception("sync: listing the connected firms failed")
                await asyncio.sleep(self.settings.sync_interval_seconds)
        finally:
            for task in self._pollers.values():
                task.cancel()

    async def _poll(self, firm_id: str) -> None:
        while True:
            try:
                result = await self.sync_firm(firm_id)
                if result.error == NOT_CONNECTED:
                    return
            except Exception:
                log.exception("sync: firm %s: a sync round failed", firm_id)
            await asyncio.sleep(self.settings.sync_interval_seconds)

    def start(self, firm_id: str) -> bool:
        """Start a sync of the firm behind the caller; False when one is running already."""
        task = self._tasks.get(firm_id)
        if self._lock(firm_id).locked() or (task is not None and not task.done()):
            return False
        task = self._tasks[firm_id] = asyncio.create_task(self.sync_firm(firm_id))
        task.add_done_callback(_log_failure)
        return True

    async def join(self, firm_id: str) -> None:
        """Wait for the sync `start` began for the firm, if any (tests, shutdown)."""
        task = self._tasks.get(firm_id)
        if task is not None:
            await asyncio.shield(task)

    async def progress(self, firm_id: str) -> SyncProgress:
        """The running sync's counters, or the last finished one's."""
        run = self._runs.get(firm_id)
        if run is not None:
            return running(run)
        async with self.service.sessionmaker() as s:
            row = await s.scalar(
                select(SyncRun)
                .where(SyncRun.firm_id == firm_id)
                .order_by(SyncRun.started_at.desc(), SyncRun.id.desc())
                .limit(1)
            )
        progress = finished(row)
        task = self._tasks.get(firm_id)
        if task is not None and not task.done():
            progress.running = True  # started, not yet past its first step
        return progress

    # --- one round ------------------------------------------------------------------------

    async def sync_firm(self, firm_id: str) -> SyncResult:
        async with self._lock(firm_id):
            return await self._sync_firm(firm_id)

    async def _sync_firm(self, firm_id: str) -> SyncResult:
        sm = self.service.sessionmaker
        async with sm() as s, s.begin():
            conn = await s.get(ClioConnection, firm_id)
            if conn is None:
                return SyncResult(error=NOT_CONNECTED)
            run_row = SyncRun(firm_id=firm_id, started_at=datetime.now(UTC))
            s.add(run_row)
        run = self._runs[firm_id] = RunState(started_at=run_row.started_at)
        client = self.client(conn)
        try:
            contacts_cursor = await sync_contacts(self, client, conn, run)
            lines_cursor, touched, held = await bills.sync_lines(self, client, conn, run)
            bills_cursor, listed = await bills.sync_bills(
                self,
                client,
                conn,
                run,
                incremental=conn.line_items_cursor is not None,
                held=held,
            )
            del held  # the first sync's lines, no longer wanted
            await bills.relines(self, firm_id, touched - listed, run)
            async with sm() as s, s.begin():
                row = await s.get(ClioConnection, firm_id)
                if row is not None:
                    row.contacts_cursor = contacts_cursor or row.contacts_cursor
                    row.bills_cursor = bills_cursor or row.bills_cursor
                    row.line_items_cursor = lines_cursor or row.line_items_cursor
                    row.last_synced_at = run.started_at
                    row.last_success_at = datetime.now(UTC)
                    row.last_error = None
        except ClioError as exc:  # ClioAuthError too: the firm must connect again
            run.error = str(exc)
            log.warning("sync: firm %s: %s", firm_id, exc)
            async with sm() as s, s.begin():
                row = await s.get(ClioConnection, firm_id)
                if row is not None:
                    row.last_error = str(exc)
                    row.last_error_at = datetime.now(UTC)
        finally:
            run.requests = client.requests
            await client.aclose()
            async with sm() as s, s.begin():
                saved = await s.get(SyncRun, run_row.id)
                if saved is not None:
                    saved.finished_at = datetime.now(UTC)
                    saved.fetched = run.fetched
                    saved.changed = run.changed
                    saved.quarantined = run.quarantined
                    saved.total = run.total
                    saved.requests = run.requests
                    saved.error = run.error
            self._runs.pop(firm_id, None)
        log.info(
            "sync: firm %s fetched %d, changed %d, quarantined %d in %d requests",
            firm_id,
            run.fetched,
            run.changed,
            run.quarantined,
            run.requests,
        )
        return run.outcome()

    def since(self, cursor: datetime | None) -> dict[str, str]:
        if cursor is None:
            return {}
        since = cursor - timedelta(seconds=self.settings.sync_overlap_seconds)
        return {"updated_since": since.isoformat()}

    async def listing(
        self, client: ClioClient, path: str, params: dict[str, Any], run: RunState
    ) -> AsyncIterator[tuple[list[Any], dict[str, Any]]]:
        """Each page's data and meta, 200 a page; the first page's meta.records plans the
        rest of the listing's requests for the progress estimate."""
        body = await client.get(path, {"limit": 200, **params})
        run.planned += 1
        meta = body.get("meta") or {}
        run.expect(meta.get("records"))
        while True:
            run.requests = client.requests
            yield list(body.get("data") or []), meta
            nxt = (meta.get("paging") or {}).get("next")
            if not nxt:
                return
            body = await client.get(nxt)
            meta = body.get("meta") or {}

    async def contacts_map(self, s: AsyncSession, firm_id: str) -> dict[str, dict[str, Any]]:
        rows = await s.execute(
            select(Contact.contact_id, Contact.name, Contact.email).where(
                Contact.firm_id == firm_id
            )
        )
        return {cid: {"primary_email_address": email, "name": name} for cid, name, email in rows}

    # --- one bill -------------------------------------------------------------------------

    async def apply_bill(
        self,
        s: AsyncSession,
        firm_id: str,
        bill: Any,
        contacts: dict[str, dict[str, Any]],
        result: SyncResult,
        *,
        line_items: list[LineItem] | None = None,
    ) -> None:
        """Mirror one bill and publish it when what a client sees changed; quarantine it when
        it cannot be shown or paid; remove it when Clio voided or deleted it.

        `line_items` are the bill's freshly fetched lines; None takes them from the stored
        line items (clio_lines), else keeps those of the published snapshot.
        """
        source_id = str(bill.get("id")) if isinstance(bill, dict) else "?"
        row = await s.scalar(
            select(Invoice).where(
                Invoice.firm_id == firm_id, Invoice.invoice_id == invoice_id_for(source_id)
            )
        )
        if line_items is None:
            # The lines the last listing stored, when it has any (a bill new to the mirror).
            raw = await line_store.raw_lines(s, firm_id, [source_id])
            if raw.get(source_id):
                line_items = line_store.mapped(raw[source_id], bill_currency(bill))
        await self.apply_listed(
            s, firm_id, bill, contacts, result, line_items=line_items, row=row, quarantined=True
        )

    async def apply_listed(
        self,
        s: AsyncSession,
        firm_id: str,
        bill: Any,
        contacts: dict[str, dict[str, Any]],
        result: SyncResult,
        *,
        line_items: list[LineItem] | None,
        row: Invoice | None,
        quarantined: bool,
        staged: list[Event] | None = None,
        new_rows: list[dict[str, Any]] | None = None,
    ) -> None:
        """apply_bill with the mirror row already read; `quarantined` False when the bill is
        known not to be in quarantine (nothing to clear); `staged` collects invoice.updated
        for the caller to stage in one statement, instead of one insert each; `new_rows`
        collects the mirror rows of bills new to it, for the caller to insert in one
        statement (bills.INSERT_INVOICE), instead of through the session."""
        source_id = str(bill.get("id")) if isinstance(bill, dict) else "?"
        state = bill.get("state") if isinstance(bill, dict) else None
        if state in REMOVED_STATES and source_id not in ("?", "None", ""):
            if quarantined:
                await self._unquarantine(s, firm_id, source_id)
            # Never published: nothing to take back, and nothing to show.
            if row is not None and await self.remove_bill(
                s, firm_id, source_id, InvoiceState(state), f"{state} in Clio"
            ):
                result.changed += 1
            return
        stored = InvoiceSnapshot.model_validate_json(row.snapshot) if row is not None else None
        if line_items is None and stored is not None:
            line_items = stored.line_items
        try:
            snap = bill_to_snapshot(bill, contacts, line_items=list(line_items or []))
            check_deliverable(snap)
        except MalformedBill as exc:
            result.quarantined += 1
            log.info("sync: firm %s bill %s quarantined: %s", firm_id, source_id, exc)
            await self._quarantine(s, firm_id, source_id, bill, str(exc))
            return
        if quarantined:
            await self._unquarantine(s, firm_id, snap.source_id)
        if row is not None and stored is not None and _comparable(stored) == _comparable(snap):
            if stored.etag != snap.etag:
                row.snapshot = snap.model_dump_json()
            return
        if row is None and new_rows is not None:
            new_rows.append(
                {
                    "firm_id": firm_id,
                    "invoice_id": invoice_id_for(snap.source_id),
                    "client_id": snap.client_id,
                    "snapshot": snap.model_dump_json(),
                    "updated_at": datetime.now(UTC),
                }
            )
        else:
            if row is None:
                row = Invoice(
                    firm_id=firm_id,
                    invoice_id=invoice_id_for(snap.source_id),
                    client_id=snap.client_id,
                )
                s.add(row)
            row.client_id = snap.client_id
            row.snapshot = snap.model_dump_json()
            row.updated_at = datetime.now(UTC)
        event = InvoiceUpdated(firm_id=firm_id, invoice=snap)
        if staged is None:
            await self.service.publish(s, event)
        else:
            staged.append(event)
        result.changed += 1

    async def _quarantine(
        self, s: AsyncSession, firm_id: str, source_id: str, bill: Any, reason: str
    ) -> None:
        row = await s.scalar(
            select(Quarantined).where(
                Quarantined.firm_id == firm_id,
                Quarantined.source == "clio",
                Quarantined.source_id == source_id,
            )
        )
        if row is None:
            row = Quarantined(firm_id=firm_id, source="clio", source_id=source_id)
            s.add(row)
        row.reason = reason
        row.raw = json.dumps(bill, default=str)[:100_000]
        row.received_at = datetime.now(UTC)

    async def _unquarantine(self, s: AsyncSession, firm_id: str, source_id: str) -> None:
        await s.execute(
            delete(Quarantined).where(
                Quarantined.firm_id == firm_id,
                Quarantined.source == "clio",
                Quarantined.source_id == source_id,
            )
        )

    async def remove_bill(
        self, s: AsyncSession, firm_id: str, source_id: str, state: InvoiceState, reason: str
    ) -> bool:
        """A bill voided or deleted in Clio: mark it so in the mirror and publish
        `invoice.removed`, once. False when it was never published or is removed already."""
        row = await s.scalar(
            select(Invoice).where(
                Invoice.firm_id == firm_id, Invoice.invoice_id == invoice_id_for(source_id)
            )
        )
        if row is None:
            return False
        stored = InvoiceSnapshot.model_validate_json(row.snapshot)
        if stored.state == state:
            return False
        row.snapshot = stored.model_copy(update={"state": state}).model_dump_json()
        row.updated_at = datetime.now(UTC)
        await self.service.publish(
            s,
            InvoiceRemoved(firm_id=firm_id, invoice_id=row.invoice_id, reason=reason, state=state),
        )
        return True
