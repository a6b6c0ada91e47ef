"""What became of an email, recorded: its row moved to its new state and, where other
services must hear of it, `email.sent` or `email.failed` staged in the same transaction."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.mailer.message import message_id_for
from services.mailer.models import OutgoingEmail
from services.mailer.rules import (
    STOPPED_WHILE_SENDING,
    EmailStatus,
    RetryPolicy,
    may_become,
)
from services.mailer.settings import MailerSettings
from shared.events import EmailFailed, EmailRequested, EmailSent
from shared.runtime import Service

log = logging.getLogger(__name__)

_EMAILS = OutgoingEmail.__table__
# Built once (statements are cached by their construction): a batch's sent emails.
_MARK_SENT = (
    update(_EMAILS)
    .where(_EMAILS.c.email_id == bindparam("b_email_id"))
    .values(
        status=EmailStatus.SENT,
        sent_at=bindparam("b_sent_at"),
        message_id=bindparam("b_message_id"),
        error=None,
    )
)


class Outcomes:
    def __init__(self, service: Service, settings: MailerSettings) -> None:
        self.service = service
        self.settings = settings
        self.retries = RetryPolicy(settings.max_attempts, settings.retry_base_seconds)

    def message_id(self, email_id: str) -> str:
        return message_id_for(email_id, self.settings.message_id_domain)

    async def sent_many(self, sent: list[tuple[EmailRequested, datetime]]) -> None:
        """Emails the relay accepted, and their `email.sent`: one transaction for them all."""
        async with self.service.sessionmaker() as s, s.begin():
            await s.execute(
                _MARK_SENT,
                [
                    {
                        "b_email_id": ev.email_id,
                        "b_sent_at": at,
                        "b_message_id": self.message_id(ev.email_id),
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
                            message_id=self.message_id(ev.email_id),
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

    async def sent(self, email_id: str, message_id: str) -> None:
        """One email the relay accepted (a retry), and its `email.sent`."""
        emails = _EMAILS
        sent_at = datetime.now(UTC)
        async with self.service.sessionmaker() as s, s.begin():
            row = (
                await s.execute(
                    update(emails)
                    .where(emails.c.email_id == email_id)
                    .values(
                        status=EmailStatus.SENT,
                        sent_at=sent_at,
                        message_id=message_id,
                        error=None,
                    )
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

    async def uncertain(
        self, s: AsyncSession, row: OutgoingEmail, reason: str = STOPPED_WHILE_SENDING
    ) -> None:
        """A mailer died during this message's SMTP conversation (or it ended in a way
        that says nothing of the message): it may or may not have gone out. Sending again
        could make a duplicate, so a person decides."""
        await self._fail(s, row, EmailStatus.UNCERTAIN, reason)

    async def uncertain_if_sending(self, email_id: str, reason: str) -> None:
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is not None and may_become(row.status, EmailStatus.UNCERTAIN):
                await self.uncertain(s, row, reason)

    async def retry_later(self, email_id: str, attempts: int, reason: str) -> None:
        if self.retries.gives_up(attempts):
            await self.failed(email_id, self.retries.give_up_reason(attempts, reason))
            return
        delay = self.retries.delay(attempts)
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is None:
                return
            row.status = EmailStatus.RETRYING
            row.attempts = attempts
            row.error = reason
            row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
        log.warning("mailer: %s not sent (%s); retrying in %.0fs", email_id, reason, delay)

    async def failed(self, email_id: str, reason: str) -> None:
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is None:
                return
            await self._fail(s, row, EmailStatus.FAILED, reason)
        log.warning("mailer: %s failed: %s", email_id, reason)

    async def _fail(
        self, s: AsyncSession, row: OutgoingEmail, status: EmailStatus, reason: str
    ) -> None:
        """Record the email as failed or uncertain, and tell envelope: either way it was
        not (known to be) delivered."""
        row.status = status
        row.error = reason
        await self.service.publish(
            s,
            EmailFailed(
                firm_id=row.firm_id,
                email_id=row.email_id,
                envelope_id=row.envelope_id,
                reason=reason,
            ),
        )
