"""Wires the gateway: sessions, the firm pages, the client pages, static files."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException as FastAPIHTTPException
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway import (
    clio_webhooks,
    public,
    public_checkout,
    tracking,
    web_auth,
    web_balances,
    web_batches,
    web_invoices,
    web_ledes,
    web_payments,
    web_record,
    web_reminders,
    web_review,
    web_settings,
    web_sync,
    web_templates,
    web_timeline,
    webhooks,
)
from services.gateway.clients.base import ServiceUnavailable, Upstream
from services.gateway.clients.envelope import EnvelopeClient
from services.gateway.clients.mailer import MailerClient
from services.gateway.clients.payments import PaymentsClient
from services.gateway.clients.sync import SyncClient
from services.gateway.deps import Clients, LoginRequired
from services.gateway.models import Base
from services.gateway.pages import render
from services.gateway.settings import GatewaySettings
from shared.runtime import Service

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-src 'self' data:; frame-ancestors 'self'; form-action 'self' "
        "http://127.0.0.1:* http://localhost:* https:"
    ),
}


def create_service(settings: GatewaySettings) -> Service:
    return Service(settings, Base.metadata, MIGRATIONS)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    service = create_service(settings)
    upstream = Upstream(settings)
    app = service.make_app(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount(
        "/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static"
    )
    app.state.clients = Clients(
        envelope=EnvelopeClient(upstream.envelope),
        payments=PaymentsClient(upstream.payments),
        sync=SyncClient(upstream.sync),
    )
    app.state.mailer_http = upstream.mailer  # the bounce webhook (webhooks.py)
    app.state.mailer = MailerClient(upstream.mailer)  # tracking reports (tracking.py)
    # web_batches before web_review: /batches/{id}/send-all must not be taken for /batches/{id}/{n}.
    for module in (
        web_auth,
        web_ledes,
        web_invoices,
        web_batches,
        web_balances,
        web_review,
        web_settings,
        web_sync,
        web_templates,
        web_payments,
        web_record,
        web_reminders,
        web_timeline,
        public,
        public_checkout,
        tracking,
        webhooks,
        clio_webhooks,
    ):
        app.include_router(module.router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> Response:
        log.error("gateway: %s", exc)
        return render(
            request,
            "error.html",
            status_code=503,
            title="Temporarily unavailable",
            message="Part of the system is not answering right now. Please try again in a minute.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        titles = {403: "Not allowed", 404: "Not found", 400: "Something is off"}
        return render(
            request,
            "error.html",
            status_code=exc.status_code,
            title=titles.get(exc.status_code, "Error"),
            message=str(exc.detail),
        )

    _ = FastAPIHTTPException
    return app
