"""Money as integer minor units plus an ISO 4217 code. Never a float."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# Currencies whose minor unit is not the cent. Everything else uses two decimals.
_EXPONENTS = {"JPY": 0, "KRW": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3}
_SYMBOLS = {"USD": "$", "CAD": "$", "AUD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount: object, currency: str = "USD") -> int:
    """Convert a source amount (Clio sends JSON numbers like 1234.5, or strings) to minor units.

    Goes through the decimal text of the value, so 0.1 + 0.2 style float noise cannot leak in.
    Raises ValueError for anything that is not a finite number.
    """
    if isinstance(amount, bool) or amount is None:
        raise ValueError(f"not an amount: {amount!r}")
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"not an amount: {amount!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not an amount: {amount!r}")
    scaled = value.scaleb(exponent(currency)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(scaled)


def to_minor_fast(amount: object, currency: str = "USD") -> int:
    """to_minor, the same result for every input, in integer arithmetic for the common case:
    an int, a float or a string whose text is a plain decimal (`1234.5`, `-3`; ASCII digits,
    at most 18 before the point and 10 after, so to_minor's Decimal arithmetic is exact too).
    Its digits are shifted by the currency's exponent and rounded half away from zero, as
    ROUND_HALF_UP does. Anything else (exponents, spaces, `+`, `1.`, bools, NaN) goes through
    to_minor."""
    kind = type(amount)
    if kind is float or kind is int or kind is str:
        text: str = amount if kind is str else repr(amount)  # type: ignore[assignment]
        whole, point, frac = text.partition(".")
        negative = whole[:1] == "-"
        if negative:
            whole = whole[1:]
        if (
            0 < len(whole) <= 18
            and len(frac) <= 10
            and whole.isascii()
            and whole.isdigit()
            and (frac.isascii() and frac.isdigit() if frac else not point)
        ):
            exp = _EXPONENTS.get(currency.upper(), 2)
            if len(frac) <= exp:
                minor = int(whole + frac.ljust(exp, "0"))
            else:
                minor = int(whole + frac[:exp]) + (frac[exp] >= "5")
            return -minor if negative else minor
    return to_minor(amount, currency)


def to_decimal(minor: int, currency: str = "USD") -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def format_money(minor: int, currency: str = "USD") -> str:
    """`$1,234.50`; a code prefix for currencies without a well-known symbol."""
    exp = exponent(currency)
    value = to_decimal(abs(minor), currency)
    text = f"{value:,.{exp}f}"
    symbol = _SYMBOLS.get(currency.upper())
    sign = "-" if minor < 0 else ""
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{currency.upper()} {text}"
