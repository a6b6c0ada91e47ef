"""Wires the envelope service: its event handlers, API and PDF work. Each handler turns its
event into one call on the desk's parts (desk.py lists them)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import (
    api,
    api_batches,
    api_reminders,
    api_templates,
    api_timeline,
    mail_reports,
    suppressions,
    timeline,
)
from services.envelope.desk import Desk
from services.envelope.models import Base
from services.envelope.reminders import Reminders
from services.envelope.settings import EnvelopeSettings
from shared.clock import Clock
from shared.events import (
    EmailBounced,
    EmailClicked,
    EmailDelivered,
    EmailFailed,
    EmailOpened,
    EmailRequested,
    EmailSent,
    EmailViewed,
    EnvelopeSendRequested,
    FirmUpdated,
    InvoiceRemoved,
    InvoiceUpdated,
    PaymentEvent,
    PaymentFailed,
    PaymentProcessing,
    PaymentRecorded,
    PaymentRefunded,
    PaymentSucceeded,
)
from shared.runtime import Service

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: EnvelopeSettings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or EnvelopeSettings()
    service = Service(settings, Base.metadata, MIGRATIONS)
    desk = Desk(service, settings)
    # PDFs rendered ahead of time, in a process pool that lives as long as the service.
    service.background(desk.renderer.run)
    # Automated reminders: a pass a minute, on the real clock (a test's, in tests).
    reminders = Reminders(service, settings, clock)
    service.background(reminders.run)

    service.handles(FirmUpdated)(desk.projections.on_firm_updated)
    service.handles(InvoiceUpdated)(desk.projections.on_invoice_updated)
    service.handles(InvoiceRemoved)(desk.projections.on_invoice_removed)
    service.handles(PaymentRecorded)(desk.projections.on_payment_recorded)

    async def payment(s: AsyncSession, ev: PaymentEvent) -> None:
        await desk.projections.on_payment(s, ev)
        await timeline.on_payment(s, ev)  # "paid" on the envelope's timeline

    for payment_event in (PaymentProcessing, PaymentSucceeded, PaymentFailed, PaymentRefunded):
        service.handles(payment_event)(payment)

    # A Send All makes hundreds of each within seconds: applied in batches.
    service.handles_batch(EnvelopeSendRequested, prepare=desk.sending.prepare_sends)(
        desk.sending.on_sends_requested
    )

    # One per email, as the mailer sends them: gathered for a while (Last Sent and the
    # email status may show a fifth of a second later).
    @service.handles_batch(EmailSent, wait_seconds=0.2)
    async def email_sent(s: AsyncSession, evs: list[EmailSent], _prepared: None) -> None:
        await mail_reports.on_emails_sent(s, evs)

    service.handles(EmailFailed)(mail_reports.on_email_failed)

    # What was heard of each copy afterwards: lines of the envelope's timeline and the
    # bills' email state (timeline.py); a hard bounce also suppresses its address.
    for tracked in (EmailDelivered, EmailOpened, EmailClicked, EmailViewed):
        service.handles(tracked)(timeline.on_tracked)

    @service.handles(EmailBounced)
    async def email_bounced(s: AsyncSession, ev: EmailBounced) -> None:
        envelope_id = await timeline.on_tracked(s, ev)
        await suppressions.on_bounced(s, ev, envelope_id)

    # email.requested goes out with its content sealed in, read when it is published.
    service.relay.completes(EmailRequested.routing_key, desk.sealing.seal_email_contents)

    app = service.make_app()
    app.include_router(api.router(service, desk))
    app.include_router(api_batches.router(service, desk))
    app.include_router(api_templates.router(service, desk))
    app.include_router(api_reminders.router(service, reminders))
    app.include_router(api_timeline.router(service))
    app.state.desk = desk
    app.state.reminders = reminders
    return app
