"""Clio's webhooks in the sandbox: subscription rules, the X-Hook-Secret handshake, signed
deliveries on bill, contact and matter changes, retries, 410 and expiry.

Deliveries go to a receiver behind an httpx MockTransport (one test uses a real HTTP server);
the tests check each signature themselves, as the sync's intake must.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from sandbox.clio import SandboxSettings, SandboxState, create_app
from sandbox.clio.render import WEBHOOK_CATALOG
from sandbox.clio.seed import FIRM_TZ
from tests.sandbox.test_clio_sandbox import (
    START,
    FakeClock,
    assert_clio_error,
    openapi_document,
    validator_for,
)

BASE_URL = "http://clio.test"
HOOK_URL = "https://receiver.test/clio/webhooks"
ALL_FIELDS = "id,etag,url,fields,shared_secret,model,status,events,expires_at,created_at,updated_at"
BILL = 5_100_010
CONTACT = 9_100_002
MATTER = 7_100_001


@dataclass
class Receiver:
    """A webhook endpoint: answers the handshake by echoing the secret (unless told not to)
    and answers deliveries with the next scripted status (200 once the script runs out)."""

    echo: bool = True
    script: list[int] = field(default_factory=list)
    handshakes: list[httpx.Request] = field(default_factory=list)
    deliveries: list[httpx.Request] = field(default_factory=list)
    fail_connect: int = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        secret = request.headers.get("x-hook-secret")
        if secret is not None:
            self.handshakes.append(request)
            headers = {"X-Hook-Secret": secret} if self.echo else {}
            return httpx.Response(200, headers=headers)
        if self.fail_connect:
            self.fail_connect -= 1
            raise httpx.ConnectError("receiver down", request=request)
        self.deliveries.append(request)
        return httpx.Response(self.script.pop(0) if self.script else 200)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.deliveries]


@dataclass
class Sandbox:
    state: SandboxState
    clock: FakeClock
    http: httpx.AsyncClient
    receiver: Receiver

    async def settle(self) -> None:
        await self.state.webhooks.idle()

    async def subscribe(self, **data: Any) -> dict[str, Any]:
        body = {"url": HOOK_URL, "model": "bill", "fields": "id,state,balance", **data}
        created = await self.http.post(
            "/api/v4/webhooks.json", params={"fields": ALL_FIELDS}, json={"data": body}
        )
        assert created.status_code == 201, created.text
        await self.settle()
        hook: dict[str, Any] = created.json()["data"]
        return hook


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    clock = FakeClock(START)
    receiver = Receiver()
    state = SandboxState(
        settings=SandboxSettings(webhook_retry_delays=(0.0, 0.0)),
        clock=clock,
        webhook_transport=httpx.MockTransport(receiver),
    )
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        token = (await http.post("/sandbox/tokens")).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield Sandbox(state, clock, http, receiver)
        await state.webhooks.idle()


def verify(request: httpx.Request, secret: str) -> dict[str, Any]:
    """What a receiver must do: check the hex HMAC-SHA256 of the raw body, then parse it."""
    expected = hmac.new(secret.encode(), request.content, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-hook-signature"], expected)
    body: dict[str, Any] = json.loads(request.content)
    return body


# --- subscriptions ----------------------------------------------------------------------------


async def test_create_handshake_and_show(sandbox: Sandbox) -> None:
    hook = await sandbox.subscribe(events=["updated", "deleted"])
    assert hook["model"] == "bill" and hook["fields"] == "id,state,balance"
    assert hook["events"] == ["updated", "deleted"] and hook["url"] == HOOK_URL
    assert len(hook["shared_secret"]) >= 32
    assert hook["expires_at"] == (START + timedelta(days=3)).isoformat()
    # The handshake went out with the secret; the echo enabled the webhook.
    assert [r.headers["x-hook-secret"] for r in sandbox.receiver.handshakes] == [
        hook["shared_secret"]
    ]
    assert hook["status"] == "pending"
    shown = await sandbox.http.get(
        f"/api/v4/webhooks/{hook['id']}.json", params={"fields": "id,status,shared_secret"}
    )
    assert shown.json()["data"] == {
        "id": hook["id"],
        "status": "enabled",
        "shared_secret": hook["shared_secret"],
    }
    default = await sandbox.http.get(f"/api/v4/webhooks/{hook['id']}.json")
    assert set(default.json()["data"]) == {"id", "etag"}
    listed = await sandbox.http.get("/api/v4/webhooks.json", params={"fields": "id,model"})
    assert listed.json()["data"] == [{"id": hook["id"], "model": "bill"}]
    assert listed.json()["meta"]["records"] == 1


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"model": "bill", "url": HOOK_URL}, 422),  # fields is required
        ({"model": "bill", "url": HOOK_URL, "fields": "id,colour"}, 422),
        ({"model": "bill", "url": HOOK_URL, "fields": "id,client{id,company{name}}"}, 422),
        ({"model": "invoice", "url": HOOK_URL, "fields": "id"}, 422),
        ({"model": "bill", "url": "not a url", "fields": "id"}, 422),
        ({"model": "bill", "url": HOOK_URL, "fields": "id", "events": ["paid"]}, 422),
        ({"model": "bill", "url": HOOK_URL, "fields": "id", "expires_at": "tomorrow"}, 422),
    ],
)
async def test_bad_subscriptions_are_refused(
    sandbox: Sandbox, data: dict[str, Any], status: int
) -> None:
    assert_clio_error(await sandbox.http.post("/api/v4/webhooks.json", json={"data": data}), status)
    assert_clio_error(await sandbox.http.post("/api/v4/webhooks.json", json=data), 400)
    assert sandbox.state.webhooks.webhooks == {}


async def test_expiry_defaults_to_three_days_and_caps_at_thirty_one(sandbox: Sandbox) -> None:
    too_far = (START + timedelta(days=31, seconds=1)).isoformat()
    assert_clio_error(
        await sandbox.http.post(
            "/api/v4/webhooks.json",
            json={
                "data": {"url": HOOK_URL, "model": "bill", "fields": "id", "expires_at": too_far}
            },
        ),
        422,
    )
    hook = await sandbox.subscribe()
    farthest = (START + timedelta(days=31)).isoformat()
    extended = await sandbox.http.patch(
        f"/api/v4/webhooks/{hook['id']}.json",
        params={"fields": "expires_at,etag"},
        json={"data": {"expires_at": farthest}},
    )
    assert extended.status_code == 200
    assert extended.json()["data"]["expires_at"] == farthest
    assert extended.json()["data"]["etag"] != hook["etag"]
    assert_clio_error(
        await sandbox.http.patch(
            f"/api/v4/webhooks/{hook['id']}.json", json={"data": {"expires_at": too_far}}
        ),
        422,
    )


async def test_fields_are_checked_on_webhook_endpoints(sandbox: Sandbox) -> None:
    hook = await sandbox.subscribe()
    for path in ("/api/v4/webhooks.json", f"/api/v4/webhooks/{hook['id']}.json"):
        assert_clio_error(await sandbox.http.get(path, params={"fields": "id,secret"}), 400)
        assert_clio_error(
            await sandbox.http.get(path, params={"fields": "user{id,account{name}}"}), 400
        )
    nested = await sandbox.http.get(
        f"/api/v4/webhooks/{hook['id']}.json", params={"fields": "id,user{id,name}"}
    )
    assert set(nested.json()["data"]["user"]) == {"id", "name"}


async def test_webhooks_validate_against_clio_schema(sandbox: Sandbox) -> None:
    document = openapi_document()
    if document is None:
        pytest.skip("Clio's OpenAPI document is not available (set CLIO_OPENAPI_PATH)")
    hook = await sandbox.subscribe(model="contact", fields="id,name,email_addresses{address}")
    everything = ",".join(
        name if nested is None else f"{name}{{{','.join(nested.fields)}}}"
        for name, nested in WEBHOOK_CATALOG.items()
    )
    listed = await sandbox.http.get("/api/v4/webhooks.json", params={"fields": everything})
    shown = await sandbox.http.get(
        f"/api/v4/webhooks/{hook['id']}.json", params={"fields": everything}
    )
    validator = validator_for(document, "Webhook")
    records = [*listed.json()["data"], shown.json()["data"]]
    assert all(set(record) == set(WEBHOOK_CATALOG) for record in records)
    for record in records:
        assert list(validator.iter_errors(record)) == []


async def test_webhooks_belong_to_their_region(sandbox: Sandbox) -> None:
    hook = await sandbox.subscribe()
    eu = (await sandbox.http.post("/eu/sandbox/tokens")).json()["access_token"]
    eu_headers = {"Authorization": f"Bearer {eu}"}
    hidden = await sandbox.http.get(f"/eu/api/v4/webhooks/{hook['id']}.json", headers=eu_headers)
    assert_clio_error(hidden, 404)
    assert (await sandbox.http.get("/eu/api/v4/webhooks.json", headers=eu_headers)).json()[
        "data"
    ] == []
    # A change in the EU firm does not reach the US webhook.
    eu_bill = min(sandbox.state.worlds["eu"].bills)
    await sandbox.http.patch(f"/eu/sandbox/bills/{eu_bill}", json={"state": "void"})
    await sandbox.settle()
    assert sandbox.receiver.deliveries == []


# --- deliveries --------------------------------------------------------------------------------


async def test_deliveries_are_signed_and_follow_the_watched_fields(sandbox: Sandbox) -> None:
    hook = await sandbox.subscribe(fields="id,state,balance", events=["updated"])
    secret = hook["shared_secret"]

    # A field the webhook does not watch: nothing.
    await sandbox.http.patch(f"/sandbox/bills/{BILL}", json={"subject": "Renamed"})
    await sandbox.settle()
    assert sandbox.receiver.deliveries == []

    paid = await sandbox.http.post(f"/sandbox/bills/{BILL}/payments", json={"amount": "10.00"})
    assert paid.status_code == 201, paid.text
    await sandbox.settle()
    [delivery] = sandbox.receiver.deliveries
    assert delivery.url == HOOK_URL and delivery.method == "POST"
    body = verify(delivery, secret)
    current = await sandbox.http.get(f"/api/v4/bills/{BILL}.json")
    assert body == {
        "data": {"id": BILL, "etag": current.json()["data"]["etag"]},
        "meta": {"event": "updated", "webhook_id": hook["id"]},
    }
    # A tampered body fails the check a receiver makes.
    forged = httpx.Request(
        "POST", HOOK_URL, content=delivery.content + b" ", headers=delivery.headers
    )
    with pytest.raises(AssertionError):
        verify(forged, secret)

    log = (await sandbox.http.get("/sandbox/webhooks/deliveries")).json()["data"]
    assert [(e["event"], e["status_code"], e["attempts"], e["delivered"]) for e in log] == [
        ("handshake", 200, 1, True),
        ("updated", 200, 1, True),
    ]
    assert log[1]["webhook_id"] == hook["id"] and log[1]["url"] == HOOK_URL


async def test_created_updated_deleted_for_bills_contacts_and_matters(sandbox: Sandbox) -> None:
    bill_hook = await sandbox.subscribe(model="bill", fields="id,state")
    contact_hook = await sandbox.subscribe(model="contact", fields="id,primary_email_address")
    matter_hook = await sandbox.subscribe(model="matter", fields="id,status")

    created = await sandbox.http.post("/sandbox/bills", json={"client_id": CONTACT, "total": "50"})
    new_bill = created.json()["data"]["id"]
    draft = await sandbox.http.post(
        "/sandbox/bills", json={"client_id": CONTACT, "total": "70", "state": "draft"}
    )
    draft_id = draft.json()["data"]["id"]
    assert (await sandbox.http.delete(f"/api/v4/bills/{draft_id}.json")).status_code == 204
    assert (await sandbox.http.delete(f"/api/v4/bills/{new_bill}.json")).status_code == 204
    contact = await sandbox.http.post(
        "/sandbox/contacts", json={"name": "Webhook Co", "primary_email_address": "a@example.com"}
    )
    contact_id = contact.json()["data"]["id"]
    await sandbox.http.patch(
        f"/sandbox/contacts/{contact_id}", json={"primary_email_address": "b@example.com"}
    )
    await sandbox.http.patch(f"/sandbox/matters/{MATTER}", json={"status": "Closed"})
    await sandbox.http.patch(f"/sandbox/matters/{MATTER}", json={"description": "unwatched"})
    await sandbox.settle()

    secrets = {h["id"]: h["shared_secret"] for h in (bill_hook, contact_hook, matter_hook)}
    seen = []
    for request in sandbox.receiver.deliveries:
        webhook_id = json.loads(request.content)["meta"]["webhook_id"]
        body = verify(request, secrets[webhook_id])
        seen.append((webhook_id, body["meta"]["event"], body["data"]["id"]))
    assert sorted(seen) == sorted(
        [
            (bill_hook["id"], "created", new_bill),
            (bill_hook["id"], "created", draft_id),
            (bill_hook["id"], "deleted", draft_id),
            (bill_hook["id"], "updated", new_bill),  # voided
            (contact_hook["id"], "created", contact_id),
            (contact_hook["id"], "updated", contact_id),
            (matter_hook["id"], "updated", MATTER),
        ]
    )


async def test_pending_webhooks_deliver_nothing_until_activated(sandbox: Sandbox) -> None:
    sandbox.receiver.echo = False
    hook = await sandbox.subscribe()
    shown = await sandbox.http.get(
        f"/api/v4/webhooks/{hook['id']}.json", params={"fields": "status"}
    )
    assert shown.json()["data"]["status"] == "pending"
    await sandbox.http.patch(f"/sandbox/bills/{BILL}", json={"state": "void"})
    await sandbox.settle()
    assert sandbox.receiver.deliveries == []

    activated = await sandbox.http.put(
        f"/api/v4/webhooks/{hook['id']}/activate", params={"fields": "status"}
    )
    assert activated.json()["data"]["status"] == "enabled"
    await sandbox.http.post(f"/sandbox/bills/{BILL + 1}/payments", json={"amount": "1.00"})
    await sandbox.settle()
    assert len(sandbox.receiver.deliveries) == 1


async def test_failures_are_retried_and_410_disables(sandbox: Sandbox) -> None:
    hook = await sandbox.subscribe(fields="id,paid")
    sandbox.receiver.script = [500, 503]
    await sandbox.http.post(f"/sandbox/bills/{BILL}/payments", json={"amount": "1.00"})
    await sandbox.settle()
    assert [r.content for r in sandbox.receiver.deliveries].count(
        sandbox.receiver.deliveries[0].content
    ) == 3
    sandbox.receiver.fail_connect = 1
    await sandbox.http.post(f"/sandbox/bills/{BILL}/payments", json={"amount": "1.00"})
    await sandbox.settle()
    sandbox.receiver.script = [410]
    await sandbox.http.post(f"/sandbox/bills/{BILL}/payments", json={"amount": "1.00"})
    await sandbox.settle()
    log = (await sandbox.http.get("/sandbox/webhooks/deliveries")).json()["data"]
    assert [(e["event"], e["attempts"], e["status_code"], e["delivered"]) for e in log] == [
        ("handshake", 1, 200, True),
        ("updated", 3, 200, True),
        ("updated", 2, 200, True),
        ("updated", 1, 410, True),
    ]
    shown = await sandbox.http.get(
        f"/api/v4/webhooks/{hook['id']}.json", params={"fields": "status"}
    )
    assert shown.json()["data"]["status"] == "suspended"
    before = len(sandbox.receiver.deliveries)
    await sandbox.http.post(f"/sandbox/bills/{BILL}/payments", json={"amount": "1.00"})
    await sandbox.settle()
    assert len(sandbox.receiver.deliveries) == before


async def test_retries_give_up_after_the_configured_tries(sandbox: Sandbox) -> None:
    await sandbox.subscribe(fields="id,paid")
    sandbox.receiver.script = [500, 500, 500, 500]
    await sandbox.http.post(f"/sandbox/bills/{BILL}/payments", json={"amount": "1.00"})
    await sandbox.settle()
    log = (await sandbox.http.get("/sandbox/webhooks/deliveries")).json()["data"]
    assert (log[-1]["attempts"], log[-1]["status_code"], log[-1]["delivered"]) == (3, 500, False)


async def test_expired_webhooks_deliver_nothing(sandbox: Sandbox) -> None:
    await sandbox.subscribe(fields="id,paid")
    almost = await sandbox.http.post("/sandbox/clock", json={"advance_seconds": 3 * 86400 - 1})
    assert almost.json()["now"] == (START + timedelta(days=3, seconds=-1)).isoformat()
    await sandbox.http.post(f"/sandbox/bills/{BILL}/payments", json={"amount": "1.00"})
    await sandbox.settle()
    assert len(sandbox.receiver.deliveries) == 1
    await sandbox.http.post("/sandbox/clock", json={"advance_seconds": 1})
    await sandbox.http.post(f"/sandbox/bills/{BILL}/payments", json={"amount": "1.00"})
    await sandbox.settle()
    assert len(sandbox.receiver.deliveries) == 1
    # The API runs on the moved clock too: the bill's updated_at is three days on.
    shown = await sandbox.http.get(f"/api/v4/bills/{BILL}.json", params={"fields": "updated_at"})
    assert shown.json()["data"]["updated_at"].startswith(
        (START + timedelta(days=3)).astimezone(FIRM_TZ).date().isoformat()
    )
    refused = await sandbox.http.post("/sandbox/clock", json={"advance_seconds": -1})
    assert refused.status_code == 422


async def test_deleted_webhooks_stop(sandbox: Sandbox) -> None:
    hook = await sandbox.subscribe(fields="id,paid")
    assert (await sandbox.http.delete(f"/api/v4/webhooks/{hook['id']}.json")).status_code == 204
    assert_clio_error(await sandbox.http.get(f"/api/v4/webhooks/{hook['id']}.json"), 404)
    await sandbox.http.post(f"/sandbox/bills/{BILL}/payments", json={"amount": "1.00"})
    await sandbox.settle()
    assert sandbox.receiver.deliveries == []


async def test_deliveries_reach_a_real_http_receiver() -> None:
    """A plain HTTP/1.1 server on a socket: what the sandbox sends is really on the wire."""
    received: list[tuple[dict[str, str], bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        received.append((headers, body))
        echo = (
            f"X-Hook-Secret: {headers['x-hook-secret']}\r\n" if "x-hook-secret" in headers else ""
        )
        writer.write(
            f"HTTP/1.1 200 OK\r\n{echo}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        state = SandboxState(settings=SandboxSettings(), clock=FakeClock(START))
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            token = (await http.post("/sandbox/tokens")).json()["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
            created = await http.post(
                "/api/v4/webhooks.json",
                params={"fields": "id,shared_secret"},
                json={
                    "data": {
                        "url": f"http://127.0.0.1:{port}/hook",
                        "model": "contact",
                        "fields": "id,name",
                    }
                },
            )
            hook = created.json()["data"]
            await state.webhooks.idle()
            await http.patch(f"/sandbox/contacts/{CONTACT}", json={"name": "Renamed Trust"})
            await state.webhooks.idle()
    finally:
        server.close()
        await server.wait_closed()
    (handshake_headers, _), (headers, body) = received
    assert handshake_headers["x-hook-secret"] == hook["shared_secret"]
    signature = hmac.new(hook["shared_secret"].encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-hook-signature"] == signature
    assert json.loads(body)["meta"] == {"event": "updated", "webhook_id": hook["id"]}
