"""Turning a firm user's Send into an envelope.send_requested event, exactly once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services.gateway.models import Firm, SendRequest
from shared.events import EnvelopeSendRequested
from shared.runtime import Service


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


async def request_send(
    service: Service,
    *,
    firm_id: str,
    user_id: str,
    envelope: dict[str, Any],
    send_id: str,
    seq: int,
    to: list[str],
    subject: str,
    body: str,
    batch_id: str | None = None,
    run_id: str | None = None,
    pay_all_outstanding: bool = False,
) -> bool:
    """Record the send and stage its event; False when this send (or another send with the
    same sequence number: a second tab) was already asked for."""
    try:
        async with service.sessionmaker() as s, s.begin():
            firm = await s.get(Firm, firm_id)
            s.add(
                SendRequest(
                    send_id=send_id,
                    firm_id=firm_id,
                    envelope_id=envelope["id"],
                    seq=seq,
                    run_id=run_id,
                    batch_id=batch_id,
                    user_id=user_id,
                    created_at=datetime.now(UTC),
                )
            )
            await s.flush()
            await service.publish(
                s,
                EnvelopeSendRequested(
                    firm_id=firm_id,
                    envelope_id=envelope["id"],
                    send_id=send_id,
                    invoice_ids=envelope["invoice_ids"],
                    client_id=envelope["client_id"],
                    to=to,
                    subject=subject,
                    body=body,
                    delivery=(firm.default_delivery if firm else "link"),  # type: ignore[arg-type]
                    pay_all_outstanding=pay_all_outstanding,
                    requested_by=user_id,
                ),
            )
    except IntegrityError:
        return False
    return True
