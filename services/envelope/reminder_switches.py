"""Reminders on or off, as a person sets them: per client (Outstanding Balances, the
Reminders page) and per bill (Invoices), and what is off, for those pages' switches."""

from __future__ import annotations

from sqlalchemy import select

from services.envelope.models import Invoice, ReminderClient, ReminderInvoice
from shared.api.reminders import PausedOut
from shared.clock import Clock
from shared.runtime import Service


class ReminderSwitches:
    service: Service
    clock: Clock

    async def client_exists(self, firm_id: str, client_id: str) -> bool:
        async with self.service.sessionmaker() as s:
            found = await s.scalar(
                select(Invoice.id)
                .where(Invoice.firm_id == firm_id, Invoice.client_id == client_id)
                .limit(1)
            )
        return found is not None

    async def invoice_exists(self, firm_id: str, invoice_id: str) -> bool:
        async with self.service.sessionmaker() as s:
            found = await s.scalar(
                select(Invoice.id).where(
                    Invoice.firm_id == firm_id, Invoice.invoice_id == invoice_id
                )
            )
        return found is not None

    async def switch_client(self, firm_id: str, client_id: str, enabled: bool) -> bool:
        """Reminders on or off for a client; False when the firm has no such client."""
        if not await self.client_exists(firm_id, client_id):
            return False
        await self._switch(ReminderClient, firm_id, "client_id", client_id, enabled)
        return True

    async def switch_invoice(self, firm_id: str, invoice_id: str, enabled: bool) -> bool:
        """Reminders on or off for one bill; False when the firm has no such bill."""
        if not await self.invoice_exists(firm_id, invoice_id):
            return False
        await self._switch(ReminderInvoice, firm_id, "invoice_id", invoice_id, enabled)
        return True

    async def _switch(
        self,
        model: type[ReminderClient | ReminderInvoice],
        firm_id: str,
        col: str,
        key: str,
        on: bool,
    ) -> None:
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(model, (firm_id, key))
            if row is None:
                row = model(firm_id=firm_id, **{col: key})
                s.add(row)
            row.enabled = on
            row.updated_at = self.clock.now()

    async def paused(self, firm_id: str) -> PausedOut:
        """The clients and bills whose reminders are off: the switches of Invoices and
        Outstanding Balances."""
        async with self.service.sessionmaker() as s:
            clients = await s.scalars(
                select(ReminderClient.client_id).where(
                    ReminderClient.firm_id == firm_id, ReminderClient.enabled.is_(False)
                )
            )
            invoices = await s.scalars(
                select(ReminderInvoice.invoice_id).where(
                    ReminderInvoice.firm_id == firm_id, ReminderInvoice.enabled.is_(False)
                )
            )
            return PausedOut(clients=sorted(clients), invoices=sorted(invoices))
