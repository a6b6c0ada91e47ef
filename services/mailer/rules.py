"""The mailer's rules as plain functions over plain data: an outgoing email's states and the
moves between them, which failures are permanent and which may pass, and how long to wait
before trying again (and when to stop).

Nothing here touches the database, the bus, HTTP or SMTP: the postman does the I/O and asks
these rules what an outcome means.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import aiosmtplib
import httpx


class EmailStatus(StrEnum):
    """An outgoing email's state, as stored in `emails.status`. It stays inside the mailer:
    other services hear `email.sent` or `email.failed`."""

    PENDING = "pending"  # recorded, its SMTP conversation not started
    SENDING = "sending"  # committed before SMTP starts: a crash from here on is uncertain
    RETRYING = "retrying"  # not sent for a reason that may pass; tried again later
    SENT = "sent"  # the relay accepted it
    FAILED = "failed"  # refused for good, or given up on
    UNCERTAIN = "uncertain"  # may or may not have gone out: a person decides


# The moves an email may make. Only `sending` becomes `uncertain` (a conversation whose end
# was not seen), and only what waits (`pending`, `retrying`) starts a conversation, so no
# email is ever sent twice by the mailer itself.
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
    """What an exception out of an SMTP conversation says about the message: refused for
    good, not sent for now, or (None) nothing: it is not an answer of the relay's, so
    whether the message went out is not known."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return PermanentFailure(f"every recipient was refused: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 500 <= exc.code < 600:
            return PermanentFailure(f"the relay refused the message: {exc.code} {exc.message}")
        return TransientFailure(f"the relay answered {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError):
        return TransientFailure(f"the relay is not reachable: {exc}")
    return None


def uncertain_reason(exc: BaseException) -> str:
    """The error recorded for an email whose conversation ended in a way `smtp_failure`
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
