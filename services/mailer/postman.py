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
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.mailer import dkim
from services.mailer.copies import EmailCopies, Tracking, prepare_copies
from services.mailer.message import UnsendableAddress, attachment_bytes
from services.mailer.models import EmailRecipient, OutgoingEmail
from services.mailer.outcomes import Attempt, Outcomes
from services.mailer.relay import RelayPool
from services.mailer.rules import (
    CopyAnswer,
    EmailStatus,
    PermanentFailure,
    RecipientStatus,
    TransientFailure,
    accepted,
    attachments_over_limit,
    copy_failure,
    fetch_failure,
    first_status,
    may_become,
    may_send_copy,
    may_start_sending,
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
_RECIPIENTS = EmailRecipient.__table__
# Built once and run with many rows (executemany; with RETURNING, SQLAlchemy's
# "insertmanyvalues": one INSERT, from a statement compiled once and cached): a VALUES list
# of varying length would be compiled again for each batch.
_ADD_EMAILS = insert_unless_present(_EMAILS).returning(_EMAILS.c.email_id)
_ADD_RECIPIENTS = insert_unless_present(_RECIPIENTS)
_MAY_START = [status for status in EmailStatus if may_start_sending(status)]

# An email's copies as built before its row is written, or why it cannot be.
Built = EmailCopies | TransientFailure | PermanentFailure
# The emails a batch's transaction recorded, to attempt once it committed: each with the
# event that asked for it, and its message (None: known before, but not handled).
Attempts = list[tuple[EmailRequested, Built | None]]

# Batches of emails past their commit at once (`Service.consumes_batch`'s
# `then_concurrency`): the next batch is built and committed while the relay takes the
# emails of the one before, so that the relay is never idle between batches.
BATCHES_SENDING = 2


def relay_pool_size(settings: MailerSettings) -> int:
    """The relay connections: one for each email that may be in its SMTP conversation at
    once, those of `BATCHES_SENDING` batches."""
    return BATCHES_SENDING * max(settings.bus_prefetch, settings.bus_batch)


class Postman:
    def __init__(self, service: Service, settings: MailerSettings) -> None:
        self.service = service
        self.consumer = service.consumer
        self.settings = settings
        self.outcomes = Outcomes(service, settings)
        self.http = httpx.AsyncClient(
            timeout=30, headers={"X-Internal-Token": settings.internal_token}
        )
        # As many connections as emails past their commit at once (`BATCHES_SENDING`
        # batches): every email committed as `sending` is in its SMTP conversation, none
        # waits for a connection (a crash leaves uncertain only what may have gone out). An
        # email's copies go one after another, each on one connection at a time.
        self.relay = RelayPool(settings, size=relay_pool_size(settings))
        self.tracking = Tracking(settings.public_base_url, settings.tracking_secret)
        self.sign = dkim.from_settings(settings)

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
                built[ev.email_id] = self._copies(ev.email_id, content)
            except (TransientFailure, PermanentFailure) as exc:
                built[ev.email_id] = exc
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
            ready = isinstance(built.get(email_id), EmailCopies)
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
        added = set((await s.execute(_ADD_EMAILS, rows)).scalars())
        copies = [
            _recipient_rows(email_id, owners[email_id].firm_id, b)
            for email_id in added
            if isinstance(b := built.get(email_id), EmailCopies)
        ]
        if any(copies):
            await s.execute(_ADD_RECIPIENTS, sum(copies, []))
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
        one transaction for what the relay answered."""
        done = await asyncio.gather(*(self._attempt(ev, built) for ev, built in attempts))
        await self.outcomes.settle([a for a in done if a is not None])

    async def _attempt(self, ev: EmailRequested, built: Built | None) -> Attempt | None:
        """One email just committed, in the trace of the delivery that asked for it: a copy
        to each recipient when it is built (the answers recorded by the caller with the
        others'), else what its failure calls for."""
        email_id = ev.email_id
        with self.consumer.in_trace_of(ev):
            if built is None:
                await self.deliver(email_id)  # known before, but not handled: the usual path
            elif isinstance(built, PermanentFailure):
                await self.outcomes.failed(email_id, str(built))
            elif isinstance(built, TransientFailure):
                await self.outcomes.retry_later(email_id, 0, str(built))
            else:
                return await self._send_copies(
                    built, list(range(len(built.recipients))), attempts=1, cause=ev
                )
            return None

    # --- one email ----------------------------------------------------------------------

    async def deliver(self, email_id: str) -> None:
        """An email recorded before (waiting for a retry, or left `pending`): its content
        fetched, then one SMTP attempt for each recipient still waiting."""
        sm = self.service.sessionmaker
        async with sm() as s:
            row = await s.get(OutgoingEmail, email_id)
            if row is None or not may_start_sending(row.status):
                return
            content_url, attempts, firm_id = row.content_url, row.attempts, row.firm_id
        try:
            copies = self._copies(email_id, await self._fetch(content_url))
        except TransientFailure as exc:
            await self.outcomes.retry_later(email_id, attempts, str(exc))
            return
        except PermanentFailure as exc:
            await self.outcomes.failed(email_id, str(exc))
            return
        async with sm() as s, s.begin():
            # One conditional UPDATE: of two mailers retrying the same email at once, one
            # moves it to `sending`, the other finds nothing to move (it waits for the first
            # one's commit, then reads `sending`) and sends nothing.
            claimed = await s.execute(
                update(_EMAILS)
                .where(
                    _EMAILS.c.email_id == email_id,
                    _EMAILS.c.status.in_(_MAY_START),
                    _EMAILS.c.attempts == attempts,
                )
                .values(status=EmailStatus.SENDING, attempts=attempts + 1)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return
            # An email first recorded without its content has no recipient rows yet.
            await s.execute(_ADD_RECIPIENTS, _recipient_rows(email_id, firm_id, copies))
            waiting = [
                n
                for n, status in await s.execute(
                    select(_RECIPIENTS.c.n, _RECIPIENTS.c.status)
                    .where(_RECIPIENTS.c.email_id == email_id)
                    .order_by(_RECIPIENTS.c.n)
                )
                if may_send_copy(status)
            ]
        attempt = await self._send_copies(copies, waiting, attempts=attempts + 1)
        await self.outcomes.settle([attempt])

    async def _send_copies(
        self,
        copies: EmailCopies,
        ns: list[int],
        *,
        attempts: int,
        cause: EmailRequested | None = None,
    ) -> Attempt:
        """SMTP for an email committed as `sending`: recipient `n`'s copy in its own
        transaction, for each `n` of `ns` in turn (one pooled connection at a time, so the
        batch's emails never wait for one another's). Nothing is recorded here: the answers
        are the caller's to settle. The relay not reachable defers the copies after it
        without trying them; an exception that is no answer of the relay's stops the
        attempt (the email becomes uncertain)."""
        attempt = Attempt(copies.email_id, attempts, cause=cause)
        unreachable: CopyAnswer | None = None
        for n in ns:
            if unreachable is not None:
                attempt.answers[n] = unreachable
                continue
            try:
                reply = await self.relay.send(copies.copy(n))
            except Exception as exc:
                answer = copy_failure(exc)
                if answer is None:
                    log.exception("mailer: sending %s.%d failed unexpectedly", copies.email_id, n)
                    attempt.unexpected = uncertain_reason(exc)
                    break
                attempt.answers[n] = answer
                if answer.connection:
                    unreachable = answer
                continue
            attempt.answers[n] = accepted(reply.code, reply.message)
            attempt.accepted_at[n] = datetime.now(UTC)
            if self.settings.crash_after_smtp and self.settings.environment != "production":
                log.error(
                    "mailer: crash_after_smtp is set: dying after the relay accepted %s.%d",
                    copies.email_id,
                    n,
                )
                os._exit(70)
        return attempt

    # --- contents -----------------------------------------------------------------------

    def _copies(self, email_id: str, content: dict[str, Any]) -> EmailCopies:
        """The email's copies, or the PermanentFailure that says why it cannot go out."""
        st = self.settings
        too_large = attachments_over_limit(attachment_bytes(content), st.max_attachment_bytes)
        if too_large is not None:
            raise too_large
        try:
            copies = prepare_copies(
                content,
                email_id=email_id,
                mail_from=st.mail_from,
                message_id=self.outcomes.message_id(email_id),
                tracking=self.tracking,
                bounce_local=st.bounce_local,
                bounce_domain=st.bounce_domain,
                sign=self.sign,
            )
        except UnsendableAddress as exc:
            raise PermanentFailure(str(exc)) from exc
        if not copies.recipients:
            raise PermanentFailure("the email has no recipient")
        return copies

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


def _recipient_rows(email_id: str, firm_id: str, copies: EmailCopies) -> list[dict[str, Any]]:
    """An email's `email_recipients` rows, To then Cc, before any is tried."""
    return [
        {
            "email_id": email_id,
            "n": n,
            "firm_id": firm_id,
            "address": address,
            "status": RecipientStatus.PENDING,
            "opens": 0,
            "machine_opens": 0,
            "clicks": 0,
        }
        for n, address in enumerate(copies.recipients)
    ]
