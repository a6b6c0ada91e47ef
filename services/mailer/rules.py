"""The mailer's rules as plain functions over plain data: an outgoing email's states and the
moves between them, which failures are permanent and which may pass, and how long to wait
before trying again (and when to stop).

Nothing here touches the database, the bus, HTTP or SMTP: the postman does the I/O and asks
these rules what an outcome means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib
import httpx


class EmailStatus(StrEnum):
    """An outgoing email's state, as stored in `emails.status`. It stays inside the mailer:
    other services hear `email.sent` or `email.failed`, once per email, when no recipient
    is still waiting (`email_verdict`)."""

    PENDING = "pending"  # recorded, its SMTP conversations not started
    SENDING = "sending"  # committed before SMTP starts: a crash from here on is uncertain
    RETRYING = "retrying"  # some recipient deferred (4xx, relay down): tried again later
    SENT = "sent"  # at least one recipient accepted, none still deferred
    FAILED = "failed"  # no recipient accepted: refused for good, or given up on
    UNCERTAIN = "uncertain"  # may or may not have gone out: a person decides


# The moves an email may make. Only `sending` becomes `uncertain` (a conversation whose end
# was not seen), and only what waits (`pending`, `retrying`) starts a conversation, so no
# email is ever sent twice by the mailer itself. Within an email, each recipient's copy has
# its own SMTP transaction and its own state (`RecipientStatus`): a retry sends only the
# copies still waiting, never one the relay accepted or refused for good.
TRANSITIONS: dict[EmailStatus, frozenset[EmailStatus]] = {
    EmailStatus.PENDING: frozenset({EmailStatus.SENDING, EmailStatus.RETRYING, EmailStatus.FAILED}),
    EmailStatus.SENDING: frozenset(
        {EmailStatus.SENT, EmailStatus.RETRYING, EmailStatus.FAILED, EmailStatus.UNCERTAIN}
    ),
    EmailStatus.RETRYING: frozenset(
        {EmailStatus.SENDING, EmailStatus.RETRYING, EmailStatus.FAILED}
    ),
    EmailStatus.SENT: frozenset(),
    EmailStatus.FAILED: frozenset(),
    EmailStatus.UNCERTAIN: frozenset(),
}


def may_become(status: str, to: EmailStatus) -> bool:
    """Whether an email in `status` may move to `to`."""
    return status in TRANSITIONS and to in TRANSITIONS[EmailStatus(status)]


def may_start_sending(status: str) -> bool:
    """Whether an email in `status` may start an SMTP conversation now."""
    return may_become(status, EmailStatus.SENDING)


class RecipientStatus(StrEnum):
    """The relay's answer for one recipient's copy, as stored in `email_recipients.status`."""

    PENDING = "pending"  # not tried yet
    ACCEPTED = "accepted"  # the relay took the copy (its reply is kept)
    REFUSED = "refused"  # a 5xx answer, or given up on: never tried again
    DEFERRED = "deferred"  # a 4xx answer, the relay not reachable: tried again with the email


RECIPIENT_TRANSITIONS: dict[RecipientStatus, frozenset[RecipientStatus]] = {
    RecipientStatus.PENDING: frozenset(
        {RecipientStatus.ACCEPTED, RecipientStatus.REFUSED, RecipientStatus.DEFERRED}
    ),
    RecipientStatus.DEFERRED: frozenset(
        {RecipientStatus.ACCEPTED, RecipientStatus.REFUSED, RecipientStatus.DEFERRED}
    ),
    RecipientStatus.ACCEPTED: frozenset(),
    RecipientStatus.REFUSED: frozenset(),
}


def may_send_copy(status: str) -> bool:
    """Whether a recipient's copy in `status` may go to the relay (again)."""
    return status in (RecipientStatus.PENDING, RecipientStatus.DEFERRED)


def email_verdict(recipients: Mapping[int, str], *, gives_up: bool) -> EmailStatus:
    """What an email becomes once an attempt's answers are recorded, from each recipient's
    state: `retrying` while a copy is still waiting (unless the retries are used up);
    otherwise `sent` when the relay accepted at least one copy, else `failed`. A recipient
    refused for good never holds back the others; one deferred keeps the email `retrying`,
    but the copies accepted meanwhile are announced at once (`email.sent` for them: see
    services.mailer.outcomes), and the refused ones with the last answer."""
    statuses = set(recipients.values())
    waiting = bool(statuses & {RecipientStatus.PENDING, RecipientStatus.DEFERRED})
    if waiting and not gives_up:
        return EmailStatus.RETRYING
    if RecipientStatus.ACCEPTED in statuses:
        return EmailStatus.SENT
    return EmailStatus.FAILED


def first_status(message_ready: bool) -> EmailStatus:
    """The state a new email is committed in: `sending` when its message is built and SMTP
    starts right after the commit, else `pending` (its failure is recorded next)."""
    return EmailStatus.SENDING if message_ready else EmailStatus.PENDING


# --- failures -----------------------------------------------------------------------------


class TransientFailure(Exception):
    """Not sent, for a reason that may pass (the relay down, a 4xx answer): try again later."""


class PermanentFailure(Exception):
    """Not sent, and trying again would not change that (a 5xx answer, content gone)."""


UNCERTAIN_ADVICE = "check with the client before re-sending"
STOPPED_WHILE_SENDING = f"the mailer stopped while sending; {UNCERTAIN_ADVICE}"


def smtp_failure(exc: BaseException) -> TransientFailure | PermanentFailure | None:
    """What an exception out of one SMTP transaction for a whole message (every recipient
    at once, as `build_message` writes it) says about it: refused for good, not sent for
    now, or (None) nothing: it is not an answer of the relay's, so whether the message went
    out is not known. The postman sends a copy per recipient and reads each with
    `copy_failure`."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return PermanentFailure(f"every recipient was refused: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 500 <= exc.code < 600:
            return PermanentFailure(f"the relay refused the message: {exc.code} {exc.message}")
        return TransientFailure(f"the relay answered {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
        return TransientFailure(f"the relay is not reachable: {exc}")
    return None


@dataclass(frozen=True)
class CopyAnswer:
    """The relay's answer for one recipient's copy: its new state and the reply, code
    included. `connection`: the relay was not reached or the connection broke (no SMTP
    reply), which says the same of every copy after it in this attempt."""

    status: RecipientStatus
    reply: str
    connection: bool = False


def accepted(code: int, message: str) -> CopyAnswer:
    return CopyAnswer(RecipientStatus.ACCEPTED, f"{code} {message}".strip())


def copy_failure(exc: BaseException) -> CopyAnswer | None:
    """What an exception out of one copy's SMTP transaction says about that recipient:
    refused for good (5xx at MAIL, RCPT or DATA), deferred (any other reply, or the relay
    not reachable), or (None) nothing: not an answer of the relay's, so whether the copy
    went out is not known."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = f"{exc.code} {exc.message}".strip()
        if 500 <= exc.code < 600:
            return CopyAnswer(RecipientStatus.REFUSED, reply)
        return CopyAnswer(RecipientStatus.DEFERRED, reply)
    if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
        return CopyAnswer(
            RecipientStatus.DEFERRED, f"the relay is not reachable: {exc}", connection=True
        )
    return None


def waiting_reason(deferred: Mapping[str, str]) -> str:
    """The error an email waiting for a retry shows: each deferred recipient's reply."""
    return "; ".join(f"{address}: {reply}" for address, reply in deferred.items())


def failure_reason(refused: Mapping[str, str]) -> str:
    """`email.failed`'s reason when no recipient accepted the email, with the relay's replies."""
    if len(refused) == 1:
        [(address, reply)] = refused.items()
        return f"the relay refused the message to {address}: {reply}"
    replies = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
    return f"every recipient was refused: {replies}"


def attachments_over_limit(total_bytes: int, limit_bytes: int) -> PermanentFailure | None:
    """Attachments too large for mail (most providers stop near 25 MB, base64 adds a third):
    a failure at once, before any SMTP, that says what to do instead."""
    if total_bytes <= limit_bytes:
        return None
    return PermanentFailure(
        f"the attachments are {total_bytes / 1e6:.1f} MB, over the {limit_bytes / 1e6:g} MB "
        "limit; send this envelope by secure link"
    )


def uncertain_reason(exc: BaseException) -> str:
    """The error recorded for an email whose conversation ended in a way `copy_failure`
    cannot read."""
    reason = f"sending ended unexpectedly ({exc!r})"[:1900]
    return f"{reason}; {UNCERTAIN_ADVICE}"


def unreachable_content(exc: httpx.TransportError) -> TransientFailure:
    """The envelope service could not be asked for an email's content: it may be back soon."""
    return TransientFailure(f"content not reachable: {exc}")


def fetch_failure(status_code: int) -> TransientFailure | PermanentFailure | None:
    """What the envelope service's answer to a content fetch says: None when it carries the
    content; a 404 means the content is gone for good, any other error may pass."""
    if status_code == 404:
        return PermanentFailure("the email's content no longer exists")
    if status_code >= 400:
        return TransientFailure(f"content fetch answered {status_code}")
    return None


# --- retrying -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: `base_seconds` after the first attempt, doubling after each
    further one, until `max_attempts` attempts were made."""

    max_attempts: int
    base_seconds: float

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def delay(self, attempts: int) -> float:
        """Seconds to wait after `attempts` attempts (0: the email never reached SMTP)."""
        return self.base_seconds * (2 ** max(0, attempts - 1))

    def give_up_reason(self, attempts: int, reason: str) -> str:
        return f"gave up after {attempts} attempts: {reason}"
