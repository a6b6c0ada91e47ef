"""Bills in the Clio sandbox beyond reading them: delete and void, payments a firm user
records, matter changes, the line-item listing across bills, the rate limit, `fields=`
everywhere, and the bulk firm for benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from sandbox.clio import SandboxSettings, SandboxState, create_app
from sandbox.clio.fields import all_fields
from sandbox.clio.records import Bill, LineItem
from sandbox.clio.render import BILL_CATALOG, LINE_ITEM_CATALOG
from tests.sandbox.test_clio_sandbox import (
    START,
    FakeClock,
    assert_clio_error,
    fetch_all,
    openapi_document,
    validator_for,
)

BASE_URL = "http://clio.test"
DRAFT, PENDING_APPROVAL = 5_100_041, 5_100_043
UNPAID, PARTLY_PAID, PAID, VOID = 5_100_005, 5_100_025, 5_100_001, 5_100_004
MATTER = 7_100_001


@asynccontextmanager
async def _api(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        token = (await http.post("/sandbox/tokens")).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def api(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    state = SandboxState(settings=SandboxSettings(rate_limit=0), clock=clock)
    async with _api(state) as http:
        yield http


async def bill(api: httpx.AsyncClient, bill_id: int) -> dict[str, Any]:
    shown = await api.get(
        f"/api/v4/bills/{bill_id}.json",
        params={"fields": "id,etag,state,total,paid,balance,due,paid_at,updated_at"},
    )
    assert shown.status_code == 200, shown.text
    data: dict[str, Any] = shown.json()["data"]
    return data


# --- delete and void ------------------------------------------------------------------------


async def test_delete_turns_drafts_deleted_and_unpaid_bills_void(
    api: httpx.AsyncClient, clock: FakeClock
) -> None:
    before = {bill_id: await bill(api, bill_id) for bill_id in (DRAFT, PENDING_APPROVAL, UNPAID)}
    clock.advance(minutes=5)
    since = clock().isoformat()
    for bill_id in (DRAFT, PENDING_APPROVAL, UNPAID, f"{UNPAID}"):
        response = await api.delete(f"/api/v4/bills/{bill_id}.json")
        if bill_id == f"{UNPAID}":
            # Deleting it again: it is void now, which Clio refuses.
            assert_clio_error(response, 422)
        else:
            assert response.status_code == 204 and response.content == b""
    after = {bill_id: await bill(api, bill_id) for bill_id in before}
    assert after[DRAFT]["state"] == after[PENDING_APPROVAL]["state"] == "deleted"
    assert after[UNPAID]["state"] == "void"
    assert after[UNPAID]["balance"] == after[UNPAID]["due"] == 0
    for bill_id, was in before.items():
        assert after[bill_id]["etag"] != was["etag"]
        assert after[bill_id]["updated_at"] > was["updated_at"]
    # They stay listed, and a poll with updated_since sees exactly them.
    changed = await api.get(
        "/api/v4/bills.json", params={"updated_since": since, "fields": "id,state"}
    )
    assert changed.json()["data"] == [
        {"id": UNPAID, "state": "void"},
        {"id": DRAFT, "state": "deleted"},
        {"id": PENDING_APPROVAL, "state": "deleted"},
    ]
    deleted = await api.get("/api/v4/bills.json", params={"state": "deleted"})
    assert {row["id"] for row in deleted.json()["data"]} >= {DRAFT, PENDING_APPROVAL}


@pytest.mark.parametrize("bill_id", [PARTLY_PAID, PAID, VOID])
async def test_delete_refuses_bills_with_payments_or_done(
    api: httpx.AsyncClient, bill_id: int
) -> None:
    was = await bill(api, bill_id)
    assert_clio_error(await api.delete(f"/api/v4/bills/{bill_id}"), 422)
    assert await bill(api, bill_id) == was


async def test_delete_unknown_bills_is_not_found(api: httpx.AsyncClient) -> None:
    assert_clio_error(await api.delete("/api/v4/bills/5999999.json"), 404)
    assert_clio_error(await api.delete("/api/v4/bills/abc.json"), 404)


async def test_void_through_the_hook(api: httpx.AsyncClient) -> None:
    voided = await api.patch(f"/sandbox/bills/{UNPAID}", json={"state": "void"})
    assert voided.status_code == 200
    assert (voided.json()["data"]["state"], voided.json()["data"]["balance"]) == ("void", 0)


# --- payments and matters ---------------------------------------------------------------------


async def test_recorded_payments_reduce_the_balance_then_pay_the_bill(
    api: httpx.AsyncClient, clock: FakeClock
) -> None:
    was = await bill(api, UNPAID)
    clock.advance(minutes=1)
    part = await api.post(f"/sandbox/bills/{UNPAID}/payments", json={"amount": "1000.50"})
    assert part.status_code == 201, part.text
    now = await bill(api, UNPAID)
    assert Decimal(str(now["paid"])) == Decimal("1000.50")
    assert Decimal(str(now["balance"])) == Decimal(str(was["balance"])) - Decimal("1000.50")
    assert now["state"] == "awaiting_payment" and now["paid_at"] is None
    assert now["etag"] != was["etag"] and now["updated_at"] > was["updated_at"]

    rest = format(Decimal(str(now["balance"])), "f")
    too_much = await api.post(
        f"/sandbox/bills/{UNPAID}/payments", json={"amount": str(Decimal(rest) + 1)}
    )
    assert too_much.status_code == 422
    clock.advance(minutes=1)
    final = await api.post(
        f"/sandbox/bills/{UNPAID}/payments", json={"amount": rest, "date": "2026-03-09"}
    )
    assert final.status_code == 201
    paid = await bill(api, UNPAID)
    assert paid["state"] == "paid" and paid["balance"] == 0
    assert Decimal(str(paid["paid"])) == Decimal(str(was["total"]))
    assert paid["paid_at"].startswith("2026-03-09T")
    assert (
        await api.post(f"/sandbox/bills/{UNPAID}/payments", json={"amount": "1"})
    ).status_code == 422


@pytest.mark.parametrize(
    ("bill_id", "body", "status"),
    [
        (UNPAID, {"amount": "0"}, 422),
        (UNPAID, {"amount": "-5"}, 422),
        (UNPAID, {"amount": "lots"}, 422),
        (UNPAID, {}, 422),
        (UNPAID, {"amount": "5", "method": "cash"}, 422),
        (DRAFT, {"amount": "5"}, 422),
        (5_999_999, {"amount": "5"}, 404),
    ],
)
async def test_bad_payments_are_refused(
    api: httpx.AsyncClient, bill_id: int, body: dict[str, Any], status: int
) -> None:
    assert (await api.post(f"/sandbox/bills/{bill_id}/payments", json=body)).status_code == status


async def test_matter_hook_changes_the_matter_everywhere(api: httpx.AsyncClient) -> None:
    changed = await api.patch(f"/sandbox/matters/{MATTER}", json={"description": "Renamed"})
    assert changed.status_code == 200
    assert changed.json()["data"]["description"] == "Renamed"
    listed = await api.get(
        "/api/v4/bills.json", params={"matter_id": MATTER, "fields": "matters{description}"}
    )
    assert {m["description"] for b in listed.json()["data"] for m in b["matters"]} == {"Renamed"}
    assert (await api.patch("/sandbox/matters/1", json={"status": "Closed"})).status_code == 404
    assert (
        await api.patch(f"/sandbox/matters/{MATTER}", json={"status": "Lost"})
    ).status_code == 422
    assert (
        await api.patch(f"/sandbox/matters/{MATTER}", json={"colour": "red"})
    ).status_code == 422


# --- line items across bills -------------------------------------------------------------------


async def test_line_item_filters(api: httpx.AsyncClient, clock: FakeClock) -> None:
    everything, _ = await fetch_all(api, "/api/v4/line_items.json", {"fields": "id,kind,bill{id}"})
    assert [item["id"] for item in everything] == sorted({item["id"] for item in everything})
    by_bill = await api.get(
        "/api/v4/line_items.json", params={"bill_id": UNPAID, "fields": "id,bill{id}"}
    )
    rows = by_bill.json()["data"]
    assert rows and all(row["bill"] == {"id": UNPAID} for row in rows)
    assert [row["id"] for row in rows] == [i["id"] for i in everything if i["bill"]["id"] == UNPAID]
    assert by_bill.json()["meta"]["records"] == len(rows)

    expenses = await api.get(
        "/api/v4/line_items.json", params={"kind": "Expense", "fields": "kind"}
    )
    assert {row["kind"] for row in expenses.json()["data"]} == {"Expense"}
    assert expenses.json()["meta"]["records"] == sum(i["kind"] == "Expense" for i in everything)

    some = [everything[0]["id"], everything[5]["id"]]
    picked = await api.get("/api/v4/line_items.json", params={"ids[]": some})
    assert [row["id"] for row in picked.json()["data"]] == some

    clock.advance(minutes=1)
    since = clock().isoformat()
    assert (await api.get("/api/v4/line_items.json", params={"updated_since": since})).json()[
        "data"
    ] == []
    new = await api.post(
        "/sandbox/bills",
        json={
            "client_id": 9_100_001,
            "line_items": [
                {"description": "Drafting", "price": "300", "quantity": "1.5"},
                {"description": "Filing fee", "price": "45", "kind": "Expense"},
            ],
        },
    )
    new_id = new.json()["data"]["id"]
    for name in ("updated_since", "created_since"):
        fresh = await api.get(
            "/api/v4/line_items.json", params={name: since, "fields": "description,bill{id}"}
        )
        assert fresh.json()["data"] == [
            {"description": "Drafting", "bill": {"id": new_id}},
            {"description": "Filing fee", "bill": {"id": new_id}},
        ]


async def test_line_item_paging_is_a_cursor_over_every_bill(api: httpx.AsyncClient) -> None:
    records, pages = await fetch_all(api, "/api/v4/line_items.json", {"limit": 7})
    assert len(pages) > 5
    assert all(page["meta"]["records"] == len(records) for page in pages)
    assert "next" not in pages[-1]["meta"]["paging"]
    descending, _ = await fetch_all(
        api, "/api/v4/line_items.json", {"limit": 9, "order": "id(desc)"}
    )
    assert descending == records[::-1]
    assert_clio_error(await api.get("/api/v4/line_items.json", params={"limit": 201}), 400)
    assert (await api.get("/api/v4/line_items.json", params={"limit": 200})).status_code == 200


FIELD_ENDPOINTS = (
    "/api/v4/bills.json",
    f"/api/v4/bills/{UNPAID}.json",
    "/api/v4/contacts.json",
    "/api/v4/contacts/9100001.json",
    "/api/v4/line_items.json",
    "/api/v4/users/who_am_i.json",
    "/api/v4/outstanding_client_balances.json",
    "/api/v4/webhooks.json",
)


@pytest.mark.parametrize("path", FIELD_ENDPOINTS)
@pytest.mark.parametrize("fields", ["id,nonsense", "id,user{id,account{id}}", "id{x}", "id,"])
async def test_fields_refusals_hold_everywhere(
    api: httpx.AsyncClient, path: str, fields: str
) -> None:
    assert_clio_error(await api.get(path, params={"fields": fields}), 400)


async def test_line_items_offer_one_level_of_bill(api: httpx.AsyncClient) -> None:
    shown = await api.get(
        "/api/v4/line_items.json", params={"fields": "id,bill{id,number,state}", "limit": 1}
    )
    assert set(shown.json()["data"][0]["bill"]) == {"id", "number", "state"}
    assert_clio_error(
        await api.get("/api/v4/line_items.json", params={"fields": "bill{id,client{id}}"}), 400
    )


# --- rate limit -------------------------------------------------------------------------------


async def test_default_rate_limit_is_clios_fifty(clock: FakeClock) -> None:
    assert SandboxSettings.from_env({}).rate_limit == 50
    async with _api(SandboxState(settings=SandboxSettings(), clock=clock)) as http:
        for remaining in range(49, -1, -1):
            ok = await http.get("/api/v4/users/who_am_i.json")
            assert ok.status_code == 200
            assert ok.headers["x-ratelimit-remaining"] == str(remaining)
        throttled = await http.get("/api/v4/users/who_am_i.json")
        assert_clio_error(throttled, 429)
        assert throttled.headers["x-ratelimit-limit"] == "50"
        assert throttled.headers["retry-after"] == "60"
        reset = int(throttled.headers["x-ratelimit-reset"])
        assert reset == int((clock() + timedelta(seconds=60)).timestamp())


async def test_rate_limit_zero_turns_it_off(clock: FakeClock) -> None:
    assert SandboxSettings.from_env({"CLIO_SANDBOX_RATE_LIMIT": "0"}).rate_limit == 0
    async with _api(SandboxState(settings=SandboxSettings(rate_limit=0), clock=clock)) as http:
        for _ in range(120):
            response = await http.get("/api/v4/users/who_am_i.json")
            assert response.status_code == 200
        # The headers still come, with a limit no client reaches.
        assert int(response.headers["x-ratelimit-remaining"]) > 1_000_000
        assert int(response.headers["x-ratelimit-limit"]) > 1_000_000
        assert int(response.headers["x-ratelimit-reset"]) > int(clock().timestamp())


# --- the bulk firm ----------------------------------------------------------------------------


BULK = {"bills": 450, "lines_per_bill": 4, "clients": 37, "trust_every": 9}


async def test_bulk_builds_the_same_big_firm_every_time(clock: FakeClock) -> None:
    worlds = []
    for _ in range(2):
        state = SandboxState(settings=SandboxSettings(rate_limit=0), clock=clock)
        async with _api(state) as http:
            built = await http.post("/sandbox/bulk", json=BULK)
            assert built.status_code == 201, built.text
        worlds.append(state.world)
    counts = built.json()
    assert (counts["bills"], counts["clients"]) == (450, 37)
    assert counts["line_items"] == 400 * 4 + 50
    assert counts["total_bills"] == len(worlds[0].bills)
    first, second = worlds
    assert first.model_dump() == second.model_dump()
    # Built without validation, the records are still what validation would give.
    for record in list(first.bills.values())[-450:]:
        assert Bill.model_validate(record.model_dump()) == record
    for item in list(first.line_items.values())[-50:]:
        assert LineItem.model_validate(item.model_dump()) == item


async def test_bulk_firm_pages_completely_and_validates(clock: FakeClock) -> None:
    state = SandboxState(settings=SandboxSettings(rate_limit=0), clock=clock)
    async with _api(state) as http:
        await http.post("/sandbox/bulk", json=BULK)
        bills, bill_pages = await fetch_all(
            http, "/api/v4/bills.json", {"fields": all_fields(BILL_CATALOG)}
        )
        items, _ = await fetch_all(
            http, "/api/v4/line_items.json", {"fields": all_fields(LINE_ITEM_CATALOG)}
        )
        assert [b["id"] for b in bills] == sorted(state.world.bills)
        assert [i["id"] for i in items] == sorted(state.world.line_items)
        assert len(bill_pages) == 3
        trust = await http.get("/api/v4/bills.json", params={"type": "trust", "limit": 1})
        assert trust.json()["meta"]["records"] == 50 + sum(
            b.kind == "trust_kind" for b in list(state.world.bills.values())[:-450]
        )
        for bill_row in bills:
            lines = [i for i in items if i["bill"]["id"] == bill_row["id"]]
            assert sum(Decimal(str(i["total"])) for i in lines) == Decimal(str(bill_row["total"]))
        # A bad bulk request changes nothing.
        refused = await http.post("/sandbox/bulk", json={"bills": -1})
        assert refused.status_code == 422
        assert len(state.world.bills) == len(bills)
    document = openapi_document()
    if document is not None:
        for schema, records in (("Bill", bills), ("LineItem", items)):
            validator = validator_for(document, schema)
            assert [e.message for r in records[-60:] for e in validator.iter_errors(r)] == []
