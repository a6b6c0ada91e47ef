"""to_minor_fast gives to_minor's result, or its error, for every input."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.money import to_minor, to_minor_fast

CURRENCIES = ["USD", "usd", "EUR", "JPY", "KWD", "BHD", "CLP", "XYZ"]


def _same(amount: object, currency: str) -> None:
    try:
        expected: object = to_minor(amount, currency)
    except Exception as exc:  # the same kind of error, raised the same way
        with pytest.raises(type(exc)):
            to_minor_fast(amount, currency)
        return
    got = to_minor_fast(amount, currency)
    assert got == expected
    assert type(got) is int


@pytest.mark.parametrize("currency", CURRENCIES)
@pytest.mark.parametrize(
    "amount",
    [
        0,
        1,
        -1,
        5,
        10**17,
        10**25,
        0.0,
        -0.0,
        0.1,
        0.2,
        0.1 + 0.2,
        1.005,
        2.675,
        -1.005,
        0.005,
        -0.005,
        0.0049,
        0.5,
        -0.5,
        1.5,
        2.5,
        1234.5,
        1e16,
        1e-7,
        123456789.125,
        float("inf"),
        float("-inf"),
        float("nan"),
        True,
        False,
        None,
        "0",
        "-0",
        "1.",
        ".5",
        "+1.5",
        " 1.5",
        "1.5 ",
        "1_000.5",
        "1e3",
        "1E-2",
        "abc",
        "",
        "-",
        "1.2.3",
        "٣.٥",
        "007.50",
        "123456789012345678.1234567890",
        "1234567890123456789.5",
        "1.23456789012345678901234567890",
        "99999999999999999.995",
        "-99999999999999999.995",
        Decimal("1.005"),
        [],
        {},
    ],
)
def test_listed_values(amount: object, currency: str) -> None:
    _same(amount, currency)


@settings(max_examples=3000, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(CURRENCIES))
def test_floats(amount: float, currency: str) -> None:
    _same(amount, currency)


@settings(max_examples=3000, deadline=None)
@given(st.integers(min_value=-(10**30), max_value=10**30), st.sampled_from(CURRENCIES))
def test_ints(amount: int, currency: str) -> None:
    _same(amount, currency)


@settings(max_examples=3000, deadline=None)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.sampled_from(CURRENCIES),
    st.booleans(),
)
def test_decimal_texts(amount: Decimal, currency: str, plain: bool) -> None:
    _same(f"{amount:f}" if plain else str(amount), currency)


@settings(max_examples=3000, deadline=None)
@given(
    st.from_regex(r"\A-?[0-9]{1,22}(\.[0-9]{0,14})?\Z"),
    st.sampled_from(CURRENCIES),
)
def test_digit_strings(amount: str, currency: str) -> None:
    _same(amount, currency)


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=12), st.sampled_from(CURRENCIES))
def test_any_text(amount: str, currency: str) -> None:
    _same(amount, currency)
