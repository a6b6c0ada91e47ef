"""Turning a firm user's Send into an envelope.send_requested event, exactly once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.models import Firm, SendRequest
from shared.api.envelope import EnvelopeOut, EnvelopeSummary
from shared.events import Delivery, EnvelopeSendRequested
from shared.runtime import Service


@dataclass(frozen=True)
class Send:
    """One send a firm user asked for: the envelope as drafted and what the form said."""

    firm_id: str
    user_id: str
    envelope: EnvelopeOut | EnvelopeSummary
    send_id: str
    seq: int
    to: list[str]
    subject: str
    body: str
    batch_id: str | None = None
    run_id: str | None = None
    pay_all_outstanding: bool = False
    delivery: str | None = None


async def next_seq(service: Service, envelope_id: str) -> int:
    async with service.sessionmaker() as s:
        count = await s.scalar(
            select(func.count())
            .select_from(SendRequest)
            .where(SendRequest.envelope_id == envelope_id)
        )
    return int(count or 0) + 1


async def sent_envelopes(service: Service, envelope_ids: list[str]) -> set[str]:
    """The envelopes of a batch someone already asked to send."""
    async with service.sessionmaker() as s:
        rows = await s.scalars(
            select(SendRequest.envelope_id).where(SendRequest.envelope_id.in_(envelope_ids))
        )
        return set(rows)


def run_send_id(run_id: str, envelope_id: str) -> str:
    # Derived, so that posting the same Send All form again asks for the same sends.
    return str(uuid.uuid5(uuid.UUID(run_id), envelope_id))


async def request_sends(service: Service, sends: list[Send]) -> int:
    """Record many sends (Send All) in one transaction: the same rows and events as
    `request_send` each, without a commit per envelope. Sends already asked for (the form
    posted twice, a second tab) are left out; should another request race this one, it
    falls back to one transaction per send. Returns how many were newly asked for."""
    if not sends:
        return 0
    ids = [x.send_id for x in sends]
    envelope_ids = [x.envelope.id for x in sends]
    async with service.sessionmaker() as s:
        taken_ids = set(
            await s.scalars(select(SendRequest.send_id).where(SendRequest.send_id.in_(ids)))
        )
        taken_seqs = {
            (e, q)
            for e, q in await s.execute(
                select(SendRequest.envelope_id, SendRequest.seq).where(
                    SendRequest.envelope_id.in_(envelope_ids)
                )
            )
        }
    fresh = [
        x for x in sends if x.send_id not in taken_ids and (x.envelope.id, x.seq) not in taken_seqs
    ]
    try:
        async with service.sessionmaker() as s, s.begin():
            firms: dict[str, Firm | None] = {}
            for x in fresh:
                if x.firm_id not in firms:
                    firms[x.firm_id] = await s.get(Firm, x.firm_id)
                await _stage(s, service, firms[x.firm_id], x)
    except IntegrityError:
        return sum([await request_send(service, x) for x in fresh])
    return len(fresh)


async def _stage(s: AsyncSession, service: Service, firm: Firm | None, x: Send) -> None:
    s.add(
        SendRequest(
            send_id=x.send_id,
            firm_id=x.firm_id,
            envelope_id=x.envelope.id,
            seq=x.seq,
            run_id=x.run_id,
            batch_id=x.batch_id,
            user_id=x.user_id,
            created_at=datetime.now(UTC),
        )
    )
    await s.flush()
    await service.publish(
        s,
        EnvelopeSendRequested(
            firm_id=x.firm_id,
            envelope_id=x.envelope.id,
            send_id=x.send_id,
            invoice_ids=x.envelope.invoice_ids,
            client_id=x.envelope.client_id,
            to=x.to,
            subject=x.subject,
            body=x.body,
            # The send's own choice (Additional settings), else the firm's default.
            delivery=x.delivery or (firm.default_delivery if firm else Delivery.link),  # type: ignore[arg-type]
            pay_all_outstanding=x.pay_all_outstanding,
            requested_by=x.user_id,
        ),
    )


async def request_send(service: Service, send: Send) -> bool:
    """Record the send and stage its event; False when this send (or another send with the
    same sequence number: a second tab) was already asked for."""
    try:
        async with service.sessionmaker() as s, s.begin():
            await _stage(s, service, await s.get(Firm, send.firm_id), send)
    except IntegrityError:
        return False
    return True
