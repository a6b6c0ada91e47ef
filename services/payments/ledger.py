"""Balances, pay links, checkout and the ledger of payments and their allocations."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.models import Allocation, Bill, CheckoutSession, Firm, PayLink, Payment
from services.payments.processors import CardInvalid, test_mode_charge, validate_card
from services.payments.settings import PaymentsSettings
from shared.events import (
    Allocation as AllocationEvent,
)
from shared.events import (
    FirmProfile,
    FirmUpdated,
    InvoiceUpdated,
    PayLinkIssued,
    PaymentSucceeded,
)
from shared.runtime import Service
from shared.tokens import hash_token

log = logging.getLogger(__name__)

OPEN_STATUSES = ("processing", "succeeded")


@dataclass
class ItemView:
    invoice_id: str
    number: str
    kind: str
    due_at: date | None
    currency: str
    balance_minor: int
    status: str  # unpaid, processing, paid


@dataclass
class LinkView:
    status: str  # ok, expired, unknown
    firm: FirmProfile | None = None
    client_name: str = ""
    items: list[ItemView] = field(default_factory=list)
    currency: str = "USD"
    total_due_minor: int = 0


class CheckoutError(ValueError):
    pass


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class Ledger:
    def __init__(self, service: Service, settings: PaymentsSettings) -> None:
        self.service = service
        self.settings = settings

    async def firm(self, s: AsyncSession, firm_id: str) -> FirmProfile:
        row = await s.get(Firm, firm_id)
        return (
            FirmProfile.model_validate_json(row.profile)
            if row
            else FirmProfile(name="Your law firm")
        )

    async def on_firm_updated(self, s: AsyncSession, ev: FirmUpdated) -> None:
        row = await s.get(Firm, ev.firm_id)
        if row is None:
            row = Firm(firm_id=ev.firm_id)
            s.add(row)
        elif row.updated_at and _aware(row.updated_at) > ev.occurred_at:
            return
        row.profile = ev.firm.model_dump_json()
        row.updated_at = ev.occurred_at

    async def on_invoice_updated(self, s: AsyncSession, ev: InvoiceUpdated) -> None:
        inv = ev.invoice
        bill = await s.scalar(
            select(Bill).where(Bill.firm_id == ev.firm_id, Bill.invoice_id == inv.invoice_id)
        )
        if bill is None:
            bill = Bill(firm_id=ev.firm_id, invoice_id=inv.invoice_id)
            s.add(bill)
        elif bill.event_at is not None and ev.occurred_at <= bill.event_at:
            return  # a newer snapshot is already here
        bill.event_at = ev.occurred_at
        bill.number, bill.kind, bill.state = inv.number, inv.kind, inv.state
        bill.client_id, bill.client_name, bill.currency = (
            inv.client_id,
            inv.client_name,
            inv.currency,
        )
        bill.source_balance_minor, bill.due_at = inv.balance_minor, inv.due_at
        bill.updated_at = datetime.now(UTC)
        allocations = await s.scalars(
            select(Allocation).where(
                Allocation.firm_id == ev.firm_id,
                Allocation.invoice_id == inv.invoice_id,
                Allocation.reconciled.is_(False),
            )
        )
        for alloc in allocations:
            if inv.balance_minor <= alloc.source_balance_at_payment - alloc.amount_minor:
                alloc.reconciled = True

    async def on_paylink_issued(self, s: AsyncSession, ev: PayLinkIssued) -> None:
        if await s.get(PayLink, ev.token_hash) is not None:
            return
        s.add(
            PayLink(
                token_hash=ev.token_hash,
                firm_id=ev.firm_id,
                link_id=ev.link_id,
                envelope_id=ev.envelope_id,
                client_id=ev.client_id,
                client_name=ev.client_name,
                client_email=ev.client_email,
                invoice_ids=json.dumps([i.invoice_id for i in ev.items]),
                pay_all_outstanding=ev.pay_all_outstanding,
                expires_at=ev.expires_at,
            )
        )
        # A link can arrive before the bill's own event: keep what the link knows.
        for item in ev.items:
            exists = await s.scalar(
                select(Bill.id).where(
                    Bill.firm_id == ev.firm_id, Bill.invoice_id == item.invoice_id
                )
            )
            if exists is None:
                s.add(
                    Bill(
                        firm_id=ev.firm_id,
                        invoice_id=item.invoice_id,
                        number=item.number,
                        kind=item.kind,
                        state="awaiting_payment",
                        client_id=ev.client_id,
                        client_name=ev.client_name,
                        currency=item.currency,
                        source_balance_minor=item.balance_minor,
                        due_at=item.due_at,
                        updated_at=datetime.now(UTC),
                    )
                )

    async def _link(self, s: AsyncSession, token: str) -> PayLink | None:
        return await s.get(PayLink, hash_token(token))

    async def _item_views(
        self, s: AsyncSession, firm_id: str, invoice_ids: list[str]
    ) -> list[ItemView]:
        bills = {
            b.invoice_id: b
            for b in await s.scalars(
                select(Bill).where(Bill.firm_id == firm_id, Bill.invoice_id.in_(invoice_ids))
            )
        }
        rows = await s.execute(
            select(Allocation.invoice_id, Payment.status, func.sum(Allocation.amount_minor))
            .join(Payment, Payment.id == Allocation.payment_id)
            .where(
                Allocation.firm_id == firm_id,
                Allocation.invoice_id.in_(invoice_ids),
                Allocation.reconciled.is_(False),
                Payment.status.in_(OPEN_STATUSES),
            )
            .group_by(Allocation.invoice_id, Payment.status)
        )
        paid: dict[str, dict[str, int]] = {}
        for invoice_id, status, amount in rows:
            paid.setdefault(invoice_id, {})[status] = int(amount or 0)
        views = []
        for invoice_id in invoice_ids:
            bill = bills.get(invoice_id)
            if bill is None:
                continue
            here = paid.get(invoice_id, {})
            balance = max(0, bill.source_balance_minor - sum(here.values()))
            if balance > 0 and bill.state == "awaiting_payment":
                status = "unpaid"
            elif here.get("processing"):
                status = "processing"
            else:
                status = "paid"
            views.append(
                ItemView(
                    invoice_id, bill.number, bill.kind, bill.due_at, bill.currency, balance, status
                )
            )
        return views

    async def link_view(self, token: str) -> LinkView:
        async with self.service.sessionmaker() as s:
            link = await self._link(s, token)
            if link is None:
                return LinkView(status="unknown")
            firm = await self.firm(s, link.firm_id)
            if link.revoked_at is not None or _aware(link.expires_at) < datetime.now(UTC):
                return LinkView(status="expired", firm=firm, client_name=link.client_name)
            items = await self._item_views(s, link.firm_id, json.loads(link.invoice_ids))
            due = sum(i.balance_minor for i in items if i.status == "unpaid")
            currency = items[0].currency if items else "USD"
            return LinkView("ok", firm, link.client_name, items, currency, due)

    async def create_checkout(self, token: str, invoice_ids: list[str]) -> CheckoutSession:
        async with self.service.sessionmaker() as s, s.begin():
            link = await self._link(s, token)
            if (
                link is None
                or link.revoked_at is not None
                or _aware(link.expires_at) < datetime.now(UTC)
            ):
                raise CheckoutError("This payment link has expired.")
            allowed = json.loads(link.invoice_ids)
            wanted = [i for i in invoice_ids if i in allowed] or allowed
            items = [
                i for i in await self._item_views(s, link.firm_id, wanted) if i.status == "unpaid"
            ]
            if not items:
                raise CheckoutError("Nothing is left to pay on this link.")
            currencies = {i.currency for i in items}
            if len(currencies) != 1:
                raise CheckoutError("Bills in different currencies must be paid separately.")
            now = datetime.now(UTC)
            session = CheckoutSession(
                id=f"cs_{uuid.uuid4().hex}",
                firm_id=link.firm_id,
                token_hash=link.token_hash,
                items=json.dumps(
                    [{"invoice_id": i.invoice_id, "amount_minor": i.balance_minor} for i in items]
                ),
                currency=items[0].currency,
                amount_minor=sum(i.balance_minor for i in items),
                status="open",
                created_at=now,
                expires_at=now + timedelta(minutes=self.settings.checkout_ttl_minutes),
            )
            s.add(session)
            return session

    async def checkout(
        self, session_id: str
    ) -> tuple[CheckoutSession, FirmProfile, list[ItemView]] | None:
        async with self.service.sessionmaker() as s:
            cs = await s.get(CheckoutSession, session_id)
            if cs is None:
                return None
            firm = await self.firm(s, cs.firm_id)
            ids = [i["invoice_id"] for i in json.loads(cs.items)]
            views = {v.invoice_id: v for v in await self._item_views(s, cs.firm_id, ids)}
            amounts = {i["invoice_id"]: i["amount_minor"] for i in json.loads(cs.items)}
            items = [
                ItemView(
                    v.invoice_id,
                    v.number,
                    v.kind,
                    v.due_at,
                    v.currency,
                    amounts[v.invoice_id],
                    v.status,
                )
                for v in views.values()
            ]
            return cs, firm, items

    async def pay_card(self, session_id: str, form: dict[str, Any]) -> Payment:
        """Charge the session's card once. A second submit of a completed session returns
        the payment it already made; the unique session id on payments makes a racing
        second submit fail rather than record a second payment."""
        outcome: list[Exception] = []
        payment = await self._pay_card(session_id, form, outcome)
        if outcome:
            raise outcome[0]
        assert payment is not None
        return payment

    async def _pay_card(
        self, session_id: str, form: dict[str, Any], outcome: list[Exception]
    ) -> Payment | None:
        # Refusals are returned through `outcome` so that what they change (a session
        # marked expired, the decline message) commits instead of rolling back.
        async with self.service.sessionmaker() as s, s.begin():
            cs = await s.get(CheckoutSession, session_id, with_for_update=True)
            if cs is None:
                raise CheckoutError("This checkout does not exist.")
            if cs.payment_id:
                payment = await s.get(Payment, cs.payment_id)
                assert payment is not None
                return payment
            if cs.status != "open" or _aware(cs.expires_at) < datetime.now(UTC):
                raise CheckoutError(
                    "This checkout has expired. Go back to the bill and click Pay again."
                )
            digits, _, _ = validate_card(
                form.get("card_number", ""), form.get("exp", ""), form.get("cvc", ""), date.today()
            )
            name = (form.get("name") or "").strip()
            if not name:
                raise CardInvalid("name", "Enter the name on the card.")
            # Still unpaid? Another tab may have paid these bills since the session opened.
            items = json.loads(cs.items)
            current = {
                v.invoice_id: v
                for v in await self._item_views(s, cs.firm_id, [i["invoice_id"] for i in items])
            }
            for item in items:
                view = current.get(item["invoice_id"])
                if (
                    view is None
                    or view.status != "unpaid"
                    or view.balance_minor < item["amount_minor"]
                ):
                    cs.status = "expired"
                    outcome.append(
                        CheckoutError("These bills were paid in the meantime; nothing was charged.")
                    )
                    return None
            result = test_mode_charge(digits, idempotency_key=cs.id)
            if result.status == "declined":
                cs.last_error = result.message
                outcome.append(CardInvalid("card_number", result.message))
                return None
            now = datetime.now(UTC)
            payment = Payment(
                id=f"pay_{uuid.uuid4().hex}",
                firm_id=cs.firm_id,
                session_id=cs.id,
                method="card",
                status="succeeded",
                currency=cs.currency,
                amount_minor=cs.amount_minor,
                payer_name=name,
                payer_email=(form.get("email") or "").strip() or None,
                processor="test",
                processor_ref=result.ref,
                card_last4=result.last4,
                created_at=now,
                succeeded_at=now,
            )
            s.add(payment)
            await s.flush()
            bills = {
                b.invoice_id: b
                for b in await s.scalars(
                    select(Bill).where(
                        Bill.firm_id == cs.firm_id,
                        Bill.invoice_id.in_([i["invoice_id"] for i in items]),
                    )
                )
            }
            for item in items:
                bill = bills[item["invoice_id"]]
                s.add(
                    Allocation(
                        payment_id=payment.id,
                        firm_id=cs.firm_id,
                        invoice_id=item["invoice_id"],
                        kind=bill.kind,
                        amount_minor=item["amount_minor"],
                        source_balance_at_payment=bill.source_balance_minor,
                        reconciled=False,
                    )
                )
            cs.status = "complete"
            cs.payment_id = payment.id
            await self.service.publish(
                s,
                PaymentSucceeded(
                    firm_id=cs.firm_id,
                    payment_id=payment.id,
                    method="card",
                    currency=cs.currency,
                    amount_minor=cs.amount_minor,
                    allocations=[
                        AllocationEvent(invoice_id=i["invoice_id"], amount_minor=i["amount_minor"])
                        for i in items
                    ],
                    payer_name=name,
                    payer_email=payment.payer_email,
                ),
            )
            return payment
