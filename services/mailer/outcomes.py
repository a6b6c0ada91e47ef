"""What became of an email, recorded: each recipient's answer from the relay, the email's row
moved to its new state and, where other services must hear of it, `email.sent` or
`email.failed` staged in the same transaction. Which state follows from the recipients'
answers is `services.mailer.rules.email_verdict`'s to say."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.mailer.message import message_id_for
from services.mailer.models import EmailRecipient, OutgoingEmail
from services.mailer.rules import (
    STOPPED_WHILE_SENDING,
    CopyAnswer,
    EmailStatus,
    RecipientStatus,
    RetryPolicy,
    email_verdict,
    failure_reason,
    may_become,
    may_send_copy,
    waiting_reason,
)
from services.mailer.settings import MailerSettings
from shared.events import EmailFailed, EmailRequested, EmailSent, Event
from shared.runtime import Service

log = logging.getLogger(__name__)

MAX_REPLY = 2000


@dataclass
class Attempt:
    """One SMTP attempt at an email committed as `sending`: the relay's answer for each copy
    tried (by `n`), and when it accepted each it accepted. `unexpected`: the attempt ended
    in a way that says nothing of the copy it was sending (the email becomes uncertain)."""

    email_id: str
    attempts: int
    answers: dict[int, CopyAnswer] = field(default_factory=dict)
    accepted_at: dict[int, datetime] = field(default_factory=dict)
    unexpected: str | None = None
    cause: EmailRequested | None = None  # the request, for the trace of what is published


_EMAILS = OutgoingEmail.__table__
_COPIES = EmailRecipient.__table__


@dataclass
class _Email:
    """What settling reads and writes of an `emails` row."""

    email_id: str
    firm_id: str
    envelope_id: str | None
    status: str
    attempts: int
    error: str | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    message_id: str | None
    changed: bool = False

    def params(self) -> dict[str, Any]:
        return {
            "b_email_id": self.email_id,
            "b_status": self.status,
            "b_attempts": self.attempts,
            "b_error": self.error,
            "b_next": self.next_attempt_at,
            "b_sent_at": self.sent_at,
            "b_message_id": self.message_id,
        }


@dataclass
class _Copy:
    """What settling reads and writes of an `email_recipients` row."""

    email_id: str
    n: int
    address: str
    status: str
    reply: str | None
    accepted_at: datetime | None
    changed: bool = False

    def params(self) -> dict[str, Any]:
        return {
            "b_email_id": self.email_id,
            "b_n": self.n,
            "b_status": self.status,
            "b_reply": self.reply,
            "b_accepted_at": self.accepted_at,
        }


# Built once (statements are cached by their construction), run with many rows.
_ids = bindparam("ids", expanding=True)
_READ_EMAILS = select(
    *(
        _EMAILS.c[name]
        for name in (
            "email_id",
            "firm_id",
            "envelope_id",
            "status",
            "attempts",
            "error",
            "next_attempt_at",
            "sent_at",
            "message_id",
        )
    )
).where(_EMAILS.c.email_id.in_(_ids))
_READ_COPIES = select(
    *(_COPIES.c[name] for name in ("email_id", "n", "address", "status", "reply", "accepted_at"))
).where(_COPIES.c.email_id.in_(_ids))
_WRITE_EMAIL = (
    update(_EMAILS)
    .where(_EMAILS.c.email_id == bindparam("b_email_id"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        error=bindparam("b_error"),
        next_attempt_at=bindparam("b_next"),
        sent_at=bindparam("b_sent_at"),
        message_id=bindparam("b_message_id"),
    )
)
_WRITE_COPY = (
    update(_COPIES)
    .where(_COPIES.c.email_id == bindparam("b_email_id"), _COPIES.c.n == bindparam("b_n"))
    .values(
        status=bindparam("b_status"),
        reply=bindparam("b_reply"),
        accepted_at=bindparam("b_accepted_at"),
    )
)


class Outcomes:
    def __init__(self, service: Service, settings: MailerSettings) -> None:
        self.service = service
        self.settings = settings
        self.retries = RetryPolicy(settings.max_attempts, settings.retry_base_seconds)

    def message_id(self, email_id: str) -> str:
        return message_id_for(email_id, self.settings.message_id_domain)

    async def settle(self, attempts: list[Attempt]) -> None:
        """A batch's attempts (or one retry's): one transaction for them all, a statement
        per kind of row (a Send All settles hundreds)."""
        if not attempts:
            return
        ids = [a.email_id for a in attempts]
        staged: list[tuple[Event, EmailRequested]] = []
        async with self.service.sessionmaker() as s, s.begin():
            emails = {
                row.email_id: _Email(*row) for row in await s.execute(_READ_EMAILS, {"ids": ids})
            }
            copies: dict[str, dict[int, _Copy]] = defaultdict(dict)
            for row in await s.execute(_READ_COPIES, {"ids": ids}):
                copies[row.email_id][row.n] = _Copy(*row)
            for attempt in attempts:
                email = emails.get(attempt.email_id)
                if email is None:
                    continue
                ev = self._settle_one(email, copies[attempt.email_id], attempt)
                if ev is None:
                    continue
                if attempt.cause is not None:
                    staged.append((ev, attempt.cause))
                else:
                    await self.service.publish(s, ev)
            changed_copies = [
                c.params() for cs in copies.values() for c in cs.values() if c.changed
            ]
            if changed_copies:
                await s.execute(_WRITE_COPY, changed_copies)
            changed = [e.params() for e in emails.values() if e.changed]
            if changed:
                await s.execute(_WRITE_EMAIL, changed)
            if staged:
                await self.service.publish_many(s, staged)
        sent = sum(1 for e in emails.values() if e.changed and e.status == EmailStatus.SENT)
        if sent:
            log.info("mailer: %d of %d emails sent", sent, len(attempts))

    def _settle_one(self, row: _Email, copies: dict[int, _Copy], attempt: Attempt) -> Event | None:
        accepted_now: list[_Copy] = []  # accepted by this attempt: not announced yet
        for n, answer in attempt.answers.items():
            copy = copies.get(n)
            if copy is None or not may_send_copy(copy.status):
                continue  # never moves an answer already final
            copy.changed = True
            copy.status = answer.status
            copy.reply = answer.reply[:MAX_REPLY]
            if answer.status == RecipientStatus.ACCEPTED:
                copy.accepted_at = attempt.accepted_at.get(n) or datetime.now(UTC)
                accepted_now.append(copy)
        if row.status != EmailStatus.SENDING:
            return None  # moved meanwhile (found `sending` at a start): left as it is
        row.changed = True
        if attempt.unexpected is not None:
            log.error("mailer: %s is uncertain: %s", row.email_id, attempt.unexpected)
            return self._failed_event(row, EmailStatus.UNCERTAIN, attempt.unexpected, {})
        gives_up = self.retries.gives_up(attempt.attempts)
        verdict = email_verdict({n: c.status for n, c in copies.items()}, gives_up=gives_up)
        row.attempts = attempt.attempts
        if verdict == EmailStatus.RETRYING:
            deferred = {
                c.address: c.reply or "" for c in _ordered(copies) if may_send_copy(c.status)
            }
            delay = self.retries.delay(attempt.attempts)
            row.status = EmailStatus.RETRYING
            row.error = waiting_reason(deferred)[:MAX_REPLY]
            row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
            log.warning("mailer: %s waits (%s); retrying in %.0fs", row.email_id, row.error, delay)
            if not accepted_now:
                return None
            # Some recipients have it while another waits: the page hears of them now, not
            # when the last one is settled (which may take the retries' hours).
            return self._sent_event(row, accepted_now, {})
        for c in _ordered(copies):
            if may_send_copy(c.status):  # retries used up: refused for good
                c.changed = True
                c.status = RecipientStatus.REFUSED
                reason = c.reply or "not sent"
                c.reply = self.retries.give_up_reason(attempt.attempts, reason)[:MAX_REPLY]
        refused = {
            c.address: c.reply or ""
            for c in _ordered(copies)
            if c.status == RecipientStatus.REFUSED
        }
        if verdict == EmailStatus.FAILED:
            return self._failed_event(row, EmailStatus.FAILED, failure_reason(refused), refused)
        accepted = [c for c in _ordered(copies) if c.status == RecipientStatus.ACCEPTED]
        row.status = EmailStatus.SENT
        row.sent_at = max(c.accepted_at or datetime.now(UTC) for c in accepted)
        row.error = failure_reason(refused)[:MAX_REPLY] if refused else None
        log.debug("mailer: sent %s", row.email_id)  # a Send All logs one line, below
        # Those accepted by earlier attempts were announced then.
        return self._sent_event(row, sorted(accepted_now, key=lambda c: c.n), refused)

    def _sent_event(self, row: _Email, accepted: list[_Copy], refused: dict[str, str]) -> EmailSent:
        row.message_id = self.message_id(row.email_id)
        at = [c.accepted_at for c in accepted if c.accepted_at is not None]
        return EmailSent(
            firm_id=row.firm_id,
            email_id=row.email_id,
            envelope_id=row.envelope_id,
            message_id=row.message_id,
            to=[c.address for c in accepted],
            sent_at=max(at) if at else (row.sent_at or datetime.now(UTC)),
            refused=refused,
        )

    def _failed_event(
        self, row: _Email, status: EmailStatus, reason: str, refused: dict[str, str]
    ) -> EmailFailed:
        row.status = status
        row.error = reason[:MAX_REPLY]
        log.warning("mailer: %s %s: %s", row.email_id, status, reason)
        return EmailFailed(
            firm_id=row.firm_id,
            email_id=row.email_id,
            envelope_id=row.envelope_id,
            reason=row.error,
            refused=refused,
        )

    async def uncertain(
        self, s: AsyncSession, row: OutgoingEmail, reason: str = STOPPED_WHILE_SENDING
    ) -> None:
        """A mailer died during this message's SMTP conversation (or it ended in a way
        that says nothing of the message): it may or may not have gone out. Sending again
        could make a duplicate, so a person decides."""
        await self._fail(s, row, EmailStatus.UNCERTAIN, reason)

    async def retry_later(self, email_id: str, attempts: int, reason: str) -> None:
        """Not sent, before any SMTP (the content not reachable): tried again later."""
        if self.retries.gives_up(attempts):
            await self.failed(email_id, self.retries.give_up_reason(attempts, reason))
            return
        delay = self.retries.delay(attempts)
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is None or not may_become(row.status, EmailStatus.RETRYING):
                return
            row.status = EmailStatus.RETRYING
            row.attempts = attempts
            row.error = reason
            row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
        log.warning("mailer: %s not sent (%s); retrying in %.0fs", email_id, reason, delay)

    async def failed(self, email_id: str, reason: str) -> None:
        """Not sent, before any SMTP, and never will be (content gone, an address no
        message can carry, attachments too large)."""
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(OutgoingEmail, email_id)
            if row is None or not may_become(row.status, EmailStatus.FAILED):
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


def _ordered(copies: dict[int, _Copy]) -> list[_Copy]:
    return [copies[n] for n in sorted(copies)]
