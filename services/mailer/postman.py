"""Delivers requested emails over SMTP, at most once each, retrying what failed for a
reason that may pass (the relay down, a 4xx answer).

What a failure means and when to try again is decided in `services.mailer.rules`; how each
outcome is recorded, in `services.mailer.outcomes`; what happens at start and to emails
waiting for a retry, in `services.mailer.recovery`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

import httpx
from opentelemetry import propagate
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.mailer.message import OutgoingMessage, UnsendableAddress, build_message
from services.mailer.models import OutgoingEmail
from services.mailer.outcomes import Outcomes
from services.mailer.relay import RelayPool
from services.mailer.rules import (
    EmailStatus,
    PermanentFailure,
    TransientFailure,
    fetch_failure,
    first_status,
    may_become,
    may_start_sending,
    smtp_failure,
    uncertain_reason,
    unreachable_content,
)
from services.mailer.settings import MailerSettings
from shared.batching import apply_once
from shared.db import insert_unless_present
from shared.email_content import open_content
from shared.events import EmailRequested
from shared.runtime import Service
from shared.sealing import SealBroken

log = logging.getLogger(__name__)

_EMAILS = OutgoingEmail.__table__

# An email's message as built before its row is written, or why it cannot be.
Built = OutgoingMessage | TransientFailure | PermanentFailure
# The emails a batch's transaction recorded, to attempt once it committed: each with the
# event that asked for it, and its message (None: known before, but not handled).
Attempts = list[tuple[EmailRequested, Built | None]]


class Postman:
    def __init__(self, service: Service, settings: MailerSettings) -> None:
        self.service = service
        self.consumer = service.consumer
        self.settings = settings
        self.outcomes = Outcomes(service, settings)
        self.http = httpx.AsyncClient(
            timeout=30, headers={"X-Internal-Token": settings.internal_token}
        )
        # As many connections as emails of a batch: every email committed as `sending` is
        # in its SMTP conversation, none waits for a connection (a crash leaves uncertain
        # only what may have gone out).
        self.relay = RelayPool(settings, size=max(settings.bus_prefetch, settings.bus_batch))

    async def on_email_requested(self, ev: EmailRequested) -> None:
        await self.on_emails_requested([ev])

    async def on_emails_requested(self, evs: list[EmailRequested]) -> None:
        """Emails requested at about the same time (a Send All makes hundreds), each sent at
        most once: the contents opened outside any transaction, one transaction that claims
        the events and commits the new emails as `sending`, then the SMTP conversations side
        by side and one transaction for those sent."""
        await apply_once(self.consumer, evs, self._record, prepare=self._build, then=self._send)

    # --- one batch ----------------------------------------------------------------------

    async def _build(self, evs: list[EmailRequested]) -> dict[str, Built]:
        """The messages of the emails not seen before, built before their rows are written,
        so that a new email costs no transaction of its own before SMTP."""
        async with self.service.sessionmaker() as s:
            # Seen before under another event: handled by `deliver`, not built here.
            existing = set(
                await s.scalars(
                    select(_EMAILS.c.email_id).where(
                        _EMAILS.c.email_id.in_({ev.email_id for ev in evs})
                    )
                )
            )
        built: dict[str, Built] = {}
        for ev in evs:
            if ev.email_id in existing or ev.email_id in built:
                continue
            try:
                content = self._opened(ev) or await self._fetch(ev.content_url)
                built[ev.email_id] = self._message(ev.email_id, content)
            except (TransientFailure, PermanentFailure) as exc:
                built[ev.email_id] = exc
            except UnsendableAddress as exc:
                built[ev.email_id] = PermanentFailure(str(exc))
        return built

    async def _record(
        self, s: AsyncSession, evs: list[EmailRequested], built: dict[str, Built]
    ) -> Attempts:
        """In the transaction that claimed `evs`: the new emails, committed as `sending`
        when their message is built (a crash from here on makes them uncertain, never sent
        twice); an email redelivered while `sending` becomes uncertain."""
        owners: dict[str, EmailRequested] = {}  # email id -> the first event asking
        for ev in evs:
            owners.setdefault(ev.email_id, ev)
        rows = []
        for email_id, ev in owners.items():
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=self.consumer.context_of(ev))
            ready = isinstance(built.get(email_id), OutgoingMessage)
            rows.append(
                {
                    "email_id": email_id,
                    "firm_id": ev.firm_id,
                    "envelope_id": ev.envelope_id,
                    "to": json.dumps(ev.to),
                    "subject": ev.subject,
                    "content_url": ev.content_url,
                    "status": first_status(ready),
                    "attempts": 1 if ready else 0,
                    "created_at": datetime.now(UTC),
                    "trace": json.dumps(carrier),
                }
            )
        added = set(
            (
                await s.execute(
                    insert_unless_present(_EMAILS).values(rows).returning(_EMAILS.c.email_id)
                )
            ).scalars()
        )
        # Redelivered (the broker lost our ack) or requested twice: never again.
        for row in await s.scalars(
            select(OutgoingEmail).where(
                OutgoingEmail.email_id.in_([e for e in owners if e not in added])
            )
        ):
            if may_become(row.status, EmailStatus.UNCERTAIN):
                await self.outcomes.uncertain(s, row)
        return [(ev, built.get(email_id)) for email_id, ev in owners.items() if email_id in added]

    async def _send(self, attempts: Attempts) -> None:
        """Once the batch's emails are committed: their SMTP conversations side by side, then
        one transaction for those the relay accepted."""
        outcomes = await asyncio.gather(*(self._attempt(ev, built) for ev, built in attempts))
        sent = [(ev, at) for ev, at in outcomes if at is not None]
        if sent:
            await self.outcomes.sent_many(sent)

    async def _attempt(
        self, ev: EmailRequested, built: Built | None
    ) -> tuple[EmailRequested, datetime | None]:
        """One email just committed, in the trace of the delivery that asked for it: SMTP
        when its message is built (then the time the relay accepted it, recorded by the
        caller with the others'), else what its failure calls for."""
        email_id = ev.email_id
        with self.consumer.in_trace_of(ev):
            if built is None:
                await self.deliver(email_id)  # known before, but not handled: the usual path
            elif isinstance(built, PermanentFailure):
                await self.outcomes.failed(email_id, str(built))
            elif isinstance(built, TransientFailure):
                await self.outcomes.retry_later(email_id, 0, str(built))
            elif await self._send_committed(email_id, built, attempts=1):
                return ev, datetime.now(UTC)
            return ev, None

    # --- one email ----------------------------------------------------------------------

    async def deliver(self, email_id: str) -> None:
        """An email recorded before (waiting for a retry, or left `pending`): its content
        fetched, then one SMTP attempt if it still waits."""
        sm = self.service.sessionmaker
        async with sm() as s:
            row = await s.get(OutgoingEmail, email_id)
            if row is None or not may_start_sending(row.status):
                return
            content_url, attempts = row.content_url, row.attempts
        try:
            msg = self._message(email_id, await self._fetch(content_url))
        except TransientFailure as exc:
            await self.outcomes.retry_later(email_id, attempts, str(exc))
            return
        except (PermanentFailure, UnsendableAddress) as exc:
            await self.outcomes.failed(email_id, str(exc))
            return
        async with sm() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is None or not may_start_sending(row.status):
                return
            row.status = EmailStatus.SENDING
            row.attempts = attempts + 1
        if await self._send_committed(email_id, msg, attempts=attempts + 1):
            await self.outcomes.sent(email_id, self.outcomes.message_id(email_id))

    async def _send_committed(self, email_id: str, msg: OutgoingMessage, *, attempts: int) -> bool:
        """SMTP for an email committed as `sending`: True once the relay accepted it (its
        `sent` is the caller's to record); a failure is recorded here."""
        try:
            await self.relay.send(msg)
        except Exception as exc:
            failure = smtp_failure(exc)
            if isinstance(failure, PermanentFailure):
                await self.outcomes.failed(email_id, str(failure))
            elif isinstance(failure, TransientFailure):
                await self.outcomes.retry_later(email_id, attempts, str(failure))
            else:
                log.exception("mailer: sending %s failed unexpectedly", email_id)
                await self.outcomes.uncertain_if_sending(email_id, uncertain_reason(exc))
            return False
        if self.settings.crash_after_smtp and self.settings.environment != "production":
            log.error(
                "mailer: crash_after_smtp is set: dying after the relay accepted %s", email_id
            )
            os._exit(70)
        return True

    # --- contents -----------------------------------------------------------------------

    def _message(self, email_id: str, content: dict[str, Any]) -> OutgoingMessage:
        return build_message(
            content,
            mail_from=self.settings.mail_from,
            message_id=self.outcomes.message_id(email_id),
        )

    def _opened(self, ev: EmailRequested) -> dict[str, Any] | None:
        """The content the event carries, sealed; None when it carries none or it does not
        open (another internal token, say, during a rotation): then it is fetched."""
        if not ev.sealed_content:
            return None
        try:
            return open_content(self.settings.internal_token, ev.email_id, ev.sealed_content)
        except SealBroken as exc:
            log.warning(
                "mailer: the content sealed in %s does not open (%s); fetching it", ev.email_id, exc
            )
            return None

    async def _fetch(self, url: str) -> dict[str, Any]:
        try:
            resp = await self.http.get(url)
        except httpx.TransportError as exc:
            raise unreachable_content(exc) from exc
        failure = fetch_failure(resp.status_code)
        if failure is not None:
            raise failure
        return resp.json()
