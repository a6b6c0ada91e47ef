"""Wires the mailer: the email.requested consumer, the retry loop, the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.mailer import bounce_intake, tracking
from services.mailer.bounces import Bounces
from services.mailer.models import Base
from services.mailer.postman import BATCHES_SENDING, Postman
from services.mailer.recovery import Recovery
from services.mailer.settings import MailerSettings
from shared.events import EmailRequested
from shared.runtime import Service

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: MailerSettings | None = None) -> FastAPI:
    settings = settings or MailerSettings()
    service = Service(settings, Base.metadata, MIGRATIONS)
    postman = Postman(service, settings)
    # The mailer keeps its own transactions around the SMTP conversations, so its batches
    # are handed over whole (`consumes_batch`), not applied in one transaction; the next
    # batch is built and committed while the relay takes the last one's emails.
    service.consumes_batch(
        EmailRequested, postman.on_emails_requested, then_concurrency=BATCHES_SENDING
    )
    service.background(Recovery(postman).retry_loop)
    app = service.make_app()
    app.include_router(tracking.router(service))  # opens, clicks, views from the gateway
    app.state.postman = postman
    app.state.bounces = Bounces(service, settings)
    bounce_intake.wire(service, settings, app, app.state.bounces)
    return app
