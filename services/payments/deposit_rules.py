"""How a payment's money reaches the firm: which account each item is paid into, how a
payment (a Pay All of invoices and trust requests, say) splits into one deposit per account
with the processing fee, and what refunds and a bank return take back from each deposit.

Plain functions over plain data, like `rules.py`: the deposit rows kept from them are
`deposits.py`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from shared.events import InvoiceKind


class Account(StrEnum):
    """The firm's two accounts a payment is deposited into."""

    operating = "operating"
    trust = "trust"


class DepositStatus(StrEnum):
    pending = "pending"  # not transferred yet
    paid = "paid"
    partially_reversed = "partially_reversed"
    reversed = "reversed"
    returned = "returned"  # the payment itself was returned: everything goes back


def account_for(kind: str) -> Account:
    """Trust requests are paid into trust, everything else into operating."""
    return Account.trust if kind == InvoiceKind.trust_request else Account.operating


@dataclass(frozen=True)
class DepositPlan:
    account: Account
    amount_minor: int
    fee_minor: int

    @property
    def net_minor(self) -> int:
        return self.amount_minor - self.fee_minor


def split_deposits(allocations: Iterable[tuple[str, int]], fee_minor: int) -> list[DepositPlan]:
    """One deposit per account from (kind, amount) allocations. The whole fee is taken from
    operating, never from trust: a payment of trust requests only still charges its fee to
    operating (an operating deposit of 0 whose net is the negative fee)."""
    totals = dict.fromkeys(Account, 0)
    for kind, amount in allocations:
        totals[account_for(kind)] += amount
    plans = []
    if totals[Account.operating] or fee_minor:
        plans.append(DepositPlan(Account.operating, totals[Account.operating], fee_minor))
    if totals[Account.trust]:
        plans.append(DepositPlan(Account.trust, totals[Account.trust], 0))
    return plans


def reversed_by_refunds(account: str, refunded_minor: int, amount: int, fee: int) -> int:
    """How much of a deposit the refunds so far take back: trust gives back what was refunded
    of it; operating at most what it received (its net), as the fee is not returned."""
    if account == Account.trust:
        return min(refunded_minor, amount)
    return min(refunded_minor, max(amount - fee, 0))


def reversed_minor(
    account: str, refunded_minor: int, amount: int, fee: int, *, returned: bool
) -> int:
    """What a deposit gives back in the end: a returned payment takes back everything each
    account received (the firm's loss, and trust money that was never the firm's), whether
    the return came before or after the deposit was made."""
    if returned:
        return amount if account == Account.trust else max(amount - fee, 0)
    return reversed_by_refunds(account, refunded_minor, amount, fee)


def deposit_status(
    transferred: bool, reversed_minor: int, amount: int, fee: int, returned: bool
) -> DepositStatus:
    if returned:
        return DepositStatus.returned
    if not transferred:
        return DepositStatus.pending
    received = amount - fee
    if reversed_minor and reversed_minor >= received:
        return DepositStatus.reversed
    if reversed_minor:
        return DepositStatus.partially_reversed
    return DepositStatus.paid
