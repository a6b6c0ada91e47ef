"""The firm's template pages, in-process: the gateway's pages talking to the real envelope
API (both on SQLite), as a firm user clicks through them: Settings > Email templates, a
template refused with the error at its field and the input kept, the default chosen in
Settings > Invoices, the review window's Email template select, and delete with a
confirmation step. CSRF is checked on every form."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import services.gateway.app as gateway_app
from services.envelope.app import MIGRATIONS as ENVELOPE_MIGRATIONS
from services.envelope.app import create_app as create_envelope
from services.envelope.compose import DEFAULT_SUBJECT
from services.envelope.settings import EnvelopeSettings
from services.gateway.app import MIGRATIONS as GATEWAY_MIGRATIONS
from services.gateway.firms import ensure_firm_user
from services.gateway.settings import GatewaySettings
from shared.migrations import upgrade_async
from tests.integration.test_templates import seed_firm

pytestmark = pytest.mark.timeout(60)

FIRM = "5f0c6a53-0000-4c57-9b1a-2d7c3e9f4a10"
EMAIL, PASSWORD = "staff@hartwell.test", "a-long-password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def fake_sync() -> FastAPI:
    app = FastAPI()

    @app.get("/internal/firms/{firm_id}/clio")
    async def clio(firm_id: str) -> dict[str, Any]:
        return {"connected": False}

    @app.get("/internal/firms/{firm_id}/quarantine")
    async def quarantine(firm_id: str) -> list[Any]:
        return []

    return app


class Browser:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.csrf = ""

    async def get(self, url: str) -> httpx.Response:
        resp = await self.http.get(url)
        found = CSRF.search(resp.text)
        if found:
            self.csrf = found[1]
        return resp

    async def post(self, url: str, data: dict[str, Any], csrf: bool = True) -> httpx.Response:
        return await self.http.post(url, data=data | ({"csrf_token": self.csrf} if csrf else {}))


@pytest.fixture
async def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Browser]:
    envelope_url = f"sqlite+aiosqlite:///{tmp_path / 'envelope.db'}"
    gateway_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    await upgrade_async(ENVELOPE_MIGRATIONS, envelope_url)
    await upgrade_async(GATEWAY_MIGRATIONS, gateway_url)
    envelope = create_envelope(EnvelopeSettings(database_url=envelope_url, environment="test"))
    await seed_firm(envelope.state.desk, FIRM)
    gateway_settings = GatewaySettings(database_url=gateway_url, environment="test")
    token = {"X-Internal-Token": gateway_settings.internal_token}

    class InProcess:
        """The gateway's Upstream, answered by the apps in this process."""

        def __init__(self, settings: GatewaySettings) -> None:
            self.envelope = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=envelope), base_url="http://e", headers=token
            )
            self.sync = self.mailer = self.payments = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=fake_sync()), base_url="http://s"
            )

        call = staticmethod(gateway_app.Upstream.call)

    monkeypatch.setattr(gateway_app, "Upstream", InProcess)
    gateway = gateway_app.create_app(gateway_settings)
    service = gateway.state.service
    async with service.sessionmaker() as s, s.begin():
        await ensure_firm_user(
            service,
            s,
            firm_id=FIRM,
            firm_name="Hartwell & Moreno",
            email=EMAIL,
            password=PASSWORD,
            user_name="Sam Staff",
        )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://gateway"
    ) as http:
        b = Browser(http)
        await b.get("/login")
        resp = await b.post("/login", {"email": EMAIL, "password": PASSWORD})
        assert resp.status_code == 303, resp.text
        yield b
    await service.engine.dispose()
    await envelope.state.service.engine.dispose()


def value_of(page: str, name: str) -> str:
    found = re.search(
        rf'<(?:input|textarea)[^>]*name="{name}"[^>]*?(?:value="([^"]*)"|>([^<]*))', page
    )
    assert found, name
    return html.unescape(found[1] if found[1] is not None else found[2])


async def test_a_firm_user_manages_templates_and_uses_them(browser: Browser) -> None:
    listing = await browser.get("/settings/templates")
    assert listing.status_code == 200
    assert "Built-in" in listing.text and "New template" in listing.text
    new = await browser.get("/settings/templates/new")
    # Without JavaScript the picker still lists every field, as it is typed.
    assert "Add autofill fields" in new.text
    assert "{{ client_name }}" in html.unescape(new.text)
    assert value_of(new.text, "subject") == DEFAULT_SUBJECT

    form = {"name": "Reminder", "subject": "Hi {{ clien_name }}", "body": "Dear <b>you</b>"}
    assert (await browser.post("/settings/templates", form, csrf=False)).status_code == 403
    refused = await browser.post("/settings/templates", form)
    assert refused.status_code == 422
    page = html.unescape(refused.text)
    subject_field = page.split('name="subject"', 1)[1].split("</label>", 1)[0]
    assert "Did you mean “client_name”?" in subject_field
    assert value_of(refused.text, "subject") == "Hi {{ clien_name }}"
    assert value_of(refused.text, "body") == "Dear <b>you</b>"
    assert "<b>you</b>" not in refused.text  # the kept input is escaped in the page

    form |= {"subject": "Hi {{ client_name }}", "is_default": "on"}
    saved = await browser.post("/settings/templates", form)
    assert saved.status_code == 303
    assert saved.headers["location"] == "/settings/templates?notice=template_saved"
    listing = await browser.get("/settings/templates")
    row = listing.text.split("Reminder</a>", 1)[1].split("</tr>", 1)[0]
    assert "Default" in row
    template_id = re.search(r'href="/settings/templates/([0-9a-f-]{36})"', listing.text)[1]  # type: ignore[index]

    # Review & Send starts from the default; the Email template select swaps it, keeping To.
    review = await browser.post("/envelopes/review", {"invoice_ids": "clio:1042"})
    assert review.status_code == 303
    window = await browser.get(review.headers["location"])
    assert value_of(window.text, "subject") == "Hi {{ client_name }}"
    assert "Subject:</strong> Hi Dana Whitfield" in window.text
    apply_url = review.headers["location"] + "/template"
    applied = await browser.post(apply_url, {"to": "new@client.test", "template_id": ""})
    assert applied.status_code == 200
    assert value_of(applied.text, "to") == "new@client.test"
    assert value_of(applied.text, "subject") == DEFAULT_SUBJECT
    back = await browser.post(apply_url, {"to": "x@client.test", "template_id": template_id})
    assert value_of(back.text, "subject") == "Hi {{ client_name }}"

    # Settings > Invoices: Default template, back to the built-in one.
    settings = await browser.get("/settings")
    assert f'<option value="{template_id}" selected>Reminder</option>' in settings.text
    saved = await browser.post(
        "/settings",
        {"name": "Hartwell & Moreno", "default_delivery": "link", "default_template": ""},
    )
    assert saved.status_code == 303
    listing = await browser.get("/settings/templates")
    assert "Default" not in listing.text.split("Reminder</a>", 1)[1].split("</tr>", 1)[0]

    # Delete asks first, and only a form with the CSRF token deletes.
    confirm = await browser.get(f"/settings/templates/{template_id}/delete")
    assert "Delete the template “Reminder”?" in html.unescape(confirm.text)
    url = f"/settings/templates/{template_id}/delete"
    assert (await browser.post(url, {}, csrf=False)).status_code == 403
    deleted = await browser.post(url, {})
    assert deleted.headers["location"] == "/settings/templates?notice=template_deleted"
    assert (await browser.get(f"/settings/templates/{template_id}")).status_code == 404
