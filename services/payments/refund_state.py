"""A payment's refunds as its processor events make them: each refund's status from the
events about it, refunds made on the processor's dashboard recorded as ours, and what each
item still holds. Called by the ledger inside its transaction; asking the processor for a
refund is `refunds.py`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import rules
from services.payments.models import Allocation, Payment, Refund, RefundItem
from shared.events import RefundStatus

EXTERNAL_REQUESTER = "the processor's dashboard"


def external_refund_id(fact: rules.Fact) -> str:
    """Our id for a refund made outside EnvelopePay: from the processor's refund id."""
    return f"ext_{fact.refund_ref or fact.event_id}"[:100]


@dataclass
class RefundedTotals:
    """What the refunds that succeeded gave back: in all, per invoice and per account."""

    total_minor: int = 0
    per_invoice: dict[str, int] = field(default_factory=dict)
    per_account: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, refunds: list[Refund], items: dict[str, list[RefundItem]]) -> RefundedTotals:
        out = cls()
        for refund in refunds:
            if refund.status != RefundStatus.succeeded:
                continue
            out.total_minor += refund.amount_minor
            for item in items.get(refund.id, []):
                out.per_invoice[item.invoice_id] = (
                    out.per_invoice.get(item.invoice_id, 0) + item.amount_minor
                )
                out.per_account[item.account] = (
                    out.per_account.get(item.account, 0) + item.amount_minor
                )
        return out


async def refund_items(s: AsyncSession, refund_ids: list[str]) -> dict[str, list[RefundItem]]:
    """refund id -> its items, in the order they were recorded."""
    out: dict[str, list[RefundItem]] = {}
    if not refund_ids:
        return out
    for item in await s.scalars(
        select(RefundItem).where(RefundItem.refund_id.in_(refund_ids)).order_by(RefundItem.id)
    ):
        out.setdefault(item.refund_id, []).append(item)
    return out


async def committed_per_item(s: AsyncSession, refunds: list[Refund]) -> dict[str, int]:
    """Per item, what refunds that succeeded or are still pending take: a failed refund
    gives its share back."""
    live = [r.id for r in refunds if r.status != RefundStatus.failed]
    out: dict[str, int] = {}
    for items in (await refund_items(s, live)).values():
        for item in items:
            out[item.invoice_id] = out.get(item.invoice_id, 0) + item.amount_minor
    return out


async def derive_refunds(
    s: AsyncSession, payment: Payment, facts: list[rules.Fact], allocations: list[Allocation]
) -> list[Refund]:
    """The payment's refunds, each with the status its events give it."""
    refunds = list(
        await s.scalars(select(Refund).where(Refund.payment_id == payment.id).order_by(Refund.id))
    )
    refund_facts = [f for f in facts if f.kind in rules.REFUND_KINDS]
    await _add_external_refunds(s, payment, refund_facts, refunds, allocations)
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
        refund.status, ref, refund.failure_reason = rules.derive_refund(mine)
        refund.processor_ref = refund.processor_ref or ref
    return refunds


async def _add_external_refunds(
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
        committed = await committed_per_item(s, refunds)
        left = [
            (a.invoice_id, max(a.amount_minor - committed.get(a.invoice_id, 0), 0))
            for a in allocations
        ]
        taken = rules.allocate_external_refund(fact.amount_minor, left)
        refund = Refund(
            id=refund_id,
            payment_id=payment.id,
            firm_id=payment.firm_id,
            amount_minor=sum(a for _, a in taken),
            status=RefundStatus.pending,
            processor_ref=fact.refund_ref,
            requested_by=EXTERNAL_REQUESTER,
            created_at=fact.occurred_at,
            submitted=True,
            announced=False,
        )
        s.add(refund)
        add_items(s, refund_id, allocations, taken)
        await s.flush()
        refunds.append(refund)
        known_ids.add(refund_id)
        if fact.refund_ref:
            known_refs.add(fact.refund_ref)


def add_items(
    s: AsyncSession, refund_id: str, allocations: list[Allocation], taken: list[tuple[str, int]]
) -> None:
    """A refund's items: (invoice_id, amount) of the payment's allocations, each refunded
    to the account its allocation went to."""
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
