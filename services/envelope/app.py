"""Wires the envelope service: its event handlers, API and PDF work."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import api, api_batches, api_templates
from services.envelope.desk import Desk, PreparedSend
from services.envelope.models import Base
from services.envelope.settings import EnvelopeSettings
from shared.events import (
    EmailFailed,
    EmailRequested,
    EmailSent,
    EnvelopeSendRequested,
    FirmUpdated,
    InvoiceUpdated,
    PaymentFailed,
    PaymentProcessing,
    PaymentRefunded,
    PaymentSucceeded,
)
from shared.runtime import Service

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: EnvelopeSettings | None = None) -> FastAPI:
    settings = settings or EnvelopeSettings()
    service = Service(settings, Base.metadata, MIGRATIONS)
    desk = Desk(service, settings)
    # PDFs rendered ahead of time, in a process pool that lives as long as the service.
    service.background(desk.renderer.run)

    @service.handles(FirmUpdated)
    async def firm_updated(s: AsyncSession, ev: FirmUpdated) -> None:
        await desk.on_firm_updated(s, ev)

    @service.handles(InvoiceUpdated)
    async def invoice_updated(s: AsyncSession, ev: InvoiceUpdated) -> None:
        await desk.on_invoice_updated(s, ev)

    # A Send All makes hundreds of each within seconds: applied in batches.
    @service.handles_batch(EnvelopeSendRequested, prepare=desk.prepare_sends)
    async def send_requested(
        s: AsyncSession, evs: list[EnvelopeSendRequested], prepared: dict[str, PreparedSend]
    ) -> None:
        await desk.on_sends_requested(s, evs, prepared)

    # One per email, as the mailer sends them: gathered for a while (Last Sent and the
    # email status may show a fifth of a second later).
    @service.handles_batch(EmailSent, wait_seconds=0.2)
    async def email_sent(s: AsyncSession, evs: list[EmailSent], _prepared: None) -> None:
        await desk.on_emails_sent(s, evs)

    @service.handles(EmailFailed)
    async def email_failed(s: AsyncSession, ev: EmailFailed) -> None:
        await desk.on_email_failed(s, ev)

    for payment_event in (PaymentProcessing, PaymentSucceeded, PaymentFailed, PaymentRefunded):
        service.handles(payment_event)(desk.on_payment)

    # email.requested goes out with its content sealed in, read when it is published.
    service.relay.completes(EmailRequested.routing_key, desk.seal_email_contents)

    app = service.make_app()
    app.include_router(api.router(service, desk))
    app.include_router(api_batches.router(service, desk))
    app.include_router(api_templates.router(service, desk))
    app.state.desk = desk
    return app
