"""Deposits: what a payment puts into the firm's operating and trust accounts, kept as rows
(one per payment and account) that the ledger derives again with the payment, and the
bookkeeping on either side of asking the processor to move the money
(`Ledger.transfer_deposits`, outside any transaction).

How the money splits and what refunds and returns take back are `deposit_rules.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import deposit_rules, rules
from services.payments.models import Allocation, Deposit, FirmAccount, Payment
from services.payments.processors import Deposit as DepositOrder
from services.payments.processors import DepositRequest

# Session info key: payments whose deposits may be made once the transaction commits.
DEPOSITS_DUE = "payments_deposits_due"


async def accounts(s: AsyncSession, firm_id: str, *, make_up: bool) -> FirmAccount | None:
    """The firm's operating and trust accounts; test mode (`make_up`) makes up both once."""
    row = await s.get(FirmAccount, firm_id)
    if row is None and make_up:
        row = FirmAccount(
            firm_id=firm_id,
            operating_account=f"test_operating_{firm_id}",
            trust_account=f"test_trust_{firm_id}",
            updated_at=datetime.now(UTC),
        )
        s.add(row)
    return row


async def set_accounts(s: AsyncSession, firm_id: str, operating: str, trust: str) -> FirmAccount:
    row = await s.get(FirmAccount, firm_id)
    if row is None:
        row = FirmAccount(firm_id=firm_id)
        s.add(row)
    row.operating_account, row.trust_account = operating, trust
    row.updated_at = datetime.now(UTC)
    return row


def destination(accounts: FirmAccount | None, account: str) -> str | None:
    if accounts is None:
        return None
    return (
        accounts.trust_account
        if account == deposit_rules.Account.trust
        else accounts.operating_account
    )


async def derive_deposits(
    s: AsyncSession,
    payment: Payment,
    state: rules.PaymentState,
    allocations: list[Allocation],
    refunded_per_account: dict[str, int],
    *,
    make_up_accounts: bool,
) -> None:
    """A succeeded payment's deposit rows, as the rules split it; those not transferred yet
    are marked due in the session (`DEPOSITS_DUE`) for after the commit."""
    existing = {
        d.account: d
        for d in await s.scalars(select(Deposit).where(Deposit.payment_id == payment.id))
    }
    plans = deposit_rules.split_deposits(
        [(a.kind, a.amount_minor) for a in allocations], payment.fee_minor
    )
    returned = state.rank == rules.Progress.returned
    for plan in plans:
        row = existing.get(plan.account)
        if row is None:
            firm_accounts = await accounts(s, payment.firm_id, make_up=make_up_accounts)
            row = Deposit(
                payment_id=payment.id,
                firm_id=payment.firm_id,
                account=plan.account,
                destination=destination(firm_accounts, plan.account),
                reversed_minor=0,
                transferred=False,
            )
            s.add(row)
        if not row.transferred:
            s.info.setdefault(DEPOSITS_DUE, set()).add(payment.id)
            # The processor's fee may come with a later event.
            row.amount_minor, row.fee_minor = plan.amount_minor, plan.fee_minor
            row.net_minor = plan.net_minor
        row.reversed_minor = deposit_rules.reversed_minor(
            plan.account,
            refunded_per_account.get(plan.account, 0),
            row.amount_minor,
            row.fee_minor,
            returned=returned,
        )
        row.status = deposit_rules.deposit_status(
            row.transferred, row.reversed_minor, row.amount_minor, row.fee_minor, returned=returned
        )


async def due_request(s: AsyncSession, payment_id: str) -> DepositRequest | None:
    """What to ask the processor to move for a succeeded payment: its deposits not
    transferred yet. None when there is nothing to move."""
    payment = await s.get(Payment, payment_id)
    if payment is None or payment.succeeded_at is None:
        return None
    pending = list(
        await s.scalars(
            select(Deposit).where(Deposit.payment_id == payment_id, Deposit.transferred.is_(False))
        )
    )
    if not pending:
        return None
    return DepositRequest(
        payment_id=payment.id,
        payment_ref=payment.processor_ref or "",
        charge_ref=payment.charge_ref,
        currency=payment.currency,
        deposits=[
            DepositOrder(
                account=deposit_rules.Account(d.account),
                amount_minor=d.amount_minor,
                fee_minor=d.fee_minor,
                destination=d.destination,
            )
            for d in pending
        ],
        firm_id=payment.firm_id,
    )


async def record_error(s: AsyncSession, payment_id: str, error: str) -> None:
    """The processor did not move them: kept on the rows for the retry loop and the firm."""
    for row in await s.scalars(
        select(Deposit).where(Deposit.payment_id == payment_id, Deposit.transferred.is_(False))
    ):
        row.last_error = error[:2000]


async def record_made(s: AsyncSession, payment_id: str, done: list[DepositOrder]) -> Payment:
    """The deposits the processor made, with its refs; returns the payment to derive again."""
    payment = await s.get(Payment, payment_id)
    assert payment is not None
    rows = {
        d.account: d
        for d in await s.scalars(select(Deposit).where(Deposit.payment_id == payment_id))
    }
    for made in done:
        row = rows.get(made.account)
        if row is None or row.transferred:
            continue
        row.transferred, row.ref, row.last_error = True, made.ref, None
    return payment


async def payments_with_pending_deposits(s: AsyncSession, succeeded_before: datetime) -> list[str]:
    """Payments a crash or an unreachable processor left with deposits not made."""
    return list(
        await s.scalars(
            select(Deposit.payment_id)
            .join(Payment, Payment.id == Deposit.payment_id)
            .where(Deposit.transferred.is_(False), Payment.succeeded_at <= succeeded_before)
            .distinct()
        )
    )
