"""The mailer's rules on their own: no broker, database, HTTP or SMTP server."""

from __future__ import annotations

import aiosmtplib
import httpx
import pytest

from services.mailer.rules import (
    RECIPIENT_TRANSITIONS,
    TRANSITIONS,
    CopyAnswer,
    EmailStatus,
    PermanentFailure,
    RecipientStatus,
    RetryPolicy,
    TransientFailure,
    accepted,
    attachments_over_limit,
    copy_failure,
    email_verdict,
    failure_reason,
    fetch_failure,
    first_status,
    may_become,
    may_send_copy,
    may_start_sending,
    smtp_failure,
    uncertain_reason,
    unreachable_content,
    waiting_reason,
)

S = EmailStatus


def test_statuses_are_the_strings_stored_in_the_emails_table() -> None:
    assert [str(s) for s in S] == ["pending", "sending", "retrying", "sent", "failed", "uncertain"]
    assert S("sending") is S.SENDING
    assert set(TRANSITIONS) == set(S)


def test_only_a_waiting_email_starts_an_smtp_conversation() -> None:
    assert {s for s in S if may_start_sending(s)} == {S.PENDING, S.RETRYING}
    assert not may_start_sending("no such status")


def test_only_an_email_being_sent_can_become_uncertain() -> None:
    assert {s for s in S if may_become(s, S.UNCERTAIN)} == {S.SENDING}


def test_sent_failed_and_uncertain_are_final() -> None:
    for final in (S.SENT, S.FAILED, S.UNCERTAIN):
        assert not any(may_become(final, to) for to in S), final


def test_only_an_smtp_conversation_ends_in_sent() -> None:
    assert {s for s in S if may_become(s, S.SENT)} == {S.SENDING}


def test_an_email_is_committed_sending_only_when_its_message_is_built() -> None:
    assert first_status(True) is S.SENDING
    assert first_status(False) is S.PENDING


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b.test")]
            ),
            PermanentFailure,
            "every recipient was refused",
        ),
        (
            aiosmtplib.SMTPResponseException(550, "5.1.1 no such user"),
            PermanentFailure,
            "the relay refused the message: 550 5.1.1 no such user",
        ),
        (
            aiosmtplib.SMTPDataError(554, "5.7.1 spam"),
            PermanentFailure,
            "the relay refused the message: 554 5.7.1 spam",
        ),
        (
            aiosmtplib.SMTPResponseException(599, "odd"),
            PermanentFailure,
            "the relay refused the message: 599",
        ),
        (
            aiosmtplib.SMTPResponseException(451, "4.3.0 try again later"),
            TransientFailure,
            "the relay answered 451 4.3.0 try again later",
        ),
        (
            aiosmtplib.SMTPResponseException(421, "closing"),
            TransientFailure,
            "the relay answered 421",
        ),
        (
            aiosmtplib.SMTPResponseException(600, "beyond the 5xx range"),
            TransientFailure,
            "the relay answered 600",
        ),
        (
            aiosmtplib.SMTPConnectError("refused"),
            TransientFailure,
            "the relay is not reachable: refused",
        ),
        (
            aiosmtplib.SMTPServerDisconnected("gone"),
            TransientFailure,
            "the relay is not reachable",
        ),
        (ConnectionRefusedError("nope"), TransientFailure, "the relay is not reachable"),
        (TimeoutError(), TransientFailure, "the relay is not reachable"),
    ],
)
def test_what_an_smtp_exception_says_about_the_message(
    exc: Exception, kind: type[Exception], reason: str
) -> None:
    failure = smtp_failure(exc)
    assert type(failure) is kind
    assert str(failure).startswith(reason)


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), ValueError("bad address"), KeyError()])
def test_an_exception_that_is_no_answer_of_the_relay_says_nothing(exc: Exception) -> None:
    assert smtp_failure(exc) is None


def test_an_uncertain_email_says_what_happened_and_what_to_do() -> None:
    reason = uncertain_reason(RuntimeError("a bug between us and the relay"))
    assert reason == (
        "sending ended unexpectedly (RuntimeError('a bug between us and the relay')); "
        "check with the client before re-sending"
    )
    long = uncertain_reason(RuntimeError("x" * 5000))
    assert len(long) < 2000 and long.endswith("check with the client before re-sending")


def test_what_a_content_fetch_answer_says() -> None:
    assert fetch_failure(200) is None
    gone = fetch_failure(404)
    assert isinstance(gone, PermanentFailure) and "no longer exists" in str(gone)
    for status in (400, 401, 409, 500, 503):
        failure = fetch_failure(status)
        assert isinstance(failure, TransientFailure), status
        assert str(failure) == f"content fetch answered {status}"
    down = unreachable_content(httpx.ConnectError("connection refused"))
    assert isinstance(down, TransientFailure)
    assert str(down) == "content not reachable: connection refused"


def test_the_backoff_doubles_from_the_base_after_each_attempt() -> None:
    policy = RetryPolicy(max_attempts=6, base_seconds=15.0)
    # 0: a failure before SMTP (content not reachable when the request came).
    assert [policy.delay(n) for n in range(6)] == [15, 15, 30, 60, 120, 240]


def test_the_mailer_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=6, base_seconds=15.0)
    assert [n for n in range(10) if policy.gives_up(n)] == [6, 7, 8, 9]
    assert policy.give_up_reason(6, "the relay answered 451 x") == (
        "gave up after 6 attempts: the relay answered 451 x"
    )


def test_the_default_settings_give_about_eight_minutes_of_retries() -> None:
    from services.mailer.settings import MailerSettings

    st = MailerSettings.model_fields
    policy = RetryPolicy(st["max_attempts"].default, st["retry_base_seconds"].default)
    waits = []
    attempts = 1
    while not policy.gives_up(attempts):
        waits.append(policy.delay(attempts))
        attempts += 1
    assert waits == [15, 30, 60, 120, 240]
    assert sum(waits) == 465


# --- each recipient's copy ------------------------------------------------------------------

R = RecipientStatus


def test_recipient_statuses_are_the_strings_stored_in_email_recipients() -> None:
    assert [str(s) for s in R] == ["pending", "accepted", "refused", "deferred"]
    assert set(RECIPIENT_TRANSITIONS) == set(R)


def test_only_a_copy_still_waiting_goes_to_the_relay() -> None:
    assert {s for s in R if may_send_copy(s)} == {R.PENDING, R.DEFERRED}
    assert {s for s in R if RECIPIENT_TRANSITIONS[s]} == {R.PENDING, R.DEFERRED}
    assert not may_send_copy("no such status")


@pytest.mark.parametrize(
    ("recipients", "gives_up", "verdict"),
    [
        ({0: R.ACCEPTED}, False, S.SENT),
        ({0: R.ACCEPTED, 1: R.REFUSED}, False, S.SENT),  # a refusal holds nothing back
        ({0: R.REFUSED}, False, S.FAILED),
        ({0: R.REFUSED, 1: R.REFUSED}, False, S.FAILED),
        ({0: R.ACCEPTED, 1: R.DEFERRED}, False, S.RETRYING),  # sent waits for the deferred
        ({0: R.REFUSED, 1: R.DEFERRED}, False, S.RETRYING),
        ({0: R.DEFERRED}, False, S.RETRYING),
        ({0: R.PENDING}, False, S.RETRYING),
        ({0: R.ACCEPTED, 1: R.DEFERRED}, True, S.SENT),  # retries used up
        ({0: R.REFUSED, 1: R.DEFERRED}, True, S.FAILED),
        ({0: R.DEFERRED}, True, S.FAILED),
        ({}, False, S.FAILED),
    ],
)
def test_an_email_is_settled_once_no_recipient_waits(
    recipients: dict[int, RecipientStatus], gives_up: bool, verdict: EmailStatus
) -> None:
    assert email_verdict(recipients, gives_up=gives_up) is verdict


def test_every_verdict_is_a_move_the_email_may_make_from_sending() -> None:
    for verdict in (S.SENT, S.FAILED, S.RETRYING):
        assert may_become(S.SENDING, verdict)


@pytest.mark.parametrize(
    ("exc", "status", "reply", "connection"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(550, "5.1.1 no such user", "a@b.test")]
            ),
            R.REFUSED,
            "550 5.1.1 no such user",
            False,
        ),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(452, "4.2.2 mailbox full", "a@b.test")]
            ),
            R.DEFERRED,
            "452 4.2.2 mailbox full",
            False,
        ),
        (aiosmtplib.SMTPSenderRefused(553, "5.7.1 sender", "b@ep.test"), R.REFUSED, "553", False),
        (aiosmtplib.SMTPDataError(554, "5.7.1 spam"), R.REFUSED, "554 5.7.1 spam", False),
        (aiosmtplib.SMTPDataError(451, "4.3.0 later"), R.DEFERRED, "451 4.3.0 later", False),
        (aiosmtplib.SMTPResponseException(421, "closing"), R.DEFERRED, "421 closing", False),
        (aiosmtplib.SMTPResponseException(600, "odd"), R.DEFERRED, "600 odd", False),
        (
            aiosmtplib.SMTPConnectError("refused"),
            R.DEFERRED,
            "the relay is not reachable: refused",
            True,
        ),
        (aiosmtplib.SMTPServerDisconnected("gone"), R.DEFERRED, "the relay is not", True),
        (aiosmtplib.SMTPTimeoutError("slow"), R.DEFERRED, "the relay is not", True),
        (ConnectionResetError("reset"), R.DEFERRED, "the relay is not reachable", True),
        (TimeoutError(), R.DEFERRED, "the relay is not reachable", True),
    ],
)
def test_what_an_smtp_exception_says_about_one_recipients_copy(
    exc: Exception, status: RecipientStatus, reply: str, connection: bool
) -> None:
    answer = copy_failure(exc)
    assert answer is not None
    assert answer.status is status
    assert answer.reply.startswith(reply)
    assert answer.connection is connection


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), ValueError("bad address"), KeyError()])
def test_an_exception_that_is_no_answer_says_nothing_of_the_copy(exc: Exception) -> None:
    assert copy_failure(exc) is None


def test_an_accepted_copy_keeps_the_relays_reply() -> None:
    assert accepted(250, "2.0.0 Ok: queued as 4F2A") == CopyAnswer(
        R.ACCEPTED, "250 2.0.0 Ok: queued as 4F2A"
    )


def test_the_reasons_name_each_recipient_with_its_reply() -> None:
    assert waiting_reason({"a@x.test": "451 later", "b@x.test": "the relay is not reachable"}) == (
        "a@x.test: 451 later; b@x.test: the relay is not reachable"
    )
    assert failure_reason({"a@x.test": "550 5.1.1 no such user"}) == (
        "the relay refused the message to a@x.test: 550 5.1.1 no such user"
    )
    assert failure_reason({"a@x.test": "550 no", "b@x.test": "554 spam"}) == (
        "every recipient was refused: a@x.test: 550 no; b@x.test: 554 spam"
    )


def test_attachments_over_the_limit_fail_with_what_to_do_instead() -> None:
    limit = 20_000_000
    assert attachments_over_limit(0, limit) is None
    assert attachments_over_limit(limit, limit) is None
    too_large = attachments_over_limit(31_200_000, limit)
    assert isinstance(too_large, PermanentFailure)
    assert str(too_large) == (
        "the attachments are 31.2 MB, over the 20 MB limit; send this envelope by secure link"
    )
    assert str(attachments_over_limit(2_500_001, 2_500_000)).startswith(
        "the attachments are 2.5 MB, over the 2.5 MB limit"
    )
