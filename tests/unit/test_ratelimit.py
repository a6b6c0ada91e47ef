"""The pacing rules of services/sync/ratelimit.py, on a virtual clock: header reading (clock
skew, bounds), probing, the reserve, priorities, spreading, 429s, and a long run against a
fixed-window server that never answers 429."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from services.sync.ratelimit import (
    Budget,
    Budgets,
    Pacer,
    Priority,
    Window,
    read_retry_after,
    read_window,
)
from shared.api.sync import RateLimitState

BULK, INTERACTIVE = Priority.BULK, Priority.INTERACTIVE
EPOCH = 1_800_000_000.0


def http_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


def headers(limit: int, remaining: int, reset: float, **extra: str) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(limit),
        "x-ratelimit-remaining": str(remaining),
        "x-ratelimit-reset": str(int(reset)),
        **extra,
    }


# --- headers --------------------------------------------------------------------------------


def test_reset_is_read_against_the_servers_date_not_the_local_clock() -> None:
    server_now = EPOCH
    sent = headers(50, 10, server_now + 30, date=http_date(server_now))
    for local_skew in (-600.0, 0.0, 3600.0):
        window = read_window(sent, server_now + local_skew)
        assert window == Window(50, 10, 30.0)


def test_without_a_date_the_local_clock_is_used_and_waits_stay_within_a_window() -> None:
    assert read_window(headers(50, 1, EPOCH + 12), EPOCH) == Window(50, 1, 12.0)
    assert read_window(headers(50, 1, EPOCH + 4000), EPOCH) == Window(50, 1, 60.0)
    assert read_window(headers(50, 1, EPOCH - 30), EPOCH) == Window(50, 1, 0.0)
    skewed = headers(50, 1, EPOCH + 4000, date=http_date(EPOCH))
    assert read_window(skewed, EPOCH) == Window(50, 1, 60.0)


@pytest.mark.parametrize(
    "sent",
    [
        {},
        {"x-ratelimit-limit": "50", "x-ratelimit-remaining": "x", "x-ratelimit-reset": "1"},
        {"x-ratelimit-limit": "0", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1"},
        {"x-ratelimit-limit": "50", "x-ratelimit-remaining": "3"},
    ],
)
def test_missing_or_garbled_headers_give_no_window(sent: dict[str, str]) -> None:
    assert read_window(sent, EPOCH) is None


def test_a_garbled_date_falls_back_to_the_local_clock() -> None:
    sent = headers(50, 5, EPOCH + 20, date="yesterday-ish")
    assert read_window(sent, EPOCH) == Window(50, 5, 20.0)


def test_retry_after_in_seconds_as_a_date_or_from_the_reset_bounded() -> None:
    assert read_retry_after({"retry-after": "7"}, EPOCH) == 7.0
    dated = {"retry-after": http_date(EPOCH + 25), "date": http_date(EPOCH)}
    assert read_retry_after(dated, EPOCH + 999) == 25.0
    assert read_retry_after({"retry-after": "0"}, EPOCH) == 1.0
    assert read_retry_after({"retry-after": "86400"}, EPOCH) == 300.0
    assert read_retry_after(headers(50, 0, EPOCH + 9), EPOCH) == 9.0
    assert read_retry_after({"retry-after": "soon"}, EPOCH) == 60.0


# --- the pacer ------------------------------------------------------------------------------


def grant(p: Pacer, priority: Priority, now: float) -> int:
    ticket = p.enqueue(priority)
    assert p.poll(ticket, now) == 0.0
    return ticket


def test_one_probe_at_a_time_until_a_window_is_known() -> None:
    p = Pacer()
    grant(p, BULK, 0.0)
    waiting = p.enqueue(INTERACTIVE)
    assert p.poll(waiting, 0.1) == math.inf
    p.observe(0.2, Window(10, 9, 60.0))
    assert p.poll(waiting, 0.2) == 0.0
    assert (p.limit, p.remaining, p.resets_at, p.in_flight) == (10, 8, 60.2, 1)


def test_nothing_goes_out_that_the_window_has_no_room_for() -> None:
    p = Pacer(reserve=0, burst=1.0)
    grant(p, INTERACTIVE, 0.0)
    p.observe(0.0, Window(3, 2, 30.0))
    grant(p, INTERACTIVE, 1.0)
    grant(p, INTERACTIVE, 1.0)  # two in flight: the answers have not come yet
    third = p.enqueue(INTERACTIVE)
    assert p.poll(third, 1.0) == pytest.approx(29.0)
    # A late answer saying more is left does not raise the count within the window.
    p.observe(1.5, Window(3, 2, 28.5))
    assert p.remaining == 0
    assert p.poll(third, 29.9) == pytest.approx(0.1)
    # At the reset the window is unknown again: the waiter probes it once nothing is out.
    assert p.poll(third, 30.0) == math.inf
    p.observe(30.0, Window(3, 0, 0.0))
    assert p.poll(third, 30.0) == 0.0
    assert p.remaining is None and p.in_flight == 1


def test_bulk_leaves_the_reserve_to_interactive_work() -> None:
    p = Pacer(reserve=2, burst=1.0)
    grant(p, BULK, 0.0)
    p.observe(0.0, Window(5, 4, 60.0))
    grant(p, BULK, 0.0)
    grant(p, BULK, 0.0)
    assert p.remaining == 2
    bulk = p.enqueue(BULK)
    assert p.poll(bulk, 1.0) == pytest.approx(59.0)
    p.cancel(bulk)
    grant(p, INTERACTIVE, 1.0)
    grant(p, INTERACTIVE, 1.0)
    assert p.remaining == 0 and p.counters.interactive == 2 and p.counters.bulk == 3


def test_when_both_wait_interactive_goes_first_and_each_priority_in_order() -> None:
    p = Pacer(reserve=0, burst=1.0)
    grant(p, BULK, 0.0)
    p.observe(0.0, Window(3, 0, 10.0))
    bulk_1, bulk_2 = p.enqueue(BULK), p.enqueue(BULK)
    inter_1, inter_2 = p.enqueue(INTERACTIVE), p.enqueue(INTERACTIVE)
    assert p.poll(bulk_1, 5.0) == math.inf  # an interactive request waits
    assert p.poll(inter_2, 5.0) == math.inf  # not its turn
    assert p.poll(inter_1, 5.0) == pytest.approx(5.0)
    order = []
    now = 10.0
    for _ in range(4):
        for ticket in (bulk_2, bulk_1, inter_2, inter_1):
            if ticket not in order and p.poll(ticket, now) == 0.0:
                order.append(ticket)
                p.observe(now, Window(4, 4 - len(order), 10.0))
                break
    assert order == [inter_1, inter_2, bulk_1, bulk_2]


def test_past_the_burst_bulk_spreads_what_is_left_up_to_the_reset() -> None:
    p = Pacer(reserve=2, burst=0.5)
    now = 0.0
    grant(p, BULK, now)
    p.observe(now, Window(20, 19, 60.0))
    sent = [now]
    while True:
        ticket = p.enqueue(BULK)
        delay = p.poll(ticket, now)
        if now + delay >= 60.0:  # only the reserve is left: bulk waits for the next window
            p.cancel(ticket)
            break
        if delay > 0:
            now += delay
            assert p.poll(ticket, now) == 0.0
        sent.append(now)
        p.observe(now, Window(20, 20 - len(sent), 60.0 - now))
    assert len(sent) == 18  # all but the reserve
    assert sent[:10] == [0.0] * 10  # the burst: half the window's limit
    gaps = [b - a for a, b in zip(sent[9:], sent[10:], strict=False)]
    assert all(g == pytest.approx(60.0 / 9) for g in gaps)  # 8 spread over the rest
    assert sent[-1] < 60.0


def test_a_429_blocks_every_priority_until_retry_after_then_probes() -> None:
    p = Pacer()
    grant(p, BULK, 0.0)
    p.throttled(0.5, 20.0, Window(50, 0, 40.0))
    assert p.blocked_until == 20.5 and p.counters.throttled == 1
    urgent = p.enqueue(INTERACTIVE)
    assert p.poll(urgent, 1.0) == pytest.approx(19.5)
    # Past Retry-After one request probes the window; the others wait for its answer.
    assert p.poll(urgent, 20.5) == 0.0
    assert p.blocked_until is None and p.remaining is None
    assert p.poll(p.enqueue(INTERACTIVE), 20.6) == math.inf


def test_a_request_without_an_answer_frees_its_place_but_not_its_count() -> None:
    p = Pacer(reserve=0, burst=1.0)
    grant(p, BULK, 0.0)
    p.observe(0.0, Window(2, 1, 60.0))
    grant(p, BULK, 0.0)
    p.observe(0.1, None)  # a transport error: Clio may have counted it
    assert p.in_flight == 0 and p.remaining == 0


class FixedWindowServer:
    """Clio's counting as the sandbox does it: a window per token from its first request."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.started: float | None = None
        self.count = 0
        self.per_window: Counter[int] = Counter()
        self.windows = 0

    def hit(self, now: float) -> tuple[int, dict[str, str]]:
        if self.started is None or now >= self.started + self.window:
            self.started, self.count = now, 0
            self.windows += 1
        reset = math.ceil(EPOCH + self.started + self.window)
        if self.count >= self.limit:
            retry = str(max(math.ceil(reset - EPOCH - now), 1))
            return 429, {**headers(self.limit, 0, reset), "retry-after": retry}
        self.count += 1
        self.per_window[self.windows] += 1
        return 200, headers(self.limit, self.limit - self.count, reset)


def test_a_long_run_paces_to_the_limit_without_a_single_429() -> None:
    server = FixedWindowServer(limit=20, window=60.0)
    p = Pacer()  # reserve: a tenth of the limit
    now = 0.25
    statuses: Counter[int] = Counter()
    for i in range(150):
        ticket = p.enqueue(INTERACTIVE if i % 25 == 0 else BULK)
        while (delay := p.poll(ticket, now)) > 0:
            assert delay != math.inf
            now += delay
        now += 0.05  # the request's way there
        status, sent = server.hit(now)
        statuses[status] += 1
        now += 0.05
        if status == 429:
            p.throttled(now, read_retry_after(sent, EPOCH + now), read_window(sent, EPOCH + now))
        else:
            p.observe(now, read_window(sent, EPOCH + now))
    assert statuses == {200: 150}
    assert p.counters.requests == 150 and p.counters.throttled == 0
    assert max(server.per_window.values()) <= 20
    # Bulk work used each window up to its reserve: 18 a window, so nine windows.
    assert server.windows == math.ceil(150 / 18)


# --- the budget and the registry ------------------------------------------------------------


def test_budgets_hand_each_firm_one_budget() -> None:
    budgets = Budgets(reserve=3)
    a = budgets.for_firm("a")
    assert budgets.for_firm("a") is a
    assert budgets.for_firm("b") is not a
    assert a.pacer.reserve == 3
    assert budgets.for_firm(None) is not budgets.for_firm(None)
    budgets.forget("a")
    assert budgets.for_firm("a") is not a


def test_state_reports_the_window_and_the_block_in_wall_time() -> None:
    clock = {"mono": 100.0}
    budget = Budget(clock=lambda: clock["mono"], wall=lambda: EPOCH + clock["mono"])
    assert budget.state() == RateLimitState()
    budget.pacer.enqueue(BULK)
    budget.pacer.poll(1, 100.0)
    budget.observe(headers(50, 41, EPOCH + 100 + 30))
    state = budget.state()
    assert (state.limit, state.remaining, state.blocked_until) == (50, 41, None)
    assert state.resets_at == datetime.fromtimestamp(EPOCH + 130, UTC)
    budget.pacer.enqueue(BULK)
    budget.pacer.poll(2, 100.0)
    wait = budget.throttled({**headers(50, 0, EPOCH + 130), "retry-after": "12"})
    assert wait == 12.0
    assert budget.state().blocked_until == datetime.fromtimestamp(EPOCH + 112, UTC)
    clock["mono"] = 131.0
    assert budget.state() == RateLimitState(limit=50, remaining=50)
