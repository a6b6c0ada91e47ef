"""The mailer's rules on their own: no broker, database, HTTP or SMTP server."""

from __future__ import annotations

import aiosmtplib
import httpx
import pytest

from services.mailer.rules import (
    TRANSITIONS,
    EmailStatus,
    PermanentFailure,
    RetryPolicy,
    TransientFailure,
    fetch_failure,
    first_status,
    may_become,
    may_start_sending,
    smtp_failure,
    uncertain_reason,
    unreachable_content,
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
