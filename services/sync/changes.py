"""Changes Clio announced by webhook, applied one firm at a time in the background.

A delivery names a record and an event only, so the record is fetched again: a bill with the
syncer's fields and, when its etag moved, its lines; a contact (a new email re-publishes that
client's bills, as the poll does); a matter (its bills are fetched again). A deleted or void
bill is removed. Deliveries for the same record that arrive while one is waiting are merged,
so repeats cost nothing; whatever a lost delivery missed, the poll still catches.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from services.sync.clio import ClioClient, ClioError
from services.sync.mapping import (
    BILL_FIELDS,
    CONTACT_FIELDS,
    LINE_ITEM_FIELDS,
    MalformedBill,
    bill_to_snapshot,
    invoice_id_for,
    line_items_from_clio,
)
from services.sync.models import ClioConnection, Contact, Invoice
from services.sync.progress import SyncResult
from services.sync.ratelimit import Priority
from services.sync.syncer import Syncer
from shared.events import InvoiceSnapshot, InvoiceState, InvoiceUpdated, LineItem

log = logging.getLogger(__name__)

MODELS = ("bill", "contact", "matter")
EVENTS = ("created", "updated", "deleted")
# A webhook's fetches go ahead of a sync's paging in the firm's request budget.
INTERACTIVE = Priority.INTERACTIVE
REMOVED_STATES = {"void": InvoiceState.void, "deleted": InvoiceState.deleted}


def _not_found(exc: ClioError) -> bool:
    return str(exc).startswith("Clio answered 404") or str(exc).startswith("Clio answered 410")


class Changes:
    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer
        self.service = syncer.service
        # firm -> (model, record id) -> latest event, in arrival order.
        self._pending: dict[str, dict[tuple[str, str], str]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self.applied = 0

    def submit(self, firm_id: str, model: str, event: str, record_id: str) -> None:
        """Queue one change; returns at once. The firm's worker applies it in the background."""
        pending = self._pending.setdefault(firm_id, {})
        pending.pop((model, record_id), None)
        pending[(model, record_id)] = event
        if firm_id not in self._workers:
            self._workers[firm_id] = asyncio.create_task(self._drain(firm_id))

    async def idle(self, firm_id: str) -> None:
        """Wait until every change queued for the firm so far has been applied."""
        while (task := self._workers.get(firm_id)) is not None:
            await asyncio.shield(task)

    async def _drain(self, firm_id: str) -> None:
        client: ClioClient | None = None
        try:
            pending = self._pending[firm_id]
            while pending:
                (model, record_id), event = next(iter(pending.items()))
                del pending[(model, record_id)]
                try:
                    if client is None:
                        async with self.service.sessionmaker() as s:
                            conn = await s.get(ClioConnection, firm_id)
                        if conn is None:
                            pending.clear()
                            return
                        client = self.syncer.client(conn)
                    await self.apply(client, firm_id, model, event, record_id)
                    self.applied += 1
                except Exception:
                    # Clio or the database failed: the poll picks the change up.
                    log.exception("webhooks: firm %s %s %s not applied", firm_id, model, record_id)
        finally:
            self._workers.pop(firm_id, None)
            if client is not None:
                await client.aclose()

    async def apply(
        self, client: ClioClient, firm_id: str, model: str, event: str, record_id: str
    ) -> None:
        if model == "bill":
            bill = None if event == "deleted" else await self._one(client, "bills", record_id)
            if bill is None:
                await self._remove(firm_id, record_id, InvoiceState.deleted)
            else:
                await self._apply_bills(client, firm_id, [bill])
        elif model == "contact":
            if event == "deleted":
                return  # its bills stay as they are; Clio refuses to delete a billed contact
            contact = await self._one(client, "contacts", record_id)
            if contact is not None:
                await self._apply_contact(firm_id, contact)
        elif model == "matter":
            if event == "deleted":
                return  # its bills are deleted with it, each with a webhook of its own
            bills: list[dict[str, Any]] = []
            params = {"fields": BILL_FIELDS, "matter_id": record_id, "order": "id(asc)"}
            async for page in client.pages("bills.json", params, INTERACTIVE):
                bills.extend(b for b in page if isinstance(b, dict))
            await self._apply_bills(client, firm_id, bills)

    async def _one(self, client: ClioClient, kind: str, record_id: str) -> dict[str, Any] | None:
        fields = BILL_FIELDS if kind == "bills" else CONTACT_FIELDS
        try:
            body = await client.get(f"{kind}/{record_id}.json", {"fields": fields}, INTERACTIVE)
        except ClioError as exc:
            if _not_found(exc):
                return None
            raise
        data = body.get("data")
        return data if isinstance(data, dict) else None

    async def _remove(self, firm_id: str, source_id: str, state: InvoiceState) -> None:
        reason = f"{state.value} in Clio"
        async with self.service.sessionmaker() as s, s.begin():
            await self.syncer.remove_bill(s, firm_id, source_id, state, reason)

    async def _contacts(self, firm_id: str, ids: set[str]) -> dict[str, dict[str, Any]]:
        async with self.service.sessionmaker() as s:
            rows = await s.scalars(
                select(Contact).where(Contact.firm_id == firm_id, Contact.contact_id.in_(ids))
            )
            return {r.contact_id: {"primary_email_address": r.email, "name": r.name} for r in rows}

    async def _apply_bills(
        self, client: ClioClient, firm_id: str, bills: list[dict[str, Any]]
    ) -> None:
        ids = {str((b.get("client") or {}).get("id")) for b in bills if b.get("client")}
        contacts = await self._contacts(firm_id, ids)
        for cid in ids - set(contacts):
            # A client created a moment ago: its contact webhook may still be on the way.
            contact = await self._one(client, "contacts", cid)
            if contact is not None:
                await self._apply_contact(firm_id, contact)
        contacts = await self._contacts(firm_id, ids)
        live = [b for b in bills if b.get("state") not in REMOVED_STATES]
        lines = await self._lines(client, firm_id, live, contacts)
        result = SyncResult()
        async with self.service.sessionmaker() as s, s.begin():
            for bill in bills:
                source_id = str(bill.get("id"))
                state = REMOVED_STATES.get(str(bill.get("state")))
                if state is not None:
                    await self.syncer.remove_bill(s, firm_id, source_id, state, f"{state} in Clio")
                    continue
                await self.syncer.apply_bill(
                    s, firm_id, bill, contacts, result, line_items=lines.get(source_id)
                )

    async def _lines(
        self,
        client: ClioClient,
        firm_id: str,
        bills: list[dict[str, Any]],
        contacts: dict[str, dict[str, Any]],
    ) -> dict[str, list[LineItem]]:
        """The lines of each bill that is new to the mirror or whose etag moved."""
        wanted: dict[str, InvoiceSnapshot] = {}
        for bill in bills:
            try:
                snap = bill_to_snapshot(bill, contacts)
            except MalformedBill:
                continue
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
            async for items in client.pages("line_items.json", params, INTERACTIVE):
                raw.extend(items)
            found[snap.source_id] = line_items_from_clio(raw, snap.currency)
        return found

    async def _apply_contact(self, firm_id: str, c: dict[str, Any]) -> None:
        cid = str(c.get("id"))
        email = c.get("primary_email_address") or None
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.scalar(
                select(Contact).where(Contact.firm_id == firm_id, Contact.contact_id == cid)
            )
            if row is None:
                name = str(c.get("name") or "")
                s.add(Contact(firm_id=firm_id, contact_id=cid, name=name, email=email))
                return
            changed = row.email != email
            row.name = str(c.get("name") or row.name)
            row.email = email
            row.etag = c.get("etag")
            if not changed:
                return
            # The client's bills carry its email: publish them again with the new one.
            invoices = await s.scalars(
                select(Invoice).where(Invoice.firm_id == firm_id, Invoice.client_id == cid)
            )
            for inv in invoices:
                snap = InvoiceSnapshot.model_validate_json(inv.snapshot)
                if snap.state in REMOVED_STATES.values():
                    continue
                new = snap.model_copy(update={"client_email": email})
                inv.snapshot = new.model_dump_json()
                inv.updated_at = datetime.now(UTC)
                await self.service.publish(s, InvoiceUpdated(firm_id=firm_id, invoice=new))


__all__ = ["Changes", "MODELS", "EVENTS", "invoice_id_for"]
