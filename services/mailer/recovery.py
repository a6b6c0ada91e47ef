"""The mailer's own schedule: at start, what a mailer that died left behind; then, every
few seconds, the emails whose retry is due."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from opentelemetry import context as otel_context
from opentelemetry import propagate
from sqlalchemy import select

from services.mailer.models import OutgoingEmail
from services.mailer.postman import Postman
from services.mailer.rules import EmailStatus

POLL_SECONDS = 2


class Recovery:
    def __init__(self, postman: Postman) -> None:
        self.postman = postman
        self.sessionmaker = postman.service.sessionmaker

    async def retry_loop(self) -> None:
        await self.recover()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            await self.retry_due()

    async def recover(self) -> None:
        """At start: rows left `sending` by a mailer that died mid-conversation are
        uncertain; rows left `pending` never reached the relay and go out now."""
        async with self.sessionmaker() as s, s.begin():
            rows = await s.scalars(
                select(OutgoingEmail).where(OutgoingEmail.status == EmailStatus.SENDING)
            )
            for row in rows:
                await self.postman.outcomes.uncertain(s, row)
        async with self.sessionmaker() as s:
            pending = list(
                await s.scalars(
                    select(OutgoingEmail.email_id).where(
                        OutgoingEmail.status == EmailStatus.PENDING
                    )
                )
            )
        for email_id in pending:
            await self.postman.deliver(email_id)

    async def retry_due(self) -> None:
        """Each email whose retry is due, tried again in the trace of the request that
        asked for it."""
        now = datetime.now(UTC)
        async with self.sessionmaker() as s:
            rows = await s.scalars(
                select(OutgoingEmail).where(
                    OutgoingEmail.status == EmailStatus.RETRYING,
                    OutgoingEmail.next_attempt_at <= now,
                )
            )
            due = [(r.email_id, r.trace) for r in rows]
        for email_id, trace in due:
            token = otel_context.attach(propagate.extract(json.loads(trace or "{}")))
            try:
                await self.postman.deliver(email_id)
            finally:
                otel_context.detach(token)
