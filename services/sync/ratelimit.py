"""Clio's request budget, one per access token (one per firm): pacing on X-RateLimit-*,
waiting out a 429's Retry-After, and interactive work ahead of bulk work.

`Pacer` holds the rules and is pure (the time is passed in); `Budget` wraps one in asyncio
for every client of a firm in the process; `Budgets` hands each firm its one `Budget`.

Clio counts requests per access token in 60-second windows and reports, on every answer,
the window's limit, what is left and when it resets (the server's Unix time). The rules:

- Never send a request the window is known to have no room for: the room is what Clio last
  said was left, less every request sent since (answers can only lower it within a window).
- Until a window is known (first use, or once its reset has passed) one request at a time
  goes out, as a probe; its answer tells the new window.
- Bulk work leaves the last `reserve` requests of a window to interactive work, and waits
  while any interactive request waits. Past the first `burst` share of a window it spreads
  what is left evenly up to the reset, so a long sync runs at the limit without a 429 and
  a webhook's fetch finds room at any moment of the window.
- A 429 blocks the whole budget until its Retry-After has passed (`blocked_until`).
- Reset is turned into a local wait as Reset minus the answer's Date (the server's own
  clock, so clock skew does not matter), falling back to the local clock, bounded to
  [0, 60] s.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

from shared.api.sync import RateLimitState

WINDOW_SECONDS = 60.0
# Two answers whose resets differ by less than this are taken as the same window.
SAME_WINDOW_SLACK = 1.5
# Bounds on a 429's Retry-After: at least a second (never a hot loop), at most five minutes.
RETRY_AFTER_MIN = 1.0
RETRY_AFTER_MAX = 300.0
# A waiter re-checks at least this often even if nothing wakes it.
MAX_NAP = 5.0
WAKE = math.inf


class Priority(StrEnum):
    INTERACTIVE = "interactive"  # a webhook's fetch of one bill, a user's action
    BULK = "bulk"  # a sync's paging


@dataclass(frozen=True, slots=True)
class Window:
    """What one answer said of its rate window."""

    limit: int
    remaining: int
    reset_in: float  # seconds until the window resets, by the server's clock


def _server_now(headers: Mapping[str, str], wall_now: float) -> float:
    date = headers.get("date")
    if date:
        try:
            return parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return wall_now


def read_window(headers: Mapping[str, str], wall_now: float) -> Window | None:
    """The window of an answer's X-RateLimit-* headers (None when absent or garbled).
    `headers` must look names up case-insensitively (httpx.Headers does)."""
    try:
        limit = int(headers["x-ratelimit-limit"])
        remaining = int(headers["x-ratelimit-remaining"])
        reset = float(headers["x-ratelimit-reset"])
    except (KeyError, TypeError, ValueError):
        return None
    if limit <= 0 or not math.isfinite(reset):
        return None
    reset_in = min(max(reset - _server_now(headers, wall_now), 0.0), WINDOW_SECONDS)
    return Window(limit, min(max(remaining, 0), limit), reset_in)


def read_retry_after(headers: Mapping[str, str], wall_now: float) -> float:
    """A 429's Retry-After in seconds (delta-seconds or an HTTP date), bounded; without one,
    the window's reset, else a minute."""
    value = (headers.get("retry-after") or "").strip()
    seconds: float | None = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - _server_now(headers, wall_now)
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
    if seconds is None or not math.isfinite(seconds):
        window = read_window(headers, wall_now)
        seconds = window.reset_in if window else WINDOW_SECONDS
    return min(max(seconds, RETRY_AFTER_MIN), RETRY_AFTER_MAX)


@dataclass
class Counters:
    """Requests a budget let through, by priority, and how the pacing went."""

    requests: int = 0
    interactive: int = 0
    bulk: int = 0
    throttled: int = 0  # 429 answers
    waited: int = 0  # requests that had to wait for room


class Pacer:
    """The pacing rules for one rate window owner, with time (monotonic seconds) passed in.

    Use: `t = enqueue(priority)`, then `poll(t, now)` until it returns 0.0 (granted; send
    the request), waiting the seconds it returns otherwise (`inf`: until something changes);
    then `observe(now, window)` with the answer's window, `throttled(...)` on a 429, or
    `observe(now, None)` when no answer came. `cancel(t)` a ticket that gives up waiting."""

    def __init__(self, reserve: int | None = None, burst: float = 0.5) -> None:
        self.reserve = reserve
        self.burst = burst
        self.limit: int | None = None
        self.remaining: int | None = None  # None: the current window is not known
        self.resets_at: float | None = None
        self.blocked_until: float | None = None
        self.in_flight = 0
        self.last_bulk: float | None = None
        self.counters = Counters()
        self._queues: dict[Priority, deque[int]] = {p: deque() for p in Priority}
        self._priority: dict[int, Priority] = {}
        self._waited: set[int] = set()
        self._tickets = 0

    def reserve_for(self, limit: int) -> int:
        wanted = self.reserve if self.reserve is not None else math.ceil(limit / 10)
        return min(max(wanted, 0), max(limit - 1, 0))

    def enqueue(self, priority: Priority) -> int:
        self._tickets += 1
        self._queues[priority].append(self._tickets)
        self._priority[self._tickets] = priority
        return self._tickets

    def cancel(self, ticket: int) -> None:
        priority = self._priority.pop(ticket, None)
        if priority is not None:
            self._queues[priority].remove(ticket)
        self._waited.discard(ticket)

    def waiting(self, priority: Priority) -> int:
        return len(self._queues[priority])

    def poll(self, ticket: int, now: float) -> float:
        """0.0 when `ticket` may send now (it is then granted), else the seconds to wait."""
        delay = self._delay(ticket, now)
        if delay > 0:
            self._waited.add(ticket)
            return delay
        self._grant(ticket, now)
        return 0.0

    def _delay(self, ticket: int, now: float) -> float:
        priority = self._priority[ticket]
        if self._queues[priority][0] != ticket:
            return WAKE  # first come, first served within a priority
        if priority is Priority.BULK and self._queues[Priority.INTERACTIVE]:
            return WAKE
        if self.blocked_until is not None:
            if now < self.blocked_until:
                return self.blocked_until - now
            self.blocked_until = None
        if self.resets_at is not None and now >= self.resets_at:
            self.remaining = self.resets_at = None  # a new window: probe it
        if self.remaining is None or self.resets_at is None or self.limit is None:
            return 0.0 if self.in_flight == 0 else WAKE
        room = self.remaining
        if priority is Priority.INTERACTIVE:
            return 0.0 if room > 0 else self.resets_at - now
        usable = room - self.reserve_for(self.limit)
        if usable <= 0:
            return self.resets_at - now
        if self.limit - room < math.floor(self.limit * self.burst) or self.last_bulk is None:
            return 0.0
        # Spread the usable rest evenly between the last bulk request and the reset.
        at = self.last_bulk + (self.resets_at - self.last_bulk) / (usable + 1)
        return max(at - now, 0.0)

    def _grant(self, ticket: int, now: float) -> None:
        priority = self._priority.pop(ticket)
        self._queues[priority].popleft()
        self.in_flight += 1
        if self.remaining is not None:
            self.remaining -= 1
        if priority is Priority.BULK:
            self.last_bulk = now
        self.counters.requests += 1
        if priority is Priority.INTERACTIVE:
            self.counters.interactive += 1
        else:
            self.counters.bulk += 1
        if ticket in self._waited:
            self._waited.discard(ticket)
            self.counters.waited += 1

    def observe(self, now: float, window: Window | None) -> None:
        """An answer came (`window`: its headers), or none did (`None`: transport error)."""
        self.in_flight = max(self.in_flight - 1, 0)
        if window is None:
            return
        self.limit = window.limit
        if window.reset_in <= 0:
            return  # the window is ending; the next request probes the new one
        resets_at = now + window.reset_in
        known_remaining, known_reset = self.remaining, self.resets_at
        if (
            known_remaining is not None
            and known_reset is not None
            and resets_at <= known_reset + SAME_WINDOW_SLACK
        ):
            # The same window: answers only ever lower what is left (they may come late).
            self.remaining = min(known_remaining, window.remaining)
            self.resets_at = max(known_reset, resets_at)
        else:
            # A new window; requests still out may count against it too.
            self.remaining = max(window.remaining - self.in_flight, 0)
            self.resets_at = resets_at

    def throttled(self, now: float, retry_after: float, window: Window | None) -> None:
        """A 429: nothing goes out before `retry_after` seconds have passed."""
        self.in_flight = max(self.in_flight - 1, 0)
        self.counters.throttled += 1
        until = now + retry_after
        self.blocked_until = max(self.blocked_until or until, until)
        if window is not None:
            self.limit = window.limit
        self.remaining = 0
        self.resets_at = max(self.resets_at or until, until)


class Budget:
    """One firm's Clio request budget, shared by all its clients in the process."""

    def __init__(
        self,
        firm_id: str | None = None,
        *,
        reserve: int | None = None,
        burst: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.firm_id = firm_id
        self.pacer = Pacer(reserve, burst)
        self._clock = clock
        self._wall = wall
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def counters(self) -> Counters:
        return self.pacer.counters

    async def acquire(self, priority: Priority = Priority.BULK) -> None:
        """Wait until a request of `priority` may go out; the caller then sends exactly one
        and reports its outcome with `observe`, `throttled` or `release`."""
        pacer = self.pacer
        ticket = pacer.enqueue(Priority(priority))
        try:
            while (delay := pacer.poll(ticket, self._clock())) > 0:
                loop = asyncio.get_running_loop()
                woken: asyncio.Future[None] = loop.create_future()
                self._waiters.add(woken)
                try:
                    await asyncio.wait([woken], timeout=min(delay, MAX_NAP))
                finally:
                    self._waiters.discard(woken)
        except BaseException:
            pacer.cancel(ticket)
            self._wake()
            raise
        self._wake()  # the next in line may go, or must now wait behind this one

    def observe(self, headers: Mapping[str, str]) -> None:
        self.pacer.observe(self._clock(), read_window(headers, self._wall()))
        self._wake()

    def throttled(self, headers: Mapping[str, str]) -> float:
        """Record a 429; returns the seconds it blocks the budget for."""
        wall = self._wall()
        wait = read_retry_after(headers, wall)
        self.pacer.throttled(self._clock(), wait, read_window(headers, wall))
        self._wake()
        return wait

    def release(self) -> None:
        """A granted request got no answer (transport error, cancelled)."""
        self.pacer.observe(self._clock(), None)
        self._wake()

    def state(self) -> RateLimitState:
        pacer, now, wall = self.pacer, self._clock(), self._wall()

        def at(moment: float | None) -> datetime | None:
            if moment is None or moment <= now:
                return None
            return datetime.fromtimestamp(wall, UTC) + timedelta(seconds=moment - now)

        current = pacer.resets_at is not None and pacer.resets_at > now
        return RateLimitState(
            limit=pacer.limit,
            remaining=pacer.remaining if current else pacer.limit,
            resets_at=at(pacer.resets_at),
            blocked_until=at(pacer.blocked_until),
        )

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class Budgets:
    """The process's budgets: `for_firm` hands every client of a firm the same `Budget`."""

    def __init__(self, **options: object) -> None:
        self._options = options
        self._by_firm: dict[str, Budget] = {}

    def for_firm(self, firm_id: str | None) -> Budget:
        """The firm's budget; None (no firm yet, e.g. the OAuth code exchange): a new one."""
        if firm_id is None:
            return Budget(None, **self._options)  # type: ignore[arg-type]
        budget = self._by_firm.get(firm_id)
        if budget is None:
            budget = self._by_firm[firm_id] = Budget(firm_id, **self._options)  # type: ignore[arg-type]
        return budget

    def forget(self, firm_id: str) -> None:
        """Drop a firm's budget (it disconnected; a new token starts a new count)."""
        self._by_firm.pop(firm_id, None)
