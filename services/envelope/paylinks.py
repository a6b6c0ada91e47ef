"""Client links as rows and events: each link's `links` row (by its token's hash) and its
paylink.issued for payments, registered once; and the checks a client's click goes through.

An invoice's link belongs to the invoice, not to one email, so a PDF rendered ahead of time
can carry it; a statement's belongs to its set of bills. Both are registered when their PDF
is first handed out (normally ahead of time, with the PDF). A send's own link is made with
the send (see send_writes.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import reads
from services.envelope.links import Links
from services.envelope.models import Invoice, Link
from services.envelope.rules import balance_due
from shared.events import InvoiceKind, InvoiceSnapshot, PayLinkIssued, PayLinkItem
from shared.runtime import Service
from shared.tokens import hash_token

# An invoice's or a statement's link lives as long as the bills are likely to be unpaid.
INVOICE_LINK_DAYS = 365


def new_link(
    *,
    token: str,
    link_id: str,
    invoices: list[Invoice],
    client_name: str,
    client_email: str | None,
    expires: datetime,
    envelope_id: str = "",
    send_id: str = "",
    pay_all_outstanding: bool = False,
) -> tuple[dict[str, Any], PayLinkIssued]:
    """A client link: its row for `links` (by the token's hash) and paylink.issued for
    payments, with each bill's balance as it stands."""
    token_hash = hash_token(token)
    row = {
        "token_hash": token_hash,
        "firm_id": invoices[0].firm_id,
        "envelope_id": envelope_id,
        "send_id": send_id,
        "invoice_ids": json.dumps([i.invoice_id for i in invoices]),
        "created_at": datetime.now(UTC),
        "expires_at": expires,
    }
    issued = PayLinkIssued(
        firm_id=invoices[0].firm_id,
        link_id=link_id,
        token_hash=token_hash,
        envelope_id=envelope_id,
        client_id=invoices[0].client_id,
        client_name=client_name,
        client_email=client_email,
        items=[
            PayLinkItem(
                invoice_id=i.invoice_id,
                number=i.number,
                kind=InvoiceKind(i.kind),
                currency=i.currency,
                balance_minor=balance_due(i.balance_minor, i.paid_online_minor),
                due_at=i.due_at,
            )
            for i in invoices
        ],
        pay_all_outstanding=pay_all_outstanding,
        expires_at=expires,
    )
    return row, issued


class PayLinks:
    def __init__(self, service: Service, links: Links) -> None:
        self.service = service
        self.links = links

    async def _issue(self, s: AsyncSession, **link: Any) -> None:
        """A client link (`new_link`), written and its event staged in `s`'s transaction."""
        row, issued = new_link(**link)
        await s.execute(insert(Link.__table__), row)
        await self.service.publish(s, issued)

    # --- registering ---------------------------------------------------------------------

    async def register_invoice(
        self, s: AsyncSession, inv: Invoice, snap: InvoiceSnapshot, token: str
    ) -> None:
        await self._issue(
            s,
            token=token,
            link_id=f"invoice:{inv.invoice_id}",
            invoices=[inv],
            client_name=inv.client_name,
            client_email=snap.client_email,
            expires=datetime.now(UTC) + timedelta(days=INVOICE_LINK_DAYS),
        )

    async def register_statement(
        self,
        s: AsyncSession,
        firm_id: str,
        invoices: list[Invoice],
        client_name: str,
        client_email: str | None = None,
    ) -> None:
        token = self.links.statement_token(firm_id, [i.invoice_id for i in invoices])
        await self._issue(
            s,
            token=token,
            link_id=f"statement:{hash_token(token)[:16]}",
            invoices=invoices,
            client_name=client_name,
            client_email=client_email,
            expires=datetime.now(UTC) + timedelta(days=INVOICE_LINK_DAYS),
        )

    async def ensure_invoice(self, inv: Invoice, snap: InvoiceSnapshot, token: str) -> None:
        """Register the invoice's link in a transaction of its own."""
        try:
            async with self.service.sessionmaker() as s, s.begin():
                await self.register_invoice(s, inv, snap, token)
        except IntegrityError:
            pass  # registered concurrently

    async def ensure_statement(
        self, firm_id: str, invoices: list[Invoice], client_name: str, client_email: str | None
    ) -> None:
        """Register the statement's Pay All link (once), when its PDF is handed out."""
        token = self.links.statement_token(firm_id, [i.invoice_id for i in invoices])
        async with self.service.sessionmaker() as s:
            # Usually registered already (at draft time, or by an earlier send): a read
            # says so without queueing for the write lock.
            if await s.scalar(select(Link.token_hash).where(Link.token_hash == hash_token(token))):
                return
        try:
            async with self.service.sessionmaker() as s, s.begin():
                if await s.get(Link, hash_token(token)) is not None:
                    return
                await self.register_statement(s, firm_id, invoices, client_name, client_email)
        except IntegrityError:
            pass  # registered concurrently

    async def ensure_many(
        self,
        firm_id: str,
        invoice_links: list[tuple[Invoice, InvoiceSnapshot, str]],
        statements: list[tuple[list[Invoice], str]],
    ) -> None:
        """Register invoices' links (invoice, its snapshot, its token) and statements'
        (their bills, the client's name), found unregistered, in one transaction."""
        if not invoice_links and not statements:
            return
        try:
            async with self.service.sessionmaker() as s, s.begin():
                for inv, snap, token in invoice_links:
                    await self.register_invoice(s, inv, snap, token)
                for invoices, client_name in statements:
                    await self.register_statement(s, firm_id, invoices, client_name)
        except IntegrityError:
            # Registered concurrently (another send of the same bills): one at a time.
            for inv, snap, token in invoice_links:
                await self.ensure_invoice(inv, snap, token)
            for invoices, client_name in statements:
                await self.ensure_statement(firm_id, invoices, client_name, None)

    # --- a client's click ----------------------------------------------------------------

    async def live(self, s: AsyncSession, token: str) -> Link | None:
        """The link of this token, unless it does not exist, was revoked or expired."""
        link = await s.get(Link, hash_token(token))
        if link is None or link.revoked_at is not None:
            return None
        if link.expires_at.replace(tzinfo=UTC) < datetime.now(UTC):
            return None
        return link

    async def issued(self, token: str) -> bool:
        """Whether a client link with this token was issued here and still works."""
        async with self.service.sessionmaker() as s:
            return await self.live(s, token) is not None

    async def invoice(self, token: str, invoice_id: str) -> Invoice | None:
        """The invoice a client link may show, or None when the link does not allow it."""
        async with self.service.sessionmaker() as s:
            link = await self.live(s, token)
            if link is None or invoice_id not in json.loads(link.invoice_ids):
                return None
            return await reads.invoice(s, link.firm_id, invoice_id)
