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
from sqlalchemy import exists, or_, select, update

from services.mailer.message import OutgoingMessage, build_message, message_id_for
from services.mailer.models import OutgoingEmail
from services.mailer.relay import RelayPool
from services.mailer.settings import MailerSettings
from shared.db import insert_unless_present
from shared.email_content import open_content
from shared.events import EmailFailed, EmailRequested, EmailSent
from shared.outbox import claim, inbox_has
from shared.runtime import Service
from shared.sealing import SealBroken

log = logging.getLogger(__name__)


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
        # As many connections as emails handled at once (the bus prefetch).
        self.relay = RelayPool(settings, size=settings.bus_prefetch)

    async def on_email_requested(self, ev: EmailRequested) -> None:
        sm = self.service.sessionmaker
        emails = OutgoingEmail.__table__
        inbox = self.service.inbox
        async with sm() as s:
            # Seen before (this event, or this email under another event)? One read.
            known = bool(
                await s.scalar(
                    select(
                        or_(
                            inbox_has(inbox, self.service.name, ev),
                            exists().where(emails.c.email_id == ev.email_id),
                        )
                    )
                )
            )
        # The content is fetched before the row is written, so that a new email costs one
        # transaction before SMTP (row, inbox and `sending` together), not three.
        msg: OutgoingMessage | None = None
        problem: TransientFailure | PermanentFailure | None = None
        message_id = message_id_for(ev.email_id, self.settings.message_id_domain)
        if not known:
            try:
                content = self._opened(ev) or await self._fetch(ev.content_url)
                msg = build_message(
                    content, mail_from=self.settings.mail_from, message_id=message_id
                )
            except (TransientFailure, PermanentFailure) as exc:
                problem = exc
        async with sm() as s, s.begin():
            if not await claim(s, inbox, self.service.name, ev):
                return
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            # Committed as `sending` before SMTP starts: a crash from here on makes the
            # email uncertain, never sent twice.
            added = await s.execute(
                insert_unless_present(emails).values(
                    email_id=ev.email_id,
                    firm_id=ev.firm_id,
                    envelope_id=ev.envelope_id,
                    to=json.dumps(ev.to),
                    subject=ev.subject,
                    content_url=ev.content_url,
                    status="sending" if msg is not None else "pending",
                    attempts=1 if msg is not None else 0,
                    created_at=datetime.now(UTC),
                    trace=json.dumps(carrier),
                )
            )
            if added.rowcount != 1:
                # Redelivered (the broker lost our ack) or requested twice: never again.
                row = await s.get(OutgoingEmail, ev.email_id)
                if row is not None and row.status == "sending":
                    await self._uncertain(s, row)
                return
        if msg is not None:
            await self._transmit(ev.email_id, msg, message_id, attempts=1)
        elif isinstance(problem, PermanentFailure):
            await self._fail(ev.email_id, str(problem))
        elif problem is not None:
            await self._retry_later(ev.email_id, 0, str(problem))
        else:
            await self.deliver(ev.email_id)  # known before, but not handled: the usual path

    async def _uncertain(self, s: Any, row: OutgoingEmail) -> None:
        """A mailer died during this message's SMTP conversation: it may or may not have
        gone out. Sending again could make a duplicate, so a person decides."""
        row.status = "uncertain"
        row.error = "the mailer stopped while sending; check with the client before re-sending"
        await self.service.publish(
            s,
            EmailFailed(
                firm_id=row.firm_id,
                email_id=row.email_id,
                envelope_id=row.envelope_id,
                reason=row.error,
            ),
        )

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
        msg = build_message(content, mail_from=self.settings.mail_from, message_id=message_id)
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
        try:
            await self._smtp(msg)
        except PermanentFailure as exc:
            await self._fail(email_id, str(exc))
            return
        except TransientFailure as exc:
            await self._retry_later(email_id, attempts, str(exc))
            return
        if self.settings.crash_after_smtp and self.settings.environment != "production":
            log.error(
                "mailer: crash_after_smtp is set: dying after the relay accepted %s", email_id
            )
            os._exit(70)
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
