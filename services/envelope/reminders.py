"""Automated bill reminders: the scheduler (a background loop, one pass a minute), Send now,
and the upcoming list and history the Reminders page shows (the switches are
reminder_switches.py's). The decisions are
reminder_rules.py's; this module reads what they need and writes what they decide.

Each slot goes at most once: a pass claims it by inserting its `reminders` row (unique on
firm, client and slot; and on firm, client and local day for the queued ones) with
INSERT .. ON CONFLICT DO NOTHING, and in the same transaction writes the reminder's envelope
and stages its envelope.send_requested in the outbox; a slot another pass (or replica)
claimed first comes back unclaimed and nothing is written for it. The send request then
goes through the ordinary sending path (sending.py), which composes the email, issues the
client link with Pay All for the whole balance and queues the email, exactly once per
send id. A pass is reads, decisions, then one short write transaction per firm."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import reminder_rules as rr
from services.envelope.models import (
    Envelope,
    EnvelopeSend,
    Firm,
    Invoice,
    Reminder,
    ReminderClient,
    ReminderInvoice,
    Suppression,
)
from services.envelope.reminder_switches import ReminderSwitches
from services.envelope.settings import EnvelopeSettings
from shared.api.reminders import (
    ReminderSent,
    RemindersOut,
    SentReminder,
    UpcomingReminder,
)
from shared.clock import Clock, SystemClock
from shared.db import insert_unless_present
from shared.events import (
    Delivery,
    EnvelopeSendRequested,
    FirmProfile,
    InvoiceState,
    SendStatus,
)
from shared.outbox import add_events
from shared.runtime import Service
from shared.schema import firm_profile

log = logging.getLogger(__name__)

_reminders = Reminder.__table__
_invoices = Invoice.__table__
_sends = EnvelopeSend.__table__
_envelopes = Envelope.__table__
CHUNK = 500  # rows per multi-row INSERT or IN list (well inside both databases' limits)
HISTORY_LIMIT = 200
_CLAIM = insert_unless_present(_reminders).returning(
    _reminders.c.client_id, _reminders.c.slot, _reminders.c.status
)


@dataclass
class PassResult:
    queued: int = 0
    skipped: int = 0
    lost: int = 0  # slots this pass found due but another pass (or replica) claimed first
    failed: int = 0  # firms whose pass failed
    send_ids: list[str] = field(default_factory=list)


@dataclass
class _Client:
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

    def state(self, firm: _FirmView) -> rr.ClientState:
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
class _FirmView:
    firm_id: str
    profile: FirmProfile
    clients: dict[str, _Client]
    paused_clients: frozenset[str]
    paused_invoices: frozenset[str]
    suppressed: frozenset[str]


@dataclass
class Plan:
    """A firm's due set as one pass decided it, to be claimed."""

    firm_id: str
    profile: FirmProfile
    now: datetime
    today: date
    decisions: list[tuple[_Client, rr.Decision]]
    paused_invoices: frozenset[str]


def _chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class Reminders(ReminderSwitches):
    """The scheduler, Send now and the Reminders page's lists; the switches (what a person
    turns off) are ReminderSwitches'."""

    def __init__(
        self, service: Service, settings: EnvelopeSettings, clock: Clock | None = None
    ) -> None:
        self.service = service
        self.settings = settings
        self.clock = clock or SystemClock()

    # --- the scheduler -------------------------------------------------------------------

    async def run(self) -> None:
        """The background loop: a pass every `reminder_interval_seconds`; a failed pass is
        logged and the next one tries again (slots not claimed stay due)."""
        while True:
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reminders: the pass failed; trying again next time")
            await asyncio.sleep(self.settings.reminder_interval_seconds)

    async def run_pass(self, now: datetime | None = None, firm_id: str | None = None) -> PassResult:
        """One pass over every firm whose reminders are on (or only `firm_id`), as of `now`
        (the clock's moment by default)."""
        now = now or self.clock.now()
        if now.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        total = PassResult()
        for fid, profile in await self._firms(firm_id):
            if not profile.reminders.enabled:
                continue
            if not rr.in_business_hours(now, profile.time_zone, profile.reminders):
                continue
            try:
                result = await self.firm_pass(fid, profile, now)
            except Exception:
                # One firm's failure (its slots stay unclaimed, tried again next pass) does
                # not hold back the others'.
                log.exception("reminders: firm %s: the pass failed", fid)
                total.failed += 1
                continue
            total.queued += result.queued
            total.skipped += result.skipped
            total.lost += result.lost
            total.send_ids += result.send_ids
        return total

    async def idle_reason(self, firm_id: str, now: datetime) -> str | None:
        """Why a pass as of `now` does nothing for the firm, or None."""
        firms = await self._firms(firm_id)
        if not firms or not firms[0][1].reminders.enabled:
            return rr.Note.firm_off
        profile = firms[0][1]
        if not rr.in_business_hours(now, profile.time_zone, profile.reminders):
            s = profile.reminders
            return (
                f"outside the firm's business hours ({s.business_hours_start}:00 to "
                f"{s.business_hours_end}:00, {profile.time_zone})"
            )
        return None

    async def _firms(self, firm_id: str | None) -> list[tuple[str, FirmProfile]]:
        async with self.service.sessionmaker() as s:
            q = select(Firm.firm_id, Firm.profile)
            if firm_id is not None:
                q = q.where(Firm.firm_id == firm_id)
            return [(fid, firm_profile(p)) for fid, p in await s.execute(q)]

    async def firm_pass(self, firm_id: str, profile: FirmProfile, now: datetime) -> PassResult:
        plan = await self.plan(firm_id, profile, now)
        if plan is None:
            return PassResult()
        return await self.claim(plan)

    async def plan(self, firm_id: str, profile: FirmProfile, now: datetime) -> Plan | None:
        """The firm's due set as of `now`: each client with a slot due and not yet recorded,
        and what to do about it (reminder_rules.decide), oldest due first; None when none."""
        settings = profile.reminders
        today = rr.firm_today(now, profile.time_zone)
        async with self.service.sessionmaker() as s:
            firm = await self._read_firm(s, firm_id, profile, now, today)
            due: dict[str, _Client] = {}
            for c in firm.clients.values():
                c.items = rr.unpaid(c.bills, firm.paused_invoices)
                c.due = rr.due_slots(c.items, settings, today, frozenset(c.claimed), c.last_claimed)
                if c.due:
                    due[c.client_id] = c
            if not due:
                return None
            await self._read_addresses(s, firm_id, due)
        decisions = [
            (c, rr.decide(c.state(firm), settings, today, items=c.items, due=c.due))
            for c in due.values()
        ]
        # Oldest due first: their sends are staged (and so composed and mailed) first.
        decisions.sort(key=lambda cd: (cd[1].slot.on if cd[1].slot else date.max, cd[0].client_id))
        return Plan(firm_id, profile, now, today, decisions, firm.paused_invoices)

    # --- reads ---------------------------------------------------------------------------

    async def _read_firm(
        self,
        s: AsyncSession,
        firm_id: str,
        profile: FirmProfile,
        now: datetime,
        today: date,
        client_id: str | None = None,
    ) -> _FirmView:
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
        clients: dict[str, _Client] = {}
        make_bill = rr.Bill._make
        for row in (await s.execute(q)).tuples():
            c = clients.get(row[2])
            if c is None:
                c = clients[row[2]] = _Client(row[2], row[11])
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
            for a in await s.scalars(
                select(Suppression.address).where(Suppression.firm_id == firm_id)
            )
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
                        rr.ManualSend(
                            rr.firm_today(at, profile.time_zone), frozenset(json.loads(ids))
                        )
                    )
        return _FirmView(firm_id, profile, clients, paused_clients, paused_invoices, suppressed)

    async def _read_addresses(
        self, s: AsyncSession, firm_id: str, clients: dict[str, _Client]
    ) -> None:
        """Each client's addresses: those of its latest manual send that did not fail, else
        the client email of its oldest unpaid bill."""
        ids = list(clients)
        for chunk in _chunks(ids):
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
        for chunk in _chunks(list(wanted)):
            for invoice_id, snapshot in await s.execute(
                select(_invoices.c.invoice_id, _invoices.c.snapshot).where(
                    _invoices.c.firm_id == firm_id, _invoices.c.invoice_id.in_(chunk)
                )
            ):
                email = json.loads(snapshot).get("client_email")
                if email:
                    wanted[invoice_id].to = [email]

    # --- the claim -----------------------------------------------------------------------

    async def claim(self, plan: Plan) -> PassResult:
        """Record each decision's slots, and for each slot claimed now that sends: its
        envelope and its send request, all in one transaction."""
        firm_id, profile, now, today = plan.firm_id, plan.profile, plan.now, plan.today
        decisions, paused = plan.decisions, plan.paused_invoices
        subject = profile.reminders.subject or rr.DEFAULT_SUBJECT
        body = profile.reminders.body or rr.DEFAULT_BODY
        rows: list[dict[str, Any]] = []
        sends: dict[tuple[str, str], tuple[dict[str, Any], EnvelopeSendRequested]] = {}
        for c, d in decisions:
            if d.slot is None:
                continue
            for slot, note in d.skipped:
                rows.append(_row(firm_id, c, slot, now, note=note))
            currency, amount_minor = rr.amount(d.items)
            if not d.sends:
                rows.append(
                    _row(
                        firm_id,
                        c,
                        d.slot,
                        now,
                        note=d.note,
                        items=d.items,
                        to=d.to,
                        currency=currency,
                        amount_minor=amount_minor,
                    )
                )
                continue
            envelope_id, send_id = str(uuid.uuid4()), uuid.uuid4().hex
            invoice_ids = [b.invoice_id for b in d.items]
            rows.append(
                _row(
                    firm_id,
                    c,
                    d.slot,
                    now,
                    items=d.items,
                    to=d.to,
                    currency=currency,
                    amount_minor=_whole_balance(c, currency, paused),
                    sent_on=today,
                    envelope_id=envelope_id,
                    send_id=send_id,
                )
            )
            envelope = {
                "id": envelope_id,
                "firm_id": firm_id,
                "client_id": c.client_id,
                "client_name": c.client_name,
                "invoice_ids": json.dumps(invoice_ids),
                "to": json.dumps(d.to),
                "cc": "[]",
                "subject": subject,
                "body": body,
                "delivery": Delivery.link.value,
                "status": SendStatus.draft.value,
                "created_by": rr.REMINDER_SENDER,
                "created_at": now,
            }
            # (Not model_construct: it inspects each default factory's signature per call,
            # far slower than validating.)
            ev = EnvelopeSendRequested(
                firm_id=firm_id,
                envelope_id=envelope_id,
                send_id=send_id,
                invoice_ids=invoice_ids,
                client_id=c.client_id,
                to=d.to,
                subject=subject,
                body=body,
                delivery=Delivery.link,
                pay_all_outstanding=True,
                requested_by=rr.REMINDER_SENDER,
                occurred_at=now,
            )
            sends[(c.client_id, d.slot.key)] = (envelope, ev)
        result = PassResult()
        if not rows:
            return result
        async with self.service.sessionmaker() as s, s.begin():
            claimed: set[tuple[str, str]] = set()
            # One cached statement, executed for all the rows (SQLAlchemy batches them into
            # multi-row INSERTs with RETURNING): only the rows inserted now come back.
            for cid, slot, status in await s.execute(_CLAIM, rows):
                claimed.add((cid, slot))
                if status == "skipped":
                    result.skipped += 1
            result.lost = len(rows) - len(claimed)
            mine = [sends[k] for k in sends if k in claimed]
            if mine:
                await s.execute(insert(_envelopes), [e for e, _ in mine])
                await add_events(s, self.service.outbox, [(ev, None) for _, ev in mine])
            result.queued = len(mine)
            result.send_ids = [ev.send_id for _, ev in mine]
        if result.queued or result.skipped or result.lost:
            log.info(
                "reminders: firm %s: %d queued, %d skipped, %d claimed by another pass",
                firm_id,
                result.queued,
                result.skipped,
                result.lost,
            )
        return result

    # --- a person's actions --------------------------------------------------------------

    async def send_now(
        self, firm_id: str, client_id: str, now: datetime | None = None
    ) -> ReminderSent:
        """The client's reminder now: the rules of a scheduled one but the cadence and the
        business hours (a person asked); at most one a day (its slot is the day's)."""
        now = now or self.clock.now()
        async with self.service.sessionmaker() as s:
            profile = firm_profile(
                await s.scalar(select(Firm.profile).where(Firm.firm_id == firm_id))
            )
            today = rr.firm_today(now, profile.time_zone)
            firm = await self._read_firm(s, firm_id, profile, now, today, client_id=client_id)
            client = firm.clients.get(client_id) or _Client(client_id, "")
            await self._read_addresses(s, firm_id, {client_id: client})
        d = rr.send_now(client.state(firm), profile.reminders, today)
        if not d.sends:
            return ReminderSent(queued=False, reason=d.note)
        result = await self.claim(
            Plan(firm_id, profile, now, today, [(client, d)], firm.paused_invoices)
        )
        if not result.queued:
            return ReminderSent(queued=False, reason=rr.Note.reminded_today)
        async with self.service.sessionmaker() as s:
            envelope_id = await s.scalar(
                select(Reminder.envelope_id).where(Reminder.send_id == result.send_ids[0])
            )
        return ReminderSent(queued=True, envelope_id=envelope_id)

    # --- what the Reminders page shows ----------------------------------------------------

    async def overview(self, firm_id: str, days: int, now: datetime | None = None) -> RemindersOut:
        now = now or self.clock.now()
        async with self.service.sessionmaker() as s:
            profile = firm_profile(
                await s.scalar(select(Firm.profile).where(Firm.firm_id == firm_id))
            )
            settings = profile.reminders
            today = rr.firm_today(now, profile.time_zone)
            firm = await self._read_firm(s, firm_id, profile, now, today)
            listed: list[tuple[_Client, rr.Slot, str | None]] = []
            for c in firm.clients.values():
                # (Listed with reminders off too, as what would go: a preview before
                # turning them on.)
                found = rr.upcoming(c.state(firm), settings, today, days)
                if found is not None:
                    listed.append((c, *found))
            await self._read_addresses(s, firm_id, {c.client_id: c for c, _, _ in listed})
            history = await self._history(s, firm_id)
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
                    amount_minor=_whole_balance(c, currency, firm.paused_invoices),
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

    async def _history(self, s: AsyncSession, firm_id: str) -> list[SentReminder]:
        r = _reminders.c
        rows = await s.execute(
            select(
                _reminders, _sends.c.status.label("send_status"), _sends.c.sent_at, _sends.c.error
            )
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


def _whole_balance(
    c: _Client, currency: str, paused: frozenset[str] | set[str] = frozenset()
) -> int:
    """What Pay All asks of the client in `currency`: every bill a reminder may ask for."""
    bills = c.items or rr.unpaid(c.bills, paused)
    return sum(rr.owed(b) for b in bills if b.currency == currency)


def _row(
    firm_id: str,
    c: _Client,
    slot: rr.Slot,
    now: datetime,
    *,
    note: str | None = None,
    items: Sequence[rr.Bill] = (),
    to: Sequence[str] = (),
    currency: str | None = None,
    amount_minor: int = 0,
    sent_on: date | None = None,
    envelope_id: str | None = None,
    send_id: str | None = None,
) -> dict[str, Any]:
    return {
        "firm_id": firm_id,
        "client_id": c.client_id,
        "slot": slot.key,
        "kind": slot.kind.value,
        "reason": slot.reason[:200],
        "due_on": slot.on,
        "sent_on": sent_on,
        "status": "queued" if sent_on is not None else "skipped",
        "note": note,
        "client_name": c.client_name,
        "envelope_id": envelope_id,
        "send_id": send_id,
        "invoice_ids": json.dumps([b.invoice_id for b in items]),
        "currency": currency or (c.bills[0].currency if c.bills else "USD"),
        "amount_minor": amount_minor,
        "to": json.dumps(list(to)),
        "created_at": now,
    }
