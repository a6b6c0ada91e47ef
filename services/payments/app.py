"""Wires the payments service: the processor, the ledger's handlers and loops, the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.payments import api_record, mirror, routes
from services.payments.ledger import Ledger
from services.payments.models import Base
from services.payments.processors import Processor
from services.payments.refunds import refund_loop
from services.payments.settings import PaymentsSettings
from services.payments.testmode import TestMode, TestModeProcessor
from shared.events import FirmUpdated, InvoiceRemoved, InvoiceUpdated, PayLinkIssued
from shared.runtime import Service

MIGRATIONS = Path(__file__).parent / "migrations"


def make_processor(settings: PaymentsSettings) -> Processor:
    """Test mode by default; Stripe only when configured (its SDK is imported only then)."""
    if settings.payments_processor == "stripe":
        from services.payments.stripe_processor import StripeProcessor

        return StripeProcessor(settings)
    return TestModeProcessor(settings)


def create_app(
    settings: PaymentsSettings | None = None, processor: Processor | None = None
) -> FastAPI:
    settings = settings or PaymentsSettings()
    service = Service(settings, Base.metadata, MIGRATIONS)
    ledger = Ledger(service, settings, processor or make_processor(settings))
    testmode = TestMode(ledger) if ledger.processor.name == "test" else None

    @service.handles(FirmUpdated)
    async def firm_updated(s: AsyncSession, ev: FirmUpdated) -> None:
        await mirror.on_firm_updated(s, ev)

    @service.handles(InvoiceUpdated)
    async def invoice_updated(s: AsyncSession, ev: InvoiceUpdated) -> None:
        await mirror.on_invoice_updated(s, ev)

    @service.handles(InvoiceRemoved)
    async def invoice_removed(s: AsyncSession, ev: InvoiceRemoved) -> None:
        await mirror.on_invoice_removed(s, ev)

    # One per email, as the envelope service sends them: gathered for a fifth of a second
    # into batches (a link is in an email for longer than that before anyone can click it).
    @service.handles_batch(PayLinkIssued, wait_seconds=0.2)
    async def paylinks_issued(s: AsyncSession, evs: list[PayLinkIssued], _prepared: None) -> None:
        await mirror.on_paylinks_issued(s, evs)

    service.background(ledger.deposit_loop)

    @service.background
    async def refunds_retry_loop() -> None:
        await refund_loop(ledger)

    if testmode is not None:
        service.background(testmode.settle_loop)

    app = service.make_app()
    app.include_router(routes.router(service, ledger, testmode))
    app.include_router(routes.webhook_router(ledger))
    app.include_router(api_record.router(service, ledger))
    app.state.ledger = ledger
    app.state.testmode = testmode
    return app
