"""The line-item and bill passes of a sync round.

Line items are listed across bills (200 a page; `updated_since` the cursor less the overlap
after the first sync) into clio_lines, then bills are listed and each is applied with its
lines from there: a first sync costs contacts/200 + lines/200 + bills/200 requests, never one
per bill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync import lines as line_store
from services.sync.clio import ClioClient
from services.sync.mapping import (
    BILL_FIELDS,
    LINE_ITEM_BULK_FIELDS,
    REMOVED_STATES,
    MalformedBill,
    bill_currency,
    bill_to_snapshot,
    invoice_id_for,
    parse_ts,
)
from services.sync.models import ClioConnection, Invoice, Quarantined
from services.sync.progress import RunState
from shared.events import Event, InvoiceSnapshot, InvoiceUpdated, LineItem
from shared.outbox import add_events

if TYPE_CHECKING:
    from services.sync.syncer import Syncer

# Lines a transaction on a first sync (a page's on later ones): fewer commits.
_FIRST_SYNC_BATCH = 1000
# Mirror rows of bills new to it, a page's at once (executemany of one statement built once).
INSERT_INVOICE = Invoice.__table__.insert()


async def ahead(pages: AsyncIterator[Any], depth: int = 4) -> AsyncIterator[Any]:
    """The same pages, requested one after the other by a task of their own while the caller
    stores earlier ones, up to `depth` pages ahead: Clio is never kept waiting for a slow
    page's storing, nor the storing for a slow request, beyond that."""
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(maxsize=depth)

    async def fetch() -> None:
        try:
            async for page in pages:
                await queue.put((False, page))
        except Exception as exc:
            await queue.put((True, exc))
        else:
            await queue.put((True, None))

    task = asyncio.create_task(fetch())
    try:
        while True:
            last, item = await queue.get()
            if last:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        task.cancel()


def _newer(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


async def sync_lines(
    syncer: Syncer, client: ClioClient, conn: ClioConnection, run: RunState
) -> tuple[datetime | None, set[str], line_store.Held | None]:
    """List line items across bills (all on a first sync, then those updated since the
    cursor less the overlap) into clio_lines; the bills they belong to, and on a first sync
    into an empty clio_lines the lines themselves, by bill (see `line_store.Held`)."""
    params = {
        "fields": LINE_ITEM_BULK_FIELDS,
        "order": "id(asc)",
        **syncer.since(conn.line_items_cursor),
    }
    held: line_store.Held | None = None
    if conn.line_items_cursor is None:
        async with syncer.service.sessionmaker() as s:
            if not await line_store.has_lines(s, conn.firm_id):
                held = line_store.Held()
    touched: set[str] = set()
    newest: datetime | None = None
    batch: list[Any] = []  # a first sync stores several pages a transaction

    async def store() -> None:
        nonlocal newest
        async with syncer.service.sessionmaker() as s, s.begin():
            bills, ts = await line_store.store_page(s, conn.firm_id, batch, held=held)
        touched.update(bills)
        newest = _newer(newest, ts)
        batch.clear()

    async for page, _ in ahead(syncer.listing(client, "line_items.json", params, run)):
        batch.extend(page)
        if held is None or len(batch) >= _FIRST_SYNC_BATCH:
            await store()
    if batch:
        await store()
    return newest, touched, held


async def bill_lines(syncer: Syncer, client: ClioClient, firm_id: str, bill_id: str) -> None:
    """Replace one bill's stored lines with what Clio lists for it now."""
    params = {"bill_id": bill_id, "fields": LINE_ITEM_BULK_FIELDS, "order": "id(asc)"}
    async with syncer.service.sessionmaker() as s, s.begin():
        await line_store.forget_bill(s, firm_id, bill_id)
        async for page in client.pages("line_items.json", params):
            await line_store.store_page(s, firm_id, page, bill_id=bill_id)


async def sync_bills(
    syncer: Syncer,
    client: ClioClient,
    conn: ClioConnection,
    run: RunState,
    *,
    incremental: bool,
    held: line_store.Held | None = None,
) -> tuple[datetime | None, set[str]]:
    """List bills (updated since the cursor less the overlap) and apply each with its lines:
    from `held` when the line pass kept them (a first sync), else from clio_lines."""
    firm_id = conn.firm_id
    params = {"fields": BILL_FIELDS, "order": "id(asc)", **syncer.since(conn.bills_cursor)}
    async with syncer.service.sessionmaker() as s:
        contacts = await syncer.contacts_map(s, firm_id)
    newest: datetime | None = None
    listed: set[str] = set()
    first = True
    async for page, meta in ahead(syncer.listing(client, "bills.json", params, run)):
        if first:
            records = meta.get("records")
            run.total = records if isinstance(records, int) else None
            first = False
        ids = [str(b["id"]) for b in page if isinstance(b, dict) and b.get("id") is not None]
        listed.update(ids)
        etags: dict[str, str | None] = {}  # only an incremental round compares them
        if held is not None:
            raw = held.raw_lines(ids)
        else:
            async with syncer.service.sessionmaker() as s:
                raw = await line_store.raw_lines(s, firm_id, ids)
                if incremental:
                    etags = {
                        sid: InvoiceSnapshot.model_validate_json(row.snapshot).etag
                        for sid, row in (await mirrored(syncer, s, firm_id, ids)).items()
                    }
        items = _page_lines(page, raw)
        refetch = refetch_wanted(page, items, etags, contacts, incremental=incremental)
        for bill_id in refetch:
            await bill_lines(syncer, client, firm_id, bill_id)
        if refetch:
            async with syncer.service.sessionmaker() as s:
                raw.update(await line_store.raw_lines(s, firm_id, refetch))
            items = _page_lines(page, raw)
        staged: list[Event] = []  # the page's invoice.updated, staged in one statement
        new_rows: list[dict[str, Any]] = []  # and its bills new to the mirror, in another
        async with syncer.service.sessionmaker() as s, s.begin():
            known = await mirrored(syncer, s, firm_id, ids)  # in the session that writes them
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
                await syncer.apply_listed(
                    s,
                    firm_id,
                    bill,
                    contacts,
                    run,
                    line_items=items.get(sid, []),
                    row=known.get(sid),
                    quarantined=sid in quarantined or sid == "?",
                    staged=staged,
                    new_rows=new_rows,
                )
                if isinstance(bill, dict):
                    newest = _newer(newest, parse_ts(bill.get("updated_at")))
            if new_rows:
                await s.execute(INSERT_INVOICE, new_rows)
            await add_events(s, syncer.service.outbox, [(ev, None) for ev in staged])
        run.requests = client.requests
    return newest, listed


async def mirrored(
    syncer: Syncer, s: AsyncSession, firm_id: str, ids: list[str]
) -> dict[str, Invoice]:
    wanted = [invoice_id_for(i) for i in ids]
    rows = await s.scalars(
        select(Invoice).where(Invoice.firm_id == firm_id, Invoice.invoice_id.in_(wanted))
    )
    return {row.invoice_id.removeprefix("clio:"): row for row in rows}


def _page_lines(page: list[Any], raw: dict[str, list[Any]]) -> dict[str, list[LineItem]]:
    """The page's bills' stored lines, mapped, by Clio bill id."""
    return {
        str(bill["id"]): line_store.mapped(raw.get(str(bill["id"])), bill_currency(bill))
        for bill in page
        if isinstance(bill, dict) and bill.get("id") is not None
    }


def refetch_wanted(
    page: list[Any],
    items: dict[str, list[LineItem]],
    etags: dict[str, str | None],
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
        if not incremental and items.get(str(bill.get("id"))):
            continue
        try:
            snap = bill_to_snapshot(bill, contacts)
        except MalformedBill:
            continue
        lines = items.get(snap.source_id, [])
        if not lines:
            if snap.total_minor != 0:
                wanted.append(snap.source_id)
            continue
        changed = snap.source_id not in etags or etags[snap.source_id] != snap.etag
        if incremental and changed and sum(i.total_minor for i in lines) != snap.total_minor:
            wanted.append(snap.source_id)
    return wanted


async def relines(syncer: Syncer, firm_id: str, bill_ids: set[str], run: RunState) -> None:
    """Bills whose lines changed while the bill itself was not listed this round: publish
    them again with their lines."""
    if not bill_ids:
        return
    async with syncer.service.sessionmaker() as s, s.begin():
        known = await mirrored(syncer, s, firm_id, sorted(bill_ids))
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
            await syncer.service.publish(s, InvoiceUpdated(firm_id=firm_id, invoice=snap))
            run.changed += 1
