"""Wires the payments service: ledger handlers and the internal API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import api
from services.payments.ledger import Ledger
from services.payments.models import Base
from services.payments.settings import PaymentsSettings
from shared.events import FirmUpdated, InvoiceUpdated, PayLinkIssued
from shared.runtime import Service

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: PaymentsSettings | None = None) -> FastAPI:
    settings = settings or PaymentsSettings()
    service = Service(settings, Base.metadata, MIGRATIONS)
    ledger = Ledger(service, settings)

    @service.handles(FirmUpdated)
    async def firm_updated(s: AsyncSession, ev: FirmUpdated) -> None:
        await ledger.on_firm_updated(s, ev)

    @service.handles(InvoiceUpdated)
    async def invoice_updated(s: AsyncSession, ev: InvoiceUpdated) -> None:
        await ledger.on_invoice_updated(s, ev)

    @service.handles(PayLinkIssued)
    async def paylink_issued(s: AsyncSession, ev: PayLinkIssued) -> None:
        await ledger.on_paylink_issued(s, ev)

    app = service.make_app()
    app.include_router(api.router(service, ledger))
    app.state.ledger = ledger
    return app
