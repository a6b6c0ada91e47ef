"""Reading an envelope's timeline (the lines `services.envelope.timeline` wrote, with the
envelope's sends as "queued") and each bill's latest email state, for the Invoices page and
the timeline page."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope.models import Email, EmailEvent, Envelope, EnvelopeSend, Invoice
from services.envelope.timeline import Line, latest_state


async def read(s: AsyncSession, firm_id: str, envelope_id: str) -> dict[str, Any] | None:
    """The envelope's timeline (None when the firm has no such envelope): its sends as
    "queued" (and a send refused before any email, as "failed"), then every stored line,
    oldest first; with the state of its latest email."""
    env = await s.get(Envelope, envelope_id)
    if env is None or env.firm_id != firm_id:
        return None
    sends = list(
        await s.scalars(
            select(EnvelopeSend)
            .where(EnvelopeSend.firm_id == firm_id, EnvelopeSend.envelope_id == envelope_id)
            .order_by(EnvelopeSend.requested_at)
        )
    )
    stored = list(
        await s.scalars(
            select(EmailEvent)
            .where(EmailEvent.firm_id == firm_id, EmailEvent.envelope_id == envelope_id)
            .order_by(EmailEvent.at, EmailEvent.id)
        )
    )
    with_lines = {e.email_id for e in stored}
    # Each email's subject as the client got it (a send holds its template source).
    subjects = {
        email_id: subject
        for email_id, subject in await s.execute(
            select(Email.email_id, Email.subject).where(
                Email.firm_id == firm_id, Email.email_id.in_([x.send_id for x in sends])
            )
        )
    }
    lines: list[dict[str, Any]] = []
    for send in sends:
        lines.append(
            {
                "at": send.requested_at,
                "kind": Line.queued.value,
                "recipient": ", ".join(json.loads(send.to)),
                "email_id": send.send_id,
                "detail": subjects.get(send.send_id),
                "machine": False,
            }
        )
        if send.status == "failed" and send.send_id not in with_lines:
            lines.append(
                {
                    "at": send.sent_at or send.requested_at,
                    "kind": Line.failed.value,
                    "recipient": None,
                    "email_id": send.send_id,
                    "detail": send.error,
                    "machine": False,
                }
            )
    order = {Line.queued.value: 0}
    lines += [
        {
            "at": e.at,
            "kind": e.kind,
            "recipient": e.recipient,
            "email_id": e.email_id,
            "detail": e.detail,
            "machine": bool(e.machine),
        }
        for e in stored
    ]
    lines.sort(key=lambda x: (x["at"], order.get(x["kind"], 1)))
    latest = next((x.send_id for x in reversed(sends) if x.sent_at is not None), None)
    if latest is None and sends:
        latest = sends[-1].send_id
    state, state_at = latest_state(
        (e.kind, e.at, bool(e.machine)) for e in stored if e.email_id == latest
    )
    if state is None and sends and sends[-1].send_id == latest:
        state, state_at = sends[-1].status, sends[-1].sent_at or sends[-1].requested_at
    ids = json.loads(env.invoice_ids)
    numbers = {
        i: n
        for i, n in await s.execute(
            select(Invoice.invoice_id, Invoice.number).where(
                Invoice.firm_id == firm_id, Invoice.invoice_id.in_(ids)
            )
        )
    }
    return {
        "envelope_id": env.id,
        "client_name": env.client_name,
        "subject": subjects.get(sends[-1].send_id, sends[-1].subject) if sends else env.subject,
        "to": json.loads(sends[-1].to) if sends else json.loads(env.to),
        "invoice_ids": ids,
        "numbers": numbers,
        "status": env.status,
        "state": state,
        "state_at": state_at,
        "lines": lines,
    }


async def email_states(
    s: AsyncSession, firm_id: str, invoice_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """Each bill's latest email for the Invoices page: its envelope, state and time."""
    if not invoice_ids:
        return {}
    found = await s.execute(
        select(
            Invoice.invoice_id,
            Invoice.email_event,
            Invoice.email_event_at,
            EnvelopeSend.envelope_id,
        )
        .outerjoin(
            EnvelopeSend,
            (EnvelopeSend.send_id == Invoice.email_id) & (EnvelopeSend.firm_id == Invoice.firm_id),
        )
        .where(Invoice.firm_id == firm_id, Invoice.invoice_id.in_(invoice_ids))
    )
    return {
        invoice_id: {"envelope_id": envelope_id, "event": event, "at": at}
        for invoice_id, event, at, envelope_id in found
    }
