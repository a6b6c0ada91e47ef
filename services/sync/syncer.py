"""Pulls a firm's bills and contacts from Clio into the mirror and publishes what changed."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync.clio import ClioAuthError, ClioClient, ClioError
from services.sync.connection import Connections
from services.sync.mapping import (
    BILL_FIELDS,
    CONTACT_FIELDS,
    LINE_ITEM_FIELDS,
    MalformedBill,
    bill_to_snapshot,
    invoice_id_for,
    line_items_from_clio,
)
from services.sync.models import ClioConnection, Contact, Invoice, Quarantined, SyncRun
from services.sync.settings import SyncSettings
from shared.events import InvoiceRemoved, InvoiceSnapshot, InvoiceState, InvoiceUpdated, LineItem
from shared.runtime import Service

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    fetched: int = 0
    changed: int = 0
    quarantined: int = 0
    error: str | None = None


def _parse_ts(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _comparable(snapshot: InvoiceSnapshot) -> str:
    # etag and updated_at change on edits we do not show; publishing for them is noise.
    return snapshot.model_dump_json(exclude={"etag", "source_updated_at"})


class Syncer:
    def __init__(
        self, service: Service, settings: SyncSettings, connections: Connections | None = None
    ) -> None:
        self.service = service
        self.settings = settings
        self.connections = connections or Connections(service, settings)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def client(self, conn: ClioConnection) -> ClioClient:
        return self.connections.client(conn)

    async def sync_all(self) -> None:
        async with self.service.sessionmaker() as s:
            firm_ids = list((await s.scalars(select(ClioConnection.firm_id))).all())
        for firm_id in firm_ids:
            await self.sync_firm(firm_id)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.sync_all()
            except Exception:
                log.exception("sync: a sync round failed")
            await asyncio.sleep(self.settings.sync_interval_seconds)

    async def sync_firm(self, firm_id: str) -> SyncResult:
        async with self._locks[firm_id]:
            return await self._sync_firm(firm_id)

    async def _sync_firm(self, firm_id: str) -> SyncResult:
        sm = self.service.sessionmaker
        async with sm() as s, s.begin():
            conn = await s.get(ClioConnection, firm_id)
            if conn is None:
                return SyncResult(error="Clio is not connected")
            run = SyncRun(firm_id=firm_id, started_at=datetime.now(UTC))
            s.add(run)
        result = SyncResult()
        client = self.client(conn)
        started = datetime.now(UTC)
        try:
            contacts_cursor = await self._sync_contacts(client, conn, result)
            bills_cursor = await self._sync_bills(client, conn, result)
            async with sm() as s, s.begin():
                row = await s.get(ClioConnection, firm_id)
                assert row is not None
                row.contacts_cursor = contacts_cursor or row.contacts_cursor
                row.bills_cursor = bills_cursor or row.bills_cursor
                row.last_synced_at = started
                row.last_error = None
        except (ClioError, ClioAuthError) as exc:
            result.error = str(exc)
            log.warning("sync: firm %s: %s", firm_id, exc)
            async with sm() as s, s.begin():
                row = await s.get(ClioConnection, firm_id)
                if row is not None:
                    row.last_error = str(exc)
        finally:
            await client.aclose()
            async with sm() as s, s.begin():
                saved = await s.get(SyncRun, run.id)
                if saved is not None:
                    saved.finished_at = datetime.now(UTC)
                    saved.fetched = result.fetched
                    saved.changed = result.changed
                    saved.quarantined = result.quarantined
                    saved.error = result.error
        log.info(
            "sync: firm %s fetched %d, changed %d, quarantined %d",
            firm_id,
            result.fetched,
            result.changed,
            result.quarantined,
        )
        return result

    def _since(self, cursor: datetime | None) -> dict[str, str]:
        if cursor is None:
            return {}
        since = cursor - timedelta(seconds=self.settings.sync_overlap_seconds)
        return {"updated_since": since.isoformat()}

    async def _sync_contacts(
        self, client: ClioClient, conn: ClioConnection, result: SyncResult
    ) -> datetime | None:
        newest: datetime | None = None
        changed_clients: dict[str, str | None] = {}
        params = {"fields": CONTACT_FIELDS, "order": "id(asc)", **self._since(conn.contacts_cursor)}
        async for page in client.pages("contacts.json", params):
            async with self.service.sessionmaker() as s, s.begin():
                for c in page:
                    if not isinstance(c, dict) or c.get("id") is None:
                        continue
                    cid = str(c["id"])
                    email = c.get("primary_email_address") or None
                    row = await s.scalar(
                        select(Contact).where(
                            Contact.firm_id == conn.firm_id, Contact.contact_id == cid
                        )
                    )
                    if row is None:
                        s.add(
                            Contact(
                                firm_id=conn.firm_id,
                                contact_id=cid,
                                name=str(c.get("name") or ""),
                                email=email,
                                etag=c.get("etag"),
                            )
                        )
                    else:
                        if row.email != email:
                            changed_clients[cid] = email
                        row.name = str(c.get("name") or row.name)
                        row.email = email
                        row.etag = c.get("etag")
                    ts = _parse_ts(c.get("updated_at"))
                    if ts and (newest is None or ts > newest):
                        newest = ts
        if changed_clients:
            await self._republish_for_contacts(conn.firm_id, changed_clients, result)
        return newest

    async def _republish_for_contacts(
        self, firm_id: str, emails: dict[str, str | None], result: SyncResult
    ) -> None:
        async with self.service.sessionmaker() as s, s.begin():
            rows = await s.scalars(
                select(Invoice).where(Invoice.firm_id == firm_id, Invoice.client_id.in_(emails))
            )
            for row in rows:
                snap = InvoiceSnapshot.model_validate_json(row.snapshot)
                new = snap.model_copy(update={"client_email": emails[snap.client_id]})
                row.snapshot = new.model_dump_json()
                row.updated_at = datetime.now(UTC)
                await self.service.publish(s, InvoiceUpdated(firm_id=firm_id, invoice=new))
                result.changed += 1

    async def _contacts_map(self, s: AsyncSession, firm_id: str) -> dict[str, dict[str, Any]]:
        rows = await s.scalars(select(Contact).where(Contact.firm_id == firm_id))
        return {r.contact_id: {"primary_email_address": r.email, "name": r.name} for r in rows}

    async def _sync_bills(
        self, client: ClioClient, conn: ClioConnection, result: SyncResult
    ) -> datetime | None:
        newest: datetime | None = None
        params = {"fields": BILL_FIELDS, "order": "id(asc)", **self._since(conn.bills_cursor)}
        async with self.service.sessionmaker() as s:
            contacts = await self._contacts_map(s, conn.firm_id)
        async for page in client.pages("bills.json", params):
            # Fetched before the page's transaction opens: no database lock waits on Clio.
            lines = await self._line_items(client, conn.firm_id, page, contacts)
            async with self.service.sessionmaker() as s, s.begin():
                for bill in page:
                    result.fetched += 1
                    source_id = str(bill.get("id")) if isinstance(bill, dict) else ""
                    await self.apply_bill(
                        s, conn.firm_id, bill, contacts, result, line_items=lines.get(source_id)
                    )
                    ts = _parse_ts(bill.get("updated_at")) if isinstance(bill, dict) else None
                    if ts and (newest is None or ts > newest):
                        newest = ts
        return newest

    async def _line_items(
        self,
        client: ClioClient,
        firm_id: str,
        page: list[dict[str, Any]],
        contacts: dict[str, dict[str, Any]],
    ) -> dict[str, list[LineItem]]:
        """The line items of each bill on `page` that is new or whose etag changed, by Clio id.

        One request per such bill (more only past 200 lines); an unchanged bill costs nothing,
        which keeps a sync round well inside Clio's rate limit.
        """
        wanted: dict[str, InvoiceSnapshot] = {}
        for bill in page:
            try:
                snap = bill_to_snapshot(bill, contacts)
            except MalformedBill:
                continue  # quarantined by apply_bill; its lines would not be shown
            wanted[snap.invoice_id] = snap
        if not wanted:
            return {}
        async with self.service.sessionmaker() as s:
            rows = await s.scalars(
                select(Invoice).where(
                    Invoice.firm_id == firm_id, Invoice.invoice_id.in_(list(wanted))
                )
            )
            for row in rows:
                stored = InvoiceSnapshot.model_validate_json(row.snapshot)
                if stored.etag is not None and stored.etag == wanted[row.invoice_id].etag:
                    del wanted[row.invoice_id]
        found: dict[str, list[LineItem]] = {}
        for snap in wanted.values():
            params = {"bill_id": snap.source_id, "fields": LINE_ITEM_FIELDS, "display": "true"}
            raw: list[Any] = []
            async for items in client.pages("line_items.json", params):
                raw.extend(items)
            found[snap.source_id] = line_items_from_clio(raw, snap.currency)
            if len(found[snap.source_id]) < len(raw):
                log.warning(
                    "sync: firm %s bill %s: %d of %d line items could not be read",
                    firm_id,
                    snap.source_id,
                    len(raw) - len(found[snap.source_id]),
                    len(raw),
                )
        return found

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
        """Mirror one bill and publish it when what a client sees changed.

        `line_items` are the bill's freshly fetched lines; None keeps the lines already stored
        (the bill's etag did not change).
        """
        source_id = str(bill.get("id")) if isinstance(bill, dict) else "?"
        try:
            snap = bill_to_snapshot(bill, contacts)
        except MalformedBill as exc:
            result.quarantined += 1
            log.warning("sync: firm %s bill %s quarantined: %s", firm_id, source_id, exc)
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
            row.reason = str(exc)
            row.raw = json.dumps(bill, default=str)[:100_000]
            row.received_at = datetime.now(UTC)
            return
        await s.execute(
            delete(Quarantined).where(
                Quarantined.firm_id == firm_id,
                Quarantined.source == "clio",
                Quarantined.source_id == snap.source_id,
            )
        )
        row = await s.scalar(
            select(Invoice).where(Invoice.firm_id == firm_id, Invoice.invoice_id == snap.invoice_id)
        )
        stored = InvoiceSnapshot.model_validate_json(row.snapshot) if row is not None else None
        if line_items is None and stored is not None:
            line_items = stored.line_items
        snap = snap.model_copy(update={"line_items": list(line_items or [])})
        if row is not None and stored is not None and _comparable(stored) == _comparable(snap):
            if stored.etag != snap.etag:
                # Nothing a client sees changed, but the next sync must not fetch lines again.
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
