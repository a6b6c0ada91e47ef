"""What envelope keeps of other services' events: the firm's profile (firm.updated), each
bill's snapshot (invoice.updated, invoice.removed) and each bill's online payments (payment.*,
with payment.recorded once Clio counts them). Each keeps only what is newer, or sums that
commute, since events arrive late and out of order."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import reads
from services.envelope.models import Firm, Invoice
from services.envelope.prerender import Scheduler
from services.envelope.rules import PaymentSums, apply_payment, bill_payment, unrecorded_sums
from shared.events import (
    FirmUpdated,
    InvoiceRemoved,
    InvoiceUpdated,
    PaymentEvent,
    PaymentFailed,
    PaymentRecorded,
)
from shared.schema import apply_firm_updated


class Projections:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def on_firm_updated(self, s: AsyncSession, ev: FirmUpdated) -> None:
        applied, before = await apply_firm_updated(s, Firm, ev)
        if applied:
            self.scheduler.firm_changed_after_commit(
                s, ev.firm_id, before, ev.firm.model_dump_json()
            )

    async def on_invoice_updated(self, s: AsyncSession, ev: InvoiceUpdated) -> None:
        snap = ev.invoice
        row = await reads.invoice(s, ev.firm_id, snap.invoice_id)
        if row is None:
            row = Invoice(firm_id=ev.firm_id, invoice_id=snap.invoice_id, paid_online_minor=0)
            s.add(row)
        elif row.event_at is not None and ev.occurred_at <= row.event_at:
            return  # a newer snapshot is already here
        row.event_at = ev.occurred_at
        row.snapshot = snap.model_dump_json()
        row.client_id = snap.client_id
        row.client_name = snap.client_name
        row.number = snap.number
        row.kind = snap.kind
        row.state = snap.state
        row.issued_at = snap.issued_at
        row.due_at = snap.due_at
        row.currency = snap.currency
        row.total_minor = snap.total_minor
        row.balance_minor = snap.balance_minor
        row.updated_at = datetime.now(UTC)
        # Its PDF is rendered ahead of time, in the background, once this is committed.
        self.scheduler.schedule_after_commit(s, ev.firm_id, snap.invoice_id)

    async def on_invoice_removed(self, s: AsyncSession, ev: InvoiceRemoved) -> None:
        """A bill voided or deleted in Clio takes that state: it leaves every unpaid list,
        every envelope still to be sent and every reminder (they select by state). Ordered
        with the snapshots by `occurred_at` (when sync saw it): an invoice.updated seen
        before the removal and arriving after it is skipped; one seen after it is Clio
        showing the bill again. A bill not known here is left alone (nothing lists it)."""
        row = await reads.invoice(s, ev.firm_id, ev.invoice_id)
        if row is None or (row.event_at is not None and ev.occurred_at <= row.event_at):
            return
        row.event_at = ev.occurred_at
        row.state = ev.state
        row.updated_at = datetime.now(UTC)

    async def on_payment(self, s: AsyncSession, ev: PaymentEvent) -> None:
        """Keep each bill's online payments as sums (rules.apply_payment); the status the
        firm sees is derived from the sums (rules.bill_payment). `paid_online_minor` is
        what Clio's balance does not count yet: less what payment.recorded said it does."""
        returned = isinstance(ev, PaymentFailed) and ev.returned
        for alloc in ev.allocations:
            inv = await reads.invoice(s, ev.firm_id, alloc.invoice_id)
            if inv is None:
                continue
            recorded = inv.recorded_online_minor or 0
            before = PaymentSums(
                (inv.paid_online_minor or 0) + recorded,
                inv.processing_minor or 0,
                inv.refunded_minor or 0,
            )
            after = apply_payment(
                before, ev.routing_key, ev.method, alloc.amount_minor, returned=returned
            )
            _set_sums(inv, unrecorded_sums(after, recorded))

    async def on_payment_recorded(self, s: AsyncSession, ev: PaymentRecorded) -> None:
        """Payments made here that Clio counts now: no longer subtracted from its balance,
        so the Invoices page never counts a payment twice."""
        for alloc in ev.allocations:
            inv = await reads.invoice(s, ev.firm_id, alloc.invoice_id)
            if inv is None:
                continue
            inv.recorded_online_minor = (inv.recorded_online_minor or 0) + alloc.amount_minor
            sums = PaymentSums(
                (inv.paid_online_minor or 0) - alloc.amount_minor,
                inv.processing_minor or 0,
                inv.refunded_minor or 0,
            )
            _set_sums(inv, sums)


def _set_sums(inv: Invoice, sums: PaymentSums) -> None:
    inv.paid_online_minor = sums.paid
    inv.processing_minor = sums.processing
    inv.refunded_minor = sums.refunded
    inv.payment_status = bill_payment(max(0, sums.paid), sums.processing, sums.refunded)
