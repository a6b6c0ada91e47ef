"""The gateway in process, its payments upstream answered by a fake that speaks the payments
internal API's contract (JSON shapes as payments returns them) and records every request."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import services.gateway.app as gateway_app
from services.gateway.app import MIGRATIONS as GATEWAY_MIGRATIONS
from services.gateway.firms import ensure_firm_user
from services.gateway.settings import GatewaySettings
from shared.migrations import upgrade_async

FIRM_ID = "7d2f1c8e-0000-4b1a-9c3d-5e6f7a8b9c01"
EMAIL, PASSWORD = "staff@hartwell.test", "a-long-password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FIRM = {
    "name": "Hartwell & Moreno",
    "email": "billing@hartwell.test",
    "phone": "+1 555 0100",
    "address": "1 Court St",
    "website": None,
    "combine_envelopes": True,
    "default_delivery": "link",
}

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakePayments:
    """Answers by (method, path); anything else is a 404, as payments answers."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def on(self, method: str, path: str, status: int = 200, body: Any = None) -> None:
        def answer(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, json=body)

        self.routes[(method, path)] = answer

    def handle(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return httpx.Response(404, json={"detail": "not found"})
        return handler(request)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def json_sent(self, method: str, path: str) -> list[Any]:
        return [json.loads(r.content) for r in self.sent(method, path)]


@dataclass
class Client:
    """A browser-ish client: keeps cookies, remembers the last page's CSRF token."""

    http: httpx.AsyncClient
    csrf: str = ""

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        resp = await self.http.get(url, **kwargs)
        found = CSRF.search(resp.text)
        if found:
            self.csrf = found[1]
        return resp

    async def post(self, url: str, data: dict[str, Any], csrf: bool = True) -> httpx.Response:
        if csrf:
            data = data | {"csrf_token": self.csrf}
        return await self.http.post(url, data=data)


@dataclass
class Gateway:
    payments: FakePayments
    client: Client
    firm_id: str = FIRM_ID
    # The app itself, for app.dependency_overrides.
    app: FastAPI | None = None
    # The envelope service's internal API, answering by the same rules.
    envelope: FakePayments = field(default_factory=FakePayments)
    # The sync service's internal API.
    sync: FakePayments = field(default_factory=FakePayments)

    async def login(self) -> None:
        await self.client.get("/login")
        resp = await self.client.post("/login", {"email": EMAIL, "password": PASSWORD})
        assert resp.status_code == 303, resp.text


@pytest.fixture
async def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await upgrade_async(GATEWAY_MIGRATIONS, url)
    settings = GatewaySettings(database_url=url, environment="test")
    fake = FakePayments()
    envelope = FakePayments()
    sync = FakePayments()
    token = {"X-Internal-Token": settings.internal_token}

    def nothing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "not found"})

    class FakeUpstream:
        """The gateway's Upstream with payments, envelope and sync replaced by the fakes."""

        def __init__(self, settings: GatewaySettings) -> None:
            self.payments = httpx.AsyncClient(
                transport=httpx.MockTransport(fake), base_url="http://payments", headers=token
            )
            self.envelope = httpx.AsyncClient(
                transport=httpx.MockTransport(envelope), base_url="http://envelope", headers=token
            )
            self.sync = httpx.AsyncClient(
                transport=httpx.MockTransport(sync), base_url="http://sync", headers=token
            )
            self.mailer = httpx.AsyncClient(
                transport=httpx.MockTransport(nothing), base_url="http://other"
            )

        call = staticmethod(gateway_app.Upstream.call)

    monkeypatch.setattr(gateway_app, "Upstream", FakeUpstream)
    app = gateway_app.create_app(settings)
    service = app.state.service
    async with service.sessionmaker() as s, s.begin():
        await ensure_firm_user(
            service,
            s,
            firm_id=FIRM_ID,
            firm_name=FIRM["name"],
            email=EMAIL,
            password=PASSWORD,
            user_name="Sam Staff",
        )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as http:
        yield Gateway(fake, Client(http), envelope=envelope, sync=sync, app=app)
    await service.engine.dispose()


# --- contract-shaped answers ------------------------------------------------------------------


def item(
    invoice_id: str,
    number: str,
    balance: int,
    status: str = "unpaid",
    kind: str = "invoice",
    due_at: str | None = "2025-06-30",
) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "number": number,
        "kind": kind,
        "due_at": due_at,
        "currency": "USD",
        "balance_minor": balance,
        "status": status,
    }


def paylink(
    items: list[dict[str, Any]],
    status: str = "ok",
    outstanding: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    unpaid = [i for i in items if i["status"] == "unpaid"]
    return {
        "status": status,
        "firm": FIRM,
        "client_name": "Priya Shah",
        "items": items,
        "currency": "USD",
        "total_due_minor": sum(i["balance_minor"] for i in unpaid),
        "pay_all_outstanding": outstanding is not None,
        "outstanding": None
        if outstanding is None
        else {"items": outstanding, "total_minor": sum(i["balance_minor"] for i in outstanding)},
    }


def unknown_link() -> dict[str, Any]:
    """payments' answer for a link it knows nothing of."""
    return paylink([], status="unknown") | {"firm": None, "client_name": "", "currency": "USD"}


def checkout(
    session_id: str,
    items: list[dict[str, Any]],
    payment_id: str | None = None,
    payment_status: str | None = None,
    method: str | None = None,
    status: str = "open",
) -> dict[str, Any]:
    return {
        "id": session_id,
        "status": status,
        "currency": "USD",
        "amount_minor": sum(i["balance_minor"] for i in items),
        "firm": FIRM,
        "items": items,
        "payment_id": payment_id,
        "payment_status": payment_status,
        "method": method,
        "processor": "test",
        "methods": ["card", "ach"],
        "redirect_url": None,
    }


def allocation(invoice_id: str, number: str, amount: int, refunded: int = 0, kind: str = "invoice"):
    return {
        "invoice_id": invoice_id,
        "number": number,
        "kind": kind,
        "amount_minor": amount,
        "refunded_minor": refunded,
    }


def payment(
    payment_id: str,
    method: str,
    status: str,
    allocations: list[dict[str, Any]],
    refunded: int = 0,
) -> dict[str, Any]:
    return {
        "id": payment_id,
        "status": status,
        "method": method,
        "currency": "USD",
        "amount_minor": sum(a["amount_minor"] for a in allocations),
        "refunded_minor": refunded,
        "fee_minor": 0,
        "payer_name": "Priya Shah",
        "payer_email": "priya@example.com",
        "card_last4": "4242" if method == "card" else None,
        "bank_last4": "6789" if method == "ach" else None,
        "client_name": "Priya Shah",
        "processor": "test",
        "created_at": "2025-05-17T15:04:00Z",
        "succeeded_at": None if status == "processing" else "2025-05-17T15:04:05Z",
        "failure_reason": None,
        "allocations": allocations,
    }


def detail(p: dict[str, Any], refunds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    ach = p["method"] == "ach"
    settled = p["status"] in ("succeeded", "partially_refunded")
    return p | {
        "deposits": [
            {
                "account": "operating",
                "amount_minor": p["amount_minor"],
                "fee_minor": 320,
                "net_minor": p["amount_minor"] - 320,
                "reversed_minor": 0,
                "status": "paid",
                "ref": "test_tr_1",
            }
        ],
        "refunds": refunds or [],
        "timeline": [{"at": "2025-05-17T15:04:00Z", "text": "Paid by card"}],
        "refundable_minor": p["amount_minor"] - p["refunded_minor"] if settled else 0,
        "partial_refund_allowed": not ach,
        "refund_block_reason": None
        if settled
        else "An ACH payment can be refunded only after it settles.",
    }


def refund_out(refund_id: str, amount: int, status: str) -> dict[str, Any]:
    return {
        "id": refund_id,
        "amount_minor": amount,
        "status": status,
        "created_at": "2025-05-18T10:00:00Z",
        "requested_by": "Sam Staff",
        "failure_reason": None,
        "items": [],
    }


def row(page: str, attr: str, value: str) -> str:
    """The HTML of the table row with data-<attr>="value"."""
    found = re.search(rf'<tr[^>]*data-{attr}="{re.escape(value)}"[^>]*>(.*?)</tr>', page, re.S)
    assert found, f"no row {attr}={value}"
    return found[1]


def label_of(page: str, name: str) -> str:
    """The HTML of the <label> around the field named `name` (with its error, if any)."""
    found = re.search(
        rf'<label>(?:(?!</label>).)*?name="{name}"(?:(?!</label>).)*</label>', page, re.S
    )
    assert found, f"no field {name}"
    return found[0]
