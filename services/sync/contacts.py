"""The contact pass of a sync round: contacts and their emails into the mirror, then what a
contact's change means for bills: published ones carry the new email, and quarantined ones
(e.g. held for a client without an email) are tried again, since the bill itself did not
change in Clio and would not be listed again."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from services.sync import lines as line_store
from services.sync.bills import ahead
from services.sync.clio import ClioClient
from services.sync.mapping import CONTACT_FIELDS, bill_client_id, bill_currency, parse_ts
from services.sync.models import ClioConnection, Contact, Invoice, Quarantined
from services.sync.progress import RunState, SyncResult
from shared.events import InvoiceSnapshot, InvoiceUpdated

if TYPE_CHECKING:
    from services.sync.syncer import Syncer

_CHUNK = 500


async def sync_contacts(
    syncer: Syncer, client: ClioClient, conn: ClioConnection, run: RunState
) -> datetime | None:
    """List contacts (updated since the cursor less the overlap); the newest updated_at."""
    firm_id = conn.firm_id
    newest: datetime | None = None
    changed: dict[str, str | None] = {}  # client id -> its email, for contacts new or changed
    params = {"fields": CONTACT_FIELDS, "order": "id(asc)", **syncer.since(conn.contacts_cursor)}
    async for page, _ in ahead(syncer.listing(client, "contacts.json", params, run)):
        listed = {str(c["id"]): c for c in page if isinstance(c, dict) and c.get("id") is not None}
        if not listed:
            continue
        async with syncer.service.sessionmaker() as s, s.begin():
            rows = await s.scalars(
                select(Contact).where(
                    Contact.firm_id == firm_id, Contact.contact_id.in_(list(listed))
                )
            )
            existing = {row.contact_id: row for row in rows}
            for cid, c in listed.items():
                email = c.get("primary_email_address") or None
                row = existing.get(cid)
                if row is None:
                    row = Contact(firm_id=firm_id, contact_id=cid, name="", email=None)
                    s.add(row)
                    changed[cid] = email
                elif row.email != email:
                    changed[cid] = email
                row.name = str(c.get("name") or row.name or "")
                row.email = email
                row.etag = c.get("etag")
                newest = max(filter(None, (newest, parse_ts(c.get("updated_at")))), default=None)
    if changed:
        await _republish(syncer, firm_id, changed, run)
        await _retry_quarantined(syncer, firm_id, set(changed), run)
    return newest


async def _republish(
    syncer: Syncer, firm_id: str, emails: dict[str, str | None], run: RunState
) -> None:
    ids = list(emails)
    async with syncer.service.sessionmaker() as s, s.begin():
        for start in range(0, len(ids), _CHUNK):
            rows = await s.scalars(
                select(Invoice).where(
                    Invoice.firm_id == firm_id, Invoice.client_id.in_(ids[start : start + _CHUNK])
                )
            )
            for row in rows:
                snap = InvoiceSnapshot.model_validate_json(row.snapshot)
                if snap.client_email == emails[snap.client_id]:
                    continue
                new = snap.model_copy(update={"client_email": emails[snap.client_id]})
                row.snapshot = new.model_dump_json()
                row.updated_at = datetime.now(UTC)
                await syncer.service.publish(s, InvoiceUpdated(firm_id=firm_id, invoice=new))
                run.changed += 1


async def _retry_quarantined(
    syncer: Syncer, firm_id: str, client_ids: set[str], run: RunState
) -> None:
    """Apply again the quarantined bills of clients that changed, as they were last listed."""
    async with syncer.service.sessionmaker() as s, s.begin():
        rows = await s.scalars(
            select(Quarantined).where(Quarantined.firm_id == firm_id, Quarantined.source == "clio")
        )
        bills: list[Any] = []
        for row in rows:
            try:
                bill = json.loads(row.raw)
            except ValueError:
                continue
            if bill_client_id(bill) in client_ids:
                bills.append(bill)
        if not bills:
            return
        contacts = await syncer.contacts_map(s, firm_id)
        ids = [str(b.get("id")) for b in bills]
        raw = await line_store.raw_lines(s, firm_id, ids)
        retried = SyncResult()  # a bill still held is not counted again
        for bill in bills:
            items = line_store.mapped(raw.get(str(bill.get("id"))), bill_currency(bill))
            await syncer.apply_bill(s, firm_id, bill, contacts, retried, line_items=items)
        run.changed += retried.changed
