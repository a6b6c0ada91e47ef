"""Outstanding balances per client, and the envelope that sends a client's whole balance."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from services.envelope import reads, rules
from services.envelope.desk import Desk
from services.envelope.models import Envelope, Invoice
from services.envelope.template_store import default_text
from shared.api.envelope import BalanceOut
from shared.events import InvoiceSnapshot, InvoiceState, SendStatus


def outstanding(inv: Invoice) -> int:
    """What the client still owes on a bill, counting payments made here but not yet
    recorded in the source."""
    return rules.outstanding(
        inv.state, inv.balance_minor, inv.paid_online_minor, inv.payment_status
    )


def client_balances(invoices: list[Invoice]) -> list[BalanceOut]:
    """One row per client (and currency) with something outstanding, largest first."""
    rows: dict[tuple[str, str], list[Invoice]] = {}
    for inv in invoices:
        if outstanding(inv) > 0:
            rows.setdefault((inv.client_id, inv.currency), []).append(inv)
    result = []
    for (client_id, currency), items in rows.items():
        dues = [i.due_at for i in items if i.due_at]
        sent = [i.last_sent_at for i in items if i.last_sent_at]
        email = InvoiceSnapshot.model_validate_json(items[0].snapshot).client_email
        result.append(
            BalanceOut(
                client_id=client_id,
                client_name=items[0].client_name,
                email=email,
                currency=currency,
                outstanding_minor=sum(outstanding(i) for i in items),
                unpaid_items=len(items),
                oldest_due=min(dues) if dues else None,
                last_sent_at=max(sent) if sent else None,
            )
        )
    return sorted(result, key=lambda r: (-r.outstanding_minor, r.client_name))


async def firm_balances(desk: Desk, firm_id: str) -> list[BalanceOut]:
    async with desk.service.sessionmaker() as s:
        invoices = list(
            await s.scalars(
                select(Invoice).where(
                    Invoice.firm_id == firm_id, Invoice.state == InvoiceState.awaiting_payment
                )
            )
        )
    return client_balances(invoices)


async def balance_draft(
    desk: Desk, firm_id: str, client_id: str, created_by: str
) -> Envelope | None:
    """A draft envelope holding every unpaid bill of the client, across matters.

    Unlike a combined selection (at most 10 bills an envelope), a client balance goes out as
    one email, as Clio's Send client balance does: the client pays it all with Pay All.
    """
    async with desk.service.sessionmaker() as s, s.begin():
        invoices = [
            i
            for i in await s.scalars(
                select(Invoice)
                .where(Invoice.firm_id == firm_id, Invoice.client_id == client_id)
                .order_by(Invoice.due_at, Invoice.number)
            )
            if outstanding(i) > 0
        ]
        if not invoices:
            return None
        email = InvoiceSnapshot.model_validate_json(invoices[0].snapshot).client_email
        text = await default_text(s, firm_id)
        env = Envelope(
            id=str(uuid.uuid4()),
            firm_id=firm_id,
            client_id=client_id,
            client_name=invoices[0].client_name,
            invoice_ids=json.dumps([i.invoice_id for i in invoices]),
            to=json.dumps([email] if email else []),
            cc="[]",
            subject=text.subject,
            body=text.body,
            delivery=(await reads.firm_profile(s, firm_id)).default_delivery,
            status=SendStatus.draft,
            created_by=created_by,
            created_at=datetime.now(UTC),
        )
        s.add(env)
        return env
