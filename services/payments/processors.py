"""Payment processors: the interface the ledger uses, and the card checks shared by both.

Two implementations: `services.payments.testmode.TestModeProcessor` (offline, Stripe's test
cards and ACH behaviour; `make run` and the tests) and
`services.payments.stripe_processor.StripeProcessor` (the stripe SDK: Checkout, Connect
separate charges and transfers, webhooks).

The ledger never sees a processor's own objects: everything a processor reports reaches it
as a `ProcessorEvent`, applied idempotently (by `event_id`) and in any order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, Protocol

from services.payments.deposit_rules import Account
from services.payments.rules import FieldInvalid

Method = Literal["card", "ach"]
EventKind = Literal[
    # The client finished the processor's checkout (card: paid; ACH: still processing).
    "checkout.completed",
    "payment.processing",  # ACH debit started; not paid yet
    "payment.succeeded",  # card charged / ACH settled
    "payment.failed",  # declined card, ACH failure (e.g. R01)
    "payment.disputed",  # ACH return or chargeback after success: the money goes back
    "refund.succeeded",
    "refund.failed",
]


class ProcessorError(Exception):
    """The processor could not be reached or refused a request; `retryable` when trying
    again later may work."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class InvalidSignature(Exception):
    """A webhook whose signature does not verify: answer 400 and change nothing."""


@dataclass(frozen=True)
class CheckoutItem:
    invoice_id: str
    number: str
    kind: Literal["invoice", "trust_request"]
    amount_minor: int


@dataclass(frozen=True)
class CheckoutRequest:
    session_id: str  # ours (checkout_sessions.id): the idempotency and reference key
    firm_id: str
    firm_name: str
    currency: str  # ISO, upper case
    items: list[CheckoutItem]
    customer_email: str | None
    success_url: str
    cancel_url: str
    expires_at: datetime


@dataclass(frozen=True)
class ProcessorCheckout:
    ref: str  # the processor's checkout id (Stripe cs_...)
    redirect_url: str | None  # Stripe's hosted page; None: our own checkout page (test mode)


@dataclass(frozen=True)
class ProcessorEvent:
    """One thing a processor reports, normalised. `event_id` is unique per processor event
    (Stripe's evt_ id); the same event delivered again carries the same id."""

    event_id: str
    kind: EventKind
    occurred_at: datetime  # when the processor says it happened (Stripe's `created`)
    session_id: str | None = None  # ours, from client_reference_id / metadata
    payment_ref: str | None = None  # Stripe payment_intent id; test mode's own ref
    charge_ref: str | None = None
    method: Method | None = None
    amount_minor: int | None = None
    fee_minor: int | None = None
    refund_ref: str | None = None  # refund events: the processor's refund id
    refund_id: str | None = None  # refund events: ours, from the refund's metadata
    failure_code: str | None = None  # e.g. "R01", "card_declined"
    failure_reason: str | None = None  # for the firm and the client
    payer_name: str | None = None
    payer_email: str | None = None
    last4: str | None = None
    raw_type: str = ""  # the processor's own event type, for the log


@dataclass(frozen=True)
class Deposit:
    """What reaches one of the firm's accounts from one payment."""

    account: Account
    amount_minor: int  # gross allocated to this account
    fee_minor: int  # taken from this deposit: always 0 for trust
    ref: str | None = None  # processor's transfer id
    destination: str | None = None  # the firm's account at the processor (Stripe acct_...)


@dataclass(frozen=True)
class DepositRequest:
    """A succeeded payment's deposits to make (those without a ref yet)."""

    payment_id: str  # ours: with the account, the idempotency key
    payment_ref: str
    charge_ref: str | None
    currency: str
    deposits: list[Deposit]
    firm_id: str


@dataclass(frozen=True)
class RefundOrder:
    """A refund of a payment, with what it takes back from each deposit already made."""

    refund_id: str  # ours: the idempotency key
    payment_ref: str
    amount_minor: int
    currency: str
    reversals: list[Deposit]
    firm_id: str


@dataclass(frozen=True)
class RefundResult:
    ref: str
    status: Literal["pending", "succeeded", "failed"]
    failure_reason: str | None = None
    reversals: list[str] = field(default_factory=list)


class Processor(Protocol):
    name: str  # "test" or "stripe"

    async def create_checkout(self, req: CheckoutRequest) -> ProcessorCheckout:
        """Called when the client clicks Pay (never when an email is sent). Idempotent on
        req.session_id."""
        ...

    async def deposit(self, req: DepositRequest) -> list[Deposit]:
        """Move a succeeded payment's money to the firm's accounts (Stripe: one transfer per
        account, source_transaction=charge, idempotency key per payment and account).
        Returns the deposits with their refs."""
        ...

    async def refund(self, req: RefundOrder) -> RefundResult:
        """Refund `req.amount_minor` of the payment (idempotency key from req.refund_id) and
        reverse the given amounts of its transfers (Stripe: /v1/transfers/{ref}/reversals)."""
        ...

    def parse_webhook(self, payload: bytes, signature: str | None) -> ProcessorEvent | None:
        """Verify on the raw body, then normalise. Raises InvalidSignature; returns None for
        event types the ledger does not use (logged and ignored)."""
        ...


class CardInvalid(FieldInvalid):
    """A card (or bank account) field the client must correct."""


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
