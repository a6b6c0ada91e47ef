"""Suppressed addresses: an address that hard-bounced gets no new send and no reminder until
a firm user changes the recipient or clears it. Kept lower-cased, per firm."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope.models import Suppression
from services.envelope.rules import suppressed_message
from shared.db import insert_unless_present
from shared.events import BounceKind, EmailBounced

_table = Suppression.__table__
_INSERT = insert_unless_present(_table)


def key(address: str) -> str:
    return address.strip().lower()


async def on_bounced(s: AsyncSession, ev: EmailBounced, envelope_id: str | None) -> bool:
    """A hard bounce suppresses its address (the first bounce's reason is kept); True when
    it was newly suppressed. A soft bounce suppresses nothing."""
    if ev.kind != BounceKind.hard or not ev.recipient.strip():
        return False
    result = await s.execute(
        _INSERT,
        {
            "firm_id": ev.firm_id,
            "address": key(ev.recipient),
            "reason": ev.reason or "bounced",
            "status": ev.status,
            "email_id": ev.email_id,
            "envelope_id": envelope_id,
            "created_at": ev.at or datetime.now(UTC),
        },
    )
    return bool(result.rowcount == 1)


async def of_firm(s: AsyncSession, firm_id: str) -> list[Suppression]:
    return list(
        await s.scalars(
            select(Suppression)
            .where(Suppression.firm_id == firm_id)
            .order_by(Suppression.created_at.desc(), Suppression.address)
        )
    )


async def count(s: AsyncSession, firm_id: str) -> int:
    return int(
        await s.scalar(select(func.count()).select_from(_table).where(_table.c.firm_id == firm_id))
        or 0
    )


async def among(s: AsyncSession, firm_id: str, addresses: Iterable[str]) -> list[Suppression]:
    """Those of `addresses` (any case) the firm has suppressed."""
    keys = {key(a) for a in addresses if a and a.strip()}
    if not keys:
        return []
    return list(
        await s.scalars(
            select(Suppression)
            .where(Suppression.firm_id == firm_id, Suppression.address.in_(keys))
            .order_by(Suppression.address)
        )
    )


async def messages(s: AsyncSession, firm_id: str, addresses: Iterable[str]) -> dict[str, str]:
    """address (lower-cased) -> why a send to it is refused."""
    return {x.address: message(x) for x in await among(s, firm_id, addresses)}


def message(x: Suppression) -> str:
    return suppressed_message(x.address, x.reason, x.status)


async def clear(s: AsyncSession, firm_id: str, address: str) -> bool:
    """Lift it; False when the firm had no such suppression."""
    result = await s.execute(
        delete(_table).where(_table.c.firm_id == firm_id, _table.c.address == key(address))
    )
    return bool(result.rowcount)
