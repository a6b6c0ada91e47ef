"""Delivery tracking's pure decisions: which fetches a machine made, which link a click was,
how often an open is told, the order of a bill's email states, and the refusal of a send to a
suppressed address."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from services.envelope.rules import (
    Refusal,
    refusal,
    suppressed_message,
    suppression_detail,
)
from services.envelope.timeline import STATE_RANK, Line, latest_state, line_id, page_of
from services.mailer.tracking import Throttle, click_target, is_machine
from shared.events import ClickTarget

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
OUTLOOK = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36 Edg/120.0 Microsoft Outlook 16.0"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"


# --- machine or person ----------------------------------------------------------------------


@pytest.mark.parametrize("agent", [SAFARI, OUTLOOK, GMAIL_PROXY, YAHOO_PROXY, "Thunderbird/115"])
def test_a_person_long_after_delivery(agent: str) -> None:
    assert not is_machine(agent, T0 + timedelta(minutes=5), T0)


@pytest.mark.parametrize(
    "agent",
    [
        "Mozilla/5.0",  # Apple Mail Privacy Protection's bare user agent
        " mozilla/5.0 ",
        None,
        "",
        "Mozilla/5.0 (compatible; BingPreview/1.0b)",
        "Microsoft Office SafeLinks",
        "Mozilla/5.0 Barracuda Sentinel (EE)",
        "Mimecast-URL-Protect/1.0",
        "Proofpoint URL Defense",
        "Cisco IronPort",
        "python-requests/2.31",
        "curl/8.4.0",
        "Go-http-client/1.1",
        "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/119.0",
        "Mozilla/5.0 (compatible; Googlebot/2.1)",
    ],
)
def test_a_known_prefetcher_or_scanner_whenever_it_comes(agent: str | None) -> None:
    assert is_machine(agent, T0 + timedelta(days=2), T0)


def test_within_the_window_of_acceptance_anyone_is_a_machine() -> None:
    assert is_machine(SAFARI, T0 + timedelta(seconds=3), T0)
    assert is_machine(GMAIL_PROXY, T0 + timedelta(seconds=9.9), T0)
    assert not is_machine(SAFARI, T0 + timedelta(seconds=10), T0)
    assert is_machine(SAFARI, T0 + timedelta(seconds=25), T0, window_seconds=30)
    assert not is_machine(SAFARI, T0 + timedelta(seconds=3), T0, window_seconds=0)
    # Not yet known when the copy was accepted: only the user agent decides.
    assert not is_machine(SAFARI, T0, None)


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/v/tok/clio:1", ClickTarget.view_invoice),
        ("/v/tok/statement", ClickTarget.view_invoice),
        ("/pay/tok?invoice=clio:1", ClickTarget.pay_online),
        ("/pay/tok", ClickTarget.pay_all),
        ("/pay/tok?invoice=", ClickTarget.pay_all),
        ("/settings", ClickTarget.other),
    ],
)
def test_which_link_a_click_was(path: str, target: ClickTarget) -> None:
    assert click_target(path) is target


def test_at_most_one_open_a_minute_per_recipient_but_the_first_person_always() -> None:
    gate = Throttle(60.0, size=3)
    assert gate.allow(("e", 0), T0)
    assert not gate.allow(("e", 0), T0 + timedelta(seconds=30))
    assert gate.allow(("e", 1), T0 + timedelta(seconds=30))  # another recipient
    assert gate.allow(("e", 0), T0 + timedelta(seconds=31), force=True)  # a first person open
    assert not gate.allow(("e", 0), T0 + timedelta(seconds=60))
    assert gate.allow(("e", 0), T0 + timedelta(seconds=91))
    for i in range(10):  # bounded memory
        gate.allow(("x", i), T0)
    assert len(gate._last) == 3


# --- the bills' email state -----------------------------------------------------------------


def test_the_states_order() -> None:
    order = sorted(STATE_RANK, key=STATE_RANK.__getitem__)
    assert order == [
        "sent",
        "delayed",
        "delivered",
        "opened",
        "clicked",
        "viewed",
        "bounced",
        "failed",
    ]


def test_a_later_open_never_hides_a_bounce_in_any_order() -> None:
    lines = [
        (Line.sent, T0, False),
        (Line.bounced, T0 + timedelta(minutes=1), False),
        (Line.opened, T0 + timedelta(minutes=5), False),
        (Line.clicked, T0 + timedelta(minutes=6), False),
    ]
    for order in itertools.permutations(lines):
        assert latest_state(order) == (Line.bounced, T0 + timedelta(minutes=1))


def test_machines_never_raise_the_state_and_the_latest_of_a_rank_is_kept() -> None:
    lines = [
        (Line.sent, T0, False),
        (Line.opened, T0 + timedelta(seconds=2), True),
        (Line.clicked, T0 + timedelta(seconds=3), True),
    ]
    assert latest_state(lines) == (Line.sent, T0)
    lines += [
        (Line.opened, T0 + timedelta(hours=1), False),
        (Line.opened, T0 + timedelta(hours=2), False),
        (Line.queued, T0 + timedelta(hours=3), False),  # not a state
        (Line.paid, T0 + timedelta(hours=3), False),
    ]
    assert latest_state(lines) == (Line.opened, T0 + timedelta(hours=2))
    assert latest_state([]) == (None, None)


def test_a_soft_bounce_is_delayed_below_a_delivery() -> None:
    lines = [(Line.delivered, T0, False), (Line.delayed, T0 + timedelta(minutes=1), False)]
    assert latest_state(lines)[0] == Line.delivered


def test_lines_of_one_event_have_stable_distinct_ids() -> None:
    ev = "6c1f7a52-3d4e-4f5a-9b8c-7d6e5f4a3b2c"
    assert line_id(ev) == ev
    assert line_id(ev, "sent", "a@x.test") == line_id(ev, "sent", "a@x.test")
    assert line_id(ev, "sent", "a@x.test") != line_id(ev, "sent", "b@x.test")
    assert line_id(ev, "sent", "a@x.test") != line_id(ev, "refused", "a@x.test")


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("/pay/secret-token", "pay_page"),
        ("/pay/secret-token?invoice=clio:7", "pay_online:clio:7"),
        ("/v/secret-token/statement", "statement"),
        ("/v/secret-token/clio:7", "invoice:clio:7"),
        ("/elsewhere", "page"),
    ],
)
def test_a_page_is_named_without_its_link_token(path: str, page: str) -> None:
    assert page_of(path) == page
    assert "secret" not in page_of(path)


# --- suppressed addresses -------------------------------------------------------------------


def test_a_send_to_a_suppressed_address_is_refused_with_why_and_how_to_clear() -> None:
    blocked = {
        "priya@example.com": suppressed_message("priya@example.com", "user unknown", "5.1.1")
    }
    assert refusal(1, ["Priya@Example.com"], blocked) is Refusal.suppressed
    assert refusal(1, ["other@example.com"], blocked) is None  # another address is fine
    assert refusal(0, ["priya@example.com"], blocked) is Refusal.no_bills
    detail = suppression_detail(["ok@x.test", "PRIYA@example.com"], blocked)
    message = Refusal.suppressed.message(detail)
    assert "priya@example.com" in message
    assert "5.1.1 user unknown" in message
    assert "clear the address on the Invoices page" in message
    assert "Change the recipient" in message
    assert "ok@x.test" not in message


def test_the_status_is_not_repeated_when_the_reason_carries_it() -> None:
    text = suppressed_message("a@x.test", "5.1.1 user unknown", "5.1.1")
    assert text.count("5.1.1") == 1
