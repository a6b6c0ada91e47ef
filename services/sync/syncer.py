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

from services.sync import lines as line_store
from services.sync.clio import ClioClient, ClioError
from services.sync.connection import Connections
from services.sync.contacts import sync_contacts
from services.sync.mapping import (
    BILL_FIELDS,
    LINE_ITEM_BULK_FIELDS,
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
from shared.events import InvoiceRemoved, InvoiceSnapshot, InvoiceState, InvoiceUpdated, LineItem
from shared.runtime import Service

log = logging.getLogger(__name__)

NOT_CONNECTED = "Clio is not connected"
__all__ = ["NOT_CONNECTED", "SyncResult", "Syncer", "parse_ts"]


def _comparable(snapshot: InvoiceSnapshot) -> str:
    # etag and updated_at change on edits we do not show; publishing for them is noise.
    return snapshot.model_dump_json(exclude={"etag", "source_updated_at"})


def _newer(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


async def ahead(pages: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The same pages, the next one requested while the caller stores this one."""
    nxt: asyncio.Future[Any] = asyncio.ensure_future(anext(pages, None))
    try:
        while (page := await nxt) is not None:
            nxt = asyncio.ensure_future(anext(pages, None))
            yield page
    finally:
        if not nxt.done():
            nxt.cancel()


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
        self._tasks[firm_id] = asyncio.create_task(self.sync_firm(firm_id))
        return True

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
            lines_cursor, touched = await self._sync_lines(client, conn, run)
            bills_cursor, listed = await self._sync_bills(
                client, conn, run, incremental=conn.line_items_cursor is not None
            )
            await self._relines(firm_id, touched - listed, run)
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

    async def _sync_lines(
        self, client: ClioClient, conn: ClioConnection, run: RunState
    ) -> tuple[datetime | None, set[str]]:
        """List line items across bills (all on a first sync, then those updated since the
        cursor less the overlap) into clio_lines; the bills they belong to."""
        params = {
            "fields": LINE_ITEM_BULK_FIELDS,
            "order": "id(asc)",
            **self.since(conn.line_items_cursor),
        }
        touched: set[str] = set()
        newest: datetime | None = None
        async for page, _ in ahead(self.listing(client, "line_items.json", params, run)):
            async with self.service.sessionmaker() as s, s.begin():
                bills, ts = await line_store.store_page(s, conn.firm_id, page)
            touched |= bills
            newest = _newer(newest, ts)
        return newest, touched

    async def _bill_lines(self, client: ClioClient, firm_id: str, bill_id: str) -> None:
        """Replace one bill's stored lines with what Clio lists for it now."""
        params = {"bill_id": bill_id, "fields": LINE_ITEM_BULK_FIELDS, "order": "id(asc)"}
        async with self.service.sessionmaker() as s, s.begin():
            await line_store.forget_bill(s, firm_id, bill_id)
            async for page in client.pages("line_items.json", params):
                await line_store.store_page(s, firm_id, page, bill_id=bill_id)

    async def _sync_bills(
        self, client: ClioClient, conn: ClioConnection, run: RunState, *, incremental: bool
    ) -> tuple[datetime | None, set[str]]:
        firm_id = conn.firm_id
        params = {"fields": BILL_FIELDS, "order": "id(asc)", **self.since(conn.bills_cursor)}
        async with self.service.sessionmaker() as s:
            contacts = await self.contacts_map(s, firm_id)
        newest: datetime | None = None
        listed: set[str] = set()
        first = True
        async for page, meta in ahead(self.listing(client, "bills.json", params, run)):
            if first:
                records = meta.get("records")
                run.total = records if isinstance(records, int) else None
                first = False
            ids = [str(b["id"]) for b in page if isinstance(b, dict) and b.get("id") is not None]
            listed.update(ids)
            async with self.service.sessionmaker() as s:
                raw = await line_store.raw_lines(s, firm_id, ids)
                known = await self._mirrored(s, firm_id, ids)
            refetch = self._refetch(page, raw, known, contacts, incremental=incremental)
            for bill_id in refetch:
                await self._bill_lines(client, firm_id, bill_id)
            if refetch:
                async with self.service.sessionmaker() as s:
                    raw.update(await line_store.raw_lines(s, firm_id, refetch))
            async with self.service.sessionmaker() as s, s.begin():
                quarantined = set(
                    await s.scalars(
                        select(Quarantined.source_id).where(
                            Quarantined.firm_id == firm_id,
                            Quarantined.source == "clio",
                            Quarantined.source_id.in_(ids),
                        )
                    )
                )
                for bill in page:
                    run.fetched += 1
                    sid = str(bill.get("id")) if isinstance(bill, dict) else "?"
                    items = line_store.mapped(raw.get(sid), bill_currency(bill))
                    await self._apply(
                        s,
                        firm_id,
                        bill,
                        contacts,
                        run,
                        line_items=items,
                        row=known.get(sid),
                        quarantined=sid in quarantined or sid == "?",
                    )
                    if isinstance(bill, dict):
                        newest = _newer(newest, parse_ts(bill.get("updated_at")))
            run.requests = client.requests
        return newest, listed

    async def _mirrored(self, s: AsyncSession, firm_id: str, ids: list[str]) -> dict[str, Invoice]:
        wanted = [invoice_id_for(i) for i in ids]
        rows = await s.scalars(
            select(Invoice).where(Invoice.firm_id == firm_id, Invoice.invoice_id.in_(wanted))
        )
        return {row.invoice_id.removeprefix("clio:"): row for row in rows}

    @staticmethod
    def _refetch(
        page: list[Any],
        raw: dict[str, list[Any]],
        known: dict[str, Invoice],
        contacts: dict[str, dict[str, Any]],
        *,
        incremental: bool,
    ) -> list[str]:
        """The bills on `page` whose lines must be fetched by bill_id.

        The bulk listing says which lines were added or changed since the cursor, never which
        were removed. Clio only removes a line from a bill by changing the bill (new etag),
        and a removed line with an amount leaves the bill's total short of its lines. So in an
        incremental round a bill that is new or changed, and whose stored lines no longer add
        up to its total, has its lines fetched by bill_id and replaced: a few bills, not one
        request per bill (a payment changes the etag but not the lines, which still add up).
        A first sync lists every line, so it trusts the listing; only a bill with an amount
        and no lines at all (created after the line listing ran) is fetched on its own.
        """
        wanted: list[str] = []
        for bill in page:
            if not isinstance(bill, dict) or bill.get("state") in REMOVED_STATES:
                continue
            try:
                snap = bill_to_snapshot(bill, contacts)
            except MalformedBill:
                continue
            items = line_store.mapped(raw.get(snap.source_id), snap.currency)
            if not items:
                if snap.total_minor != 0:
                    wanted.append(snap.source_id)
                continue
            row = known.get(snap.source_id)
            stored_etag = (
                InvoiceSnapshot.model_validate_json(row.snapshot).etag if row is not None else None
            )
            changed = row is None or stored_etag != snap.etag
            if incremental and changed and sum(i.total_minor for i in items) != snap.total_minor:
                wanted.append(snap.source_id)
        return wanted

    async def _relines(self, firm_id: str, bill_ids: set[str], run: RunState) -> None:
        """Bills whose lines changed while the bill itself was not listed this round: publish
        them again with their lines."""
        if not bill_ids:
            return
        async with self.service.sessionmaker() as s, s.begin():
            known = await self._mirrored(s, firm_id, sorted(bill_ids))
            raw = await line_store.raw_lines(s, firm_id, list(known))
            for sid, row in known.items():
                stored = InvoiceSnapshot.model_validate_json(row.snapshot)
                if stored.state in REMOVED_STATES:
                    continue
                items = line_store.mapped(raw.get(sid), stored.currency)
                if items == stored.line_items:
                    continue
                snap = stored.model_copy(update={"line_items": items})
                row.snapshot = snap.model_dump_json()
                row.updated_at = datetime.now(UTC)
                await self.service.publish(s, InvoiceUpdated(firm_id=firm_id, invoice=snap))
                run.changed += 1

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

        `line_items` are the bill's freshly fetched lines; None keeps the lines already stored.
        """
        source_id = str(bill.get("id")) if isinstance(bill, dict) else "?"
        row = await s.scalar(
            select(Invoice).where(
                Invoice.firm_id == firm_id, Invoice.invoice_id == invoice_id_for(source_id)
            )
        )
        await self._apply(
            s, firm_id, bill, contacts, result, line_items=line_items, row=row, quarantined=True
        )

    async def _apply(
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
    ) -> None:
        """apply_bill with the mirror row already read; `quarantined` False when the bill is
        known not to be in quarantine (nothing to clear)."""
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
        try:
            snap = bill_to_snapshot(bill, contacts)
            check_deliverable(snap)
        except MalformedBill as exc:
            result.quarantined += 1
            log.info("sync: firm %s bill %s quarantined: %s", firm_id, source_id, exc)
            await self._quarantine(s, firm_id, source_id, bill, str(exc))
            return
        if quarantined:
            await self._unquarantine(s, firm_id, snap.source_id)
        stored = InvoiceSnapshot.model_validate_json(row.snapshot) if row is not None else None
        if line_items is None and stored is not None:
            line_items = stored.line_items
        snap = snap.model_copy(update={"line_items": list(line_items or [])})
        if row is not None and stored is not None and _comparable(stored) == _comparable(snap):
            if stored.etag != snap.etag:
                row.snapshot = snap.model_dump_json()
            return
        if row is None:
            row = Invoice(
                firm_id=firm_id, invoice_id=invoice_id_for(snap.source_id), client_id=snap.client_id
            )
            s.add(row)
        row.client_id = snap.client_id
        row.snapshot = snap.model_dump_json()
        row.updated_at = datetime.now(UTC)
        await self.service.publish(s, InvoiceUpdated(firm_id=firm_id, invoice=snap))
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
