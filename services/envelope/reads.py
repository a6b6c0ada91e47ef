"""The reads every part of envelope shares: a firm's profile, bills by id, the Invoices list."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope.models import Firm, Invoice
from services.envelope.rules import SETTLING_ONLINE
from shared.events import BillPayment, FirmProfile, InvoiceKind, InvoiceState
from shared.runtime import Service
from shared.schema import stored_firm


class ListFilter(StrEnum):
    """The Invoices list's state filters besides a bill's own states: `unpaid` and `paid`
    count payments made here too (see `list_invoices`)."""

    all = "all"
    unpaid = "unpaid"
    paid = "paid"


# The Invoices list's state filters that match the bill's own state.
STATE_FILTERS = frozenset({InvoiceState.draft, InvoiceState.awaiting_payment, InvoiceState.void})


async def firm_profile(s: AsyncSession, firm_id: str) -> FirmProfile:
    return await stored_firm(s, Firm, firm_id)


async def invoice(s: AsyncSession, firm_id: str, invoice_id: str) -> Invoice | None:
    return await s.scalar(
        select(Invoice).where(Invoice.firm_id == firm_id, Invoice.invoice_id == invoice_id)
    )


async def invoices(s: AsyncSession, firm_id: str, ids: list[str]) -> list[Invoice]:
    """The firm's bills of `ids` that exist, in the order of `ids`."""
    rows = await s.scalars(
        select(Invoice).where(Invoice.firm_id == firm_id, Invoice.invoice_id.in_(ids))
    )
    by_id = {r.invoice_id: r for r in rows}
    return [by_id[i] for i in ids if i in by_id]


async def list_invoices(
    service: Service,
    firm_id: str,
    *,
    q: str = "",
    state: str = ListFilter.all,
    kind: str = "all",
    page: int = 1,
    per_page: int = 25,
    ids: list[str] | None = None,
) -> tuple[list[Invoice], int]:
    """A page of the Invoices list, newest first, and how many match in all."""
    stmt: Select[Any] = select(Invoice).where(Invoice.firm_id == firm_id)
    if ids:
        stmt = stmt.where(Invoice.invoice_id.in_(ids))
    if q.strip():
        like = f"%{q.strip().lower()}%"
        stmt = stmt.where(
            or_(
                func.lower(Invoice.client_name).like(like),
                func.lower(Invoice.number).like(like),
            )
        )
    if state == ListFilter.unpaid:
        # Paid online (or processing) here but not yet recorded in Clio is not unpaid.
        stmt = stmt.where(
            Invoice.state == InvoiceState.awaiting_payment,
            Invoice.balance_minor > 0,
            or_(
                Invoice.payment_status.is_(None),
                Invoice.payment_status.not_in(sorted(SETTLING_ONLINE)),
            ),
        )
    elif state == ListFilter.paid:
        stmt = stmt.where(
            or_(
                Invoice.state == InvoiceState.paid,
                Invoice.payment_status == BillPayment.paid_online,
            )
        )
    elif state in STATE_FILTERS:
        stmt = stmt.where(Invoice.state == state)
    if kind in set(InvoiceKind):
        stmt = stmt.where(Invoice.kind == kind)
    async with service.sessionmaker() as s:
        total = await s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        rows = await s.scalars(
            stmt.order_by(Invoice.issued_at.desc(), Invoice.number.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
        return list(rows), total
