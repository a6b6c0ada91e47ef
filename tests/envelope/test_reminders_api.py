"""envelope's reminders API (shared/api/reminders.py) as the gateway asks it: the internal
token, firm-scoped ids (another firm's -> 404), the switches, Send now, and "run as of",
which production refuses. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.envelope import api_reminders
from services.envelope.reminders import Reminders
from shared.api.reminders import ReminderSent, RemindersOut, RunOut
from shared.clock import ManualClock
from tests.envelope.reminders_world import FIRM_ID, World, at, bill, firm, make_service, world
from tests.envelope.test_reminders import day

__all__ = ["world"]

TOKEN = {"X-Internal-Token": "dev-internal-token"}


def client_for(world: World, reminders: Reminders | None = None) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(api_reminders.router(world.service, reminders or world.reminders))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://envelope")


@pytest.fixture
async def api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    await world.firm(firm())
    await world.firm(firm(), firm_id="firm-other")
    await world.bills(bill(1, day(1)), bill(2, day(3), client="88"))
    await world.bills(bill(9, day(1), client="99"), firm_id="firm-other")
    async with client_for(world) as c:
        yield c


BASE = f"/internal/firms/{FIRM_ID}/reminders"


async def test_the_internal_token_is_required(api: httpx.AsyncClient) -> None:
    assert (await api.get(BASE)).status_code == 401
    r = await api.get(BASE, headers={"X-Internal-Token": "forged"})
    assert r.status_code == 401


async def test_overview_switches_and_send_now(world: World, api: httpx.AsyncClient) -> None:
    world.clock.set(at(day(10)))
    r = await api.get(BASE, params={"days": 30}, headers=TOKEN)
    assert r.status_code == 200
    out = RemindersOut.model_validate(r.json())
    assert out.enabled and out.time_zone == "UTC"
    assert [(u.client_id, u.due_on) for u in out.upcoming] == [("77", day(16)), ("88", day(18))]

    r = await api.post(f"{BASE}/clients/77", json={"enabled": False}, headers=TOKEN)
    assert r.status_code == 204
    r = await api.post(f"{BASE}/invoices/clio:2", json={"enabled": False}, headers=TOKEN)
    assert r.status_code == 204
    out = RemindersOut.model_validate((await api.get(BASE, headers=TOKEN)).json())
    assert out.paused_clients == ["77"] and out.paused_invoices == ["clio:2"]
    assert [(u.client_id, u.paused) for u in out.upcoming] == [("77", True)]
    paused = (await api.get(f"{BASE}/paused", headers=TOKEN)).json()
    assert paused == {"clients": ["77"], "invoices": ["clio:2"]}
    assert (await api.get(f"{BASE}/paused")).status_code == 401

    r = await api.post(f"{BASE}/clients/77", json={"enabled": True}, headers=TOKEN)
    assert r.status_code == 204
    r = await api.post(f"{BASE}/clients/77/send-now", headers=TOKEN)
    sent = ReminderSent.model_validate(r.json())
    assert r.status_code == 200 and sent.queued and sent.envelope_id
    r = await api.post(f"{BASE}/clients/77/send-now", headers=TOKEN)
    assert not ReminderSent.model_validate(r.json()).queued
    out = RemindersOut.model_validate((await api.get(BASE, headers=TOKEN)).json())
    assert [(h.client_id, h.status, h.envelope_id) for h in out.history] == [
        ("77", "queued", sent.envelope_id)
    ]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", f"{BASE}/clients/99", {"enabled": False}),  # another firm's client
        ("post", f"{BASE}/invoices/clio:9", {"enabled": False}),  # another firm's bill
        ("post", f"{BASE}/clients/nobody", {"enabled": False}),
        ("post", f"{BASE}/invoices/{'x' * 5000}", {"enabled": False}),
        ("post", f"{BASE}/clients/99/send-now", None),
        ("post", "/internal/firms/firm-other/reminders/clients/77/send-now", None),
    ],
)
async def test_unknown_or_foreign_ids_are_404_and_change_nothing(
    world: World, api: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    r = await api.request(method.upper(), path, json=body, headers=TOKEN)
    assert r.status_code == 404, r.text
    assert await world.rows() == []
    out = await world.reminders.overview("firm-other", 60)
    assert out.paused_clients == [] and out.paused_invoices == []


@pytest.mark.parametrize(
    "body",
    [{}, {"enabled": "maybe"}, {"enabled": None}, [1, 2]],
    ids=["empty", "str", "null", "list"],
)
async def test_malformed_switches_are_422(api: httpx.AsyncClient, body: object) -> None:
    r = await api.post(f"{BASE}/clients/77", json=body, headers=TOKEN)
    assert r.status_code == 422


async def test_run_as_of_runs_one_pass_for_the_firm(world: World, api: httpx.AsyncClient) -> None:
    r = await api.post(f"{BASE}/run", json={"as_of": "2026-11-16T10:00:00+00:00"}, headers=TOKEN)
    assert r.status_code == 200, r.text
    out = RunOut.model_validate(r.json())
    assert out.queued == 1 and out.note is None
    r = await api.post(f"{BASE}/run", json={"as_of": "2026-12-01T20:00:00+00:00"}, headers=TOKEN)
    out = RunOut.model_validate(r.json())
    assert out.queued == 0 and out.note is not None and "business hours" in out.note
    r = await api.post(
        "/internal/firms/no-such-firm/reminders/run",
        json={"as_of": "2026-12-01T10:00:00+00:00"},
        headers=TOKEN,
    )
    assert RunOut.model_validate(r.json()).note == "reminders are off for the firm"
    assert [r.client_id for r in await world.rows()] == ["77"]  # not firm-other's client
    for bad in ({"as_of": "2026-11-16T10:00:00"}, {"as_of": "soon"}, {}):
        r = await api.post(f"{BASE}/run", json=bad, headers=TOKEN)
        assert r.status_code == 422, bad
    r = await api.get(BASE, params={"days": 0}, headers=TOKEN)
    assert r.status_code == 422


async def test_production_refuses_run_as_of(
    world: World, database_url: str, tmp_path: Path
) -> None:
    service, _ = await make_service(
        database_url,
        tmp_path / "prod",
        environment="production",
        internal_token="a-production-token-of-some-length",
        link_secret="a-production-link-secret",
    )
    try:
        await world.firm(firm())
        await world.bills(bill(1, day(1)))
        reminders = Reminders(service, service.settings, ManualClock(at(day(1))))  # type: ignore[arg-type]
        app = FastAPI()
        app.include_router(api_reminders.router(service, reminders))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://envelope"
        ) as c:
            r = await c.post(
                f"{BASE}/run",
                json={"as_of": "2026-11-16T10:00:00+00:00"},
                headers={"X-Internal-Token": "a-production-token-of-some-length"},
            )
        assert r.status_code == 403 and "development" in r.json()["detail"]
        assert await world.rows() == []
    finally:
        await service.engine.dispose()
