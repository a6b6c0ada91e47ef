"""The ledger: payments, their allocations, deposits and refunds, as the processor reports them.

Every report is a `ProcessorEvent`. It is recorded once (unique per processor and event id),
and the payment's state is then derived again from *all* events recorded for it, never from
the order they came in; a bus event goes out only when the derived state crosses a line it had
not crossed before. So webhooks that repeat, arrive out of order or arrive late end in the same
ledger and the same announcements. An event about a payment not known yet is kept and applied
when the payment appears.
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

from services.payments import rules
from services.payments.balances import aware
from services.payments.models import (
    Allocation,
    Bill,
    CheckoutSession,
    Deposit,
    Firm,
    FirmAccount,
    PayLink,
    Payment,
    ProcessorEventRecord,
    Refund,
    RefundItem,
)
from services.payments.processors import Deposit as DepositOrder
from services.payments.processors import Processor, ProcessorError, ProcessorEvent
from services.payments.settings import PaymentsSettings
from shared.db import insert_unless_present
from shared.events import Allocation as AllocationEvent
from shared.events import (
    FirmUpdated,
    InvoiceUpdated,
    PayLinkIssued,
    PaymentFailed,
    PaymentProcessing,
    PaymentRefunded,
    PaymentSucceeded,
)
from shared.runtime import Service

log = logging.getLogger(__name__)

# One PostgreSQL advisory lock serialises the ledger's writes, as SQLite's write lock does:
# a payment's derivation and announcements never race a second delivery of its events.
LEDGER_LOCK_KEY = 0x7061796D656E7473  # "payments"


# Session info key: payments whose deposits may be made once the transaction commits.
DEPOSITS_DUE = "payments_deposits_due"


def payment_id_for(session_id: str) -> str:
    """One payment per checkout session, with an id that every event of it leads to."""
    return "pay_" + session_id.split("_", 1)[-1]


def external_refund_id(fact: rules.Fact) -> str:
    """Our id for a refund made outside EnvelopePay: from the processor's refund id."""
    return f"ext_{fact.refund_ref or fact.event_id}"[:100]


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

    # --- what other services tell us ------------------------------------------------------

    async def on_firm_updated(self, s: AsyncSession, ev: FirmUpdated) -> None:
        row = await s.get(Firm, ev.firm_id)
        if row is None:
            row = Firm(firm_id=ev.firm_id)
            s.add(row)
        elif row.updated_at and aware(row.updated_at) > ev.occurred_at:
            return
        row.profile = ev.firm.model_dump_json()
        row.updated_at = ev.occurred_at

    async def on_invoice_updated(self, s: AsyncSession, ev: InvoiceUpdated) -> None:
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
        bill.updated_at = datetime.now(UTC)
        allocations = await s.scalars(
            select(Allocation).where(
                Allocation.firm_id == ev.firm_id,
                Allocation.invoice_id == inv.invoice_id,
                Allocation.reconciled.is_(False),
            )
        )
        for alloc in allocations:
            # The firm recorded the payment in Clio: the synced balance already counts it.
            if inv.balance_minor <= alloc.source_balance_at_payment - alloc.amount_minor:
                alloc.reconciled = True

    async def on_paylink_issued(self, s: AsyncSession, ev: PayLinkIssued) -> None:
        await self.on_paylinks_issued(s, [ev])

    async def on_paylinks_issued(self, s: AsyncSession, evs: list[PayLinkIssued]) -> None:
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
        for ev in new:
            for item in ev.items:
                if (ev.firm_id, item.invoice_id) not in known:
                    known.add((ev.firm_id, item.invoice_id))
                    s.add(
                        Bill(
                            firm_id=ev.firm_id,
                            invoice_id=item.invoice_id,
                            number=item.number,
                            kind=item.kind,
                            state="awaiting_payment",
                            client_id=ev.client_id,
                            client_name=ev.client_name,
                            currency=item.currency,
                            source_balance_minor=item.balance_minor,
                            due_at=item.due_at,
                            updated_at=datetime.now(UTC),
                        )
                    )

    # --- firm accounts --------------------------------------------------------------------

    async def accounts(self, s: AsyncSession, firm_id: str) -> FirmAccount | None:
        """The firm's operating and trust accounts; test mode makes up both once."""
        row = await s.get(FirmAccount, firm_id)
        if row is None and self.processor.name == "test":
            row = FirmAccount(
                firm_id=firm_id,
                operating_account=f"test_operating_{firm_id}",
                trust_account=f"test_trust_{firm_id}",
                updated_at=datetime.now(UTC),
            )
            s.add(row)
        return row

    async def set_accounts(self, firm_id: str, operating: str, trust: str) -> FirmAccount:
        async with self.tx() as s:
            row = await s.get(FirmAccount, firm_id)
            if row is None:
                row = FirmAccount(firm_id=firm_id)
                s.add(row)
            row.operating_account, row.trust_account = operating, trust
            row.updated_at = datetime.now(UTC)
            return row

    # --- processor events -----------------------------------------------------------------

    async def apply(self, ev: ProcessorEvent, processor: str | None = None) -> str | None:
        """Record one event in its own transaction, then move the money it releases.
        Returns the id of the payment it concerns, when known."""
        async with self.tx() as s:
            payment_id = await self.record(s, ev, processor or self.processor.name)
            due = s.info.pop(DEPOSITS_DUE, set())
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
            method=ev.method or "card",
            status="processing",
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
            kind = bill.kind if bill else item.get("kind", "invoice")
            s.add(
                Allocation(
                    payment_id=payment.id,
                    firm_id=cs.firm_id,
                    invoice_id=item["invoice_id"],
                    number=bill.number if bill else item.get("number", ""),
                    kind=kind,
                    account=rules.account_for(kind),
                    amount_minor=item["amount_minor"],
                    refunded_minor=0,
                    source_balance_at_payment=bill.source_balance_minor if bill else 0,
                    reconciled=False,
                )
            )
        cs.payment_id = payment.id
        cs.status = "complete"
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
        refunds = await self._derive_refunds(s, payment, facts, allocations)
        items = await self._refund_items(s, [r.id for r in refunds])
        succeeded = [r for r in refunds if r.status == "succeeded"]
        per_invoice: dict[str, int] = {}
        per_account: dict[str, int] = {}
        for r in succeeded:
            for item in items.get(r.id, []):
                per_invoice[item.invoice_id] = (
                    per_invoice.get(item.invoice_id, 0) + item.amount_minor
                )
                per_account[item.account] = per_account.get(item.account, 0) + item.amount_minor
        for alloc in allocations:
            alloc.refunded_minor = min(per_invoice.get(alloc.invoice_id, 0), alloc.amount_minor)
        payment.refunded_minor = min(sum(r.amount_minor for r in succeeded), payment.amount_minor)
        payment.status = rules.payment_status(
            state.rank, payment.amount_minor, payment.refunded_minor
        )
        if state.rank >= rules.SUCCEEDED:
            await self._derive_deposits(s, payment, state, allocations, per_account)
        await self._announce(s, payment, state, allocations, refunds, items)

    def _apply_state(self, payment: Payment, state: rules.PaymentState) -> None:
        if not state.facts:
            return
        payment.method = state.method or payment.method
        payment.processor_ref = state.payment_ref or payment.processor_ref
        payment.charge_ref = state.charge_ref
        payment.payer_name = state.payer_name
        payment.payer_email = state.payer_email
        payment.card_last4 = state.last4 if payment.method == "card" else None
        payment.bank_last4 = state.last4 if payment.method == "ach" else None
        payment.created_at = state.first_at or payment.created_at
        payment.succeeded_at = state.succeeded_at
        payment.failure_code = state.failure_code
        payment.failure_reason = state.failure_reason
        if state.rank < rules.SUCCEEDED:
            payment.fee_minor = 0  # no money moved, no fee
        elif state.fee_minor is not None:
            payment.fee_minor = state.fee_minor  # the processor's own figure
        else:
            payment.fee_minor = rules.processing_fee(payment.method, payment.amount_minor)

    async def _refund_items(
        self, s: AsyncSession, refund_ids: list[str]
    ) -> dict[str, list[RefundItem]]:
        out: dict[str, list[RefundItem]] = {}
        if not refund_ids:
            return out
        for item in await s.scalars(
            select(RefundItem).where(RefundItem.refund_id.in_(refund_ids)).order_by(RefundItem.id)
        ):
            out.setdefault(item.refund_id, []).append(item)
        return out

    async def _derive_refunds(
        self,
        s: AsyncSession,
        payment: Payment,
        facts: list[rules.Fact],
        allocations: list[Allocation],
    ) -> list[Refund]:
        refunds = list(
            await s.scalars(
                select(Refund).where(Refund.payment_id == payment.id).order_by(Refund.id)
            )
        )
        refund_facts = [f for f in facts if f.kind in rules.REFUND_KINDS]
        await self._add_external_refunds(s, payment, refund_facts, refunds, allocations)
        for refund in refunds:
            mine = [
                f
                for f in refund_facts
                if f.refund_id == refund.id
                or (f.refund_ref is not None and f.refund_ref == refund.processor_ref)
                or (f.refund_id is None and external_refund_id(f) == refund.id)
            ]
            if not mine:
                continue
            rank, ref, reason = rules.derive_refund(mine)
            refund.status = rules.REFUND_STATUS[rank]
            refund.processor_ref = refund.processor_ref or ref
            refund.failure_reason = reason
        return refunds

    async def _add_external_refunds(
        self,
        s: AsyncSession,
        payment: Payment,
        refund_facts: list[rules.Fact],
        refunds: list[Refund],
        allocations: list[Allocation],
    ) -> None:
        """A refund made on the processor's dashboard names none of ours: record it, taken
        from the items in their order. One that names our refund id waits for it."""
        known_refs = {r.processor_ref for r in refunds if r.processor_ref}
        known_ids = {r.id for r in refunds}
        for fact in sorted(refund_facts, key=lambda f: (f.occurred_at, f.event_id)):
            if fact.refund_id or fact.amount_minor is None:
                continue
            if fact.refund_ref in known_refs:
                continue
            refund_id = external_refund_id(fact)
            if refund_id in known_ids:
                continue
            left = await self._left_per_item(s, refunds, allocations)
            taken = rules.allocate_external_refund(fact.amount_minor, left)
            refund = Refund(
                id=refund_id,
                payment_id=payment.id,
                firm_id=payment.firm_id,
                amount_minor=sum(a for _, a in taken),
                status="pending",
                processor_ref=fact.refund_ref,
                requested_by="the processor's dashboard",
                created_at=fact.occurred_at,
                submitted=True,
                announced=False,
            )
            s.add(refund)
            by_invoice = {a.invoice_id: a for a in allocations}
            for invoice_id, amount in taken:
                alloc = by_invoice[invoice_id]
                s.add(
                    RefundItem(
                        refund_id=refund_id,
                        invoice_id=invoice_id,
                        number=alloc.number,
                        account=alloc.account,
                        amount_minor=amount,
                    )
                )
            await s.flush()
            refunds.append(refund)
            known_ids.add(refund_id)
            if fact.refund_ref:
                known_refs.add(fact.refund_ref)

    async def _left_per_item(
        self, s: AsyncSession, refunds: list[Refund], allocations: list[Allocation]
    ) -> list[tuple[str, int]]:
        committed = await self.committed_per_item(s, refunds)
        return [
            (a.invoice_id, max(a.amount_minor - committed.get(a.invoice_id, 0), 0))
            for a in allocations
        ]

    async def committed_per_item(self, s: AsyncSession, refunds: list[Refund]) -> dict[str, int]:
        """Per item, what refunds that succeeded or are still pending take: a failed refund
        gives its share back."""
        live = [r.id for r in refunds if r.status != "failed"]
        out: dict[str, int] = {}
        for items in (await self._refund_items(s, live)).values():
            for item in items:
                out[item.invoice_id] = out.get(item.invoice_id, 0) + item.amount_minor
        return out

    async def _derive_deposits(
        self,
        s: AsyncSession,
        payment: Payment,
        state: rules.PaymentState,
        allocations: list[Allocation],
        refunded_per_account: dict[str, int],
    ) -> None:
        """Trust items' total to trust with no fee, invoice items' total to operating with
        the whole fee; refunds take back from the account their items went to."""
        existing = {
            d.account: d
            for d in await s.scalars(select(Deposit).where(Deposit.payment_id == payment.id))
        }
        plans = rules.split_deposits(
            [(a.kind, a.amount_minor) for a in allocations], payment.fee_minor
        )
        for plan in plans:
            row = existing.get(plan.account)
            if row is None:
                accounts = await self.accounts(s, payment.firm_id)
                row = Deposit(
                    payment_id=payment.id,
                    firm_id=payment.firm_id,
                    account=plan.account,
                    destination=_destination(accounts, plan.account),
                    reversed_minor=0,
                    transferred=False,
                )
                s.add(row)
            if not row.transferred:
                s.info.setdefault(DEPOSITS_DUE, set()).add(payment.id)
            if not row.transferred:  # the processor's fee may come with a later event
                row.amount_minor, row.fee_minor = plan.amount_minor, plan.fee_minor
                row.net_minor = plan.net_minor
            row.reversed_minor = rules.reversed_minor(
                plan.account,
                refunded_per_account.get(plan.account, 0),
                row.amount_minor,
                row.fee_minor,
                returned=state.rank == rules.RETURNED,
            )
            row.status = rules.deposit_status(
                row.transferred,
                row.reversed_minor,
                row.amount_minor,
                row.fee_minor,
                returned=state.rank == rules.RETURNED,
            )

    # --- announcements --------------------------------------------------------------------

    async def _announce(
        self,
        s: AsyncSession,
        payment: Payment,
        state: rules.PaymentState,
        allocations: list[Allocation],
        refunds: list[Refund],
        items: dict[str, list[RefundItem]],
    ) -> None:
        """Each transition once, in the order a reader expects: an ACH debit is announced
        processing before it is announced settled, whatever order its webhooks came in."""
        common = {
            "firm_id": payment.firm_id,
            "payment_id": payment.id,
            "method": payment.method,
            "currency": payment.currency,
            "amount_minor": payment.amount_minor,
            "payer_name": payment.payer_name,
            "payer_email": payment.payer_email,
        }
        full = [
            AllocationEvent(invoice_id=a.invoice_id, amount_minor=a.amount_minor)
            for a in allocations
        ]
        if payment.method == "ach" and not payment.announced_processing:
            await self.service.publish(s, PaymentProcessing(**common, allocations=full))
            payment.announced_processing = True
        if state.rank >= rules.SUCCEEDED and not payment.announced_succeeded:
            await self.service.publish(s, PaymentSucceeded(**common, allocations=full))
            payment.announced_succeeded = True
        # A declined card is the client's to retry: only a debit that was announced as
        # processing, or a payment taken back after it succeeded, is news to the firm.
        lost = state.rank == rules.RETURNED or (
            state.rank == rules.FAILED and payment.method == "ach"
        )
        if lost and not payment.announced_failed:
            await self.service.publish(
                s,
                PaymentFailed(
                    **common,
                    allocations=full,
                    reason=payment.failure_reason or "",
                    failure_code=payment.failure_code,
                    returned=state.rank == rules.RETURNED,
                ),
            )
            payment.announced_failed = True
        if not payment.announced_succeeded:
            return
        for refund in refunds:
            if refund.status != "succeeded" or refund.announced:
                continue
            await self.service.publish(
                s,
                PaymentRefunded(
                    **common,
                    allocations=[
                        AllocationEvent(invoice_id=i.invoice_id, amount_minor=i.amount_minor)
                        for i in items.get(refund.id, [])
                    ],
                    refund_id=refund.id,
                    refunded_minor=refund.amount_minor,
                ),
            )
            refund.announced = True

    # --- moving the money -----------------------------------------------------------------

    async def transfer_deposits(self, payment_id: str) -> None:
        """Ask the processor to move a succeeded payment's money to the firm's accounts.
        Outside any transaction: the processor is a network call. Its idempotency key per
        payment and account makes a retry (here or from the loop) move the money once.

        A payment returned after it succeeded is deposited too, and the return recorded as
        taking it back: the ledger ends the same whichever the processor reported first."""
        async with self.service.sessionmaker() as s:
            payment = await s.get(Payment, payment_id)
            if payment is None or payment.succeeded_at is None:
                return
            pending = list(
                await s.scalars(
                    select(Deposit).where(
                        Deposit.payment_id == payment_id, Deposit.transferred.is_(False)
                    )
                )
            )
            if not pending:
                return
            orders = [
                DepositOrder(
                    account=d.account,  # type: ignore[arg-type]
                    amount_minor=d.amount_minor,
                    fee_minor=d.fee_minor,
                    destination=d.destination,
                )
                for d in pending
            ]
        try:
            done = await self.processor.deposit(
                payment_id=payment.id,
                payment_ref=payment.processor_ref or "",
                charge_ref=payment.charge_ref,
                currency=payment.currency,
                deposits=orders,
                firm_id=payment.firm_id,
            )
        except ProcessorError as exc:
            log.warning("deposits of %s not made yet: %s", payment_id, exc)
            await self._deposit_error(payment_id, str(exc))
            return
        await self._deposits_made(payment_id, done)

    async def _deposit_error(self, payment_id: str, error: str) -> None:
        async with self.tx() as s:
            for row in await s.scalars(
                select(Deposit).where(
                    Deposit.payment_id == payment_id, Deposit.transferred.is_(False)
                )
            ):
                row.last_error = error[:2000]

    async def _deposits_made(self, payment_id: str, done: list[DepositOrder]) -> None:
        async with self.tx() as s:
            payment = await s.get(Payment, payment_id)
            assert payment is not None
            rows = {
                d.account: d
                for d in await s.scalars(select(Deposit).where(Deposit.payment_id == payment_id))
            }
            for made in done:
                row = rows.get(made.account)
                if row is None or row.transferred:
                    continue
                row.transferred, row.ref, row.last_error = True, made.ref, None
            await self.derive(s, payment)

    async def pending_deposit_payments(self, older_than: timedelta) -> list[str]:
        cutoff = datetime.now(UTC) - older_than
        async with self.service.sessionmaker() as s:
            return list(
                await s.scalars(
                    select(Deposit.payment_id)
                    .join(Payment, Payment.id == Deposit.payment_id)
                    .where(Deposit.transferred.is_(False), Payment.succeeded_at <= cutoff)
                    .distinct()
                )
            )

    async def deposit_loop(self) -> None:
        """Deposits a crash or an unreachable processor left undone, retried."""
        while True:
            await asyncio.sleep(self.settings.retry_seconds)
            for payment_id in await self.pending_deposit_payments(
                timedelta(seconds=self.settings.retry_seconds)
            ):
                await self.transfer_deposits(payment_id)


def _destination(accounts: FirmAccount | None, account: str) -> str | None:
    if accounts is None:
        return None
    return accounts.trust_account if account == "trust" else accounts.operating_account
