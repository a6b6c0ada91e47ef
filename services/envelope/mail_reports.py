"""What the mailer reports back: email.sent stamps each send, its envelope and its bills as
sent; email.failed marks the send and its bills failed. Both add their lines to the
envelope's timeline (timeline.py: "sent" per recipient accepted, "refused" with the reply
per recipient refused, "failed") and make the email each bill's latest, whose state the
bill shows."""

from __future__ import annotations

import json

from sqlalchemy import bindparam, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import reads, timeline
from services.envelope.models import Envelope, EnvelopeSend, Invoice
from shared.db import UTCDateTime
from shared.events import EmailFailed, EmailSent, SendStatus

_sends, _envelopes, _invoices = EnvelopeSend.__table__, Envelope.__table__, Invoice.__table__
_at = bindparam("b_at", type_=UTCDateTime())

# Applied per row (executemany), built once.
_UPDATE_SEND_SENT = (
    update(_sends)
    .where(_sends.c.send_id == bindparam("b_send"), _sends.c.firm_id == bindparam("b_firm"))
    .values(
        status=SendStatus.sent.value, sent_at=bindparam("b_at"), message_id=bindparam("b_message")
    )
)
_last = _envelopes.c.last_sent_at
_UPDATE_ENVELOPE_SENT = (
    update(_envelopes)
    .where(_envelopes.c.id == bindparam("b_id"))
    .values(
        status=SendStatus.sent.value,
        last_sent_at=case((or_(_last.is_(None), _last < _at), _at), else_=_last),
    )
)
_UPDATE_INVOICE_SENT = (
    update(_invoices)
    .where(
        _invoices.c.firm_id == bindparam("b_firm"),
        _invoices.c.invoice_id == bindparam("b_invoice"),
        or_(_invoices.c.last_sent_at.is_(None), _invoices.c.last_sent_at <= _at),
    )
    .values(last_sent_at=_at, email_status=SendStatus.sent.value, email_id=bindparam("b_email"))
)


async def on_email_sent(s: AsyncSession, ev: EmailSent) -> None:
    await on_emails_sent(s, [ev])


async def on_emails_sent(s: AsyncSession, evs: list[EmailSent]) -> None:
    """Stamp each send, its envelope and its bills as sent, a statement per kind of row
    for all the events together: once per email sent. Last Sent becomes the later of the
    stored and the confirmed time, in SQL, so a late confirmation never moves it back."""
    await s.execute(
        _UPDATE_SEND_SENT,
        [
            {
                "b_send": ev.email_id,
                "b_firm": ev.firm_id,
                "b_at": ev.sent_at,
                "b_message": ev.message_id,
            }
            for ev in evs
        ],
    )
    firm_of = {ev.email_id: ev.firm_id for ev in evs}
    envelope_of = {
        send_id: envelope_id
        for send_id, firm_id, envelope_id in await s.execute(
            select(_sends.c.send_id, _sends.c.firm_id, _sends.c.envelope_id).where(
                _sends.c.send_id.in_(list(firm_of))
            )
        )
        if firm_of[send_id] == firm_id
    }
    mine = [ev for ev in evs if ev.email_id in envelope_of]
    if not mine:
        return
    await s.execute(
        _UPDATE_ENVELOPE_SENT,
        [{"b_id": envelope_of[ev.email_id], "b_at": ev.sent_at} for ev in mine],
    )
    bills_of = {
        env_id: json.loads(ids)
        for env_id, ids in await s.execute(
            select(_envelopes.c.id, _envelopes.c.invoice_ids).where(
                _envelopes.c.id.in_({envelope_of[ev.email_id] for ev in mine})
            )
        )
    }
    rows = [
        {"b_firm": ev.firm_id, "b_invoice": invoice_id, "b_at": ev.sent_at, "b_email": ev.email_id}
        for ev in mine
        for invoice_id in bills_of.get(envelope_of[ev.email_id], [])
    ]
    if rows:
        await s.execute(_UPDATE_INVOICE_SENT, rows)
    # The timeline: a line per recipient; then each bill whose latest email this now is
    # takes its state (lines of it that arrived before this email.sent included).
    await timeline.add_lines(
        s, [line for ev in mine for line in timeline.sent_rows(ev, envelope_of[ev.email_id])]
    )
    await timeline.refresh_states(s, {(ev.firm_id, ev.email_id) for ev in mine})


async def on_email_failed(s: AsyncSession, ev: EmailFailed) -> None:
    send = await s.get(EnvelopeSend, ev.email_id)
    if send is None or send.firm_id != ev.firm_id:
        return
    send.status, send.error = SendStatus.failed, ev.reason
    env = await s.get(Envelope, send.envelope_id)
    if env is not None:
        for inv in await reads.invoices(s, ev.firm_id, json.loads(env.invoice_ids)):
            inv.email_status = SendStatus.failed
            inv.email_id = ev.email_id
    await timeline.add_lines(s, timeline.failed_rows(ev, send.envelope_id))
    await s.flush()
    await timeline.refresh_states(s, {(ev.firm_id, ev.email_id)})
