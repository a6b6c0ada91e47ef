"""What a reminder pass, Send now and the Reminders page read of a firm: its clients' unpaid
bills, switches, recorded slots, recent manual sends, suppressed addresses and the clients'
addresses, as plain views for reminder_rules.py."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import reminder_rules as rr
from services.envelope.models import (
    Envelope,
    EnvelopeSend,
    Invoice,
    Reminder,
    ReminderClient,
    ReminderInvoice,
    Suppression,
)
from shared.events import (
    FirmProfile,
    InvoiceState,
    SendStatus,
)

_reminders = Reminder.__table__
_invoices = Invoice.__table__
_sends = EnvelopeSend.__table__
_envelopes = Envelope.__table__

CHUNK = 500  # rows per multi-row INSERT or IN list (well inside both databases' limits)


@dataclass
class ClientView:
    client_id: str
    client_name: str
    bills: list[rr.Bill] = field(default_factory=list)
    claimed: set[str] = field(default_factory=set)
    last_claimed: date | None = None
    reminded_on: set[date] = field(default_factory=set)
    manual: list[rr.ManualSend] = field(default_factory=list)
    to: list[str] = field(default_factory=list)
    items: list[rr.Bill] = field(default_factory=list)  # unpaid, oldest first (plan's)
    due: list[rr.Slot] = field(default_factory=list)  # slots due, not recorded (plan's)

    def state(self, firm: FirmView) -> rr.ClientState:
        return rr.ClientState(
            client_id=self.client_id,
            bills=self.bills,
            paused=self.client_id in firm.paused_clients,
            paused_invoices=firm.paused_invoices,
            claimed=frozenset(self.claimed),
            last_claimed=self.last_claimed,
            reminded_on=frozenset(self.reminded_on),
            manual_sends=self.manual,
            to=self.to,
            suppressed=firm.suppressed,
        )


@dataclass
class FirmView:
    firm_id: str
    profile: FirmProfile
    clients: dict[str, ClientView]
    paused_clients: frozenset[str]
    paused_invoices: frozenset[str]
    suppressed: frozenset[str]


def chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


async def read_firm(
    s: AsyncSession,
    firm_id: str,
    profile: FirmProfile,
    now: datetime,
    today: date,
    client_id: str | None = None,
) -> FirmView:
    """Everything a pass needs of a firm (or of one of its clients) but the addresses:
    unpaid bills, switches, recorded slots, recent manual sends, suppressed addresses."""
    inv = _invoices.c
    # The columns of reminder_rules.Bill, in its order, then the client's name.
    q = select(
        inv.invoice_id,
        inv.number,
        inv.client_id,
        inv.state,
        inv.issued_at,
        inv.due_at,
        inv.currency,
        inv.balance_minor,
        inv.paid_online_minor,
        inv.payment_status,
        inv.processing_minor,
        inv.client_name,
    ).where(
        inv.firm_id == firm_id,
        inv.state == InvoiceState.awaiting_payment.value,
        inv.balance_minor > 0,
    )
    if client_id is not None:
        q = q.where(inv.client_id == client_id)
    clients: dict[str, ClientView] = {}
    make_bill = rr.Bill._make
    for row in (await s.execute(q)).tuples():
        c = clients.get(row[2])
        if c is None:
            c = clients[row[2]] = ClientView(row[2], row[11])
        c.bills.append(make_bill(row[:11]))
    paused_clients = frozenset(
        await s.scalars(
            select(ReminderClient.client_id).where(
                ReminderClient.firm_id == firm_id, ReminderClient.enabled.is_(False)
            )
        )
    )
    paused_invoices = frozenset(
        await s.scalars(
            select(ReminderInvoice.invoice_id).where(
                ReminderInvoice.firm_id == firm_id, ReminderInvoice.enabled.is_(False)
            )
        )
    )
    suppressed = frozenset(
        a.lower()
        for a in await s.scalars(select(Suppression.address).where(Suppression.firm_id == firm_id))
    )
    # The slots recorded within the last cadence period (a pass looks no further back:
    # reminder_rules.lookback_start), and the days a reminder went.
    r = _reminders.c
    recent_q = select(r.client_id, r.slot, r.due_on, r.sent_on).where(
        r.firm_id == firm_id,
        r.due_on >= today - timedelta(days=profile.reminders.every_days),
    )
    if client_id is not None:
        recent_q = recent_q.where(r.client_id == client_id)
    for cid, slot, due_on, sent_on in await s.execute(recent_q):
        c = clients.get(cid)
        if c is not None:
            c.claimed.add(slot)
            c.last_claimed = max(c.last_claimed or due_on, due_on)
            if sent_on is not None:
                c.reminded_on.add(sent_on)
    # A person's sends within the quiet period (and a day more, for zones).
    quiet = profile.reminders.quiet_after_send_days
    if quiet > 0:
        q2 = (
            select(_envelopes.c.client_id, _envelopes.c.invoice_ids, _sends.c.requested_at)
            .join(_envelopes, _envelopes.c.id == _sends.c.envelope_id)
            .where(
                _sends.c.firm_id == firm_id,
                _sends.c.requested_by != rr.REMINDER_SENDER,
                _sends.c.status != SendStatus.failed.value,
                _sends.c.requested_at >= now - timedelta(days=quiet + 1),
            )
        )
        if client_id is not None:
            q2 = q2.where(_envelopes.c.client_id == client_id)
        for cid, ids, at in await s.execute(q2):
            if cid in clients:
                clients[cid].manual.append(
                    rr.ManualSend(rr.firm_today(at, profile.time_zone), frozenset(json.loads(ids)))
                )
    return FirmView(firm_id, profile, clients, paused_clients, paused_invoices, suppressed)


async def read_addresses(s: AsyncSession, firm_id: str, clients: dict[str, ClientView]) -> None:
    """Each client's addresses: those of its latest manual send that did not fail, else
    the client email of its oldest unpaid bill."""
    ids = list(clients)
    for chunk in chunks(ids):
        rows = await s.execute(
            select(_envelopes.c.client_id, _sends.c.to)
            .join(_envelopes, _envelopes.c.id == _sends.c.envelope_id)
            .where(
                _sends.c.firm_id == firm_id,
                _envelopes.c.client_id.in_(chunk),
                _sends.c.requested_by != rr.REMINDER_SENDER,
                _sends.c.status != SendStatus.failed.value,
            )
            .order_by(_sends.c.requested_at)
        )
        for cid, to in rows:
            clients[cid].to = list(json.loads(to))
    wanted = {
        rr.unpaid(c.bills)[0].invoice_id: c
        for c in clients.values()
        if not c.to and rr.unpaid(c.bills)
    }
    for chunk in chunks(list(wanted)):
        for invoice_id, snapshot in await s.execute(
            select(_invoices.c.invoice_id, _invoices.c.snapshot).where(
                _invoices.c.firm_id == firm_id, _invoices.c.invoice_id.in_(chunk)
            )
        ):
            email = json.loads(snapshot).get("client_email")
            if email:
                wanted[invoice_id].to = [email]


# --- the claim -----------------------------------------------------------------------


def whole_balance(
    c: ClientView, currency: str, paused: frozenset[str] | set[str] = frozenset()
) -> int:
    """What Pay All asks of the client in `currency`: every bill a reminder may ask for."""
    bills = c.items or rr.unpaid(c.bills, paused)
    return sum(rr.owed(b) for b in bills if b.currency == currency)
