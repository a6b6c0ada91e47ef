"""Clio under Settings (gateway side, sync answered by a fake speaking its contract): the
region picker and the OAuth state (bound to the firm and the region, consumed once, never by
another firm), Disconnect, the connection's health, the Sync button's progress page and its
JSON, and the Sync issues page. Bad input answers a clear 4xx."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from services.gateway.firms import ensure_firm_user
from services.gateway.models import OAuthState
from tests.gateway.conftest import FIRM_ID, Client, Gateway

pytestmark = pytest.mark.timeout(60)

BASE = f"/internal/firms/{FIRM_ID}"
OTHER_FIRM, OTHER_EMAIL, OTHER_PASSWORD = "firm-b-0000", "b@other.test", "another-long-password"
TEMPLATES = {
    "items": [],
    "default_id": None,
    "builtin": {"name": "Built-in", "subject": "Bills", "body": "Hi"},
    "autofill_fields": {},
}
CALLBACK = "http://127.0.0.1:8000/clio/callback"


def authorize_answer(request: httpx.Request) -> httpx.Response:
    q = request.url.params
    host = {"us": "http://clio", "ca": "http://clio/ca"}.get(q["region"], "http://clio/x")
    url = f"{host}/oauth/authorize?state={q['state']}&redirect_uri={q['redirect_uri']}"
    return httpx.Response(200, json={"url": url})


@pytest.fixture
async def gw(gateway: Gateway) -> Gateway:
    gateway.envelope.on("GET", f"{BASE}/templates", body=TEMPLATES)
    gateway.sync.on("GET", f"{BASE}/clio", body={"connected": False})
    gateway.sync.handle("GET", "/internal/clio/authorize-url", authorize_answer)
    await gateway.login()
    await gateway.client.get("/settings")
    return gateway


async def states(gw: Gateway) -> list[OAuthState]:
    assert gw.app is not None
    async with gw.app.state.service.sessionmaker() as s:
        return list(await s.scalars(select(OAuthState)))


async def start(gw: Gateway, region: str = "ca") -> str:
    resp = await gw.client.post("/settings/clio/connect", {"region": region})
    assert resp.status_code == 303, resp.text
    return parse_qs(urlsplit(resp.headers["location"]).query)["state"][0]


def connect_recorder(gw: Gateway, status: int = 200, body: Any = None) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(status, json=body or {"connected": True, "region": "ca"})

    gw.sync.handle("POST", f"{BASE}/clio/connect", answer)
    return seen


async def other_firm_client(gw: Gateway) -> Client:
    assert gw.app is not None
    service = gw.app.state.service
    async with service.sessionmaker() as s, s.begin():
        await ensure_firm_user(
            service,
            s,
            firm_id=OTHER_FIRM,
            firm_name="Other LLP",
            email=OTHER_EMAIL,
            password=OTHER_PASSWORD,
            user_name="Bea",
        )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="http://gateway")
    other = Client(http)
    await other.get("/login")
    resp = await other.post("/login", {"email": OTHER_EMAIL, "password": OTHER_PASSWORD})
    assert resp.status_code == 303
    return other


# --- connecting --------------------------------------------------------------------------------


async def test_settings_offers_the_four_regions(gw: Gateway) -> None:
    page = (await gw.client.get("/settings")).text
    options = re.findall(r'<option value="(us|ca|eu|au)"[^>]*>([^<]+)</option>', page)
    assert options == [
        ("us", "United States"),
        ("ca", "Canada"),
        ("eu", "Europe"),
        ("au", "Australia"),
    ]
    assert "Connect Clio" in page and "Disconnect Clio" not in page


async def test_connect_binds_the_state_to_the_firm_and_region(gw: Gateway) -> None:
    state = await start(gw, "ca")
    assert state.startswith("ca.")
    (asked,) = gw.sync.sent("GET", "/internal/clio/authorize-url")
    assert asked.url.params["region"] == "ca" and asked.url.params["redirect_uri"] == CALLBACK
    (row,) = await states(gw)
    assert row.state == state and row.firm_id == FIRM_ID

    seen = connect_recorder(gw)
    resp = await gw.client.get("/clio/callback", params={"code": "abc", "state": state})
    assert resp.status_code == 303 and resp.headers["location"] == "/invoices?notice=clio"
    assert seen == [{"code": "abc", "redirect_uri": CALLBACK, "region": "ca"}]
    assert await states(gw) == []
    # Consumed: the same state a second time is refused.
    again = await gw.client.get("/clio/callback", params={"code": "abc", "state": state})
    assert again.status_code == 400 and "not started here" in again.text
    assert len(seen) == 1


async def test_a_missing_region_connects_the_us_host(gw: Gateway) -> None:
    resp = await gw.client.post("/settings/clio/connect", {})
    assert resp.status_code == 303
    assert (await states(gw))[0].state.startswith("us.")


@pytest.mark.parametrize("region", ["mars", "US", "", "u" * 5000, "ca.evil"])
async def test_a_bad_region_is_a_400_and_starts_nothing(gw: Gateway, region: str) -> None:
    data = {"region": region} if region else {"region": " x "}
    resp = await gw.client.post("/settings/clio/connect", data)
    assert resp.status_code == 400
    assert "Choose the region of your Clio account" in resp.text
    assert await states(gw) == [] and gw.sync.sent("GET", "/internal/clio/authorize-url") == []


async def test_connect_needs_the_forms_csrf_token(gw: Gateway) -> None:
    resp = await gw.client.post("/settings/clio/connect", {"region": "us"}, csrf=False)
    assert resp.status_code == 403 and await states(gw) == []


@pytest.mark.parametrize(
    "params",
    [
        {"code": "abc"},
        {"code": "abc", "state": "forged"},
        {"code": "abc", "state": "ca." + "A" * 32},
        {"code": "abc", "state": "zz." + "A" * 32},
        {"code": "abc", "state": "s" * 60_000},
        {"code": "abc", "state": "<script>alert(1)</script>"},
    ],
)
async def test_a_forged_or_missing_state_is_refused(gw: Gateway, params: dict[str, str]) -> None:
    seen = connect_recorder(gw)
    resp = await gw.client.get("/clio/callback", params=params)
    assert resp.status_code == 400
    assert "not started here" in resp.text and "<script>alert" not in resp.text
    assert seen == []


async def test_another_firms_state_is_neither_used_nor_consumed(gw: Gateway) -> None:
    state = await start(gw, "eu")
    other = await other_firm_client(gw)
    seen = connect_recorder(gw)
    try:
        resp = await other.get("/clio/callback", params={"code": "abc", "state": state})
    finally:
        await other.http.aclose()
    assert resp.status_code == 400 and "not started here" in resp.text
    assert [r.state for r in await states(gw)] == [state]
    assert gw.sync.sent("POST", f"/internal/firms/{OTHER_FIRM}/clio/connect") == []
    # The firm that started it still completes it.
    resp = await gw.client.get("/clio/callback", params={"code": "abc", "state": state})
    assert resp.status_code == 303 and seen[0]["region"] == "eu"


async def test_an_expired_state_is_refused(gw: Gateway) -> None:
    state = await start(gw)
    assert gw.app is not None
    async with gw.app.state.service.sessionmaker() as s, s.begin():
        row = await s.get(OAuthState, state)
        assert row is not None
        row.created_at = datetime.now(UTC) - timedelta(hours=2)
    resp = await gw.client.get("/clio/callback", params={"code": "abc", "state": state})
    assert resp.status_code == 400 and "expired" in resp.text
    assert await states(gw) == []


async def test_a_denial_or_an_oversized_code_is_a_400(gw: Gateway) -> None:
    seen = connect_recorder(gw)
    state = await start(gw)
    resp = await gw.client.get(
        "/clio/callback", params={"error": "access_denied<b>", "state": state}
    )
    assert resp.status_code == 400 and "access_denied&lt;b&gt;" in resp.text
    state = await start(gw)
    resp = await gw.client.get("/clio/callback", params={"code": "c" * 5000, "state": state})
    assert resp.status_code == 400 and "too long" in resp.text
    assert seen == []


async def test_clio_refusing_the_code_is_a_400_with_its_reason(gw: Gateway) -> None:
    connect_recorder(gw, 400, {"detail": "Clio refused the authorization (400): invalid_grant"})
    state = await start(gw)
    resp = await gw.client.get("/clio/callback", params={"code": "old", "state": state})
    assert resp.status_code == 400 and "invalid_grant" in resp.text


# --- disconnecting and health ---------------------------------------------------------------


async def test_disconnect_says_whether_clio_revoked(gw: Gateway) -> None:
    answers = iter(
        [
            {"was_connected": True, "revoked": True, "problem": None},
            {"was_connected": True, "revoked": False, "problem": "Clio could not be reached"},
        ]
    )
    gw.sync.handle(
        "POST",
        f"{BASE}/clio/disconnect",
        lambda r: httpx.Response(200, json=next(answers)),
    )
    resp = await gw.client.post("/settings/clio/disconnect", {})
    assert resp.status_code == 200 and 'id="revoked"' in resp.text
    resp = await gw.client.post("/settings/clio/disconnect", {})
    assert 'id="not-revoked"' in resp.text and "Clio could not be reached" in resp.text
    forged = await gw.client.post("/settings/clio/disconnect", {}, csrf=False)
    assert forged.status_code == 403
    assert len(gw.sync.sent("POST", f"{BASE}/clio/disconnect")) == 2


HEALTH = {
    "connected": True,
    "region": "au",
    "account_name": "<b>Hartwell</b> AU",
    "connected_at": "2026-11-02T10:00:00Z",
    "last_synced_at": "2026-12-07T09:00:00Z",
    "last_success_at": "2026-12-07T09:00:00Z",
    "last_error": "Clio answered 503 <again>",
    "last_error_at": "2026-12-07T08:00:00Z",
    "quarantined": 3,
    "rate_limit": {
        "limit": 50,
        "remaining": 7,
        "resets_at": "2026-12-07T09:01:00Z",
        "blocked_until": "2026-12-07T09:00:30Z",
    },
    "webhooks": {"mode": "polling", "reason": "no public URL is set", "poll_seconds": 60},
}


async def test_settings_shows_the_connections_health(gw: Gateway) -> None:
    gw.sync.on("GET", f"{BASE}/clio", body=HEALTH)
    page = (await gw.client.get("/settings")).text
    text = unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))
    assert "Region Australia" in text
    assert "&lt;b&gt;Hartwell&lt;/b&gt; AU" in page
    assert "Clio answered 503 &lt;again&gt;" in page and "Dec 7, 08:00" in text
    assert "7 of 50 left" in text and "pause until Dec 7, 09:00" in text
    assert "By polling every 60 s: no public URL is set" in text
    assert re.search(r'<a href="/sync/issues">3 bills held back</a>', page)
    assert 'option value="au" selected' in page and "Disconnect Clio" in page

    webhooks = HEALTH | {
        "webhooks": {"mode": "webhooks", "active": 2, "expires_at": "2026-12-30T00:00:00Z"},
        "rate_limit": None,
        "last_error": None,
    }
    gw.sync.on("GET", f"{BASE}/clio", body=webhooks)
    text = re.sub(r"\s+", " ", (await gw.client.get("/settings")).text)
    assert "By webhook (2 active, renewed before Dec 30, 00:00)" in text
    assert "request budget" not in text and "Last error" not in text


# --- Sync button, progress -------------------------------------------------------------------


async def test_sync_starts_and_shows_live_progress(gw: Gateway) -> None:
    gw.sync.on("POST", f"{BASE}/sync", status=202, body={"running": True})
    running = {
        "running": True,
        "started_at": "2026-12-07T09:00:00Z",
        "fetched": 120,
        "total": 480,
        "seconds_left": 185.0,
    }
    gw.sync.on("GET", f"{BASE}/sync/progress", body=running)
    gw.sync.on("GET", f"{BASE}/clio", body={"connected": True})
    await gw.client.get("/settings")
    resp = await gw.client.post("/invoices/sync", {})
    assert resp.status_code == 303 and resp.headers["location"] == "/sync"
    page = (await gw.client.get("/sync")).text
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "120 of 480 bills fetched" in text
    assert "about 3 min left at the current rate" in text
    assert '<meta http-equiv="refresh"' in page and 'src="/static/sync.js"' in page
    assert 'style="width: 25%"' in page
    data = (await gw.client.get("/sync/progress.json")).json()
    assert data["running"] is True and data["fetched"] == 120 and data["total"] == 480
    assert data["percent"] == 25 and data["left"] == "about 3 min"

    done = running | {"running": False, "finished_at": "2026-12-07T09:04:00Z", "changed": 9}
    gw.sync.on("GET", f"{BASE}/sync/progress", body=done)
    page = (await gw.client.get("/sync")).text
    assert "Last completed sync" in page and "Dec 7, 09:04" in page
    assert 'http-equiv="refresh"' not in page
    assert (await gw.client.get("/sync/progress.json")).json()["running"] is False


async def test_sync_without_progress_shows_the_last_sync(gw: Gateway) -> None:
    gw.sync.on(
        "GET", f"{BASE}/clio", body={"connected": True, "last_synced_at": "2026-12-07T07:15:00Z"}
    )
    page = (await gw.client.get("/sync")).text
    assert "Last completed sync" in page and "Dec 7, 07:15" in page


async def test_sync_when_not_connected_goes_to_settings(gw: Gateway) -> None:
    gw.sync.on("POST", f"{BASE}/sync", status=409, body={"detail": "Clio is not connected"})
    resp = await gw.client.post("/invoices/sync", {})
    assert resp.status_code == 303 and resp.headers["location"] == "/settings"


async def test_progress_json_needs_a_login(gateway: Gateway) -> None:
    resp = await gateway.client.get("/sync/progress.json")
    assert resp.status_code == 303 and resp.headers["location"] == "/login"


# --- Sync issues ----------------------------------------------------------------------------


async def test_sync_issues_lists_held_back_bills_with_links_to_clio(gw: Gateway) -> None:
    items = [
        {
            "source": "clio",
            "source_id": "5100007",
            "reason": "The bill has no client <img src=x>",
            "received_at": "2026-12-07T08:30:00Z",
            "source_url": "https://ca.app.clio.com/nc/#/bills/5100007",
        },
        {
            "source": "clio",
            "source_id": "5100008",
            "reason": "odd",
            "received_at": "2026-12-07T08:31:00Z",
            "source_url": "javascript:alert(1)",
        },
    ]
    gw.sync.on("GET", f"{BASE}/quarantine", body=items)
    gw.sync.on("GET", f"{BASE}/clio", body={"connected": True, "quarantined": 2})
    page = (await gw.client.get("/sync/issues")).text
    assert "Clio bill 5100007" in page and "&lt;img src=x&gt;" in page
    assert 'href="https://ca.app.clio.com/nc/#/bills/5100007"' in page
    assert "javascript:" not in page
    assert "Dec 7, 08:30" in page
    # Reached from the Invoices notice.
    gw.envelope.on(
        "GET", f"{BASE}/invoices", body={"items": [], "total": 0, "page": 1, "per_page": 25}
    )
    invoices = (await gw.client.get("/invoices")).text
    assert 'href="/sync/issues"' in invoices
