"""An envelope's timeline, and each bill's latest email state.

What the mailer and payments report (email.sent, email.failed, email.delivered,
email.bounced, email.opened, email.clicked, email.viewed, payment.succeeded) becomes lines
of `EmailEvent`, one per recipient and event: each line's `event_id` is derived from the bus
event's (`line_id`), so the same event applied twice adds nothing (INSERT .. ON CONFLICT DO
NOTHING), whatever the inbox did. "queued" lines are not stored: they are the envelope's
sends (`EnvelopeSend`), merged in when the timeline is read.

A bill's `email_event` / `email_event_at` is the latest meaningful state of its latest email
(`Invoice.email_id`), folded from that email's lines by `latest_state`, the one order:

    sent < delayed < delivered < opened < clicked < viewed < bounced < failed

- each step up says more of what a person did: a click is a stronger sign than an open, and
  "viewed" (the page was served after the click) is stronger than the click;
- a bounce and a failure rank above everything: they need the firm to act, so a later open
  by another recipient (or the same one's, from a cached copy) never hides them;
- opens and clicks by a privacy proxy or a scanner (`machine`) never raise the state;
- a soft bounce is "delayed": mail may still arrive, and a delivery report outranks it;
- among lines of the same rank the latest time is kept ("Opened · Dec 7, 14:02" is the
  last open). Each email's state is a fold over its lines, so the order events arrive in
  does not matter; a newer email of the bill (email.sent with a later sent_at) replaces it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope.models import EmailEvent, EnvelopeSend, Invoice
from shared.db import insert_unless_present
from shared.events import (
    BounceKind,
    EmailBounced,
    EmailClicked,
    EmailDelivered,
    EmailFailed,
    EmailOpened,
    EmailSent,
    EmailTracked,
    EmailViewed,
    PaymentEvent,
    PaymentSucceeded,
)
from shared.money import format_money

log = logging.getLogger(__name__)


class Line(StrEnum):
    queued = "queued"
    sent = "sent"
    refused = "refused"
    failed = "failed"
    delayed = "delayed"
    delivered = "delivered"
    opened = "opened"
    clicked = "clicked"
    viewed = "viewed"
    bounced = "bounced"
    paid = "paid"


# The order of a bill's email states (module docstring).
STATE_RANK: dict[str, int] = {
    Line.sent: 1,
    Line.delayed: 2,
    Line.delivered: 3,
    Line.opened: 4,
    Line.clicked: 5,
    Line.viewed: 6,
    Line.bounced: 7,
    Line.failed: 8,
}


def latest_state(
    lines: Iterable[tuple[str, datetime, bool]],
) -> tuple[str | None, datetime | None]:
    """The latest meaningful state of one email and its time, from its lines as (kind, at,
    machine): the highest in STATE_RANK, machines' lines left out, the latest of that rank."""
    best: tuple[int, datetime] | None = None
    state: str | None = None
    for kind, at, machine in lines:
        rank = STATE_RANK.get(kind)
        if rank is None or machine:
            continue
        if best is None or (rank, at) > best:
            best, state = (rank, at), kind
    return state, (best[1] if best else None)


def line_id(event_id: uuid.UUID | str, *parts: str) -> str:
    """The id of one line a bus event makes (one per recipient, per envelope...)."""
    if not parts:
        return str(event_id)
    return str(uuid.uuid5(uuid.UUID(str(event_id)), "\x1f".join(parts)))


def page_of(path: str) -> str:
    """What a client page is, without its link token: pay_page, statement,
    invoice:<id> or pay_online:<id>; "page" for anything else."""
    parts = urlsplit(path)
    segments = parts.path.strip("/").split("/")
    if segments[0] == "pay":
        invoice = parse_qs(parts.query).get("invoice")
        return f"pay_online:{invoice[0]}" if invoice else "pay_page"
    if segments[0] == "v" and len(segments) >= 3:
        return "statement" if segments[2] == "statement" else f"invoice:{segments[2]}"
    return "page"


# --- writing lines --------------------------------------------------------------------------

_lines = EmailEvent.__table__
_invoices = Invoice.__table__
_INSERT_LINE = insert_unless_present(_lines)
_SET_STATE = (
    update(_invoices)
    .where(
        _invoices.c.firm_id == bindparam("b_firm"),
        _invoices.c.email_id == bindparam("b_email"),
    )
    .values(email_event=bindparam("b_event"), email_event_at=bindparam("b_event_at"))
)


def row(
    event_id: str,
    firm_id: str,
    envelope_id: str,
    kind: str,
    at: datetime,
    *,
    email_id: str | None = None,
    recipient: str | None = None,
    detail: str | None = None,
    machine: bool = False,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "firm_id": firm_id,
        "envelope_id": envelope_id,
        "email_id": email_id,
        "recipient": recipient,
        "kind": kind,
        "at": at,
        "detail": detail[:2000] if detail else None,
        "machine": machine,
    }


async def add_lines(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Each line once: one already there (the same event again) is left as it is."""
    if rows:
        await s.execute(_INSERT_LINE, rows)


async def refresh_states(s: AsyncSession, emails: set[tuple[str, str]]) -> None:
    """Each bill whose latest email is one of `emails` (firm, email id) takes that email's
    state as its lines now give it."""
    if not emails:
        return
    found: dict[tuple[str, str], list[tuple[str, datetime, bool]]] = {e: [] for e in emails}
    for firm_id, email_id, kind, at, machine in await s.execute(
        select(
            _lines.c.firm_id, _lines.c.email_id, _lines.c.kind, _lines.c.at, _lines.c.machine
        ).where(_lines.c.email_id.in_({e for _, e in emails}))
    ):
        if (firm_id, email_id) in found:
            found[(firm_id, email_id)].append((kind, at, bool(machine)))
    updates = []
    for (firm_id, email_id), lines in found.items():
        state, at = latest_state(lines)
        if state is not None:
            updates.append(
                {"b_firm": firm_id, "b_email": email_id, "b_event": state, "b_event_at": at}
            )
    if updates:
        await s.execute(_SET_STATE, updates)


async def envelope_of_email(s: AsyncSession, firm_id: str, email_id: str) -> str | None:
    send = await s.get(EnvelopeSend, email_id)
    return send.envelope_id if send is not None and send.firm_id == firm_id else None


# --- what the mailer reports ----------------------------------------------------------------


def sent_rows(ev: EmailSent, envelope_id: str) -> list[dict[str, Any]]:
    """email.sent: "sent" for each recipient the relay accepted, "refused" with its reply for
    each it refused."""
    rows = [
        row(
            line_id(ev.event_id, Line.sent, address),
            ev.firm_id,
            envelope_id,
            Line.sent,
            ev.sent_at,
            email_id=ev.email_id,
            recipient=address,
        )
        for address in ev.to
    ]
    rows += [
        row(
            line_id(ev.event_id, Line.refused, address),
            ev.firm_id,
            envelope_id,
            Line.refused,
            ev.sent_at,
            email_id=ev.email_id,
            recipient=address,
            detail=reply,
        )
        for address, reply in ev.refused.items()
    ]
    return rows


def failed_rows(ev: EmailFailed, envelope_id: str) -> list[dict[str, Any]]:
    """email.failed: a line per recipient refused, with its reply, or one for the email."""
    if ev.refused:
        return [
            row(
                line_id(ev.event_id, Line.failed, address),
                ev.firm_id,
                envelope_id,
                Line.failed,
                ev.occurred_at,
                email_id=ev.email_id,
                recipient=address,
                detail=reply or ev.reason,
            )
            for address, reply in ev.refused.items()
        ]
    return [
        row(
            line_id(ev.event_id),
            ev.firm_id,
            envelope_id,
            Line.failed,
            ev.occurred_at,
            email_id=ev.email_id,
            detail=ev.reason,
        )
    ]


def tracked_row(ev: EmailTracked, envelope_id: str) -> dict[str, Any] | None:
    """One line for a delivery report, a bounce, an open, a click or a view."""
    kind: str
    detail: str | None = None
    machine = False
    if isinstance(ev, EmailBounced):
        kind = Line.bounced if ev.kind == BounceKind.hard else Line.delayed
        detail = " ".join(x for x in (ev.status, ev.reason) if x)
    elif isinstance(ev, EmailDelivered):
        kind = Line.delivered
    elif isinstance(ev, EmailOpened):
        kind, machine = Line.opened, ev.machine
        detail = ev.user_agent[:300] if ev.user_agent else None
    elif isinstance(ev, EmailClicked):
        kind, machine = Line.clicked, ev.machine
        target = page_of(ev.path)
        detail = f"{ev.target.value}|{target}"
    elif isinstance(ev, EmailViewed):
        kind, detail = Line.viewed, page_of(ev.path)
    else:
        return None
    return row(
        line_id(ev.event_id),
        ev.firm_id,
        envelope_id,
        kind,
        ev.at,
        email_id=ev.email_id,
        recipient=ev.recipient,
        detail=detail,
        machine=machine,
    )


async def on_tracked(s: AsyncSession, ev: EmailTracked) -> str | None:
    """A line for the event on its envelope's timeline and the state of the bills whose
    latest email it is; returns the envelope id (None: an email of no envelope here)."""
    envelope_id = await envelope_of_email(s, ev.firm_id, ev.email_id)
    if envelope_id is None:
        log.info("envelope: %s for unknown email %s skipped", ev.routing_key, ev.email_id)
        return None
    line = tracked_row(ev, envelope_id)
    if line is None:
        return None
    await add_lines(s, [line])
    await refresh_states(s, {(ev.firm_id, ev.email_id)})
    return envelope_id


# --- payments -------------------------------------------------------------------------------


async def on_payment(s: AsyncSession, ev: PaymentEvent) -> None:
    """payment.succeeded: "paid" on the timeline of the envelope whose email each bill last
    went out in, one line per envelope with the bills it paid."""
    if not isinstance(ev, PaymentSucceeded) or not ev.allocations:
        return
    amounts = {a.invoice_id: a.amount_minor for a in ev.allocations}
    found = await s.execute(
        select(Invoice.invoice_id, Invoice.number, EnvelopeSend.envelope_id)
        .join(
            EnvelopeSend,
            (EnvelopeSend.send_id == Invoice.email_id) & (EnvelopeSend.firm_id == Invoice.firm_id),
        )
        .where(Invoice.firm_id == ev.firm_id, Invoice.invoice_id.in_(list(amounts)))
    )
    per_envelope: dict[str, list[tuple[str, int]]] = {}
    for invoice_id, number, envelope_id in found:
        per_envelope.setdefault(envelope_id, []).append((number, amounts[invoice_id]))
    method = "bank account (ACH)" if ev.method == "ach" else ev.method
    rows = []
    for envelope_id, bills in sorted(per_envelope.items()):
        paid = ", ".join(f"{n} {format_money(m, ev.currency)}" for n, m in sorted(bills))
        who = f" by {ev.payer_name}" if ev.payer_name else ""
        rows.append(
            row(
                line_id(ev.event_id, envelope_id),
                ev.firm_id,
                envelope_id,
                Line.paid,
                ev.occurred_at,
                detail=f"{paid}, paid{who} by {method}",
            )
        )
    await add_lines(s, rows)
