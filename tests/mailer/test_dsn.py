"""Delivery status notifications as real servers write them (tests/mailer/dsn/*.eml): what
each says, and which email and recipient it is about."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from services.mailer import dsn
from services.mailer.verp import read_return_path, return_path
from shared.events import BounceKind
from shared.tracking import Recipient

HERE = Path(__file__).parent / "dsn"
SECRET = "tracking-secret-of-the-dsn-tests"
OURS = {
    "bounce_local": "bounces",
    "bounce_domain": "envelopepay.test",
    "message_id_domain": "envelopepay.test",
    "verp_secret": SECRET,
}
_UNSIGNED = re.compile(rb"bounces\+([0-9A-Za-z]{1,64})\.(\d{1,3})@envelopepay\.test")


def signed(raw: bytes, secret: str = SECRET) -> bytes:
    """A sample report as the return paths the mailer writes would have it: each VERP
    address in it (the samples carry them unsigned) signed with `secret`."""

    def sign(m: re.Match[bytes]) -> bytes:
        email_id, n = m[1].decode(), int(m[2])
        return return_path("bounces", "envelopepay.test", email_id, n, secret).encode()

    return _UNSIGNED.sub(sign, raw)


def sample(name: str) -> bytes:
    return signed((HERE / name).read_bytes())


def report(name: str) -> dsn.Report:
    parsed = dsn.parse(sample(name))
    assert isinstance(parsed, dsn.Report), parsed
    return parsed


def only(r: dsn.Report) -> dsn.Notification:
    assert len(r.notifications) == 1
    return r.notifications[0]


def test_postfix_user_unknown_is_a_hard_bounce_placed_by_its_verp_address() -> None:
    r = report("postfix.eml")
    n = only(r)
    assert (n.action, n.status, n.kind) == ("failed", "5.1.1", BounceKind.hard)
    assert n.final_recipient == "nobody@example.org"
    assert n.original_recipient == "nobody@example.org"
    assert n.remote_mta == "mx.example.org"
    assert n.diagnostic == (
        "550 5.1.1 <nobody@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert r.reporting_mta == "mail.example.net"
    assert r.message_id == "<7c0f3d2ab19e4c55a0d1e2f3a4b5c6d7@envelopepay.test>"
    (where,) = dsn.locate(r, **OURS)
    assert (where.email_id, where.n, where.found_by) == (
        "7c0f3d2ab19e4c55a0d1e2f3a4b5c6d7",
        0,
        "verp",
    )


def test_the_smtp_envelope_recipient_comes_before_the_headers() -> None:
    r = report("postfix.eml")
    (where,) = dsn.locate(
        r,
        rcpt_tos=[return_path("bounces", "envelopepay.test", "aaaabbbbccccdddd", 3, SECRET)],
        **OURS,
    )
    assert (where.email_id, where.n) == ("aaaabbbbccccdddd", 3)


def test_exim_text_bounce_is_placed_by_the_quoted_message_id_and_x_failed_recipients() -> None:
    r = report("exim.eml")
    assert r.failed_recipients == ("old.partner@example.co.uk",)
    n = only(r)
    assert (n.action, n.status, n.kind) == ("failed", "5.1.1", BounceKind.hard)
    assert n.final_recipient == "old.partner@example.co.uk"
    assert n.diagnostic is not None and "No such user here" in n.diagnostic
    # Sent to the plain sender address: no VERP, no ENVID; the returned copy's Message-ID.
    (where,) = dsn.locate(r, **OURS)
    assert (where.email_id, where.n, where.address, where.found_by) == (
        "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
        None,
        "old.partner@example.co.uk",
        "message-id",
    )


def test_gmail_multiline_reply_is_read_as_one_reason() -> None:
    r = report("gmail.eml")
    n = only(r)
    assert (n.status, n.kind, n.final_recipient) == (
        "5.1.1",
        BounceKind.hard,
        "no.such.person.42@gmail.com",
    )
    assert n.diagnostic is not None
    assert n.diagnostic.startswith(
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking"
    )
    assert "550-5.1.1" not in n.diagnostic
    assert r.message_id == "<5e6f7a8b9c0d4e1f8a2b3c4d5e6f7a8b@envelopepay.test>"
    (where,) = dsn.locate(r, **OURS)  # Delivered-To, as a mailbox keeps it
    assert (where.email_id, where.n) == ("5e6f7a8b9c0d4e1f8a2b3c4d5e6f7a8b", 1)


def test_microsoft_ndr_with_an_enhanced_status_of_two_digits() -> None:
    r = report("microsoft.eml")
    n = only(r)
    assert (n.status, n.kind, n.final_recipient) == ("5.1.10", BounceKind.hard, "jdoe@contoso.com")
    assert n.diagnostic == (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient jdoe@contoso.com not found "
        "by SMTP address lookup"
    )
    assert r.envelope_id == "c3d4e5f6a7b84c9da0b1c2d3e4f5a6b7.0"
    # Not ours as a VERP address (another bounce local part): the ENVID places it.
    (where,) = dsn.locate(r, **{**OURS, "bounce_local": "returns"})
    assert (where.email_id, where.n, where.found_by) == (
        "c3d4e5f6a7b84c9da0b1c2d3e4f5a6b7",
        0,
        "envid",
    )
    # Neither VERP nor ENVID: the returned headers' Message-ID and the final recipient.
    no_envid = sample("microsoft.eml").replace(b"Original-Envelope-Id", b"X-Id")
    parsed = dsn.parse(no_envid)
    assert isinstance(parsed, dsn.Report)
    (where,) = dsn.locate(parsed, **{**OURS, "bounce_local": "returns"})
    assert (where.email_id, where.n, where.address, where.found_by) == (
        "c3d4e5f6a7b84c9da0b1c2d3e4f5a6b7",
        None,
        "jdoe@contoso.com",
        "message-id",
    )


def test_a_report_without_final_recipient_is_placed_by_verp_alone() -> None:
    r = report("no_final_recipient.eml")
    n = only(r)
    assert n.final_recipient is None and n.original_recipient is None
    assert (n.action, n.status, n.kind) == ("failed", "5.2.1", BounceKind.hard)
    (where,) = dsn.locate(r, **OURS)
    assert (where.email_id, where.n, where.address) == (
        "1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6",
        2,
        None,
    )


def test_a_report_without_final_recipient_takes_the_address_from_x_failed_recipients() -> None:
    raw = (HERE / "no_final_recipient.eml").read_bytes()
    raw = raw.replace(
        b"To: bounces+1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6.2@envelopepay.test",
        b"To: billing@envelopepay.test\nX-Failed-Recipients: gone@example.net",
    ).replace(
        b"--==rpt==--",
        b"--==rpt==\nContent-Type: text/rfc822-headers\n\n"
        b"Message-ID: <1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6@envelopepay.test>\n\n--==rpt==--",
    )
    r = dsn.parse(raw)
    assert isinstance(r, dsn.Report)
    (where,) = dsn.locate(r, **OURS)
    assert (where.email_id, where.n, where.address, where.found_by) == (
        "1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6",
        None,
        "gone@example.net",
        "x-failed-recipients",
    )


def test_a_delay_notice_is_a_soft_bounce() -> None:
    n = only(report("delay.eml"))
    assert (n.action, n.status, n.kind) == ("delayed", "4.4.1", BounceKind.soft)
    assert n.diagnostic == "connect to mx.example.org[198.51.100.25]:25: Connection timed out"
    assert not n.delivered


def test_a_failure_for_now_is_soft_and_a_failure_without_status_is_hard() -> None:
    assert dsn.Notification("failed", "4.2.2").kind is BounceKind.soft
    assert dsn.Notification("failed", "5.7.1").kind is BounceKind.hard
    assert dsn.Notification("failed").kind is BounceKind.hard
    assert dsn.Notification("relayed", "2.0.0").kind is None
    assert not dsn.Notification("relayed", "2.0.0").delivered
    assert dsn.Notification("expanded", "2.0.0").delivered


def test_a_success_notice_says_delivered() -> None:
    r = report("delivered.eml")
    n = only(r)
    assert (n.action, n.status, n.kind, n.delivered) == ("delivered", "2.0.0", None, True)
    assert r.envelope_id == "2b3c4d5e6f7a48b9c0d1e2f3a4b5c6d7.0"
    (where,) = dsn.locate(r, **OURS)
    assert (where.email_id, where.n) == ("2b3c4d5e6f7a48b9c0d1e2f3a4b5c6d7", 0)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ((HERE / "junk_autoreply.eml").read_bytes(), "automatic reply"),
        ((HERE / "junk_read_receipt.eml").read_bytes(), "not a delivery status notification"),
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"just some words with no header at all", "not a delivery status notification"),
        (os.urandom(4096), ""),
        (b"\xff\xfe\x00" * 2000, ""),
        (
            b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
            b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n\r\n"
            b"Action: exploded\r\n\r\n--x--\r\n",
            "no recipient's action",
        ),
        (
            b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n"
            b"Content-Type: message/delivery-status\r\n\r\n" + b"A" * 100_000 + b"\r\n--x--",
            "",
        ),
    ],
)
def test_junk_is_refused_with_a_reason_never_a_crash(raw: bytes, reason: str) -> None:
    parsed = dsn.parse(raw)
    assert isinstance(parsed, dsn.NotADsn)
    assert reason in parsed.reason and parsed.reason


def test_a_report_about_another_system_is_placed_nowhere() -> None:
    raw = sample("postfix.eml").replace(b"envelopepay.test", b"other.example")
    r = dsn.parse(raw)
    assert isinstance(r, dsn.Report)
    assert dsn.locate(r, **OURS) == []


def test_huge_fields_are_cut() -> None:
    raw = (
        (HERE / "postfix.eml")
        .read_bytes()
        .replace(
            b"Diagnostic-Code: smtp; 550 5.1.1",
            b"Diagnostic-Code: smtp; 550 5.1.1 " + b"x" * 50_000,
        )
    )
    n = only(dsn.parse(raw))  # type: ignore[arg-type]
    assert n.diagnostic is not None and len(n.diagnostic) <= dsn.MAX_FIELD


def test_global_delivery_status_utf8() -> None:
    raw = (
        "From: postmaster@例え.jp\r\nTo: bounces+abc123.0@envelopepay.test\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=global-delivery-status; boundary="g"\r\n'
        "\r\n--g\r\nContent-Type: message/global-delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.例え.jp\r\n\r\n"
        "Final-Recipient: utf-8; 山田@例え.jp\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 宛先不明\r\n\r\n--g--\r\n"
    ).encode()
    r = dsn.parse(signed(raw))
    assert isinstance(r, dsn.Report)
    n = only(r)
    assert (n.final_recipient, n.kind, n.diagnostic) == (
        "山田@例え.jp",
        BounceKind.hard,
        "550 5.1.1 宛先不明",
    )
    (where,) = dsn.locate(r, **OURS)
    assert (where.email_id, where.n) == ("abc123", 0)


# --- signed return paths -------------------------------------------------------------------


def test_a_return_path_carries_a_short_lower_case_signature() -> None:
    address = return_path(
        "bounces", "envelopepay.test", "7c0f3d2ab19e4c55a0d1e2f3a4b5c6d7", 2, SECRET
    )
    local, _, domain = address.partition("@")
    assert domain == "envelopepay.test"
    assert re.fullmatch(r"bounces\+7c0f3d2ab19e4c55a0d1e2f3a4b5c6d7\.2\.[a-z2-7]{10}", local)
    assert len(local) <= 64  # RFC 5321's limit on a local part
    # Another copy, email or secret: another signature.
    others = {
        return_path("bounces", "envelopepay.test", "7c0f3d2ab19e4c55a0d1e2f3a4b5c6d7", 3, SECRET),
        return_path("bounces", "envelopepay.test", "7c0f3d2ab19e4c55a0d1e2f3a4b5c6d8", 2, SECRET),
        return_path("bounces", "envelopepay.test", "7c0f3d2ab19e4c55a0d1e2f3a4b5c6d7", 2, "other"),
    }
    assert len({a.partition("@")[0].rsplit(".", 1)[1] for a in [*others, address]}) == 4


def test_a_return_path_without_its_signature_is_not_ours() -> None:
    email_id = "7c0f3d2ab19e4c55a0d1e2f3a4b5c6d7"
    good = return_path("bounces", "envelopepay.test", email_id, 0, SECRET)
    ours = ("bounces", "envelopepay.test", SECRET)
    assert read_return_path(good, *ours) == Recipient(email_id, 0)
    local, _, domain = good.partition("@")
    sig = local.rsplit(".", 1)[1]
    forged = [
        f"bounces+{email_id}.0@envelopepay.test",  # unsigned, as before
        f"bounces+{email_id}.0.{'a' * 10}@envelopepay.test",
        f"bounces+{email_id}.1.{sig}@envelopepay.test",  # another copy's
        return_path("bounces", "envelopepay.test", email_id, 0, "a guessed secret"),
        f"bounces+{email_id}.0.{sig[:-1]}@envelopepay.test",
        f"bounces+{email_id}.0.{sig}x@envelopepay.test",
    ]
    for address in forged:
        assert read_return_path(address, *ours) is None, address


def test_a_case_folded_return_path_is_still_ours() -> None:
    email_id = "7c0f3d2ab19e4c55a0d1e2f3a4b5c6d7"
    good = return_path("bounces", "envelopepay.test", email_id, 1, SECRET)
    local, _, domain = good.partition("@")
    head, _, sig = local.rpartition(".")
    for address in (
        good.lower(),
        f"<{head}.{sig.upper()}@{domain.upper()}>",
        f"Bounces+{email_id}.1.{sig.upper()}@EnvelopePay.test",
    ):
        assert read_return_path(address, "bounces", "envelopepay.test", SECRET) == Recipient(
            email_id, 1
        )


def test_a_report_sent_to_a_forged_return_path_is_not_placed_by_it() -> None:
    raw = (HERE / "postfix.eml").read_bytes()  # its VERP address unsigned: forged
    r = dsn.parse(raw)
    assert isinstance(r, dsn.Report)
    # Placed by the Message-ID and the Final-Recipient, never as a signed VERP address.
    assert [(w.found_by, w.signed) for w in dsn.locate(r, **OURS)] == [("message-id", False)]
    r = dsn.parse(signed(raw, "not-our-secret"))
    assert isinstance(r, dsn.Report)
    assert [w.signed for w in dsn.locate(r, **OURS)] == [False]
    assert [w.signed for w in dsn.locate(report("postfix.eml"), **OURS)] == [True]
