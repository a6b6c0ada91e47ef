"""The payment rules as plain functions over plain data: fees, which refunds are allowed, and
a payment's state derived from everything its processor reported. How a payment splits into
deposits is `deposit_rules.py`.

Nothing here touches the database, the bus or HTTP, so every rule is tested on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from shared.events import PaymentMethod, PaymentStatus, RefundStatus

ACH_PARTIAL_REFUND_REFUSED = (
    "ACH payments are not eligible for partial refunds. "
    "Refunding this payment returns the funds for every invoice in it."
)
ACH_NOT_SETTLED = (
    "An ACH payment can be refunded only after it settles. "
    "Bank payments take up to 4 business days; try again once it shows as paid."
)


class Progress(IntEnum):
    """A payment's progress, from what its processor reported. Every fact can only move it up,
    so the state after a set of events is the same whatever order they arrived in: a decline
    followed by a successful retry is succeeded, a bank return after settlement is returned."""

    processing = 0
    failed = 1
    succeeded = 2
    returned = 3

    @property
    def status(self) -> PaymentStatus:
        return PaymentStatus(self.name)


# A refund's progress, in the same way: Stripe may report a refund failed after it reported
# it succeeded, and failed wins.
REFUND_PROGRESS = (RefundStatus.pending, RefundStatus.succeeded, RefundStatus.failed)


# Payments whose money the firm holds: they may be refunded, or returned by the bank.
SETTLED = frozenset({PaymentStatus.succeeded, PaymentStatus.partially_refunded})


# --- fees ---------------------------------------------------------------------------------


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def processing_fee(method: str, amount_minor: int) -> int:
    """Test mode's fee, Stripe's US list price: card 2.9% + 30 cents, ACH 0.8% capped at $5."""
    if amount_minor <= 0:
        return 0
    if method == PaymentMethod.ach:
        return min(_round_half_up(amount_minor * 8, 1000), 500)
    return _round_half_up(amount_minor * 29, 1000) + 30


# --- refunds ------------------------------------------------------------------------------


class RefundRefused(ValueError):
    """The refund breaks a rule (409): the message is for the firm user."""


class FieldInvalid(ValueError):
    """A form field someone must correct: `field` names it, the message says how."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RefundInvalid(FieldInvalid):
    """A field of the refund request is wrong (422)."""


@dataclass(frozen=True)
class AllocationLeft:
    """One allocated item of a payment and how much of it is still refundable: allocated minus
    refunds that succeeded or are still pending (a failed refund gives its share back)."""

    invoice_id: str
    kind: str
    allocated_minor: int
    committed_minor: int

    @property
    def left_minor(self) -> int:
        return max(self.allocated_minor - self.committed_minor, 0)


def refund_block_reason(status: str, method: str, refundable_minor: int) -> str | None:
    """Why nothing can be refunded now, or None when a refund may be asked for."""
    if status == PaymentStatus.processing:
        return (
            ACH_NOT_SETTLED
            if method == PaymentMethod.ach
            else "This payment has not completed yet."
        )
    if status == PaymentStatus.failed:
        return "This payment failed: no money was taken, so there is nothing to refund."
    if status == PaymentStatus.returned:
        return "The bank returned this payment: the money already went back to the payer."
    if status == PaymentStatus.refunded:
        return "This payment has been refunded in full."
    if refundable_minor <= 0:
        return "A refund of everything left on this payment is already in progress."
    return None


def plan_refund(
    *,
    status: str,
    method: str,
    allocations: Sequence[AllocationLeft],
    full: bool,
    items: Sequence[tuple[str, int]],
) -> list[tuple[str, int]]:
    """The (invoice_id, amount) of a refund request, checked against the rules: card
    payments in full or per item up to what is left of it; ACH payments in full only (seed
    000), which for a Pay All returns every item in it; only once the payment succeeded."""
    left = {a.invoice_id: a.left_minor for a in allocations}
    everything = [(a.invoice_id, a.left_minor) for a in allocations if a.left_minor > 0]
    wanted = everything if full else _requested(items, left)
    if method == PaymentMethod.ach and sorted(wanted) != sorted(everything):
        raise RefundRefused(ACH_PARTIAL_REFUND_REFUSED)
    reason = refund_block_reason(status, method, sum(left.values()))
    if reason:
        raise RefundRefused(reason)
    if not wanted:
        raise RefundInvalid("amount", "Enter an amount to refund.")
    return wanted


def _requested(items: Sequence[tuple[str, int]], left: dict[str, int]) -> list[tuple[str, int]]:
    merged: dict[str, int] = {}
    for invoice_id, amount in items:
        if invoice_id not in left:
            raise RefundInvalid("items", "That item is not part of this payment.")
        if amount < 0:
            raise RefundInvalid("amount", "A refund amount cannot be negative.")
        merged[invoice_id] = merged.get(invoice_id, 0) + amount
    for invoice_id, amount in merged.items():
        if amount > left[invoice_id]:
            raise RefundInvalid(
                "amount", "The refund is more than what is left to refund on that item."
            )
    return [(i, a) for i, a in merged.items() if a > 0]


def allocate_external_refund(
    amount_minor: int, left: Sequence[tuple[str, int]]
) -> list[tuple[str, int]]:
    """A refund made outside EnvelopePay (the processor's dashboard) names no items: take it
    from the items in their order, never more than is left on each."""
    out = []
    for invoice_id, available in left:
        take = min(amount_minor, available)
        if take > 0:
            out.append((invoice_id, take))
            amount_minor -= take
    return out


# --- ACH ----------------------------------------------------------------------------------


def aba_routing_ok(routing: str) -> bool:
    """A US routing number: nine digits whose weighted sum (3, 7, 1, ...) is a multiple of 10."""
    if len(routing) != 9 or not routing.isdigit():
        return False
    weights = (3, 7, 1) * 3
    return sum(int(d) * w for d, w in zip(routing, weights, strict=True)) % 10 == 0


# --- the state a payment's events add up to -----------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One recorded processor event, as far as a payment's state goes."""

    event_id: str
    kind: str
    occurred_at: datetime
    payment_ref: str | None = None
    charge_ref: str | None = None
    method: str | None = None
    fee_minor: int | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    payer_name: str | None = None
    payer_email: str | None = None
    last4: str | None = None
    refund_id: str | None = None
    refund_ref: str | None = None
    amount_minor: int | None = None


PAYMENT_KINDS = (
    "checkout.completed",
    "payment.processing",
    "payment.succeeded",
    "payment.failed",
    "payment.disputed",
)
REFUND_KINDS = ("refund.succeeded", "refund.failed")


@dataclass
class PaymentState:
    rank: Progress = Progress.processing
    method: str | None = None
    payment_ref: str | None = None
    charge_ref: str | None = None
    fee_minor: int | None = None
    payer_name: str | None = None
    payer_email: str | None = None
    last4: str | None = None
    first_at: datetime | None = None
    succeeded_at: datetime | None = None
    failure_code: str | None = None
    failure_reason: str | None = None
    facts: list[Fact] = field(default_factory=list)

    @property
    def status(self) -> PaymentStatus:
        return self.rank.status


def _rank(fact: Fact) -> Progress:
    if fact.kind == "payment.disputed":
        return Progress.returned
    if fact.kind == "payment.succeeded":
        return Progress.succeeded
    if fact.kind == "payment.failed":
        return Progress.failed
    if fact.kind == "checkout.completed" and fact.method == PaymentMethod.card:
        return Progress.succeeded  # a card checkout completes only once the card was charged
    return Progress.processing


def _latest(facts: Sequence[Fact], attr: str) -> object | None:
    """The value the most recent fact (by the processor's time, then id) gives, if any."""
    for fact in reversed(facts):
        value = getattr(fact, attr)
        if value is not None:
            return value
    return None


def derive_payment(facts: Iterable[Fact]) -> PaymentState:
    """A payment's state from every event recorded for it, independent of arrival order."""
    ordered = sorted(
        (f for f in facts if f.kind in PAYMENT_KINDS), key=lambda f: (f.occurred_at, f.event_id)
    )
    state = PaymentState(facts=ordered)
    if not ordered:
        return state
    state.rank = max(_rank(f) for f in ordered)
    state.first_at = ordered[0].occurred_at
    state.method = _method(ordered)
    if state.method is None and state.rank == Progress.succeeded:
        # A success that does not say how it was paid: card or settled ACH (whose fee,
        # deposits and announcements differ). It counts once an event says which; until
        # then the payment stays processing. Stripe's checkout events always say.
        state.rank = Progress.processing
    for attr in ("payment_ref", "charge_ref", "fee_minor", "payer_name", "payer_email", "last4"):
        setattr(state, attr, _latest(ordered, attr))
    done = [f for f in ordered if _rank(f) >= Progress.succeeded]
    state.succeeded_at = done[0].occurred_at if done else None
    if state.rank in (Progress.failed, Progress.returned):
        deciding = [f for f in ordered if _rank(f) == state.rank]
        state.failure_code = _latest(deciding, "failure_code")  # type: ignore[assignment]
        state.failure_reason = _latest(deciding, "failure_reason")  # type: ignore[assignment]
    return state


def _method(ordered: Sequence[Fact]) -> str | None:
    """Card or ACH, or None while no event has said (Stripe's payment_intent.succeeded
    names no method when the intent allowed both)."""
    named = _latest(ordered, "method")
    if named is not None:
        return str(named)
    # Only bank debits report a processing phase.
    return PaymentMethod.ach if any(f.kind == "payment.processing" for f in ordered) else None


def derive_refund(facts: Iterable[Fact]) -> tuple[RefundStatus, str | None, str | None]:
    """(status, processor ref, failure reason) of one refund from its events."""
    ordered = sorted(
        (f for f in facts if f.kind in REFUND_KINDS), key=lambda f: (f.occurred_at, f.event_id)
    )
    reported = [
        RefundStatus.failed if f.kind == "refund.failed" else RefundStatus.succeeded
        for f in ordered
    ]
    status = max([RefundStatus.pending, *reported], key=REFUND_PROGRESS.index)
    failed = [f for f in ordered if f.kind == "refund.failed"]
    reason = _latest(failed, "failure_reason") if failed else None
    return status, _latest(ordered, "refund_ref"), reason  # type: ignore[return-value]


def announces_failure(progress: Progress, method: str) -> bool:
    """Whether a payment's failure is news to the firm (a `payment.failed` event). A declined
    card is the client's to retry: only a debit that was announced as processing, or a
    payment taken back after it succeeded, is."""
    return progress == Progress.returned or (
        progress == Progress.failed and method == PaymentMethod.ach
    )


def shown_status(progress: Progress, amount_minor: int, refunded_minor: int) -> PaymentStatus:
    """The status a payment shows: a succeeded payment becomes (partially) refunded by the
    refunds that succeeded; any other progress shows as itself."""
    if progress == Progress.succeeded and refunded_minor > 0:
        if refunded_minor >= amount_minor:
            return PaymentStatus.refunded
        return PaymentStatus.partially_refunded
    return progress.status
