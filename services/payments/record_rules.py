"""To record in Clio, as pure rules. Clio's public API cannot record a payment against a bill,
so each payment made here waits on the firm's list until Clio's synced figures show it.

- Only money that arrived is listed: a payment succeeded (or partly refunded), never an ACH
  debit still processing, failed or returned. The amount to enter is what is left of the
  allocation after refunds; a fully refunded one has nothing to record.
- A bill's payments are matched against how far Clio moved since the earliest one not yet
  recorded: its paid figure up (or, where Clio gave none, its balance down). That movement is
  handed out in payment order, each payment made since then (recorded or not) taking its
  amount if what is left covers it; one that does not fit is skipped, so a later, smaller
  one recorded first still leaves the list. A payment recorded in Clio before our own event
  of it arrived is found the same way: its starting point is the bill as the client saw it
  at checkout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.events import PaymentStatus

# Payments whose money arrived: the only ones the firm records.
ARRIVED = frozenset({PaymentStatus.succeeded, PaymentStatus.partially_refunded})


class RecordedHow(StrEnum):
    synced = "synced"  # Clio's synced figures show it
    marked = "marked"  # a firm user said it is recorded


def to_record(status: str, amount_minor: int, refunded_minor: int) -> int:
    """What the firm enters in Clio for one allocation: 0 when there is nothing to enter."""
    if status not in ARRIVED:
        return 0
    return max(0, amount_minor - refunded_minor)


@dataclass(frozen=True)
class Held:
    """One allocation of one bill, in payment order: its amount to record, where Clio stood
    when it was made (paid figure, balance) and whether it is recorded already."""

    id: int
    amount_minor: int
    paid_at_payment: int | None
    balance_at_payment: int
    recorded: bool


def moved(held: Held, paid_now: int | None, balance_now: int) -> int:
    """How far Clio moved since `held` was made: paid up, else balance down."""
    by_balance = held.balance_at_payment - balance_now
    if held.paid_at_payment is None or paid_now is None:
        return by_balance
    return max(paid_now - held.paid_at_payment, by_balance)


def now_recorded(items: Sequence[Held], paid_now: int | None, balance_now: int) -> list[int]:
    """The ids of `items` (one bill's, in payment order) that Clio's figures now show and
    were not recorded yet."""
    waiting = [h for h in items if not h.recorded and h.amount_minor > 0]
    if not waiting:
        return []
    first = waiting[0]
    budget = moved(first, paid_now, balance_now)
    found: list[int] = []
    for h in items[items.index(first) :]:
        if h.amount_minor <= 0 or budget < h.amount_minor:
            continue
        budget -= h.amount_minor
        if not h.recorded:
            found.append(h.id)
    return found
