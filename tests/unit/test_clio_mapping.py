"""Mapping a Clio bill to an invoice snapshot: every field lands where the firm sees it, and
a bill that cannot be shown or paid is refused with a reason a person can act on."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from services.sync.mapping import (
    MalformedBill,
    bill_client_id,
    bill_currency,
    bill_to_snapshot,
    check_deliverable,
    invoice_id_for,
    line_bill_id,
)

CONTACTS = {
    "77": {"id": 77, "name": "Dana Whitfield", "primary_email_address": "dana@whitfield.test"}
}


def clio_bill(**changes: Any) -> dict[str, Any]:
    bill: dict[str, Any] = {
        "id": 4821,
        "etag": '"c0ffee"',
        "number": "INV-0042",
        "issued_at": "2025-03-01",
        "due_at": "2025-03-31",
        "updated_at": "2025-03-02T10:15:00Z",
        "balance": 1234.5,
        "total": "2500.00",
        "paid": 1265.5,
        "state": "awaiting_payment",
        "kind": "revenue_kind",
        "type": "MatterBill",
        "subject": "March services",
        "currency": {"code": "USD"},
        "client": {"id": 77, "name": "Dana Whitfield"},
        "matters": [{"id": 301, "display_number": "00042-Whitfield", "description": "Estate plan"}],
    }
    for key, value in changes.items():
        if value is _DROP:
            bill.pop(key, None)
        else:
            bill[key] = value
    return bill


_DROP = object()


def test_a_complete_bill_maps_every_field() -> None:
    snap = bill_to_snapshot(clio_bill(), CONTACTS)

    assert snap.invoice_id == "clio:4821" == invoice_id_for(4821)
    assert snap.source == "clio"
    assert snap.source_id == "4821"
    assert snap.etag == '"c0ffee"'
    assert snap.number == "INV-0042"
    assert snap.kind == "invoice"
    assert snap.state == "awaiting_payment"
    assert snap.client_id == "77"
    assert snap.client_name == "Dana Whitfield"
    assert snap.client_email == "dana@whitfield.test"
    assert snap.matter_id == "301"
    assert snap.matter_number == "00042-Whitfield"
    assert snap.matter_description == "Estate plan"
    assert snap.subject == "March services"
    assert snap.issued_at == date(2025, 3, 1)
    assert snap.due_at == date(2025, 3, 31)
    assert snap.currency == "USD"
    assert snap.total_minor == 250000
    assert snap.balance_minor == 123450
    assert snap.paid_minor == 126550
    assert snap.source_updated_at == datetime(2025, 3, 2, 10, 15, tzinfo=UTC)


def test_a_trust_request_is_a_trust_request() -> None:
    assert bill_to_snapshot(clio_bill(kind="trust_kind"), CONTACTS).kind == "trust_request"
    assert bill_to_snapshot(clio_bill(kind="summary_kind"), CONTACTS).kind == "invoice"


def test_client_email_comes_from_the_contact() -> None:
    assert bill_to_snapshot(clio_bill(), {}).client_email is None
    no_email = {"77": {"id": 77, "primary_email_address": None}}
    assert bill_to_snapshot(clio_bill(), no_email).client_email is None
    other = {"78": {"id": 78, "primary_email_address": "someone@else.test"}}
    assert bill_to_snapshot(clio_bill(), other).client_email is None


def test_amounts_are_exact_minor_units() -> None:
    snap = bill_to_snapshot(
        clio_bill(total=0.1 + 0.2, balance=0.30000000000000004, paid=0), CONTACTS
    )
    assert (snap.total_minor, snap.balance_minor, snap.paid_minor) == (30, 30, 0)
    yen = bill_to_snapshot(
        clio_bill(currency={"code": "jpy"}, total=50000, balance=12500.0), CONTACTS
    )
    assert (yen.currency, yen.total_minor, yen.balance_minor) == ("JPY", 50000, 12500)


def test_optional_parts_may_be_absent() -> None:
    snap = bill_to_snapshot(
        clio_bill(paid=_DROP, matters=[], due_at=None, issued_at="", currency=None, subject=_DROP),
        CONTACTS,
    )
    assert snap.paid_minor == 0
    assert (snap.matter_id, snap.matter_number, snap.matter_description) == (None, None, None)
    assert (snap.issued_at, snap.due_at) == (None, None)
    assert snap.currency == "USD"
    assert snap.subject is None


def test_a_timestamped_issue_date_keeps_its_calendar_day() -> None:
    snap = bill_to_snapshot(clio_bill(issued_at="2025-03-01T23:30:00-07:00"), CONTACTS)
    assert snap.issued_at == date(2025, 3, 1)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"id": _DROP}, "id is missing"),
        ({"number": _DROP}, "number is missing"),
        ({"number": ""}, "number is missing"),
        ({"state": "pending"}, "unknown state 'pending'"),
        ({"state": None}, "unknown state None"),
        ({"client": None}, "no client"),
        ({"client": {"name": "Dana Whitfield"}}, "no client"),
        ({"client": {"id": 77, "name": "  "}}, "client has no name"),
        ({"currency": {"code": "US"}}, "unknown currency"),
        ({"balance": "2500.01"}, "balance 2500.01 exceeds total 2500.00"),
        ({"total": "-5.00"}, "total is negative"),
        ({"balance": -0.01}, "balance is negative"),
        ({"paid": -1}, "paid is negative"),
        ({"total": _DROP}, "total is missing"),
        ({"balance": _DROP}, "balance is missing"),
        ({"total": "abc"}, "total is not an amount: 'abc'"),
        ({"total": True}, "total is not an amount: True"),
        ({"balance": float("nan")}, "balance is not an amount"),
        ({"issued_at": "31/03/2025"}, "issued_at is not a date: '31/03/2025'"),
        ({"due_at": "soon"}, "due_at is not a date: 'soon'"),
        (
            {"issued_at": "2025-03-01", "due_at": "2025-02-28"},
            "due date 2025-02-28 is before issue date 2025-03-01",
        ),
    ],
)
def test_a_malformed_bill_is_refused_with_its_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedBill) as caught:
        bill_to_snapshot(clio_bill(**changes), CONTACTS)
    assert reason in str(caught.value)


def test_something_that_is_not_a_bill_is_refused() -> None:
    with pytest.raises(MalformedBill, match="not a JSON object"):
        bill_to_snapshot(["not", "a", "bill"], CONTACTS)  # type: ignore[arg-type]


# --- line items -------------------------------------------------------------------------


def clio_line(**changes: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "id": 6100001,
        "type": "ActivityLineItem",
        "kind": "Service",
        "date": "2025-03-04",
        "description": "Draft lease amendment",
        "quantity": 1.5,
        "price": 350.0,
        "total": 525.0,
        "group_ordering": 1,
    }
    line.update(changes)
    return line


def test_line_items_map_fees_expenses_and_other_lines() -> None:
    from services.sync.mapping import line_items_from_clio

    fee, expense, trust = line_items_from_clio(
        [
            clio_line(),
            clio_line(
                id=6100002,
                kind="Expense",
                description="Court filing fee",
                quantity=1.0,
                price=435.0,
                total=435.0,
                group_ordering=2,
            ),
            clio_line(
                id=6100003,
                type="LineItem",
                description="Funds request: retainer",
                quantity=1,
                price=5000,
                total=5000,
                group_ordering=3,
            ),
        ],
        "USD",
    )
    assert fee.kind == "fee"
    assert fee.date == date(2025, 3, 4)
    assert fee.description == "Draft lease amendment"
    assert (fee.quantity, fee.rate_minor, fee.total_minor) == ("1.5", 35000, 52500)
    assert (expense.kind, expense.quantity, expense.total_minor) == ("expense", "1", 43500)
    assert (trust.kind, trust.total_minor) == ("other", 500000)


def test_line_item_quantities_are_decimal_text_without_float_noise() -> None:
    from services.sync.mapping import line_items_from_clio

    quantities = [
        item.quantity
        for item in line_items_from_clio(
            [
                clio_line(quantity=0.1 + 0.2),
                clio_line(quantity=0.25),
                clio_line(quantity="2.50"),
                clio_line(quantity=3),
                clio_line(quantity=None),
            ],
            "USD",
        )
    ]
    assert quantities == ["0.3", "0.25", "2.5", "3", "1"]


def test_line_items_follow_the_bill_order() -> None:
    from services.sync.mapping import line_items_from_clio

    items = line_items_from_clio(
        [
            clio_line(description="third", group_ordering=2, date="2025-03-01"),
            clio_line(description="second", group_ordering=1, date="2025-03-09"),
            clio_line(description="first", group_ordering=1, date="2025-03-02"),
            clio_line(description="fourth", group_ordering=None, date=None),
        ],
        "USD",
    )
    assert [i.description for i in items] == ["first", "second", "third", "fourth"]


def test_unreadable_line_items_are_left_out_not_the_bill() -> None:
    from services.sync.mapping import line_items_from_clio

    items = line_items_from_clio(
        [
            "not a line",
            clio_line(total=None),
            clio_line(total="abc"),
            clio_line(description="  kept  ", price=None, date="03/04/2025", kind=None),
            clio_line(type="NoChargeLineItem", total=120.0),
        ],
        "USD",
    )
    assert len(items) == 2
    kept, no_charge = items
    assert (kept.description, kept.rate_minor, kept.date, kept.kind) == ("kept", 0, None, "other")
    assert (no_charge.kind, no_charge.total_minor) == ("fee", 0)


def test_line_item_amounts_follow_the_currency() -> None:
    from services.sync.mapping import line_items_from_clio

    (yen,) = line_items_from_clio([clio_line(price=12000, total=18000.0)], "JPY")
    assert (yen.rate_minor, yen.total_minor) == (12000, 18000)


@pytest.mark.parametrize("code", ["XYZ", "US", "usd1", "EURO", "XXX"])
def test_a_currency_outside_iso_4217_is_refused(code: str) -> None:
    with pytest.raises(MalformedBill, match="unknown currency"):
        bill_to_snapshot(clio_bill(currency={"code": code}), CONTACTS)


@pytest.mark.parametrize("code", ["usd", "CAD", "EUR", "JPY", "KWD"])
def test_iso_4217_currencies_map(code: str) -> None:
    assert bill_to_snapshot(clio_bill(currency={"code": code}), CONTACTS).currency == code.upper()


def test_a_bill_to_be_paid_needs_a_client_with_an_email() -> None:
    unpaid = bill_to_snapshot(clio_bill(), {})
    with pytest.raises(MalformedBill, match="Dana Whitfield has no email address"):
        check_deliverable(unpaid)
    check_deliverable(bill_to_snapshot(clio_bill(), CONTACTS))
    # Nothing will be emailed for a paid bill: no email is no problem.
    check_deliverable(bill_to_snapshot(clio_bill(state="paid", balance=0), {}))


def test_line_items_say_whose_they_are() -> None:
    assert line_bill_id({"id": 1, "bill": {"id": 4821}}) == "4821"
    assert line_bill_id({"id": 1, "bill": None}) is None
    assert bill_client_id(clio_bill()) == "77"
    assert bill_client_id(clio_bill(client=None)) is None
    assert bill_currency(clio_bill(currency={"code": "cad"})) == "CAD"
    assert bill_currency(clio_bill(currency=_DROP)) == "USD"
