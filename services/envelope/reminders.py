"""Automated bill reminders: the scheduler (a background loop, one pass a minute), Send now,
and, through reminder_overview.py, the Reminders page (the switches are
reminder_switches.py's; what a pass reads, reminder_reads.py's). The decisions are
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert, select

from services.envelope import reminder_overview
from services.envelope import reminder_rules as rr
from services.envelope.models import (
    Envelope,
    Firm,
    Reminder,
)
from services.envelope.reminder_reads import (
    ClientView,
    read_addresses,
    read_firm,
    whole_balance,
)
from services.envelope.reminder_switches import ReminderSwitches
from services.envelope.settings import EnvelopeSettings
from shared.api.reminders import (
    ReminderSent,
    RemindersOut,
)
from shared.clock import Clock, SystemClock
from shared.db import insert_unless_present
from shared.events import (
    Delivery,
    EnvelopeSendRequested,
    FirmProfile,
    SendStatus,
)
from shared.outbox import add_events
from shared.runtime import Service
from shared.schema import firm_profile

log = logging.getLogger(__name__)

_reminders = Reminder.__table__
_envelopes = Envelope.__table__
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
class Plan:
    """A firm's due set as one pass decided it, to be claimed."""

    firm_id: str
    profile: FirmProfile
    now: datetime
    today: date
    decisions: list[tuple[ClientView, rr.Decision]]
    paused_invoices: frozenset[str]


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
            firm = await read_firm(s, firm_id, profile, now, today)
            due: dict[str, ClientView] = {}
            for c in firm.clients.values():
                c.items = rr.unpaid(c.bills, firm.paused_invoices)
                c.due = rr.due_slots(c.items, settings, today, frozenset(c.claimed), c.last_claimed)
                if c.due:
                    due[c.client_id] = c
            if not due:
                return None
            await read_addresses(s, firm_id, due)
        decisions = [
            (c, rr.decide(c.state(firm), settings, today, items=c.items, due=c.due))
            for c in due.values()
        ]
        # Oldest due first: their sends are staged (and so composed and mailed) first.
        decisions.sort(key=lambda cd: (cd[1].slot.on if cd[1].slot else date.max, cd[0].client_id))
        return Plan(firm_id, profile, now, today, decisions, firm.paused_invoices)

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
                    amount_minor=whole_balance(c, currency, paused),
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
            firm = await read_firm(s, firm_id, profile, now, today, client_id=client_id)
            client = firm.clients.get(client_id) or ClientView(client_id, "")
            await read_addresses(s, firm_id, {client_id: client})
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
        return await reminder_overview.overview(
            self.service.sessionmaker, firm_id, days, now or self.clock.now()
        )


def _row(
    firm_id: str,
    c: ClientView,
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
