"""Clio's regions in the sandbox: US at the root, CA, EU and AU under path prefixes, each
its own firm; codes and tokens work only where they were issued."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sandbox.clio import SandboxSettings, SandboxState, create_app
from tests.sandbox.test_clio_sandbox import START, FakeClock, assert_clio_error

BASE_URL = "http://clio.test"
CLIENT = {"client_id": "sandbox-client", "client_secret": "sandbox-secret"}
REDIRECT_URI = "http://app.test/integrations/clio/callback"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    state = SandboxState(settings=SandboxSettings(), clock=FakeClock(START))
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


async def token_for(client: httpx.AsyncClient, prefix: str) -> str:
    minted = await client.post(f"{prefix}/sandbox/tokens")
    assert minted.status_code == 200
    token: str = minted.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def consent(client: httpx.AsyncClient, prefix: str) -> tuple[str, str]:
    """Walk a region's consent page like a browser: the page's text and the code."""
    params = {
        "response_type": "code",
        "client_id": CLIENT["client_id"],
        "redirect_uri": REDIRECT_URI,
        "state": "s1",
    }
    page = await client.get(f"{prefix}/oauth/authorize", params=params)
    assert page.status_code == 200
    action = re.search(r'<form method="post" action="([^"]+)">', page.text)
    assert action is not None and action.group(1) == f"{prefix}/oauth/authorize"
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
    decision = await client.post(action.group(1), data={**hidden, "decision": "allow"})
    assert decision.status_code == 302
    code = parse_qs(urlsplit(decision.headers["location"]).query)["code"][0]
    return page.text, code


async def exchange(client: httpx.AsyncClient, prefix: str, code: str) -> httpx.Response:
    return await client.post(
        f"{prefix}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            **CLIENT,
        },
    )


@pytest.mark.parametrize(
    ("prefix", "firm"),
    [("", "Demo Law LLP"), ("/ca", "Maple Legal LLP"), ("/eu", "Rhein &amp; Partner")],
)
async def test_each_region_has_its_consent_flow_and_firm(
    client: httpx.AsyncClient, prefix: str, firm: str
) -> None:
    page, code = await consent(client, prefix)
    assert firm in page
    issued = await exchange(client, prefix, code)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    me = await client.get(
        f"{prefix}/api/v4/users/who_am_i.json",
        params={"fields": "id,account{name}"},
        headers=bearer(token),
    )
    assert me.status_code == 200
    assert me.json()["data"]["account"]["name"].startswith(firm.split(" &amp;")[0])
    refreshed = await client.post(
        f"{prefix}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": issued.json()["refresh_token"],
            **CLIENT,
        },
    )
    assert refreshed.status_code == 200


async def test_codes_and_tokens_are_bound_to_their_region(client: httpx.AsyncClient) -> None:
    _, code = await consent(client, "/eu")
    # Redeemed at another region's host, the code is refused, and it is burnt.
    refused = await exchange(client, "", code)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"

    _, code = await consent(client, "/eu")
    eu = (await exchange(client, "/eu", code)).json()
    assert (
        await client.get("/eu/api/v4/bills.json", headers=bearer(eu["access_token"]))
    ).is_success
    for other in ("", "/ca", "/au"):
        wrong = await client.get(f"{other}/api/v4/bills.json", headers=bearer(eu["access_token"]))
        assert_clio_error(wrong, 401)
    refresh_elsewhere = await client.post(
        "/au/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": eu["refresh_token"], **CLIENT},
    )
    assert refresh_elsewhere.status_code == 400

    us = await token_for(client, "")
    assert_clio_error(await client.get("/eu/api/v4/bills.json", headers=bearer(us)), 401)


async def test_regions_are_separate_worlds(client: httpx.AsyncClient) -> None:
    ids: dict[str, set[int]] = {}
    for prefix in ("", "/ca", "/eu", "/au"):
        token = await token_for(client, prefix)
        listed = await client.get(
            f"{prefix}/api/v4/bills.json",
            params={"fields": "id,client{name}"},
            headers=bearer(token),
        )
        assert listed.status_code == 200
        ids[prefix] = {bill["id"] for bill in listed.json()["data"]}
        assert ids[prefix]
    assert len(ids[""]) > len(ids["/eu"]) >= 6
    for first in ids:
        for second in ids:
            if first != second:
                assert not ids[first] & ids[second]

    # A hook under a prefix changes that region's firm only.
    eu_token = await token_for(client, "/eu")
    eu_bill = min(ids["/eu"])
    changed = await client.patch(f"/eu/sandbox/bills/{eu_bill}", json={"subject": "Neu"})
    assert changed.status_code == 200
    shown = await client.get(
        f"/eu/api/v4/bills/{eu_bill}.json", params={"fields": "subject"}, headers=bearer(eu_token)
    )
    assert shown.json()["data"]["subject"] == "Neu"
    missing = await client.patch(f"/sandbox/bills/{eu_bill}", json={"subject": "x"})
    assert missing.status_code == 404


async def test_paging_next_keeps_the_region_prefix(client: httpx.AsyncClient) -> None:
    token = await token_for(client, "/au")
    seen: list[int] = []
    response = await client.get(
        "/au/api/v4/line_items.json", params={"limit": 2}, headers=bearer(token)
    )
    while True:
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        seen.extend(item["id"] for item in body["data"])
        next_url = body["meta"]["paging"].get("next")
        if next_url is None:
            break
        assert urlsplit(next_url).path == "/au/api/v4/line_items.json"
        response = await client.get(next_url, headers=bearer(token))
    assert seen == sorted(set(seen))
    assert len(seen) == body["meta"]["records"]


async def test_deauthorize_revokes_only_in_its_region(client: httpx.AsyncClient) -> None:
    token = await token_for(client, "/ca")
    elsewhere = await client.post("/oauth/deauthorize", headers=bearer(token))
    assert_clio_error(elsewhere, 401)
    assert (await client.get("/ca/api/v4/bills.json", headers=bearer(token))).status_code == 200
    revoked = await client.post("/ca/oauth/deauthorize", headers=bearer(token))
    assert revoked.status_code == 200
    assert_clio_error(await client.get("/ca/api/v4/bills.json", headers=bearer(token)), 401)


async def test_request_log_names_the_region(client: httpx.AsyncClient) -> None:
    token = await token_for(client, "/eu")
    await client.get("/eu/api/v4/contacts.json", headers=bearer(token))
    log = (await client.get("/sandbox/requests")).json()["data"]
    assert log[-1]["path"] == "/eu/api/v4/contacts.json"
    assert log[-1]["region"] == "eu" and log[-1]["authorized"] is True
