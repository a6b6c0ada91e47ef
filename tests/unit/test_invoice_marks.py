"""How the Invoices tab reads a bill: its state label and the Overdue mark."""

from __future__ import annotations

from datetime import date

import pytest

from services.gateway.pages import invoice_state, overdue

TODAY = date(2026, 12, 2)


def bill(**changes: object) -> dict[str, object]:
    return {
        "state": "awaiting_payment",
        "balance_minor": 10_000,
        "paid_online_minor": 0,
        "payment_status": None,
        "due_at": "2026-12-01",
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, True),
        ({"due_at": "2026-12-02"}, False),  # due today is not late yet
        ({"due_at": "2026-12-03"}, False),
        ({"due_at": "2026-11-30T23:00:00-05:00"}, True),
        ({"due_at": None}, False),
        ({"due_at": "not a date"}, False),
        ({"state": "paid", "balance_minor": 0}, False),
        ({"state": "void"}, False),
        ({"paid_online_minor": 10_000, "payment_status": "paid_online"}, False),
        ({"payment_status": "processing"}, False),
        ({"paid_online_minor": 4_000}, True),  # paid in part, the rest is late
    ],
)
def test_overdue_is_unpaid_past_the_due_date(changes: dict[str, object], expected: bool) -> None:
    assert overdue(bill(**changes), today=TODAY) is expected


def test_state_labels() -> None:
    assert invoice_state(bill()) == ("Unpaid", "unpaid")
    assert invoice_state(bill(payment_status="processing")) == ("Processing (ACH)", "processing")
    assert invoice_state(bill(payment_status="paid_online")) == ("Paid online", "paid")
    assert invoice_state(bill(state="paid")) == ("Paid", "paid")
