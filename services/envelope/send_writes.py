"""The writes of a batch of sends, a statement per kind of row for all of them (no ORM flush:
a Send All makes hundreds): each send's record, its envelope as sent, and for each email to
go out its stored content, its bills marked queued, its client link and its events."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, insert, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope.links import Links
from services.envelope.models import Email, Envelope, EnvelopeSend, Invoice, Link
from services.envelope.paylinks import new_link
from services.envelope.rules import ENVELOPE_TAKES_SEND_STATUS_FROM, send_status
from services.envelope.send_inputs import SendOutcome
from services.envelope.settings import EnvelopeSettings
from shared.db import insert_unless_present
from shared.events import EmailRequested, Event, SendStatus
from shared.runtime import Service

_envelopes = Envelope.__table__
_sends = EnvelopeSend.__table__

# An envelope's fields as the send set them, applied per row (executemany).
_UPDATE_ENVELOPE_FOR_SEND = (
    update(_envelopes)
    .where(_envelopes.c.id == bindparam("b_id"))
    .values(
        to=bindparam("b_to"),
        cc=bindparam("b_cc"),
        subject=bindparam("b_subject"),
        body=bindparam("b_body"),
        delivery=bindparam("b_delivery"),
    )
)


def _envelope_takes(status: SendStatus) -> Any:
    """rules.envelope_status in SQL: the envelope's status once a send with `status` is
    recorded. (No IN: a list parameter cannot be executed for many rows at once.)"""
    current = _envelopes.c.status
    froms = sorted(ENVELOPE_TAKES_SEND_STATUS_FROM[status])
    return case((or_(*(current == f.value for f in froms)), status.value), else_=current)


def _dump(value: Any) -> str:
    return json.dumps(value)


_invoices = Invoice.__table__
# Built once (statements are cached by their construction), applied per bill.
_MARK_QUEUED = (
    update(_invoices)
    .where(
        _invoices.c.firm_id == bindparam("b_firm"),
        _invoices.c.invoice_id == bindparam("b_invoice"),
    )
    .values(
        email_status=SendStatus.queued.value,
        email_id=bindparam("b_email"),
        email_event=None,
        email_event_at=None,
    )
)


async def record_sends(s: AsyncSession, outcomes: list[SendOutcome]) -> set[str]:
    """Record each send, queued or failed; returns the ids of those recorded now (a send
    recorded before, a redelivery or a double click, is left as it was)."""
    rows = [
        {
            "send_id": o.ev.send_id,
            "firm_id": o.ev.firm_id,
            "envelope_id": o.inputs.envelope.id,
            "requested_by": o.ev.requested_by,
            "requested_at": o.ev.occurred_at,
            "to": _dump(o.ev.to),
            "subject": o.ev.subject,
            "status": send_status(o.refusal),
            "error": o.error,
        }
        for o in outcomes
    ]
    stmt = insert_unless_present(_sends).values(rows).returning(_sends.c.send_id)
    return set((await s.execute(stmt)).scalars())


async def update_envelopes(s: AsyncSession, outcomes: list[SendOutcome]) -> None:
    """Each envelope as its send set it: recipients, text, delivery and status."""
    for status in (SendStatus.queued, SendStatus.failed):
        rows = [
            {
                "b_id": o.inputs.envelope.id,
                "b_to": _dump(o.ev.to),
                "b_cc": _dump(o.ev.cc),
                "b_subject": o.ev.subject,
                "b_body": o.ev.body,
                "b_delivery": o.ev.delivery,
            }
            for o in outcomes
            if send_status(o.refusal) == status
        ]
        if rows:
            await s.execute(_UPDATE_ENVELOPE_FOR_SEND.values(status=_envelope_takes(status)), rows)


async def queue_emails(
    s: AsyncSession,
    service: Service,
    settings: EnvelopeSettings,
    links: Links,
    sent: list[SendOutcome],
    now: datetime,
) -> None:
    """For each composed send: its email stored, its bills marked queued, its client link
    registered, and its paylink.issued and email.requested staged."""
    await s.execute(
        insert(Email.__table__),
        [
            {
                "email_id": o.ev.send_id,
                "firm_id": o.ev.firm_id,
                "envelope_id": o.inputs.envelope.id,
                "to": _dump(o.ev.to),
                "cc": _dump(o.ev.cc),
                "from_name": o.inputs.firm.name,
                "reply_to": o.inputs.firm.email,
                "subject": o.composed.subject,
                "html": o.composed.html,
                "text": o.composed.text,
                "attachments": _dump(o.inputs.attachments),
                "created_at": now,
            }
            for o in sent
            if o.composed is not None
        ],
    )
    # Each bill's latest email is now this one: queued, with nothing heard of it yet (the
    # Email column shows Queued and leads to this envelope's timeline).
    queued = [
        {"b_firm": o.ev.firm_id, "b_invoice": i.invoice_id, "b_email": o.ev.send_id}
        for o in sent
        for i in o.inputs.invoices
    ]
    if queued:
        await s.execute(_MARK_QUEUED, queued)
    rows: list[dict[str, Any]] = []
    events: list[tuple[Event, Event]] = []  # (event, the send request that caused it)
    for o in sent:
        assert o.composed is not None
        ev = o.ev
        row, issued = new_link(
            token=links.send_token(ev.send_id),
            link_id=ev.send_id,
            invoices=o.inputs.invoices,
            client_name=o.inputs.envelope.client_name,
            client_email=ev.to[0],
            expires=now + timedelta(days=settings.link_ttl_days),
            envelope_id=o.inputs.envelope.id,
            send_id=ev.send_id,
            pay_all_outstanding=ev.pay_all_outstanding,
        )
        rows.append(row)
        events.append((issued, ev))
        email = EmailRequested(
            firm_id=ev.firm_id,
            email_id=ev.send_id,
            envelope_id=o.inputs.envelope.id,
            to=ev.to + ev.cc,
            subject=o.composed.subject,
            content_url=f"{settings.internal_base_url}/internal/emails/{ev.send_id}",
        )
        events.append((email, ev))
    await s.execute(insert(Link.__table__), rows)
    await service.publish_many(s, events)
