"""The ledger: payments and their allocations, as the processor reports them.

Every report is a `ProcessorEvent`. It is recorded once (unique per processor and event id),
and the payment's state is then derived again from *all* events recorded for it, never from
the order they came in; a bus event goes out only when the derived state crosses a line it had
not crossed before. So webhooks that repeat, arrive out of order or arrive late end in the same
ledger and the same announcements. An event about a payment not known yet is kept and applied
when the payment appears.

Deriving a payment draws on its neighbours: `refund_state` (its refunds), `deposits` (what
goes to the firm's accounts), `announcements` (the `payment.*` events). What other services
tell payments is kept by `mirror`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import (
    deposit_rules,
    deposits,
    record,
    record_rules,
    refund_state,
    rules,
)
from services.payments.announcements import announce
from services.payments.balances import aware
from services.payments.models import (
    Allocation,
    Bill,
    CheckoutSession,
    CheckoutStatus,
    FirmAccount,
    Payment,
    ProcessorEventRecord,
    Refund,
)
from services.payments.processors import Processor, ProcessorError, ProcessorEvent
from services.payments.settings import PaymentsSettings
from shared.events import InvoiceKind, PaymentMethod, PaymentStatus
from shared.runtime import Service

log = logging.getLogger(__name__)

# One PostgreSQL advisory lock serialises the ledger's writes, as SQLite's write lock does:
# a payment's derivation and announcements never race a second delivery of its events.
LEDGER_LOCK_KEY = 0x7061796D656E7473  # "payments"


def payment_id_for(session_id: str) -> str:
    """One payment per checkout session, with an id that every event of it leads to."""
    return "pay_" + session_id.split("_", 1)[-1]


def fact_of(row: ProcessorEventRecord) -> rules.Fact:
    data = json.loads(row.data)
    return rules.Fact(
        event_id=row.event_id,
        kind=row.kind,
        occurred_at=aware(row.occurred_at),
        **{k: data.get(k) for k in _FACT_FIELDS},
    )


_FACT_FIELDS = (
    "payment_ref",
    "charge_ref",
    "method",
    "fee_minor",
    "failure_code",
    "failure_reason",
    "payer_name",
    "payer_email",
    "last4",
    "refund_id",
    "refund_ref",
    "amount_minor",
)


def event_json(ev: ProcessorEvent) -> str:
    data = asdict(ev)
    data["occurred_at"] = ev.occurred_at.isoformat()
    return json.dumps(data, sort_keys=True)


class Ledger:
    def __init__(self, service: Service, settings: PaymentsSettings, processor: Processor) -> None:
        self.service = service
        self.settings = settings
        self.processor = processor

    # --- transactions ---------------------------------------------------------------------

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncSession]:
        """A write transaction that holds the ledger's lock from its first statement, so
        what it reads is still true when it writes."""
        async with self.service.sessionmaker() as s, s.begin():
            if self.service.engine.dialect.name == "sqlite":
                # The first write takes SQLite's write lock for the whole transaction.
                await s.execute(text("UPDATE firm_accounts SET firm_id = firm_id WHERE 1 = 0"))
            else:
                await s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LEDGER_LOCK_KEY})
            yield s

    # --- processor events -----------------------------------------------------------------

    async def apply(self, ev: ProcessorEvent, processor: str | None = None) -> str | None:
        """Record one event in its own transaction, then move the money it releases.
        Returns the id of the payment it concerns, when known."""
        async with self.tx() as s:
            payment_id = await self.record(s, ev, processor or self.processor.name)
            due = s.info.pop(deposits.DEPOSITS_DUE, set())
        for paid in due:
            await self.transfer_deposits(paid)
        return payment_id

    async def record(self, s: AsyncSession, ev: ProcessorEvent, processor: str) -> str | None:
        """Inside a `tx()`: record `ev` unless it is a repeat, then derive its payment."""
        repeat = await s.scalar(
            select(ProcessorEventRecord.id).where(
                ProcessorEventRecord.processor == processor,
                ProcessorEventRecord.event_id == ev.event_id,
            )
        )
        if repeat is not None:
            log.info("processor event %s %s already recorded", processor, ev.event_id)
            return None
        payment, opened = await self._resolve(s, ev, processor)
        s.add(
            ProcessorEventRecord(
                processor=processor,
                event_id=ev.event_id,
                kind=ev.kind,
                occurred_at=ev.occurred_at,
                received_at=datetime.now(UTC),
                session_id=ev.session_id,
                payment_ref=ev.payment_ref,
                refund_id=ev.refund_id,
                refund_ref=ev.refund_ref,
                firm_id=payment.firm_id if payment else None,
                payment_id=payment.id if payment else None,
                data=event_json(ev),
            )
        )
        await s.flush()
        if payment is None:
            log.info(
                "processor event %s (%s) about no known payment yet: kept", ev.event_id, ev.kind
            )
            return None
        known_ref = payment.processor_ref
        await self.derive(s, payment)
        # Events kept for want of this payment can only be waiting for a new payment or
        # for a processor ref it just learnt.
        if (opened or payment.processor_ref != known_ref) and await self._adopt_waiting(s, payment):
            await self.derive(s, payment)
        return payment.id

    async def _resolve(
        self, s: AsyncSession, ev: ProcessorEvent, processor: str
    ) -> tuple[Payment | None, bool]:
        """The payment an event is about: by our refund id, the processor's refs, our
        checkout session; an event that starts a payment opens it from its session (the
        flag says so)."""
        refund = await s.get(Refund, ev.refund_id) if ev.refund_id else None
        if refund is None and ev.refund_ref:
            refund = await s.scalar(select(Refund).where(Refund.processor_ref == ev.refund_ref))
        if refund is not None:
            return await s.get(Payment, refund.payment_id), False
        if ev.payment_ref:
            found = await s.scalar(
                select(Payment).where(
                    Payment.processor == processor, Payment.processor_ref == ev.payment_ref
                )
            )
            if found is not None:
                return found, False
        if not ev.session_id:
            return None, False
        found = await s.scalar(select(Payment).where(Payment.session_id == ev.session_id))
        if found is not None or ev.kind not in rules.PAYMENT_KINDS:
            return found, False
        session = await s.get(CheckoutSession, ev.session_id)
        if session is None:
            return None, False
        return await self._open_payment(s, session, ev, processor), True

    async def _open_payment(
        self, s: AsyncSession, cs: CheckoutSession, ev: ProcessorEvent, processor: str
    ) -> Payment:
        """The payment of a checkout session, with its allocations: what the session was
        for, item by item, so allocations always add up to the payment."""
        payment = Payment(
            id=payment_id_for(cs.id),
            firm_id=cs.firm_id,
            session_id=cs.id,
            client_id=cs.client_id,
            client_name=cs.client_name,
            method=ev.method or PaymentMethod.card,
            status=PaymentStatus.processing,
            currency=cs.currency,
            amount_minor=cs.amount_minor,
            refunded_minor=0,
            fee_minor=0,
            processor=processor,
            processor_ref=ev.payment_ref,
            created_at=ev.occurred_at,
            announced_processing=False,
            announced_succeeded=False,
            announced_failed=False,
        )
        s.add(payment)
        items = json.loads(cs.items)
        bills = {
            b.invoice_id: b
            for b in await s.scalars(
                select(Bill).where(
                    Bill.firm_id == cs.firm_id,
                    Bill.invoice_id.in_([i["invoice_id"] for i in items]),
                )
            )
        }
        for item in items:
            bill = bills.get(item["invoice_id"])
            kind = bill.kind if bill else item.get("kind", InvoiceKind.invoice)
            s.add(
                Allocation(
                    payment_id=payment.id,
                    firm_id=cs.firm_id,
                    invoice_id=item["invoice_id"],
                    number=bill.number if bill else item.get("number", ""),
                    kind=kind,
                    account=deposit_rules.account_for(kind),
                    amount_minor=item["amount_minor"],
                    refunded_minor=0,
                    # Where Clio stood when the client chose to pay (checkout), so that a
                    # payment the firm records there before our event of it arrives counts.
                    source_balance_at_payment=item.get(
                        "source_balance_minor", bill.source_balance_minor if bill else 0
                    ),
                    source_paid_at_payment=item.get(
                        "source_paid_minor", bill.source_paid_minor if bill else None
                    ),
                    reconciled=False,
                )
            )
        cs.payment_id = payment.id
        cs.status = CheckoutStatus.complete
        await s.flush()
        return payment

    async def _adopt_waiting(self, s: AsyncSession, payment: Payment) -> bool:
        """Events that came before their payment was known now belong to it."""
        match = [ProcessorEventRecord.session_id == payment.session_id]
        if payment.processor_ref:
            match.append(ProcessorEventRecord.payment_ref == payment.processor_ref)
        waiting = list(
            await s.scalars(
                select(ProcessorEventRecord).where(
                    ProcessorEventRecord.processor == payment.processor,
                    ProcessorEventRecord.payment_id.is_(None),
                    or_(*match),
                )
            )
        )
        for row in waiting:
            row.payment_id, row.firm_id = payment.id, payment.firm_id
        return bool(waiting)

    # --- deriving a payment ---------------------------------------------------------------

    async def derive(self, s: AsyncSession, payment: Payment) -> None:
        """Set the payment, its allocations, refunds and deposits from all its events, and
        announce each transition on the bus once."""
        rows = await s.scalars(
            select(ProcessorEventRecord).where(ProcessorEventRecord.payment_id == payment.id)
        )
        facts = [fact_of(r) for r in rows]
        state = rules.derive_payment(facts)
        self._apply_state(payment, state)
        allocations = list(
            await s.scalars(
                select(Allocation)
                .where(Allocation.payment_id == payment.id)
                .order_by(Allocation.id)
            )
        )
        refunds = await refund_state.derive_refunds(s, payment, facts, allocations)
        items = await refund_state.refund_items(s, [r.id for r in refunds])
        refunded = refund_state.RefundedTotals.of(refunds, items)
        for alloc in allocations:
            alloc.refunded_minor = min(
                refunded.per_invoice.get(alloc.invoice_id, 0), alloc.amount_minor
            )
        payment.refunded_minor = min(refunded.total_minor, payment.amount_minor)
        payment.status = rules.shown_status(
            state.rank, payment.amount_minor, payment.refunded_minor
        )
        if state.rank >= rules.Progress.succeeded:
            await deposits.derive_deposits(
                s,
                payment,
                state,
                allocations,
                refunded.per_account,
                make_up_accounts=self.processor.name == "test",
            )
        await announce(self.service, s, payment, state, allocations, refunds, items)
        if payment.status in record_rules.ARRIVED:
            # Clio may show it already (the firm recorded it before our event came).
            await record.reconcile(s, payment.firm_id, [a.invoice_id for a in allocations])

    def _apply_state(self, payment: Payment, state: rules.PaymentState) -> None:
        if not state.facts:
            return
        payment.method = state.method or payment.method
        payment.processor_ref = state.payment_ref or payment.processor_ref
        payment.charge_ref = state.charge_ref
        payment.payer_name = state.payer_name
        payment.payer_email = state.payer_email
        payment.card_last4 = state.last4 if payment.method == PaymentMethod.card else None
        payment.bank_last4 = state.last4 if payment.method == PaymentMethod.ach else None
        payment.created_at = state.first_at or payment.created_at
        payment.succeeded_at = state.succeeded_at
        payment.failure_code = state.failure_code
        payment.failure_reason = state.failure_reason
        if state.rank < rules.Progress.succeeded:
            payment.fee_minor = 0  # no money moved, no fee
        elif state.fee_minor is not None:
            payment.fee_minor = state.fee_minor  # the processor's own figure
        else:
            payment.fee_minor = rules.processing_fee(payment.method, payment.amount_minor)

    # --- moving the money -----------------------------------------------------------------

    async def transfer_deposits(self, payment_id: str) -> None:
        """Ask the processor to move a succeeded payment's money to the firm's accounts.
        Outside any transaction: the processor is a network call. Its idempotency key per
        payment and account makes a retry (here or from the loop) move the money once.

        A payment returned after it succeeded is deposited too, and the return recorded as
        taking it back: the ledger ends the same whichever the processor reported first."""
        async with self.service.sessionmaker() as s:
            request = await deposits.due_request(s, payment_id)
        if request is None:
            return
        try:
            done = await self.processor.deposit(request)
        except ProcessorError as exc:
            log.warning("deposits of %s not made yet: %s", payment_id, exc)
            async with self.tx() as s:
                await deposits.record_error(s, payment_id, str(exc))
            return
        async with self.tx() as s:
            await self.derive(s, await deposits.record_made(s, payment_id, done))

    async def deposit_loop(self) -> None:
        """Deposits a crash or an unreachable processor left undone, retried."""
        while True:
            await asyncio.sleep(self.settings.retry_seconds)
            cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.retry_seconds)
            async with self.service.sessionmaker() as s:
                due = await deposits.payments_with_pending_deposits(s, cutoff)
            for payment_id in due:
                await self.transfer_deposits(payment_id)

    async def set_accounts(self, firm_id: str, operating: str, trust: str) -> FirmAccount:
        """Where the firm's deposits go from now on."""
        async with self.tx() as s:
            return await deposits.set_accounts(s, firm_id, operating, trust)
