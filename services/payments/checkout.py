"""Checkout sessions: made when the client clicks Pay (never when the email is sent), for the
items still unpaid at that moment, then handed to the processor."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments.balances import (
    ItemStatus,
    ItemView,
    aware,
    find_link,
    firm_profile,
    item_views,
    link_usable,
    outstanding,
)
from services.payments.ledger import Ledger
from services.payments.models import Bill, CheckoutSession, CheckoutStatus, PayLink, Payment
from services.payments.processors import CheckoutItem, CheckoutRequest, ProcessorError
from shared.events import FirmProfile

log = logging.getLogger(__name__)


class CheckoutError(ValueError):
    """The client cannot pay this now (409): the message says why, for the client."""


class ProcessorUnavailable(RuntimeError):
    """The processor did not open its checkout (502): nothing was charged."""


def new_session_id() -> str:
    return f"chk_{uuid.uuid4().hex}"


@dataclass
class CheckoutView:
    session: CheckoutSession
    firm: FirmProfile
    items: list[ItemView]  # balance_minor: the amount being paid on each
    payment: Payment | None

    @property
    def status(self) -> CheckoutStatus:
        cs = self.session
        if cs.status == CheckoutStatus.open and aware(cs.expires_at) < datetime.now(UTC):
            return CheckoutStatus.expired
        return CheckoutStatus(cs.status)


async def _payable(
    s: AsyncSession, link: PayLink, invoice_ids: list[str], scope: str
) -> list[ItemView]:
    """The unpaid items the client may pay now: from the link's items, or with "Accept
    payments for all unpaid bills" from all the client's unpaid bills."""
    if scope == "outstanding":
        if not link.pay_all_outstanding:
            raise CheckoutError("This link is for the bills in the email only.")
        allowed = [i.invoice_id for i in (await outstanding(s, link.firm_id, link.client_id)).items]
    else:
        allowed = json.loads(link.invoice_ids)
    wanted = list(dict.fromkeys(invoice_ids or allowed))  # an item asked for twice is paid once
    if any(i not in allowed for i in wanted):
        raise CheckoutError("That bill cannot be paid from this link.")
    items = [v for v in await item_views(s, link.firm_id, wanted) if v.status == ItemStatus.unpaid]
    if not items:
        raise CheckoutError("Nothing is left to pay here: it is paid or a payment is processing.")
    if len({i.currency for i in items}) != 1:
        raise CheckoutError("Bills in different currencies must be paid separately.")
    return items


async def create_checkout(
    ledger: Ledger, token: str, invoice_ids: list[str], scope: str = "items"
) -> CheckoutSession:
    """Our session first (committed), then the processor's checkout for it: a crash in
    between leaves an open session of ours and nothing charged."""
    async with ledger.tx() as s:
        link = await find_link(s, token)
        if link is None or not link_usable(link):
            raise CheckoutError("This link has expired. Please contact the firm for a new one.")
        items = await _payable(s, link, invoice_ids, scope)
        source = {
            b.invoice_id: b
            for b in await s.scalars(
                select(Bill).where(
                    Bill.firm_id == link.firm_id,
                    Bill.invoice_id.in_([i.invoice_id for i in items]),
                )
            )
        }
        firm = await firm_profile(s, link.firm_id)
        now = datetime.now(UTC)
        cs = CheckoutSession(
            id=new_session_id(),
            firm_id=link.firm_id,
            token_hash=link.token_hash,
            client_id=link.client_id,
            client_name=link.client_name,
            scope=scope,
            items=json.dumps(
                [
                    {
                        "invoice_id": i.invoice_id,
                        "number": i.number,
                        "kind": i.kind,
                        "amount_minor": i.balance_minor,
                        # Where Clio stood as the client chose to pay (To record in Clio).
                        "source_balance_minor": source[i.invoice_id].source_balance_minor,
                        "source_paid_minor": source[i.invoice_id].source_paid_minor,
                    }
                    for i in items
                ]
            ),
            currency=items[0].currency,
            amount_minor=sum(i.balance_minor for i in items),
            status=CheckoutStatus.open,
            processor=ledger.processor.name,
            created_at=now,
            expires_at=now + timedelta(minutes=ledger.settings.checkout_ttl_minutes),
        )
        s.add(cs)
        request = CheckoutRequest(
            session_id=cs.id,
            firm_id=cs.firm_id,
            firm_name=firm.name,
            currency=cs.currency,
            items=[
                CheckoutItem(i.invoice_id, i.number, i.kind, i.balance_minor)  # type: ignore[arg-type]
                for i in items
            ],
            customer_email=link.client_email,
            success_url=f"{ledger.settings.public_base_url}/checkout/{cs.id}/done",
            cancel_url=f"{ledger.settings.public_base_url}/pay/{token}",
            expires_at=cs.expires_at,
        )
    try:
        made = await ledger.processor.create_checkout(request)
    except ProcessorError as exc:
        log.warning("checkout %s: the processor refused: %s", cs.id, exc)
        async with ledger.tx() as s:
            row = await s.get(CheckoutSession, cs.id)
            assert row is not None
            row.status, row.last_error = CheckoutStatus.expired, str(exc)[:2000]
        raise ProcessorUnavailable(
            "The payment page could not be opened. Nothing was charged; please try again."
        ) from exc
    async with ledger.tx() as s:
        row = await s.get(CheckoutSession, cs.id)
        assert row is not None
        row.processor_ref, row.redirect_url = made.ref, made.redirect_url
    cs.processor_ref, cs.redirect_url = made.ref, made.redirect_url
    return cs


async def checkout_view(ledger: Ledger, session_id: str) -> CheckoutView | None:
    async with ledger.service.sessionmaker() as s:
        cs = await s.get(CheckoutSession, session_id)
        if cs is None:
            return None
        firm = await firm_profile(s, cs.firm_id)
        planned = json.loads(cs.items)
        current = {
            v.invoice_id: v
            for v in await item_views(s, cs.firm_id, [i["invoice_id"] for i in planned])
        }
        items = []
        for item in planned:
            now = current.get(item["invoice_id"])
            items.append(
                ItemView(
                    invoice_id=item["invoice_id"],
                    number=now.number if now else item.get("number", ""),
                    kind=now.kind if now else item.get("kind", "invoice"),
                    due_at=now.due_at if now else None,
                    currency=cs.currency,
                    balance_minor=item["amount_minor"],
                    status=now.status if now else ItemStatus.unpaid,
                )
            )
        payment = await s.get(Payment, cs.payment_id) if cs.payment_id else None
        return CheckoutView(session=cs, firm=firm, items=items, payment=payment)
