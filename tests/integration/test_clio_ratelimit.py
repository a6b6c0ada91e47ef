"""ClioClient against the Clio sandbox (in-process) at a small rate limit and a short window:
a long sync-like run makes no 429, a forced 429 is waited out, interactive requests are not
starved by bulk ones, and one firm's bulk sync never holds up another firm's fetch. Then the
kept behaviour on a scripted transport: 5xx and transport-error retries, refresh on 401."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

import sandbox.clio.state as sandbox_state
from sandbox.clio import SandboxState, create_app
from sandbox.clio.settings import SandboxSettings
from services.sync.clio import ClioClient, Tokens
from services.sync.ratelimit import Budget, Budgets, Priority
from shared.api.sync import RateLimitState

BASE_URL = "http://clio.test"
LIMIT = 20
# The sandbox counts in 60-second windows like Clio; the tests shorten them to keep fast.
WINDOW_SECONDS = 2


@dataclass
class Sandbox:
    state: SandboxState
    http: httpx.AsyncClient
    budgets: Budgets

    async def token(self) -> str:
        return str((await self.http.post("/sandbox/tokens")).json()["access_token"])

    async def client(self, firm_id: str, token: str, budget: Budget | None = None) -> ClioClient:
        return ClioClient(
            BASE_URL,
            "sandbox-client",
            "sandbox-secret",
            tokens=Tokens(token, None, None),
            http=self.http,
            budget=budget or self.budgets.for_firm(firm_id),
        )

    def api_calls(self) -> list[sandbox_state.LoggedRequest]:
        return [r for r in self.state.requests if r.path.startswith("/api/v4/")]


@pytest.fixture
async def sandbox(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Sandbox]:
    monkeypatch.setattr(sandbox_state, "RATE_WINDOW_SECONDS", WINDOW_SECONDS)
    state = SandboxState(settings=SandboxSettings(rate_limit=LIMIT))
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(state)), base_url=BASE_URL
    )
    try:
        yield Sandbox(state, http, Budgets())
    finally:
        await http.aclose()


class PriorityWatch(Budget):
    """Counts the bulk requests let through while each interactive one waited for its turn."""

    def __init__(self) -> None:
        super().__init__("firm-a")
        self.bulk_ahead: list[int] = []

    async def acquire(self, priority: Priority = Priority.BULK) -> None:
        before = self.counters.bulk
        await super().acquire(priority)
        if priority is Priority.INTERACTIVE:
            self.bulk_ahead.append(self.counters.bulk - before)


async def test_a_long_sync_like_run_paces_itself_and_makes_no_429(sandbox: Sandbox) -> None:
    """Two clients of one firm page all bills one at a time (135 bulk requests) while a
    webhook intake fetches a bill after every sixth page of the first (15 interactive)."""
    token = await sandbox.token()
    budget = PriorityWatch()
    poll, button, webhook = [await sandbox.client("firm-a", token, budget) for _ in range(3)]
    bill_ids = sorted(sandbox.state.world.bills)
    changed: asyncio.Queue[int | None] = asyncio.Queue()

    async def sync(client: ClioClient, rounds: int, notify: bool) -> int:
        pages = 0
        for _ in range(rounds):
            async for page in client.pages("bills.json", {"limit": 1, "fields": "id,etag"}):
                assert len(page) == 1
                pages += 1
                if notify and pages % 6 == 0:
                    changed.put_nowait(bill_ids[pages % len(bill_ids)])
        if notify:
            changed.put_nowait(None)
        return pages

    async def intake() -> int:
        fetched = 0
        while (bill_id := await changed.get()) is not None:
            body = await webhook.get(
                f"bills/{bill_id}.json", {"fields": "id"}, Priority.INTERACTIVE
            )
            assert body["data"]["id"] == bill_id
            fetched += 1
        return fetched

    started = time.monotonic()
    pages_poll, pages_button, fetched = await asyncio.gather(
        sync(poll, 2, True), sync(button, 1, False), intake()
    )
    elapsed = time.monotonic() - started

    calls = sandbox.api_calls()
    statuses = [c.status for c in calls]
    assert (pages_poll, pages_button, fetched) == (90, 45, 15)
    assert len(calls) == 150 and statuses.count(200) == 150
    counters = budget.counters
    assert (counters.requests, counters.bulk, counters.interactive) == (150, 135, 15)
    assert counters.throttled == 0 and counters.waited > 0
    # No bulk request went out while a webhook's fetch waited for its turn.
    assert budget.bulk_ahead == [0] * 15
    print(
        f"\npacing: {len(calls)} requests, {statuses.count(429)} answered 429, "
        f"{elapsed:.1f}s at {LIMIT} per {WINDOW_SECONDS}s window"
    )


class WatchedBudget(Budget):
    """Keeps the state it reports right after each 429."""

    def __init__(self) -> None:
        super().__init__("firm-a")
        self.after_429: list[RateLimitState] = []

    def throttled(self, headers: Mapping[str, str]) -> float:
        wait = super().throttled(headers)
        self.after_429.append(self.state())
        return wait


async def test_a_429_is_waited_out_and_recorded_as_blocked_until(sandbox: Sandbox) -> None:
    token = await sandbox.token()
    bearer = {"Authorization": f"Bearer {token}"}
    # Someone else (another process with the same token) used up the window.
    for _ in range(LIMIT):
        assert (await sandbox.http.get("/api/v4/users/who_am_i.json", headers=bearer)).is_success
    budget = WatchedBudget()
    client = ClioClient(
        BASE_URL, "sandbox-client", "sandbox-secret", Tokens(token, None, None),
        http=sandbox.http, budget=budget,
    )  # fmt: skip

    body = await client.get("users/who_am_i.json", None, Priority.INTERACTIVE)

    assert body["data"]["id"]
    throttled, answered = sandbox.api_calls()[-2:]
    assert (throttled.status, answered.status) == (429, 200)
    assert budget.counters.throttled == 1 and budget.counters.requests == 2
    [state] = budget.after_429
    assert state.limit == LIMIT and state.remaining == 0
    assert state.blocked_until is not None and state.blocked_until > throttled.at
    # Nothing went out before the block ended (allowing for the clocks' float rounding).
    assert answered.at >= state.blocked_until - timedelta(milliseconds=20)
    assert budget.state().blocked_until is None


@pytest.mark.parametrize("who", ["other firm", "same firm, interactive"])
async def test_a_bulk_sync_at_the_limit_does_not_hold_up_a_single_fetch(
    sandbox: Sandbox, who: str
) -> None:
    """Firm A pages 24 bills one at a time: 18 a window (the limit less the reserve of 2),
    then it waits for the reset. Right then a single fetch is made: by firm B (its own
    budget, default priority), or by firm A's webhook intake (interactive, in the reserve).
    It goes out before A's next page and never waits. (No spreading here, burst=1.0, so
    that A reaches its reserve at once and surely waits when the fetch is made.)"""
    sandbox.budgets = Budgets(burst=1.0)
    token_a = await sandbox.token()
    bulk = await sandbox.client("firm-a", token_a)
    if who == "other firm":
        single = await sandbox.client("firm-b", await sandbox.token())
        priority = Priority.BULK
    else:
        single = await sandbox.client("firm-a", token_a)
        priority = Priority.INTERACTIVE
    waits_during_fetch: list[int] = []

    async def fetch_one() -> None:
        before = single.budget.counters.waited
        await single.get("bills.json", {"limit": 1, "fields": "id"}, priority)
        waits_during_fetch.append(single.budget.counters.waited - before)

    fetch: asyncio.Task[None] | None = None
    pages = 0
    async for _ in bulk.pages("bills.json", {"limit": 1, "fields": "id"}):
        pages += 1
        if pages == 18:
            fetch = asyncio.create_task(fetch_one())
        if pages == 24:
            break
    assert fetch is not None
    await fetch

    calls = sandbox.api_calls()
    assert all(c.authorized for c in calls)
    assert all(c.status == 200 for c in calls) and len(calls) == 25
    # The single fetch is the 19th request the sandbox saw: ahead of A's 19th page.
    order = [c.params.get("page_token") is None for c in calls]
    assert order[:19] == [True] + [False] * 17 + [True]
    # Nothing in the single fetch's budget waited while it was made, and A did wait.
    assert waits_during_fetch == [0]
    assert bulk.budget.counters.waited > 0


# --- kept behaviour, on a scripted transport ------------------------------------------------


def rate_headers(remaining: int) -> dict[str, str]:
    reset = int(datetime.now(UTC).timestamp()) + 30
    return {
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset),
    }


async def test_retries_refresh_and_logs_keep_working_through_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = ["connect error", 503, 401, 200]
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "fresh-token", "expires_in": 3600})
        seen.append(request.headers["authorization"])
        step = script.pop(0)
        if step == "connect error":
            raise httpx.ConnectError("refused", request=request)
        assert isinstance(step, int)
        return httpx.Response(step, json={"data": {"id": 7}}, headers=rate_headers(40))

    saved: list[Tokens] = []

    async def on_tokens(tokens: Tokens) -> None:
        saved.append(tokens)

    budget = Budget("firm-a")
    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    client = ClioClient(
        BASE_URL, "id", "secret", Tokens("stale-token", "refresh-me", None),
        on_tokens=on_tokens, http=http, budget=budget,
    )  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        body = await client.get("bills/7.json", {"fields": "id"}, Priority.INTERACTIVE)
    await http.aclose()

    assert body == {"data": {"id": 7}}
    assert seen == ["Bearer stale-token"] * 3 + ["Bearer fresh-token"]
    assert [t.access_token for t in saved] == ["fresh-token"]
    assert budget.counters.requests == 4 and budget.pacer.in_flight == 0
    assert budget.state().limit == 50
    logged = caplog.text
    assert "Clio answered 503" in logged
    assert "stale-token" not in logged and "fresh-token" not in logged
    assert "refresh-me" not in logged
