"""What the Reminders page shows: the upcoming reminders and the history."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.envelope import reminder_rules as rr
from services.envelope.models import (
    EnvelopeSend,
    Firm,
    Reminder,
)
from services.envelope.reminder_reads import ClientView, read_addresses, read_firm, whole_balance
from shared.api.reminders import (
    RemindersOut,
    SentReminder,
    UpcomingReminder,
)
from shared.events import (
    SendStatus,
)
from shared.schema import firm_profile

_reminders = Reminder.__table__
_sends = EnvelopeSend.__table__

HISTORY_LIMIT = 200


async def overview(
    sessionmaker: async_sessionmaker[AsyncSession], firm_id: str, days: int, now: datetime
) -> RemindersOut:
    """The Reminders page: what is upcoming in the next `days` (listed with reminders off
    too, as a preview), the history, and the paused clients and bills."""
    async with sessionmaker() as s:
        profile = firm_profile(await s.scalar(select(Firm.profile).where(Firm.firm_id == firm_id)))
        settings = profile.reminders
        today = rr.firm_today(now, profile.time_zone)
        firm = await read_firm(s, firm_id, profile, now, today)
        listed: list[tuple[ClientView, rr.Slot, str | None]] = []
        for c in firm.clients.values():
            # (Listed with reminders off too, as what would go: a preview before
            # turning them on.)
            found = rr.upcoming(c.state(firm), settings, today, days)
            if found is not None:
                listed.append((c, *found))
        await read_addresses(s, firm_id, {c.client_id: c for c, _, _ in listed})
        history = await _history(s, firm_id)
    upcoming_out = []
    for c, slot, _ in sorted(listed, key=lambda x: (x[1].on, x[0].client_name)):
        state = c.state(firm)
        items = rr.envelope_items(rr.unpaid(c.bills, firm.paused_invoices))
        currency, _ = rr.amount(items)
        upcoming_out.append(
            UpcomingReminder(
                client_id=c.client_id,
                client_name=c.client_name,
                due_on=slot.on,
                slot=slot.key,
                reason=slot.reason,
                invoice_ids=[b.invoice_id for b in items],
                numbers=[b.number for b in items],
                currency=currency,
                amount_minor=whole_balance(c, currency, firm.paused_invoices),
                to=rr.deliverable(c.to, firm.suppressed) or list(c.to),
                paused=state.paused,
                blocked=(
                    rr.block(state, items, slot.on, settings)
                    if settings.enabled
                    else rr.Note.firm_off
                ),
            )
        )
    return RemindersOut(
        enabled=settings.enabled,
        time_zone=profile.time_zone,
        upcoming=upcoming_out,
        history=history,
        paused_clients=sorted(firm.paused_clients),
        paused_invoices=sorted(firm.paused_invoices),
    )


async def _history(s: AsyncSession, firm_id: str) -> list[SentReminder]:
    r = _reminders.c
    rows = await s.execute(
        select(_reminders, _sends.c.status.label("send_status"), _sends.c.sent_at, _sends.c.error)
        .outerjoin(_sends, _sends.c.send_id == r.send_id)
        .where(r.firm_id == firm_id)
        .order_by(r.created_at.desc(), r.id.desc())
        .limit(HISTORY_LIMIT)
    )
    out = []
    for row in rows:
        status = row.status if row.status == "skipped" else (row.send_status or "queued")
        out.append(
            SentReminder(
                client_id=row.client_id,
                client_name=row.client_name,
                slot=row.slot,
                due_on=row.due_on,
                sent_at=row.sent_at if status == SendStatus.sent else None,
                envelope_id=row.envelope_id,
                invoice_ids=json.loads(row.invoice_ids),
                currency=row.currency,
                amount_minor=row.amount_minor,
                to=json.loads(row.to),
                status=status,
                note=row.note if status == "skipped" else row.error,
            )
        )
    return out
