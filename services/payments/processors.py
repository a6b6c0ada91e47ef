"""Payment processors. Test mode runs offline with Stripe's test cards and states."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal


class CardInvalid(ValueError):
    """A card field the client must correct; `field` names the form field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ChargeResult:
    status: Literal["succeeded", "declined"]
    ref: str
    message: str
    last4: str


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def validate_card(number: str, exp: str, cvc: str, today: date) -> tuple[str, int, int]:
    """Return (digits, month, year) or raise CardInvalid for the first bad field."""
    digits = re.sub(r"[\s-]", "", number or "")
    if not digits.isdigit() or not 12 <= len(digits) <= 19 or not luhn_ok(digits):
        raise CardInvalid("card_number", "Your card number is invalid.")
    m = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*", exp or "")
    if not m or not 1 <= int(m.group(1)) <= 12:
        raise CardInvalid("exp", "Your card's expiration date is incomplete (MM / YY).")
    month, year = int(m.group(1)), int(m.group(2))
    year = year + 2000 if year < 100 else year
    if (year, month) < (today.year, today.month):
        raise CardInvalid("exp", "Your card's expiration date is in the past.")
    if not re.fullmatch(r"\d{3,4}", (cvc or "").strip()):
        raise CardInvalid("cvc", "Your card's security code is incomplete.")
    return digits, month, year


# Stripe's documented test cards that fail, with Stripe's messages.
DECLINES = {
    "4000000000000002": "Your card was declined.",
    "4000000000009995": "Your card has insufficient funds.",
    "4000000000000069": "Your card has expired.",
}


def test_mode_charge(digits: str, idempotency_key: str) -> ChargeResult:
    """Test mode: every valid card succeeds but Stripe's decline cards."""
    ref = f"test_ch_{idempotency_key[-24:]}"
    if digits in DECLINES:
        return ChargeResult("declined", ref, DECLINES[digits], digits[-4:])
    return ChargeResult("succeeded", ref, "Payment succeeded.", digits[-4:])
