"""Wires the sync service: settings, database, bus, API, and the periodic sync."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.sync import api, api_connection, api_ledes, api_webhooks
from services.sync.models import Base
from services.sync.settings import SyncSettings
from services.sync.syncer import Syncer
from shared.runtime import Service

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: SyncSettings | None = None) -> FastAPI:
    settings = settings or SyncSettings()
    service = Service(settings, Base.metadata, MIGRATIONS)
    syncer = Syncer(service, settings)
    # Tokens under an older key (or stored before encryption) move to the first key.
    service.background(syncer.connections.rekey)
    service.background(syncer.run_forever)
    app = service.make_app()
    app.include_router(api.router(service, syncer))

    async def health(firm_id: str) -> dict[str, object]:
        return {
            "rate_limit": syncer.connections.budgets.for_firm(firm_id).state(),
            "progress": await syncer.progress(firm_id),
        }

    webhooks = api_webhooks.install(app, service, syncer)
    extras = [health, webhooks.status_fields]
    app.include_router(
        api_connection.router(
            service,
            syncer,
            extras=extras,
            on_connected=[webhooks.ensure_firm],
            before_disconnect=[webhooks.forget_firm],
        )
    )
    api_ledes.install(app, service)
    app.state.syncer = syncer
    return app
