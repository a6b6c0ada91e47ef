"""Money: source amounts become exact integer minor units, and read back as people expect."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.money import exponent, format_money, to_decimal, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (1234.5, "USD", 123450),  # Clio sends JSON numbers
        ("1234.50", "USD", 123450),
        (12, "USD", 1200),
        (0, "USD", 0),
        (Decimal("19.99"), "USD", 1999),
        (0.1 + 0.2, "USD", 30),  # 0.30000000000000004
        (1.1 * 3, "USD", 330),  # 3.3000000000000003
        (1.005, "USD", 101),  # binary float is 1.00499999...; its decimal text is 1.005
        (2.675, "USD", 268),
        ("0.005", "USD", 1),  # half up
        ("0.0049", "USD", 0),
        ("-1.005", "USD", -101),  # half away from zero
        ("-12.34", "USD", -1234),
        ("1e3", "USD", 100000),
        (" 7.25 ".strip(), "EUR", 725),
        (1234, "JPY", 1234),  # exponent 0
        ("1234.5", "JPY", 1235),
        (1234.4, "jpy", 1234),
        ("1.2345", "BHD", 1235),  # exponent 3
    ],
)
def test_to_minor(amount: object, currency: str, minor: int) -> None:
    result = to_minor(amount, currency)
    assert result == minor
    assert type(result) is int


@pytest.mark.parametrize(
    "amount",
    [
        True,
        False,
        None,
        float("nan"),
        float("inf"),
        float("-inf"),
        "NaN",
        "sNaN",
        "Infinity",
        "abc",
        "",
        "12,50",
        "$12",
        [],
        {},
    ],
)
def test_to_minor_refuses_what_is_not_a_finite_amount(amount: object) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        to_minor(amount)


def test_exponents() -> None:
    assert exponent("USD") == 2
    assert exponent("jpy") == 0
    assert exponent("KWD") == 3
    assert to_decimal(123450) == Decimal("1234.50")
    assert to_decimal(1234, "JPY") == Decimal("1234")
    assert to_decimal(1235, "BHD") == Decimal("1.235")


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (123450, "USD", "$1,234.50"),
        (-123450, "USD", "-$1,234.50"),
        (0, "USD", "$0.00"),
        (5, "USD", "$0.05"),
        (-5, "USD", "-$0.05"),
        (100000000, "usd", "$1,000,000.00"),
        (1234567, "JPY", "¥1,234,567"),
        (1999, "EUR", "€19.99"),
        (1050, "GBP", "£10.50"),
        (1050, "CHF", "CHF 10.50"),
        (-1050, "CHF", "-CHF 10.50"),
        (1234, "KWD", "KWD 1.234"),
    ],
)
def test_format_money(minor: int, currency: str, text: str) -> None:
    assert format_money(minor, currency) == text


CURRENCIES = st.sampled_from(["USD", "EUR", "JPY", "BHD", "CHF"])
MINOR = st.integers(min_value=-(10**15), max_value=10**15)


@given(minor=MINOR, currency=CURRENCIES)
def test_minor_units_round_trip_through_decimal_and_text(minor: int, currency: str) -> None:
    assert to_minor(to_decimal(minor, currency), currency) == minor
    assert to_minor(str(to_decimal(minor, currency)), currency) == minor


@given(minor=MINOR, currency=CURRENCIES)
def test_formatted_amount_reads_back_as_the_same_amount(minor: int, currency: str) -> None:
    text = format_money(minor, currency)
    negative = text.startswith("-")
    digits = text.lstrip("-").lstrip("$€£¥").removeprefix(f"{currency} ").replace(",", "")
    assert to_minor(("-" if negative else "") + digits, currency) == minor


@given(cents=st.integers(min_value=-(10**13), max_value=10**13))
def test_a_json_number_of_cents_maps_exactly(cents: int) -> None:
    # What Clio sends: a float that was meant as a two-decimal amount.
    as_float = float(Decimal(cents).scaleb(-2))
    assert to_minor(as_float) == cents
