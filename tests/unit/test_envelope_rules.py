"""envelope's rules (services/envelope/rules.py) alone: no broker, database or HTTP."""

from __future__ import annotations

import itertools
from datetime import date

import pytest

from services.envelope.rules import (
    PaymentSums,
    Refusal,
    apply_payment,
    balance_due,
    bill_filename,
    carries_statement,
    envelope_status,
    matter_label,
    may_send,
    outstanding,
    prerendered,
    refusal,
    send_status,
    shows_pay_link,
    statement_filename,
)
from services.envelope.rules import bill_payment as payment_status
from shared.events import BillPayment, InvoiceState, SendStatus


def test_status_follows_the_sums() -> None:
    assert payment_status(0, 5000, 0) == "processing"
    assert payment_status(5000, 0, 0) == "paid_online"
    assert payment_status(0, 0, 5000) == "refunded"
    assert payment_status(0, 0, 0) is None


def test_processing_shows_before_paid_and_paid_before_refunded() -> None:
    assert payment_status(5000, 100, 5000) is BillPayment.processing
    assert payment_status(1, 0, 5000) is BillPayment.paid_online
    assert payment_status(-5, 0, 0) is None  # a return with nothing paid left: owed again


@pytest.mark.parametrize(
    ("state", "sendable"),
    [
        (InvoiceState.awaiting_payment, True),
        (InvoiceState.paid, True),  # as a receipt
        (InvoiceState.draft, False),
        (InvoiceState.awaiting_approval, False),
        (InvoiceState.void, False),
        (InvoiceState.deleted, False),
        ("awaiting_payment", True),  # as stored: a plain string
        ("something_new", False),
    ],
)
def test_what_may_be_sent(state: str, sendable: bool) -> None:
    assert may_send(state) is sendable


def test_only_unpaid_bills_are_rendered_ahead_of_time() -> None:
    assert [s for s in InvoiceState if prerendered(s)] == [InvoiceState.awaiting_payment]


def test_refusals_in_order_with_their_messages() -> None:
    assert refusal(0, []) is Refusal.no_bills
    assert refusal(0, ["a@x.test"]) is Refusal.no_bills
    assert refusal(2, []) is Refusal.no_recipient
    assert refusal(1, ["a@x.test"]) is None
    assert Refusal.no_bills.message() == "none of the envelope's bills can be sent"
    assert Refusal.no_recipient.message() == "the envelope has no recipient"
    assert Refusal.template_error.message("bad {{") == "template error: bad {{"


def test_a_send_is_queued_unless_refused() -> None:
    assert send_status(None) is SendStatus.queued
    for reason in Refusal:
        assert send_status(reason) is SendStatus.failed


@pytest.mark.parametrize(
    ("current", "send", "after"),
    [
        ("draft", SendStatus.queued, "queued"),
        ("failed", SendStatus.queued, "queued"),  # sent again after a failure
        ("queued", SendStatus.queued, "queued"),
        ("sent", SendStatus.queued, "sent"),  # a re-send never moves a sent one back
        ("draft", SendStatus.failed, "failed"),
        ("failed", SendStatus.failed, "failed"),
        ("queued", SendStatus.failed, "queued"),  # a refused re-send leaves it be
        ("sent", SendStatus.failed, "sent"),
    ],
)
def test_an_envelope_takes_its_send_status(current: str, send: SendStatus, after: str) -> None:
    assert envelope_status(current, send) == after


def test_a_statement_goes_with_more_than_one_bill() -> None:
    assert not carries_statement(1)
    assert carries_statement(2)


def test_a_pay_link_only_while_something_is_owed() -> None:
    assert shows_pay_link(1)
    assert not shows_pay_link(0)


def test_what_is_owed() -> None:
    assert balance_due(10_000, 4_000) == 6_000
    assert balance_due(10_000, None) == 10_000
    assert balance_due(10_000, 12_000) == 0
    assert outstanding("awaiting_payment", 10_000, 4_000, None) == 6_000
    assert outstanding("awaiting_payment", 10_000, 0, "refunded") == 10_000
    assert outstanding("awaiting_payment", 10_000, 10_000, "paid_online") == 0
    assert outstanding("awaiting_payment", 10_000, 0, "processing") == 0
    assert outstanding("paid", 10_000, 0, None) == 0
    assert outstanding("draft", 10_000, 0, None) == 0


def _apply(events: list[tuple[str, str, int, bool]]) -> PaymentSums:
    sums = PaymentSums()
    for key, method, amount, returned in events:
        sums = apply_payment(sums, key, method, amount, returned=returned)
    return sums


def test_ach_settled_then_refunded_gives_one_result_in_every_order() -> None:
    events = [
        ("payment.processing", "ach", 5000, False),
        ("payment.succeeded", "ach", 5000, False),
        ("payment.refunded", "ach", 5000, False),
    ]
    for order in itertools.permutations(events):
        assert _apply(list(order)) == PaymentSums(paid=0, processing=0, refunded=5000)


def test_ach_failure_and_return() -> None:
    failed = _apply(
        [("payment.processing", "ach", 5000, False), ("payment.failed", "ach", 5000, False)]
    )
    assert failed == PaymentSums()
    returned = _apply(
        [
            ("payment.processing", "ach", 5000, False),
            ("payment.succeeded", "ach", 5000, False),
            ("payment.failed", "ach", 5000, True),
        ]
    )
    assert returned == PaymentSums()


def test_card_payments_never_count_as_processing() -> None:
    assert _apply([("payment.succeeded", "card", 5000, False)]) == PaymentSums(paid=5000)
    assert _apply([("payment.failed", "card", 5000, False)]) == PaymentSums()
    partly = _apply(
        [("payment.refunded", "card", 1000, False), ("payment.succeeded", "card", 5000, False)]
    )
    assert partly == PaymentSums(paid=4000, refunded=1000)


def test_an_unknown_event_changes_nothing() -> None:
    sums = PaymentSums(paid=1, processing=2, refunded=3)
    assert apply_payment(sums, "payment.disputed", "card", 100) == sums


def test_matter_label() -> None:
    assert matter_label("00042", "Estate plan") == "00042 Estate plan"
    assert matter_label(None, "Estate plan") == "Estate plan"
    assert matter_label("", None) is None


def test_pdf_filenames() -> None:
    assert bill_filename("trust_request", "TR-7") == "trust-request-TR-7.pdf"
    assert bill_filename("invoice", "INV-1") == "invoice-INV-1.pdf"
    assert statement_filename(date(2026, 3, 4)) == "statement-2026-03-04.pdf"
