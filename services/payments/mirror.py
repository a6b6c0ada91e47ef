"""What other services tell payments, kept as they told it: the firm's profile
(`firm.updated`), each bill's state and balance (`invoice.updated`, `invoice.removed`) and the
pay links envelope issued (`paylink.issued`). Each function is one event (or one batch of
them) applied inside the consumer's transaction; an event older than what is already here
changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import record
from services.payments.balances import aware
from services.payments.models import Bill, Firm, PayLink
from shared.db import insert_unless_present
from shared.events import (
    FirmUpdated,
    InvoiceRemoved,
    InvoiceState,
    InvoiceUpdated,
    PayLinkIssued,
)
from shared.schema import apply_firm_updated


async def on_firm_updated(s: AsyncSession, ev: FirmUpdated) -> None:
    await apply_firm_updated(s, Firm, ev)


async def on_invoice_updated(s: AsyncSession, ev: InvoiceUpdated) -> None:
    inv = ev.invoice
    bill = await s.scalar(
        select(Bill).where(Bill.firm_id == ev.firm_id, Bill.invoice_id == inv.invoice_id)
    )
    if bill is None:
        bill = Bill(firm_id=ev.firm_id, invoice_id=inv.invoice_id)
        s.add(bill)
    elif bill.event_at is not None and ev.occurred_at <= aware(bill.event_at):
        return  # a newer snapshot is already here
    bill.event_at = ev.occurred_at
    bill.number, bill.kind, bill.state = inv.number, inv.kind, inv.state
    bill.client_id, bill.client_name, bill.currency = (
        inv.client_id,
        inv.client_name,
        inv.currency,
    )
    bill.source_balance_minor, bill.due_at = inv.balance_minor, inv.due_at
    bill.source_id, bill.source_paid_minor = inv.source_id, inv.paid_minor
    bill.removed_reason = None  # a newer snapshot than the removal: Clio shows it again
    bill.updated_at = datetime.now(UTC)
    await s.flush()
    # What the firm recorded in Clio since our payments leaves "To record in Clio".
    await record.reconcile(s, ev.firm_id, [inv.invoice_id])


async def on_invoice_removed(s: AsyncSession, ev: InvoiceRemoved) -> None:
    """A bill voided or deleted in Clio: no longer payable (its pay links say so, Pay All
    leaves it out). Ordered like snapshots, by `occurred_at`: an invoice.updated observed
    before the removal and arriving after it is skipped; one observed after it is Clio
    showing the bill again and applies."""
    bill = await s.scalar(
        select(Bill).where(Bill.firm_id == ev.firm_id, Bill.invoice_id == ev.invoice_id)
    )
    if bill is None:
        # Kept, so that a pay link or a late snapshot met later finds it removed.
        bill = Bill(
            firm_id=ev.firm_id,
            invoice_id=ev.invoice_id,
            number="",
            kind="invoice",
            client_id="",
            client_name="",
            currency="USD",
            source_balance_minor=0,
        )
        s.add(bill)
    elif bill.event_at is not None and ev.occurred_at <= aware(bill.event_at):
        return
    bill.event_at = ev.occurred_at
    bill.state = ev.state
    bill.removed_reason = ev.reason or ev.state
    bill.updated_at = datetime.now(UTC)


async def on_paylinks_issued(s: AsyncSession, evs: list[PayLinkIssued]) -> None:
    """Keep each link (once: one statement for them all, a link is issued with every
    email) and, for bills not known here yet, what the link knows of them."""
    added = set(
        (
            await s.execute(
                insert_unless_present(PayLink.__table__)
                .values(
                    [
                        {
                            "token_hash": ev.token_hash,
                            "firm_id": ev.firm_id,
                            "link_id": ev.link_id,
                            "envelope_id": ev.envelope_id,
                            "client_id": ev.client_id,
                            "client_name": ev.client_name,
                            "client_email": ev.client_email,
                            "invoice_ids": json.dumps([i.invoice_id for i in ev.items]),
                            "pay_all_outstanding": ev.pay_all_outstanding,
                            "expires_at": ev.expires_at,
                        }
                        for ev in evs
                    ]
                )
                .returning(PayLink.__table__.c.token_hash)
            )
        ).scalars()
    )
    new = [ev for ev in evs if ev.token_hash in added]  # the others: issued before
    if not new:
        return
    # A link can arrive before the bill's own event: keep what the link knows.
    known = set(
        (
            await s.execute(
                select(Bill.firm_id, Bill.invoice_id).where(
                    Bill.invoice_id.in_({i.invoice_id for ev in new for i in ev.items})
                )
            )
        ).tuples()
    )
    # A bill removed before anything else was heard of it is kept without a name: the
    # link names it, so its pay page says which bill is no longer payable.
    unnamed = {
        (b.firm_id, b.invoice_id): b
        for b in await s.scalars(
            select(Bill).where(
                Bill.invoice_id.in_({i.invoice_id for ev in new for i in ev.items}),
                Bill.number == "",
            )
        )
    }
    for ev in new:
        for item in ev.items:
            if (bill := unnamed.get((ev.firm_id, item.invoice_id))) is not None:
                bill.number, bill.kind, bill.currency = item.number, item.kind, item.currency
                bill.client_id, bill.client_name = ev.client_id, ev.client_name
            if (ev.firm_id, item.invoice_id) not in known:
                known.add((ev.firm_id, item.invoice_id))
                s.add(
                    Bill(
                        firm_id=ev.firm_id,
                        invoice_id=item.invoice_id,
                        number=item.number,
                        kind=item.kind,
                        state=InvoiceState.awaiting_payment,
                        client_id=ev.client_id,
                        client_name=ev.client_name,
                        currency=item.currency,
                        source_balance_minor=item.balance_minor,
                        due_at=item.due_at,
                        updated_at=datetime.now(UTC),
                    )
                )
