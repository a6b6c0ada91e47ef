"""GET /contacts, the review window's Add contacts picker: the signed-in firm's Clio contacts
from sync, names and emails only; when sync cannot answer, no suggestions rather than an error
page (the To field still takes typed addresses)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.gateway.conftest import FIRM_ID, Gateway

pytestmark = pytest.mark.timeout(60)

SEARCH = f"/internal/firms/{FIRM_ID}/contacts"


async def test_contacts_come_from_sync_for_the_signed_in_firm(gateway: Gateway) -> None:
    gateway.sync.on(
        "GET",
        SEARCH,
        body=[
            {"contact_id": "12", "name": "Morgan Ellis", "email": "m.ellis@example.com"},
            {"contact_id": "13", "name": "<b>Amorim</b>", "email": "ap@amorim.example"},
        ],
    )
    await gateway.login()
    resp = await gateway.client.get("/contacts", params={"q": "mor" + "x" * 300})
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    assert resp.json() == [
        {"name": "Morgan Ellis", "email": "m.ellis@example.com"},
        {"name": "<b>Amorim</b>", "email": "ap@amorim.example"},
    ]
    (asked,) = gateway.sync.sent("GET", SEARCH)
    assert asked.url.params["q"] == ("mor" + "x" * 300)[:200]
    assert asked.url.params["limit"] == "8"


async def test_contacts_need_a_signed_in_user(gateway: Gateway) -> None:
    gateway.sync.on("GET", SEARCH, body=[{"contact_id": "1", "name": "A", "email": "a@x.test"}])
    resp = await gateway.client.get("/contacts", params={"q": "a"})
    assert resp.status_code in (303, 401)
    assert "a@x.test" not in resp.text
    assert gateway.sync.sent("GET", SEARCH) == []


async def test_sync_failing_or_down_means_no_suggestions(gateway: Gateway) -> None:
    await gateway.login()
    gateway.sync.on("GET", SEARCH, status=500, body={"detail": "boom"})
    resp = await gateway.client.get("/contacts", params={"q": "mor"})
    assert (resp.status_code, resp.json()) == (502, [])

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    gateway.sync.handle("GET", SEARCH, down)
    resp = await gateway.client.get("/contacts", params={"q": "mor"})
    assert (resp.status_code, json.loads(resp.text)) == (503, [])
