"""The Clio sandbox, driven in-process the way the sync service will drive Clio.

Every test gets a fresh sandbox with a clock it controls, so expiry, rate windows and
`updated_since` can be tested without sleeping. Records are checked against the schemas
of Clio's own OpenAPI document.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema
import pytest

from sandbox.clio import SandboxSettings, SandboxState, create_app
from sandbox.clio.fields import all_fields
from sandbox.clio.render import (
    BILL_CATALOG,
    CONTACT_CATALOG,
    LINE_ITEM_CATALOG,
    OUTSTANDING_BALANCE_CATALOG,
    SCHEMA_OF_CATALOG,
    USER_CATALOG,
)
from sandbox.clio.seed import build_world, firm_today

REPO_ROOT = Path(__file__).resolve().parents[2]
OPENAPI_CANDIDATES = (
    os.environ.get("CLIO_OPENAPI_PATH", ""),
    str(REPO_ROOT / "docs/reference/clio-api-v4.openapi.json"),
    str(REPO_ROOT / "reference/clio-api-v4.openapi.json"),
    str(REPO_ROOT.parent / "shared/reference/clio-api-v4.openapi.json"),
)
BASE_URL = "http://clio.test"
CLIENT_ID = "sandbox-client"
CLIENT_SECRET = "sandbox-secret"
REDIRECT_URI = "http://app.test/integrations/clio/callback"
START = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def make_state(clock: FakeClock, **settings: Any) -> SandboxState:
    return SandboxState(settings=SandboxSettings(**settings), clock=clock)


@pytest.fixture
def state(clock: FakeClock) -> SandboxState:
    return make_state(clock)


async def _client(state: SandboxState) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(state))
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


@pytest.fixture
async def client(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    async with await _client(state) as http:
        yield http


@pytest.fixture
async def api(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client holding an access token minted through the test hook."""
    response = await client.post("/sandbox/tokens")
    client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
    return client


async def fetch_all(
    api: httpx.AsyncClient, path: str, params: dict[str, Any] | None = None
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Every record of a listing, following `meta.paging.next`; also each page's body."""
    response = await api.get(path, params=params)
    pages = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body)
        next_url = body["meta"]["paging"].get("next")
        if next_url is None:
            break
        response = await api.get(next_url)
    return [record for page in pages for record in page["data"]], pages


def money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def assert_clio_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["type"], str) and error["type"]
    assert isinstance(error["message"], str) and error["message"]


# --- OAuth --------------------------------------------------------------------------------


async def authorize(client: httpx.AsyncClient, state_param: str = "csrf-123") -> str:
    """Walk the consent page like a browser and return the authorization code."""
    params = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "state": state_param,
    }
    page = await client.get("/oauth/authorize", params=params)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "Allow access" in page.text
    assert re.search(r'<form method="post" action="/oauth/authorize">', page.text)
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
    assert hidden == params
    decision = await client.post("/oauth/authorize", data={**hidden, "decision": "allow"})
    assert decision.status_code == 302
    location = urlsplit(decision.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    assert query["state"] == [state_param]
    return query["code"][0]


async def exchange(client: httpx.AsyncClient, code: str, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URI,
        **overrides,
    }
    return await client.post("/oauth/token", data=form)


async def test_oauth_code_flow_end_to_end(client: httpx.AsyncClient) -> None:
    code = await authorize(client)
    response = await exchange(client, code)
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 2_592_000

    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = await client.get(
        "/api/v4/users/who_am_i.json",
        params={"fields": "id,name,email,account{name}"},
        headers=bearer,
    )
    assert me.status_code == 200
    user = me.json()["data"]
    assert user["name"] == "Jordan Blake"
    assert user["email"].endswith("@example.com")
    assert user["account"] == {"name": "Demo Law LLP"}

    reused = await exchange(client, code)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"

    refreshed = await client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert refreshed.status_code == 200
    renewed = refreshed.json()
    assert renewed["access_token"] != tokens["access_token"]
    assert renewed["refresh_token"] == tokens["refresh_token"]
    renewed_bearer = {"Authorization": f"Bearer {renewed['access_token']}"}
    assert (await client.get("/api/v4/bills.json", headers=renewed_bearer)).status_code == 200

    revoked = await client.post("/oauth/deauthorize", headers=renewed_bearer)
    assert revoked.status_code == 200
    for headers in (bearer, renewed_bearer):
        assert_clio_error(await client.get("/api/v4/bills.json", headers=headers), 401)
    refresh_again = await client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert refresh_again.json()["error"] == "invalid_grant"


async def test_oauth_refuses_bad_clients_codes_and_redirects(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    unknown = await client.get(
        "/oauth/authorize",
        params={"response_type": "code", "client_id": "stranger", "redirect_uri": REDIRECT_URI},
    )
    assert unknown.status_code == 400
    assert "text/html" in unknown.headers["content-type"]
    assert "Allow access" not in unknown.text

    wrong_secret = await exchange(client, await authorize(client), client_secret="guess")
    assert wrong_secret.status_code == 401
    assert wrong_secret.json()["error"] == "invalid_client"

    other_redirect = await exchange(
        client, await authorize(client), redirect_uri="http://evil.test/cb"
    )
    assert other_redirect.json()["error"] == "invalid_grant"

    code = await authorize(client)
    clock.advance(minutes=11)
    expired = await exchange(client, code)
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"

    denied = await client.post(
        "/oauth/authorize",
        data={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "state": "s1",
            "decision": "deny",
        },
    )
    assert denied.status_code == 302
    assert parse_qs(urlsplit(denied.headers["location"]).query) == {
        "error": ["access_denied"],
        "state": ["s1"],
    }


async def test_access_tokens_expire_after_thirty_days(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    tokens = (await exchange(client, await authorize(client))).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    clock.advance(days=29)
    assert (await client.get("/api/v4/bills.json", headers=bearer)).status_code == 200
    clock.advance(days=2)
    assert_clio_error(await client.get("/api/v4/bills.json", headers=bearer), 401)


async def test_api_refuses_missing_or_unknown_tokens(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v4/bills.json")
    assert_clio_error(missing, 401)
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "x-ratelimit-limit" in missing.headers
    unknown = await client.get(
        "/api/v4/contacts.json", headers={"Authorization": "Bearer not-a-token"}
    )
    assert_clio_error(unknown, 401)
    basic = await client.get("/api/v4/bills/5100001.json", headers={"Authorization": "Basic eA=="})
    assert_clio_error(basic, 401)


# --- fields -------------------------------------------------------------------------------


async def test_without_fields_only_id_and_etag(api: httpx.AsyncClient) -> None:
    for path in ("/api/v4/bills.json", "/api/v4/contacts.json", "/api/v4/line_items.json"):
        records = (await api.get(path)).json()["data"]
        assert records
        assert all(set(record) == {"id", "etag"} for record in records), path
    single = (await api.get("/api/v4/bills/5100001.json")).json()["data"]
    assert set(single) == {"id", "etag"}


async def test_fields_selection_with_one_nesting_level(api: httpx.AsyncClient) -> None:
    response = await api.get(
        "/api/v4/bills.json", params={"fields": "id,etag,number,client{id,name}", "limit": 5}
    )
    assert response.status_code == 200
    for bill in response.json()["data"]:
        assert list(bill) == ["id", "etag", "number", "client"]
        assert set(bill["client"]) == {"id", "name"}
        assert isinstance(bill["number"], str)

    # A nested resource named without braces comes back with its default fields.
    defaults = await api.get("/api/v4/bills.json", params={"fields": "id,client,matters"})
    bill = defaults.json()["data"][0]
    assert set(bill["client"]) == {"id", "etag"}
    assert all(set(matter) == {"id", "etag"} for matter in bill["matters"])

    contact = await api.get(
        "/api/v4/contacts/9100001.json", params={"fields": "name,email_addresses{address}"}
    )
    assert contact.json()["data"] == {
        "name": "Acme Holdings Inc.",
        "email_addresses": [
            {"address": "ap.acme@example.com"},
            {"address": "legal.acme@example.com"},
        ],
    }


@pytest.mark.parametrize(
    "fields",
    [
        "id,colour",
        "id,client{id,company{name}}",
        "id,client{id,nickname}",
        "number{id}",
        "id,client{id",
        "id,,etag",
        "id,client}",
    ],
)
async def test_bad_fields_are_refused(api: httpx.AsyncClient, fields: str) -> None:
    assert_clio_error(await api.get("/api/v4/bills.json", params={"fields": fields}), 400)
    assert_clio_error(await api.get("/api/v4/bills/5100001.json", params={"fields": fields}), 400)


# --- paging -------------------------------------------------------------------------------


# 45 seeded bills: 7 leaves a short last page, 9 a full one, 200 a single page.
@pytest.mark.parametrize("limit", [7, 9, 200])
async def test_paging_visits_every_bill_once(
    api: httpx.AsyncClient, state: SandboxState, limit: int
) -> None:
    fields = "id,number,client{id,name}"
    bills, pages = await fetch_all(api, "/api/v4/bills.json", {"limit": limit, "fields": fields})
    ids = [bill["id"] for bill in bills]
    seeded = len(state.world.bills)
    assert seeded >= 30
    assert len(ids) == len(set(ids)) == seeded
    assert ids == sorted(ids), "default order is id(asc)"
    assert len(pages) == math.ceil(seeded / limit)
    assert all(len(page["data"]) == limit for page in pages[:-1])
    assert "next" not in pages[-1]["meta"]["paging"]
    assert all(page["meta"]["records"] == seeded for page in pages)
    if len(pages) == 1:
        return
    first_next = urlsplit(pages[0]["meta"]["paging"]["next"])
    assert (first_next.scheme, first_next.netloc, first_next.path) == (
        "http",
        "clio.test",
        "/api/v4/bills.json",
    )
    carried = parse_qs(first_next.query)
    assert carried["limit"] == [str(limit)] and carried["fields"] == [fields]


async def test_paging_in_other_orders_and_filters_agree(api: httpx.AsyncClient) -> None:
    by_due, _ = await fetch_all(
        api, "/api/v4/bills.json", {"limit": 4, "order": "due_at(desc)", "fields": "id,due_at"}
    )
    assert [b["due_at"] for b in by_due] == sorted((b["due_at"] for b in by_due), reverse=True)
    newest_first, _ = await fetch_all(api, "/api/v4/bills.json", {"limit": 6, "order": "id(desc)"})
    assert [b["id"] for b in newest_first] == sorted({b["id"] for b in by_due}, reverse=True)
    unpaid, pages = await fetch_all(
        api, "/api/v4/bills.json", {"limit": 5, "state": "awaiting_payment", "fields": "id,state"}
    )
    assert {bill["state"] for bill in unpaid} == {"awaiting_payment"}
    assert pages[0]["meta"]["records"] == len(unpaid)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "many"},
        {"order": "colour(asc)"},
        {"page_token": "%%%not-a-token"},
        {"state": "unpaid"},
        {"type": "operating"},
        {"updated_since": "yesterday"},
        {"client_id": "acme"},
    ],
)
async def test_bad_list_parameters_are_refused(
    api: httpx.AsyncClient, params: dict[str, str]
) -> None:
    assert_clio_error(await api.get("/api/v4/bills.json", params=params), 400)


async def test_limit_bounds_are_inclusive(api: httpx.AsyncClient) -> None:
    one = await api.get("/api/v4/bills.json", params={"limit": 1})
    assert len(one.json()["data"]) == 1
    most = await api.get("/api/v4/bills.json", params={"limit": 200})
    assert "next" not in most.json()["meta"]["paging"]


# --- filters ------------------------------------------------------------------------------


async def test_updated_since_is_inclusive_and_sees_hook_changes(
    api: httpx.AsyncClient, clock: FakeClock
) -> None:
    fields = {"fields": "id,etag,updated_at,subject"}
    assert (
        await api.get("/api/v4/bills.json", params={"updated_since": clock().isoformat()})
    ).json()["data"] == []

    all_bills, _ = await fetch_all(api, "/api/v4/bills.json", fields)
    pivot = sorted(all_bills, key=lambda b: b["updated_at"])[len(all_bills) // 2]["updated_at"]
    since_pivot, _ = await fetch_all(api, "/api/v4/bills.json", {**fields, "updated_since": pivot})
    pivot_at = datetime.fromisoformat(pivot)
    expected = {b["id"] for b in all_bills if datetime.fromisoformat(b["updated_at"]) >= pivot_at}
    assert {b["id"] for b in since_pivot} == expected
    assert pivot in {b["updated_at"] for b in since_pivot}

    clock.advance(minutes=5)
    before = clock()
    target = all_bills[3]
    patched = await api.patch(f"/sandbox/bills/{target['id']}", json={"subject": "Revised"})
    assert patched.status_code == 200
    assert patched.json()["data"]["etag"] != target["etag"]
    changed = (
        await api.get("/api/v4/bills.json", params={**fields, "updated_since": before.isoformat()})
    ).json()["data"]
    assert [(b["id"], b["subject"]) for b in changed] == [(target["id"], "Revised")]
    assert datetime.fromisoformat(changed[0]["updated_at"]) == before
    later = (before + timedelta(seconds=1)).isoformat()
    assert (await api.get("/api/v4/bills.json", params={"updated_since": later})).json()[
        "data"
    ] == []


async def test_type_trust_lists_trust_requests_only(api: httpx.AsyncClient) -> None:
    fields = {"fields": "id,kind,destination_account{name}"}
    trust, _ = await fetch_all(api, "/api/v4/bills.json", {**fields, "type": "trust"})
    revenue, _ = await fetch_all(api, "/api/v4/bills.json", {**fields, "type": "revenue"})
    everything, _ = await fetch_all(api, "/api/v4/bills.json", fields)
    assert len(trust) >= 5
    assert {bill["kind"] for bill in trust} == {"trust_kind"}
    assert {bill["destination_account"]["name"] for bill in trust} == {"IOLTA Trust Account"}
    assert "trust_kind" not in {bill["kind"] for bill in revenue}
    assert len(trust) + len(revenue) == len(everything)


async def test_bill_filters_by_client_query_ids_and_overdue(
    api: httpx.AsyncClient, clock: FakeClock
) -> None:
    fields = "id,number,state,due_at,client{id}"
    acme, _ = await fetch_all(api, "/api/v4/bills.json", {"client_id": 9100001, "fields": fields})
    assert len(acme) == 15 and {b["client"]["id"] for b in acme} == {9100001}
    found = (await api.get("/api/v4/bills.json", params={"query": "1007", "fields": fields})).json()
    assert [b["number"] for b in found["data"]] == ["INV-1007"]
    picked = await api.get(
        "/api/v4/bills.json", params=[("ids[]", "5100002"), ("ids[]", "5100009")]
    )
    assert [b["id"] for b in picked.json()["data"]] == [5100002, 5100009]
    overdue, _ = await fetch_all(api, "/api/v4/bills.json", {"status": "overdue", "fields": fields})
    today = firm_today(clock())
    assert overdue
    assert all(
        b["state"] == "awaiting_payment" and date.fromisoformat(b["due_at"]) < today
        for b in overdue
    )


async def test_contacts_filters(api: httpx.AsyncClient, clock: FakeClock) -> None:
    picked = await api.get(
        "/api/v4/contacts.json",
        params=[("ids[]", "9100002"), ("ids[]", "9100004"), ("fields", "id,name")],
    )
    assert picked.json()["data"] == [
        {"id": 9100002, "name": "Rivera Family Trust"},
        {"id": 9100004, "name": "Priya Shah"},
    ]
    clock.advance(minutes=1)
    since = clock().isoformat()
    assert (await api.get("/api/v4/contacts.json", params={"updated_since": since})).json()[
        "data"
    ] == []
    await api.patch("/sandbox/contacts/9100003", json={"primary_email_address": "dan@example.com"})
    changed = await api.get(
        "/api/v4/contacts.json",
        params={"updated_since": since, "fields": "id,primary_email_address"},
    )
    assert changed.json()["data"] == [{"id": 9100003, "primary_email_address": "dan@example.com"}]


# --- rate limit, versions, etags ------------------------------------------------------------


async def test_rate_limit_answers_429_then_recovers(clock: FakeClock) -> None:
    state = make_state(clock, rate_limit=3)
    async with await _client(state) as client:
        token = (await client.post("/sandbox/tokens")).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        window_end = int(clock().timestamp()) + 60
        for remaining in (2, 1, 0):
            response = await client.get("/api/v4/bills.json")
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "3"
            assert response.headers["x-ratelimit-remaining"] == str(remaining)
            assert response.headers["x-ratelimit-reset"] == str(window_end)
        clock.advance(seconds=20)
        throttled = await client.get("/api/v4/contacts.json")
        assert_clio_error(throttled, 429)
        assert throttled.headers["retry-after"] == "40"
        assert throttled.headers["x-ratelimit-remaining"] == "0"
        # Another token has its own window.
        other = (await client.post("/sandbox/tokens")).json()["access_token"]
        fresh = await client.get(
            "/api/v4/contacts.json", headers={"Authorization": f"Bearer {other}"}
        )
        assert fresh.status_code == 200
        clock.advance(seconds=41)
        recovered = await client.get("/api/v4/bills.json")
        assert recovered.status_code == 200
        assert recovered.headers["x-ratelimit-remaining"] == "2"


async def test_default_rate_limit_and_version_headers(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v4/users/who_am_i.json")
    assert response.headers["x-ratelimit-limit"] == "50"
    assert response.headers["x-api-version"] == "4.0.9"
    pinned = await api.get("/api/v4/bills.json", headers={"X-API-VERSION": "4.0.5"})
    assert pinned.headers["x-api-version"] == "4.0.5"
    assert_clio_error(await api.get("/api/v4/bills.json", headers={"X-API-VERSION": "3.0"}), 410)


async def test_show_honours_if_none_match_and_404s(api: httpx.AsyncClient) -> None:
    first = await api.get("/api/v4/bills/5100001.json")
    tag = first.json()["data"]["etag"]
    assert first.headers["etag"] == tag
    unchanged = await api.get("/api/v4/bills/5100001.json", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304
    assert_clio_error(await api.get("/api/v4/bills/9100001.json"), 404)
    assert_clio_error(await api.get("/api/v4/contacts/5100001.json"), 404)
    assert_clio_error(await api.get("/api/v4/bills/abc.json"), 404)


async def test_amounts_are_written_with_two_decimals(api: httpx.AsyncClient) -> None:
    response = await api.get(
        "/api/v4/bills.json", params={"fields": "id,total,balance,paid,sub_total,due"}
    )
    amounts = re.findall(r'"(?:total|balance|paid|sub_total|due)":(-?[0-9.eE+]+)', response.text)
    assert len(amounts) == 5 * len(response.json()["data"])
    assert all(re.fullmatch(r"-?\d+\.\d{2}", amount) for amount in amounts), amounts[:10]


# --- the seed -----------------------------------------------------------------------------


async def test_seeded_firm_matches_the_demo_story(api: httpx.AsyncClient) -> None:
    contacts, _ = await fetch_all(
        api, "/api/v4/contacts.json", {"fields": "id,name,type,is_client,primary_email_address"}
    )
    clients = [c for c in contacts if c["is_client"]]
    assert len(clients) >= 6
    assert all(c["primary_email_address"].endswith("@example.com") for c in clients)
    assert {"Acme Holdings Inc.", "Rivera Family Trust"} <= {c["name"] for c in clients}
    assert {"Person", "Company"} == {c["type"] for c in clients}

    bills, _ = await fetch_all(
        api, "/api/v4/bills.json", {"fields": "id,number,state,kind,currency{code},client{id}"}
    )
    assert len(bills) >= 30
    states = Counter(bill["state"] for bill in bills)
    assert {"draft", "awaiting_payment", "paid"} <= set(states)
    assert sum(bill["kind"] == "trust_kind" for bill in bills) >= 5
    assert {bill["currency"]["code"] for bill in bills} == {"USD"}
    assert all(re.fullmatch(r"INV-\d{4}", bill["number"]) for bill in bills)
    unpaid = Counter(b["client"]["id"] for b in bills if b["state"] == "awaiting_payment")
    heavy = [client_id for client_id, count in unpaid.items() if count > 10]
    assert len(heavy) >= 2
    for client_id in heavy:
        kinds = {b["kind"] for b in bills if b["client"]["id"] == client_id}
        assert "trust_kind" in kinds


async def test_line_items_add_up_to_each_bill(api: httpx.AsyncClient) -> None:
    bills, _ = await fetch_all(
        api, "/api/v4/bills.json", {"fields": "id,total,sub_total,services_sub_total"}
    )
    items, _ = await fetch_all(
        api,
        "/api/v4/line_items.json",
        {"fields": "id,type,kind,date,description,quantity,price,total,bill{id}"},
    )
    by_bill: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        by_bill[item["bill"]["id"]].append(item)
    for bill in bills:
        lines = by_bill[bill["id"]]
        assert 1 <= len(lines) <= 6
        assert sum(money(line["total"]) for line in lines) == money(bill["sub_total"])
        assert money(bill["sub_total"]) == money(bill["total"])
        services = sum(money(line["total"]) for line in lines if line["kind"] == "Service")
        assert services == money(bill["services_sub_total"])
        for line in lines:
            assert money(line["quantity"] * line["price"]) == money(line["total"])
    one_bill = await api.get(
        "/api/v4/line_items.json", params={"bill_id": bills[0]["id"], "fields": "id,total"}
    )
    assert {line["id"] for line in one_bill.json()["data"]} == {
        line["id"] for line in by_bill[bills[0]["id"]]
    }


async def test_outstanding_balances_sum_unpaid_bills(api: httpx.AsyncClient) -> None:
    bills, _ = await fetch_all(
        api, "/api/v4/bills.json", {"state": "awaiting_payment", "fields": "id,balance,client{id}"}
    )
    owed: dict[int, Decimal] = defaultdict(Decimal)
    for bill in bills:
        owed[bill["client"]["id"]] += money(bill["balance"])
    balances, _ = await fetch_all(
        api,
        "/api/v4/outstanding_client_balances.json",
        {"fields": "id,total_outstanding_balance,reminders_enabled,contact{id},outstanding_bills"},
    )
    assert {
        entry["contact"]["id"]: money(entry["total_outstanding_balance"]) for entry in balances
    } == owed
    assert any(entry["reminders_enabled"] is False for entry in balances)


def test_seed_is_the_same_on_every_start() -> None:
    today = date(2026, 3, 10)
    assert build_world(today).model_dump() == build_world(today).model_dump()
    shifted = build_world(today + timedelta(days=9))
    first = build_world(today)
    assert [b.number for b in shifted.bills.values()] == [b.number for b in first.bills.values()]
    assert [b.total for b in shifted.bills.values()] == [b.total for b in first.bills.values()]
    assert all(
        later.due_at - earlier.due_at == timedelta(days=9)
        for earlier, later in zip(first.bills.values(), shifted.bills.values(), strict=True)
    )


# --- hooks --------------------------------------------------------------------------------


async def test_hooks_create_change_and_reset_the_world(
    api: httpx.AsyncClient, state: SandboxState
) -> None:
    seeded = len(state.world.bills)
    created = await api.post(
        "/sandbox/bills",
        json={
            "client_id": 9100006,
            "total": 1234.5,
            "state": "awaiting_payment",
            "kind": "trust_kind",
        },
    )
    assert created.status_code == 201
    bill = created.json()["data"]
    assert (bill["kind"], bill["total"], bill["balance"]) == ("trust_kind", 1234.5, 1234.5)
    assert bill["client"]["name"] == "Bluebird Bakery Co."
    shown = await api.get(f"/api/v4/bills/{bill['id']}.json", params={"fields": "number,state"})
    assert shown.json()["data"] == {"number": bill["number"], "state": "awaiting_payment"}

    paid = await api.patch(f"/sandbox/bills/{bill['id']}", json={"state": "paid"})
    after = paid.json()["data"]
    assert (after["state"], after["paid"], after["balance"]) == ("paid", 1234.5, 0)
    assert after["etag"] != bill["etag"] and after["paid_at"] is not None

    lines = [
        {"description": "Draft demand letter", "quantity": 1.5, "price": 300},
        {"description": "Court filing fee", "price": 435, "kind": "Expense"},
    ]
    itemised = await api.post("/sandbox/bills", json={"client_id": 9100004, "line_items": lines})
    itemised_bill = itemised.json()["data"]
    assert (itemised_bill["total"], itemised_bill["services_sub_total"]) == (885, 450)
    items = await api.get(
        "/api/v4/line_items.json",
        params={"bill_id": itemised_bill["id"], "fields": "kind,total"},
    )
    assert items.json()["data"] == [
        {"kind": "Service", "total": 450},
        {"kind": "Expense", "total": 435},
    ]
    mismatch = {"client_id": 9100004, "total": 900, "line_items": lines}
    assert (await api.post("/sandbox/bills", json=mismatch)).status_code == 422
    assert (await api.patch("/sandbox/bills/5100001", json={"colour": "red"})).status_code == 422
    assert (await api.patch("/sandbox/bills/1", json={"state": "paid"})).status_code == 404
    assert (await api.post("/sandbox/bills", json={"client_id": 1, "total": 5})).status_code == 422

    contact = await api.post(
        "/sandbox/contacts",
        json={
            "type": "Person",
            "first_name": "Ada",
            "last_name": "Byron",
            "primary_email_address": "ada@example.com",
        },
    )
    assert contact.json()["data"]["name"] == "Ada Byron"

    reset = await api.post("/sandbox/reset")
    assert reset.json()["bills"] == seeded
    assert_clio_error(await api.get(f"/api/v4/bills/{bill['id']}.json"), 404)


async def test_raw_bills_are_served_as_given(api: httpx.AsyncClient) -> None:
    malformed = {"id": 5199999, "etag": '"raw"', "number": 1234, "total": "lots", "state": "weird"}
    inserted = await api.post("/sandbox/bills/raw", json=malformed)
    assert inserted.status_code == 201
    await api.post("/sandbox/bills/raw", json=["not", "an", "object"])
    bills, _ = await fetch_all(
        api, "/api/v4/bills.json", {"fields": "id,etag,number,total,state,client{id}"}
    )
    assert {
        "id": 5199999,
        "etag": '"raw"',
        "number": 1234,
        "total": "lots",
        "state": "weird",
    } in bills
    assert ["not", "an", "object"] in bills
    shown = await api.get("/api/v4/bills/5199999.json", params={"fields": "total,issued_at"})
    assert shown.json()["data"] == {"total": "lots"}
    # A raw bill is filtered out only when its own value contradicts the filter.
    paid, _ = await fetch_all(api, "/api/v4/bills.json", {"state": "paid", "fields": "id"})
    assert {"id": 5199999} not in paid
    patched = await api.patch("/sandbox/bills/5199999", json={"state": "paid"})
    assert patched.json()["data"]["etag"] != '"raw"'
    paid, _ = await fetch_all(api, "/api/v4/bills.json", {"state": "paid", "fields": "id"})
    assert {"id": 5199999} in paid


async def test_request_log_shows_what_clients_asked(api: httpx.AsyncClient) -> None:
    await api.get(
        "/api/v4/bills.json",
        params={"updated_since": "2026-03-01T00:00:00+00:00", "fields": "id,etag", "limit": 50},
    )
    await api.get("/api/v4/line_items.json", params={"bill_id": 5100001})
    log = (await api.get("/sandbox/requests")).json()["data"]
    assert [entry["path"] for entry in log] == ["/api/v4/bills.json", "/api/v4/line_items.json"]
    assert log[0]["method"] == "GET"
    assert log[0]["params"] == {
        "updated_since": ["2026-03-01T00:00:00+00:00"],
        "fields": ["id,etag"],
        "limit": ["50"],
    }
    assert log[0]["status"] == 200 and log[0]["authorized"] is True
    assert log[1]["params"] == {"bill_id": ["5100001"]}


# --- Clio's OpenAPI schemas -----------------------------------------------------------------


@cache
def openapi_document() -> dict[str, Any] | None:
    for candidate in OPENAPI_CANDIDATES:
        if candidate and Path(candidate).is_file():
            loaded: dict[str, Any] = json.loads(Path(candidate).read_text())
            return loaded
    return None


@pytest.fixture
def openapi() -> dict[str, Any]:
    document = openapi_document()
    if document is None:
        pytest.skip("Clio's OpenAPI document is not available (set CLIO_OPENAPI_PATH)")
    return document


def _json_schema(schema: Any, *, in_all_of: bool = False) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema 2020-12, strict about unknown properties.

    Clio's document marks nothing `nullable`, yet Clio returns null for every unset value
    (paid_at of an unpaid bill, first_name of a company), so every typed value may be null.
    Each `$ref` use (except the parts of an `allOf`) forbids properties the schema lacks.
    """
    if not isinstance(schema, dict):
        return schema
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "nullable":
            continue
        if key == "properties":
            converted[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif key in ("allOf", "anyOf", "oneOf"):
            converted[key] = [_json_schema(sub, in_all_of=key == "allOf") for sub in value]
        elif key in ("items", "additionalProperties", "not"):
            converted[key] = _json_schema(value)
        else:
            converted[key] = value
    if isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    if "$ref" in converted and not in_all_of:
        converted["unevaluatedProperties"] = False
    return converted


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        # Clio writes offsets on every timestamp; a naive one would be misread.
        return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None

    @checker.checks("date", raises=ValueError)
    def _date(value: object) -> bool:
        return not isinstance(value, str) or bool(date.fromisoformat(value))

    return checker


def validator_for(openapi: dict[str, Any], schema_name: str) -> jsonschema.Validator:
    schemas = {
        name: _json_schema(schema) for name, schema in openapi["components"]["schemas"].items()
    }
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": {"schemas": schemas},
        "$ref": f"#/components/schemas/{schema_name}",
        "unevaluatedProperties": False,
    }
    return jsonschema.Draft202012Validator(root, format_checker=_format_checker())


def schema_properties(openapi: dict[str, Any], name: str) -> dict[str, Any]:
    schema = openapi["components"]["schemas"][name]
    properties = dict(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        if "$ref" in part:
            properties.update(schema_properties(openapi, part["$ref"].rsplit("/", 1)[1]))
        properties.update(part.get("properties", {}))
    return properties


def _errors(validator: jsonschema.Validator, records: list[Any]) -> Iterator[str]:
    for record in records:
        for error in validator.iter_errors(record):
            yield f"{record.get('id')}: {'/'.join(map(str, error.absolute_path))}: {error.message}"


async def test_records_with_every_field_validate_against_clio_schemas(
    api: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    listings = {
        "Bill": ("/api/v4/bills.json", BILL_CATALOG),
        "Contact": ("/api/v4/contacts.json", CONTACT_CATALOG),
        "LineItem": ("/api/v4/line_items.json", LINE_ITEM_CATALOG),
        "OutstandingClientBalance": (
            "/api/v4/outstanding_client_balances.json",
            OUTSTANDING_BALANCE_CATALOG,
        ),
    }
    for schema_name, (path, catalog) in listings.items():
        records, _ = await fetch_all(api, path, {"fields": all_fields(catalog)})
        assert records, path
        assert all(set(record) == set(catalog) for record in records), path
        problems = list(_errors(validator_for(openapi, schema_name), records))
        assert problems == [], problems[:5]

    me = await api.get("/api/v4/users/who_am_i.json", params={"fields": all_fields(USER_CATALOG)})
    assert list(_errors(validator_for(openapi, "User"), [me.json()["data"]])) == []

    # The fields the sync relies on are never null in the seed.
    bills, _ = await fetch_all(api, "/api/v4/bills.json", {"fields": all_fields(BILL_CATALOG)})
    required = ("id", "etag", "number", "issued_at", "due_at", "state", "kind", "type", "total")
    assert all(bill[name] is not None for bill in bills for name in required)
    assert all(bill["client"]["primary_email_address"] for bill in bills)


def test_validation_catches_what_clio_would_not_send(openapi: dict[str, Any]) -> None:
    bill = validator_for(openapi, "Bill")
    assert bill.is_valid({"id": 1, "state": "paid", "client": {"id": 2, "name": "A"}})
    assert not bill.is_valid({"id": 1, "state": "unpaid"})
    assert not bill.is_valid({"id": 1, "colour": "red"})
    assert not bill.is_valid({"id": 1, "client": {"id": 2, "nickname": "A"}})
    assert not bill.is_valid({"id": "1"})
    assert not bill.is_valid({"updated_at": "2026-03-10T10:00:00"})


def test_every_offered_field_is_named_in_clio_schemas(openapi: dict[str, Any]) -> None:
    nested_schema = {
        ("Bill", "user"): "User_base",
        ("Bill", "client"): "Contact_base",
        ("Bill", "matters"): "Matter_base",
        ("Bill", "currency"): "Currency_base",
        ("Bill", "destination_account"): "BankAccount_base",
        ("Bill", "balances"): "Balance_base",
        ("Contact", "email_addresses"): "EmailAddress_base",
        ("Contact", "phone_numbers"): "PhoneNumber_base",
        ("Contact", "addresses"): "Address_base",
        ("Contact", "primary_address"): "Address_base",
        ("LineItem", "bill"): "Bill_base",
        ("LineItem", "matter"): "Matter_base",
        ("LineItem", "user"): "User_base",
        ("User", "account"): "Account_base",
        ("OutstandingClientBalance", "outstanding_bills"): "Bill_base",
        ("OutstandingClientBalance", "contact"): "Contact_base",
        ("OutstandingClientBalance", "currency"): "Currency_base",
    }
    for schema_name, catalog in SCHEMA_OF_CATALOG.items():
        offered = set(catalog)
        assert offered <= set(schema_properties(openapi, schema_name)), schema_name
        for field, nested in catalog.items():
            if nested is None:
                continue
            sub_schema = nested_schema[(schema_name, field)]
            assert set(nested.fields) <= set(schema_properties(openapi, sub_schema)), field
