"""Delivers requested emails over SMTP, at most once each, retrying what failed for a
reason that may pass (the relay down, a 4xx answer)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosmtplib
import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate
from sqlalchemy import bindparam, select, update

from services.mailer.message import (
    OutgoingMessage,
    UnsendableAddress,
    build_message,
    message_id_for,
)
from services.mailer.models import OutgoingEmail
from services.mailer.relay import RelayPool
from services.mailer.settings import MailerSettings
from shared.db import insert_unless_present
from shared.email_content import open_content
from shared.events import EmailFailed, EmailRequested, EmailSent
from shared.outbox import already_applied, claim_many
from shared.runtime import Service
from shared.sealing import SealBroken

log = logging.getLogger(__name__)


_EMAILS = OutgoingEmail.__table__
# Built once (statements are cached by their construction): a batch's sent emails.
_MARK_SENT = (
    update(_EMAILS)
    .where(_EMAILS.c.email_id == bindparam("b_email_id"))
    .values(
        status="sent",
        sent_at=bindparam("b_sent_at"),
        message_id=bindparam("b_message_id"),
        error=None,
    )
)


class TransientFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


class Postman:
    def __init__(self, service: Service, settings: MailerSettings) -> None:
        self.service = service
        self.settings = settings
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
        most once: one read for what was seen before, the contents opened outside any
        transaction, one transaction that claims the events and commits the new emails as
        `sending`, the SMTP conversations side by side, one transaction for those sent."""
        sm = self.service.sessionmaker
        emails = OutgoingEmail.__table__
        inbox = self.service.inbox
        name = self.service.name
        async with sm() as s:
            # Seen before: this event, or this email under another event.
            applied = await already_applied(s, inbox, name, [str(ev.event_id) for ev in evs])
            existing = set(
                await s.scalars(
                    select(emails.c.email_id).where(
                        emails.c.email_id.in_({ev.email_id for ev in evs})
                    )
                )
            )
        fresh = [ev for ev in evs if str(ev.event_id) not in applied]
        if not fresh:
            return
        # The contents before the rows are written, so that a new email costs no
        # transaction of its own before SMTP.
        built: dict[str, OutgoingMessage | TransientFailure | PermanentFailure] = {}
        for ev in fresh:
            if ev.email_id in existing or ev.email_id in built:
                continue
            try:
                content = self._opened(ev) or await self._fetch(ev.content_url)
                built[ev.email_id] = build_message(
                    content,
                    mail_from=self.settings.mail_from,
                    message_id=message_id_for(ev.email_id, self.settings.message_id_domain),
                )
            except (TransientFailure, PermanentFailure) as exc:
                built[ev.email_id] = exc
            except UnsendableAddress as exc:
                built[ev.email_id] = PermanentFailure(str(exc))
        async with sm() as s, s.begin():
            claimed = await claim_many(s, inbox, name, fresh)
            owners: dict[str, EmailRequested] = {}  # email id -> the first event asking
            for ev in fresh:
                if str(ev.event_id) in claimed:
                    owners.setdefault(ev.email_id, ev)
            if not owners:
                return
            rows = []
            for email_id, ev in owners.items():
                carrier: dict[str, str] = {}
                propagate.inject(carrier, context=self.service.contexts.get(str(ev.event_id)))
                ready = isinstance(built.get(email_id), OutgoingMessage)
                rows.append(
                    {
                        "email_id": email_id,
                        "firm_id": ev.firm_id,
                        "envelope_id": ev.envelope_id,
                        "to": json.dumps(ev.to),
                        "subject": ev.subject,
                        "content_url": ev.content_url,
                        # Committed as `sending` before SMTP starts: a crash from here on
                        # makes the email uncertain, never sent twice.
                        "status": "sending" if ready else "pending",
                        "attempts": 1 if ready else 0,
                        "created_at": datetime.now(UTC),
                        "trace": json.dumps(carrier),
                    }
                )
            added = set(
                (
                    await s.execute(
                        insert_unless_present(emails).values(rows).returning(emails.c.email_id)
                    )
                ).scalars()
            )
            # Redelivered (the broker lost our ack) or requested twice: never again.
            for row in await s.scalars(
                select(OutgoingEmail).where(
                    OutgoingEmail.email_id.in_([e for e in owners if e not in added])
                )
            ):
                if row.status == "sending":
                    await self._uncertain(s, row)
        outcomes = await asyncio.gather(
            *(
                self._attempt(ev, built.get(email_id))
                for email_id, ev in owners.items()
                if email_id in added
            )
        )
        sent = [(email_id, at) for email_id, at in outcomes if at is not None]
        if sent:
            await self._record_sent([(owners[email_id], at) for email_id, at in sent])

    async def _attempt(
        self,
        ev: EmailRequested,
        built: OutgoingMessage | TransientFailure | PermanentFailure | None,
    ) -> tuple[str, datetime | None]:
        """One email just committed, in the trace of the delivery that asked for it: SMTP
        when its message is built (then the time the relay accepted it, recorded by the
        caller with the others'), else what its failure calls for."""
        email_id = ev.email_id
        cause = self.service.contexts.get(str(ev.event_id))
        token = otel_context.attach(cause) if cause is not None else None
        try:
            if built is None:
                await self.deliver(email_id)  # known before, but not handled: the usual path
            elif isinstance(built, PermanentFailure):
                await self._fail(email_id, str(built))
            elif isinstance(built, TransientFailure):
                await self._retry_later(email_id, 0, str(built))
            elif await self._send_committed(email_id, built, attempts=1):
                return email_id, datetime.now(UTC)
            return email_id, None
        finally:
            if token is not None:
                otel_context.detach(token)

    async def _send_committed(self, email_id: str, msg: OutgoingMessage, *, attempts: int) -> bool:
        """SMTP for an email committed as `sending`: True once the relay accepted it (its
        `sent` is the caller's to record); a failure is recorded here."""
        try:
            await self._smtp(msg)
        except PermanentFailure as exc:
            await self._fail(email_id, str(exc))
            return False
        except TransientFailure as exc:
            await self._retry_later(email_id, attempts, str(exc))
            return False
        except Exception as exc:
            # Not an answer of the relay's: whether the message went out is not known.
            log.exception("mailer: sending %s failed unexpectedly", email_id)
            reason = f"sending ended unexpectedly ({exc!r})"[:1900]
            await self._mark_uncertain(
                email_id, f"{reason}; check with the client before re-sending"
            )
            return False
        if self.settings.crash_after_smtp and self.settings.environment != "production":
            log.error(
                "mailer: crash_after_smtp is set: dying after the relay accepted %s", email_id
            )
            os._exit(70)
        return True

    async def _record_sent(self, sent: list[tuple[EmailRequested, datetime]]) -> None:
        """Emails the relay accepted, and their `email.sent`: one transaction for them all."""
        async with self.service.sessionmaker() as s, s.begin():
            await s.execute(
                _MARK_SENT,
                [
                    {
                        "b_email_id": ev.email_id,
                        "b_sent_at": at,
                        "b_message_id": message_id_for(
                            ev.email_id, self.settings.message_id_domain
                        ),
                    }
                    for ev, at in sent
                ],
            )
            await self.service.publish_many(
                s,
                [
                    (
                        EmailSent(
                            firm_id=ev.firm_id,
                            email_id=ev.email_id,
                            envelope_id=ev.envelope_id,
                            message_id=message_id_for(ev.email_id, self.settings.message_id_domain),
                            to=ev.to,
                            sent_at=at,
                        ),
                        ev,
                    )
                    for ev, at in sent
                ],
            )
        for ev, _ in sent:
            log.info("mailer: sent %s", ev.email_id)

    async def _uncertain(
        self,
        s: Any,
        row: OutgoingEmail,
        reason: str = "the mailer stopped while sending; check with the client before re-sending",
    ) -> None:
        """A mailer died during this message's SMTP conversation (or it ended in a way
        that says nothing of the message): it may or may not have gone out. Sending again
        could make a duplicate, so a person decides."""
        row.status = "uncertain"
        row.error = reason
        await self.service.publish(
            s,
            EmailFailed(
                firm_id=row.firm_id,
                email_id=row.email_id,
                envelope_id=row.envelope_id,
                reason=row.error,
            ),
        )

    async def _mark_uncertain(self, email_id: str, reason: str) -> None:
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is not None and row.status == "sending":
                await self._uncertain(s, row, reason)

    async def deliver(self, email_id: str) -> None:
        sm = self.service.sessionmaker
        async with sm() as s:
            row = await s.get(OutgoingEmail, email_id)
            if row is None or row.status not in ("pending", "retrying"):
                return
            content_url, attempts = row.content_url, row.attempts
        try:
            content = await self._fetch(content_url)
        except TransientFailure as exc:
            await self._retry_later(email_id, attempts, str(exc))
            return
        except PermanentFailure as exc:
            await self._fail(email_id, str(exc))
            return
        message_id = message_id_for(email_id, self.settings.message_id_domain)
        try:
            msg = build_message(content, mail_from=self.settings.mail_from, message_id=message_id)
        except UnsendableAddress as exc:
            await self._fail(email_id, str(exc))
            return
        async with sm() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is None or row.status not in ("pending", "retrying"):
                return
            row.status = "sending"
            row.attempts = attempts + 1
        await self._transmit(email_id, msg, message_id, attempts=attempts + 1)

    async def _transmit(
        self, email_id: str, msg: OutgoingMessage, message_id: str, *, attempts: int
    ) -> None:
        """SMTP for an email committed as `sending`, then its outcome."""
        sm = self.service.sessionmaker
        if not await self._send_committed(email_id, msg, attempts=attempts):
            return
        emails = OutgoingEmail.__table__
        sent_at = datetime.now(UTC)
        async with sm() as s, s.begin():
            row = (
                await s.execute(
                    update(emails)
                    .where(emails.c.email_id == email_id)
                    .values(status="sent", sent_at=sent_at, message_id=message_id, error=None)
                    .returning(emails.c.firm_id, emails.c.envelope_id, emails.c.to)
                )
            ).one()
            await self.service.publish(
                s,
                EmailSent(
                    firm_id=row.firm_id,
                    email_id=email_id,
                    envelope_id=row.envelope_id,
                    message_id=message_id,
                    to=json.loads(row.to),
                    sent_at=sent_at,
                ),
            )
        log.info("mailer: sent %s", email_id)

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
            raise TransientFailure(f"content not reachable: {exc}") from exc
        if resp.status_code == 404:
            raise PermanentFailure("the email's content no longer exists")
        if resp.status_code >= 400:
            raise TransientFailure(f"content fetch answered {resp.status_code}")
        return resp.json()

    async def _smtp(self, msg: Any) -> None:
        try:
            await self.relay.send(msg)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentFailure(f"every recipient was refused: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentFailure(
                    f"the relay refused the message: {exc.code} {exc.message}"
                ) from exc
            raise TransientFailure(f"the relay answered {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientFailure(f"the relay is not reachable: {exc}") from exc

    async def _retry_later(self, email_id: str, attempts: int, reason: str) -> None:
        if attempts >= self.settings.max_attempts:
            await self._fail(email_id, f"gave up after {attempts} attempts: {reason}")
            return
        delay = self.settings.retry_base_seconds * (2 ** max(0, attempts - 1))
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is None:
                return
            row.status = "retrying"
            row.attempts = attempts
            row.error = reason
            row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
        log.warning("mailer: %s not sent (%s); retrying in %.0fs", email_id, reason, delay)

    async def _fail(self, email_id: str, reason: str) -> None:
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is None:
                return
            row.status = "failed"
            row.error = reason
            await self.service.publish(
                s,
                EmailFailed(
                    firm_id=row.firm_id,
                    email_id=email_id,
                    envelope_id=row.envelope_id,
                    reason=reason,
                ),
            )
        log.warning("mailer: %s failed: %s", email_id, reason)

    async def recover(self) -> None:
        """At start: rows left `sending` by a mailer that died mid-conversation are
        uncertain; rows left `pending` never reached the relay and go out now."""
        async with self.service.sessionmaker() as s, s.begin():
            rows = await s.scalars(select(OutgoingEmail).where(OutgoingEmail.status == "sending"))
            for row in rows:
                await self._uncertain(s, row)
        async with self.service.sessionmaker() as s:
            pending = list(
                await s.scalars(
                    select(OutgoingEmail.email_id).where(OutgoingEmail.status == "pending")
                )
            )
        for email_id in pending:
            await self.deliver(email_id)

    async def retry_loop(self) -> None:
        await self.recover()
        while True:
            await asyncio.sleep(2)
            now = datetime.now(UTC)
            async with self.service.sessionmaker() as s:
                rows = await s.scalars(
                    select(OutgoingEmail).where(
                        OutgoingEmail.status == "retrying", OutgoingEmail.next_attempt_at <= now
                    )
                )
                due = [(r.email_id, r.trace) for r in rows]
            for email_id, trace in due:
                token = otel_context.attach(propagate.extract(json.loads(trace or "{}")))
                try:
                    await self.deliver(email_id)
                finally:
                    otel_context.detach(token)
