"""Recording what delivery status notifications say of each recipient's copy.

A notification is read (`services.mailer.dsn`), placed (which email, which copy), and
recorded on the copy's `email_recipients` row: its bounce columns, or `delivered_at`; the
event other services hear of it (`email.bounced`, `email.delivered`) is staged in the same
transaction. Each change is one conditional UPDATE, and the event is staged only when it
changed the row, so the same notification taken twice (or by two intakes at once) is
published once:

- a hard bounce is recorded unless the copy already bounced hard (it replaces a soft one);
- a soft bounce (delayed, or failed for now) only on a copy with no bounce and not delivered;
- a delivery once, and never over a hard bounce.

A hard bounce suppresses the address, so it is believed only from a report that proves
itself: one placed by a signed VERP address (`services.mailer.verp`), or one whose
Final-Recipient is the copy's own address. A report placed only by its ENVID or Message-ID
(text anyone may write, knowing an email id) that says "failed" of another address, or of
none, is dropped with its reason; soft bounces and deliveries are recorded as before.

What cannot be placed (not a DSN, not about an email of ours, an email or copy this mailer
does not know) is logged and dropped: the intakes answer it like any other, so a sender
never retries it and nothing crashes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.mailer import dsn
from services.mailer.models import EmailRecipient, OutgoingEmail
from services.mailer.settings import MailerSettings
from shared.events import BounceKind, EmailBounced, EmailDelivered, EmailTracked, utcnow
from shared.runtime import Service

log = logging.getLogger(__name__)

_RECIPIENTS = EmailRecipient.__table__
# Event ids derived from what they say, so that anything downstream that sees one twice
# (a replayed outbox row) sees the same id.
_EVENT_NS = uuid.UUID("6b0d7c52-2f4e-4a53-9d0e-5b8f1c3a7e21")


def bounce_domain_of(settings: MailerSettings) -> str:
    return settings.bounce_domain or settings.mail_from.rpartition("@")[2]


@dataclass
class Taken:
    """What one incoming message did: the events it staged, and what it dropped and why."""

    events: list[EmailTracked] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


class Bounces:
    def __init__(
        self,
        service: Service,
        settings: MailerSettings,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.service = service
        self.settings = settings
        self.clock = clock

    async def take(self, raw: bytes, rcpt_tos: Sequence[str] = ()) -> Taken:
        """Read and record one incoming message; `rcpt_tos` are the addresses it was sent to
        when the intake knows them (SMTP's RCPT TO). Raises only when the database fails,
        so that the intake can answer "try again later"."""
        taken = Taken()
        report = dsn.parse(raw)
        if isinstance(report, dsn.NotADsn):
            log.info("bounces: ignored a message to %s: %s", list(rcpt_tos), report.reason)
            taken.dropped.append(report.reason)
            return taken
        placed = dsn.locate(
            report,
            rcpt_tos=rcpt_tos,
            bounce_local=self.settings.bounce_local,
            bounce_domain=bounce_domain_of(self.settings),
            message_id_domain=self.settings.message_id_domain,
            verp_secret=self.settings.tracking_secret,
        )
        if not placed:
            reason = "a delivery status notification about no email of ours"
            log.warning("bounces: dropped %s (to %s)", reason, list(rcpt_tos))
            taken.dropped.append(reason)
            return taken
        async with self.service.sessionmaker() as s, s.begin():
            for where in placed:
                outcome = await self._record(s, where)
                if isinstance(outcome, str):
                    log.warning("bounces: dropped a notification: %s", outcome)
                    taken.dropped.append(outcome)
                elif outcome is not None:
                    await self.service.publish(s, outcome)
                    taken.events.append(outcome)
        for ev in taken.events:
            log.info("bounces: %s for %s of %s", ev.routing_key, ev.recipient, ev.email_id)
        return taken

    async def _record(self, s: AsyncSession, where: dsn.Located) -> EmailTracked | str | None:
        """The event a notification calls for, once it changed the copy's row; None when
        it changes nothing (heard before); a reason when it cannot be recorded."""
        note = where.notification
        email = await s.get(OutgoingEmail, where.email_id)
        if email is None:
            return f"unknown email {where.email_id!r} ({where.found_by})"
        copy = await self._copy(s, where)
        if copy is None:
            which = where.n if where.n is not None else repr(where.address)
            return f"no recipient {which} in email {where.email_id!r}"
        now = self.clock()
        key = (_RECIPIENTS.c.email_id == copy.email_id) & (_RECIPIENTS.c.n == copy.n)
        not_hard = or_(_RECIPIENTS.c.bounce_kind.is_(None), _RECIPIENTS.c.bounce_kind != "hard")
        common = {
            "firm_id": email.firm_id,
            "email_id": email.email_id,
            "envelope_id": email.envelope_id,
            "recipient": copy.address,
            "at": now,
        }
        kind = note.kind
        if kind is BounceKind.hard and not where.signed:
            said = (note.final_recipient or "").strip().lower()
            if said != copy.address.strip().lower():
                return (
                    f"a hard bounce of copy {copy.n} of {where.email_id!r} found by "
                    f"{where.found_by} without a signed return path, whose Final-Recipient "
                    f"({note.final_recipient or 'none'}) is not the copy's address"
                )
        if kind is not None:
            if kind is BounceKind.hard:
                unless = not_hard
            else:
                unless = and_(
                    _RECIPIENTS.c.bounce_kind.is_(None), _RECIPIENTS.c.delivered_at.is_(None)
                )
            status = (note.status or "")[:20] or None
            changed = await s.execute(
                update(_RECIPIENTS)
                .where(key, unless)
                .values(
                    bounced_at=now,
                    bounce_kind=str(kind),
                    bounce_status=status,
                    bounce_reason=note.reason,
                )
            )
            if changed.rowcount != 1:
                return None
            return EmailBounced(
                event_id=_event_id(copy, f"bounced.{kind}"),
                kind=kind,
                status=status,
                reason=note.reason,
                **common,
            )
        if note.delivered:
            changed = await s.execute(
                update(_RECIPIENTS)
                .where(key, _RECIPIENTS.c.delivered_at.is_(None), not_hard)
                .values(delivered_at=now)
            )
            if changed.rowcount != 1:
                return None
            return EmailDelivered(event_id=_event_id(copy, "delivered"), **common)
        return f"{note.action}: no news of {copy.address} ({where.email_id})"

    async def _copy(self, s: AsyncSession, where: dsn.Located) -> EmailRecipient | None:
        """The copy a notification is about: by its place in the email when the report
        named it, else by its address."""
        if where.n is not None:
            return await s.get(EmailRecipient, (where.email_id, where.n))
        if not where.address:
            return None
        wanted = where.address.strip().lower()
        copies = await s.scalars(
            select(EmailRecipient)
            .where(EmailRecipient.email_id == where.email_id)
            .order_by(EmailRecipient.n)
        )
        return next((c for c in copies if c.address.strip().lower() == wanted), None)


def _event_id(copy: EmailRecipient, what: str) -> uuid.UUID:
    return uuid.uuid5(_EVENT_NS, f"{copy.email_id}.{copy.n}.{what}")
