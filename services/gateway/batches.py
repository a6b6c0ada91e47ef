"""A batch: the envelopes one Review & Send Selected (or one Send client balance) drafted,
kept by the gateway for the review window, Send All and their progress."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import HTTPException

from services.gateway import auth
from services.gateway.models import Batch, BatchKind
from shared.runtime import Service


async def new_batch(
    service: Service,
    user: auth.CurrentUser,
    envelope_ids: list[str],
    kind: BatchKind = BatchKind.selected,
) -> str:
    batch_id = auth.new_id()
    async with service.sessionmaker() as s, s.begin():
        s.add(
            Batch(
                id=batch_id,
                firm_id=user.firm_id,
                user_id=user.id,
                kind=kind,
                envelope_ids=json.dumps(envelope_ids),
                created_at=datetime.now(UTC),
            )
        )
    return batch_id


async def load_batch(service: Service, user: auth.CurrentUser, batch_id: str) -> Batch:
    """The firm's batch; 404 for another firm's or none."""
    async with service.sessionmaker() as s:
        batch = await s.get(Batch, batch_id)
    if batch is None or batch.firm_id != user.firm_id:
        raise HTTPException(status_code=404, detail="No such batch.")
    return batch


def envelope_ids(batch: Batch) -> list[str]:
    return list(json.loads(batch.envelope_ids))


def is_balance(batch: Batch) -> bool:
    """A client balance's batch: its sends pay for all unpaid bills unless unchecked."""
    return batch.kind == BatchKind.balance
