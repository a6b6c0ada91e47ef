"""The payments service in process, on the backend under test, driven through its internal
API as the gateway drives it. The bus is not started: published events stay in the outbox,
where the tests read them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from services.payments import mirror
from services.payments.app import MIGRATIONS, create_app
from services.payments.ledger import Ledger
from services.payments.models import outbox
from services.payments.processors import Processor
from services.payments.settings import PaymentsSettings
from shared.events import (
    FirmProfile,
    FirmUpdated,
    InvoiceSnapshot,
    InvoiceUpdated,
    PayLinkIssued,
    PayLinkItem,
)
from shared.migrations import upgrade_async
from shared.tokens import hash_token

FIRM = "firm-hartwell"
OTHER_FIRM = "firm-other"
CARD_OK = "4242 4242 4242 4242"
CARD_DECLINED = "4000 0000 0000 0002"
ROUTING = "110000000"
ACH_OK = "000123456789"
ACH_R01 = "000222222227"
ACH_R03 = "000111111116"


@dataclass(frozen=True)
class BillSpec:
    invoice_id: str
    number: str
    balance_minor: int
    kind: str = "invoice"
    client_id: str = "c-dana"
    client_name: str = "Dana Whitfield"
    currency: str = "USD"
    state: str = "awaiting_payment"


class Payments:
    """The payments app and what a test needs around it."""

    def __init__(self, app: FastAPI, http: httpx.AsyncClient) -> None:
        self.app = app
        self.http = http
        self.ledger: Ledger = app.state.ledger

    # --- seeding, as the bus would -------------------------------------------------------

    async def firm(self, firm_id: str = FIRM) -> None:
        profile = FirmProfile(
            name="Hartwell & Moreno LLP", email="billing@hartwell.test", phone="+1 555 0100"
        )
        async with self.ledger.service.sessionmaker() as s, s.begin():
            await mirror.on_firm_updated(s, FirmUpdated(firm_id=firm_id, firm=profile))

    async def bills(self, *bills: BillSpec, firm_id: str = FIRM) -> None:
        async with self.ledger.service.sessionmaker() as s, s.begin():
            for b in bills:
                await mirror.on_invoice_updated(s, invoice_event(b, firm_id))

    async def link(
        self,
        *bills: BillSpec,
        firm_id: str = FIRM,
        pay_all_outstanding: bool = False,
        expires_in: timedelta = timedelta(days=90),
    ) -> str:
        """A pay link for the bills (issued as envelope would); returns its token."""
        token = uuid.uuid4().hex + uuid.uuid4().hex
        ev = PayLinkIssued(
            firm_id=firm_id,
            link_id=f"link-{uuid.uuid4().hex[:8]}",
            token_hash=hash_token(token),
            envelope_id=str(uuid.uuid4()),
            client_id=bills[0].client_id,
            client_name=bills[0].client_name,
            client_email="dana@example.test",
            items=[
                PayLinkItem(
                    invoice_id=b.invoice_id,
                    number=b.number,
                    kind=b.kind,  # type: ignore[arg-type]
                    currency=b.currency,
                    balance_minor=b.balance_minor,
                    due_at=date(2026, 5, 1),
                )
                for b in bills
            ],
            pay_all_outstanding=pay_all_outstanding,
            expires_at=datetime.now(UTC) + expires_in,
        )
        async with self.ledger.service.sessionmaker() as s, s.begin():
            await mirror.on_paylinks_issued(s, [ev])
        return token

    # --- the API --------------------------------------------------------------------------

    async def view(self, token: str) -> dict[str, Any]:
        resp = await self.http.get(f"/internal/paylinks/{token}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def start(
        self, token: str, invoice_ids: list[str] | None = None, scope: str = "items"
    ) -> httpx.Response:
        return await self.http.post(
            f"/internal/paylinks/{token}/checkout",
            json={"invoice_ids": invoice_ids or [], "scope": scope},
        )

    async def session(self, token: str, invoice_ids: list[str] | None = None, **kw: Any) -> str:
        resp = await self.start(token, invoice_ids, **kw)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["session_id"])

    async def card(self, session_id: str, number: str = CARD_OK, **kw: str) -> httpx.Response:
        form = {
            "name": "Dana Whitfield",
            "email": "dana@example.test",
            "card_number": number,
            "exp": "12 / 34",
            "cvc": "123",
        } | kw
        return await self.http.post(f"/internal/checkout/{session_id}/card", json=form)

    async def ach(self, session_id: str, account: str = ACH_OK, **kw: str) -> httpx.Response:
        form = {
            "name": "Dana Whitfield",
            "email": "dana@example.test",
            "routing_number": ROUTING,
            "account_number": account,
            "account_type": "checking",
        } | kw
        return await self.http.post(f"/internal/checkout/{session_id}/ach", json=form)

    async def pay_card(
        self, token: str, invoice_ids: list[str] | None = None, scope: str = "items"
    ) -> dict[str, Any]:
        resp = await self.card(await self.session(token, invoice_ids, scope=scope))
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def pay_ach(
        self, token: str, invoice_ids: list[str] | None = None, account: str = ACH_OK
    ) -> dict[str, Any]:
        resp = await self.ach(await self.session(token, invoice_ids), account)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def settle(self) -> int:
        resp = await self.http.post("/internal/testmode/settle-due")
        assert resp.status_code == 200, resp.text
        return int(resp.json()["settled"])

    async def detail(self, payment_id: str, firm_id: str = FIRM) -> dict[str, Any]:
        resp = await self.http.get(f"/internal/firms/{firm_id}/payments/{payment_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def refund(
        self,
        payment_id: str,
        *,
        full: bool = False,
        items: list[tuple[str, int]] = (),  # type: ignore[assignment]
        refund_id: str | None = None,
    ) -> httpx.Response:
        return await self.http.post(
            f"/internal/firms/{FIRM}/payments/{payment_id}/refunds",
            json={
                "refund_id": refund_id or str(uuid.uuid4()),
                "requested_by": "alex@hartwell.test",
                "full": full,
                "items": [{"invoice_id": i, "amount_minor": a} for i, a in items],
            },
        )

    async def published(self) -> list[tuple[str, dict[str, Any]]]:
        """(routing key, payload) of every event staged in the outbox, in order."""
        async with self.ledger.service.sessionmaker() as s:
            rows = await s.execute(
                select(outbox.c.routing_key, outbox.c.payload).order_by(outbox.c.id)
            )
            return [(key, json.loads(payload)) for key, payload in rows]


def invoice_event(b: BillSpec, firm_id: str = FIRM) -> InvoiceUpdated:
    return InvoiceUpdated(
        firm_id=firm_id,
        invoice=InvoiceSnapshot(
            invoice_id=b.invoice_id,
            source_id=b.invoice_id.split(":")[-1],
            number=b.number,
            kind=b.kind,  # type: ignore[arg-type]
            state=b.state,  # type: ignore[arg-type]
            client_id=b.client_id,
            client_name=b.client_name,
            due_at=date(2026, 5, 1),
            currency=b.currency,
            total_minor=b.balance_minor,
            balance_minor=b.balance_minor,
        ),
    )


def settings_for(database_url: str, **overrides: Any) -> PaymentsSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "environment": "test",
        "public_base_url": "https://pay.hartwell.test",
        "ach_settle_seconds": 0,
        "payments_processor": "test",
    } | overrides
    return PaymentsSettings(**values)


@asynccontextmanager
async def running(
    database_url: str, processor: Processor | None = None, **overrides: Any
) -> AsyncIterator[Payments]:
    """The payments app on a migrated database, with a seeded firm."""
    await upgrade_async(MIGRATIONS, database_url)
    settings = settings_for(database_url, **overrides)
    app = create_app(settings, processor)
    transport = httpx.ASGITransport(app=app)
    headers = {"X-Internal-Token": settings.internal_token}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://payments", headers=headers
    ) as http:
        payments = Payments(app, http)
        await payments.firm()
        try:
            yield payments
        finally:
            await app.state.service.engine.dispose()


@pytest.fixture
async def payments(database_url: str) -> AsyncIterator[Payments]:
    async with running(database_url) as p:
        yield p
