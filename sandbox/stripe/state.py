"""The sandbox's memory: Stripe objects by id, idempotent results, events and their
deliveries, webhook endpoints and timers.

Handlers touch this state only between awaits, so the event loop serialises them and no lock
is needed (the same rule as the Clio sandbox).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox.stripe.objects import Obj, account, new_id
from sandbox.stripe.settings import StripeSandboxSettings

Clock = Callable[[], float]
Scheduler = Callable[[float, Callable[[], None]], None]
EventListener = Callable[[Obj], None]

IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60

# Which table an id belongs to, by prefix: used to resolve `expand[]` and hook paths.
PREFIXES = {
    "cs_test_": "checkout.session",
    "pi_": "payment_intent",
    "ch_": "charge",
    "py_": "charge",
    "pm_": "payment_method",
    "re_": "refund",
    "tr_": "transfer",
    "trr_": "transfer_reversal",
    "txn_": "balance_transaction",
    "dp_": "dispute",
    "evt_": "event",
    "acct_": "account",
    "li_": "item",
}


@dataclass
class IdempotentResult:
    method: str
    path: str
    fingerprint: str
    status: int
    body: bytes
    request_id: str
    created: float


@dataclass
class WebhookEndpoint:
    id: str
    url: str
    secret: str

    def as_json(self) -> Obj:
        return {"id": self.id, "url": self.url, "secret": self.secret}


@dataclass
class DeliveryAttempt:
    at: float
    status: int | None
    error: str | None

    def as_json(self) -> Obj:
        return {"at": int(self.at), "status": self.status, "error": self.error}


@dataclass
class Delivery:
    """One event on its way to one endpoint: every attempt, and how it ended."""

    event_id: str
    endpoint_id: str
    url: str
    status: str = "pending"  # pending, succeeded, failed
    attempts: list[DeliveryAttempt] = field(default_factory=list)

    def as_json(self) -> Obj:
        return {
            "endpoint": self.endpoint_id,
            "url": self.url,
            "status": self.status,
            "attempts": [attempt.as_json() for attempt in self.attempts],
        }


@dataclass
class RequestContext:
    """The API request an event stems from (`event.request`)."""

    id: str | None = None
    idempotency_key: str | None = None


class SandboxState:
    def __init__(
        self, settings: StripeSandboxSettings | None = None, clock: Clock = time.time
    ) -> None:
        self.settings = settings or StripeSandboxSettings.from_env()
        self.clock = clock
        self.scheduler: Scheduler | None = None
        self.listeners: list[EventListener] = []
        self.request = RequestContext()
        self._reset_data()

    def _reset_data(self) -> None:
        self.tables: dict[str, dict[str, Obj]] = {}
        self.line_items: dict[str, list[Obj]] = {}
        # A session's payment_intent_data, for the PaymentIntent made when the client pays.
        self.intent_data: dict[str, Obj] = {}
        self.session_of_intent: dict[str, str] = {}
        # What an ACH debit will do when it settles: None succeeds, else a failure code.
        self.ach_outcomes: dict[str, str | None] = {}
        self.idempotency: dict[tuple[str, str], IdempotentResult] = {}
        self.events: list[Obj] = []
        self.deliveries: dict[str, list[Delivery]] = {}
        self.endpoints: dict[str, WebhookEndpoint] = {}
        self.balances: dict[str, int] = {}
        if self.settings.webhook_url:
            secret = self.settings.webhook_secret or new_id("whsec_", 32)
            self.add_endpoint(self.settings.webhook_url, secret)
        for account_id in self.settings.accounts:
            self.add(account(account_id, self.now()))

    def reset(self) -> None:
        """Forget every object, event and hook-registered endpoint; the endpoint from the
        environment and the configured accounts come back."""
        self._reset_data()

    def now(self) -> int:
        return int(self.clock())

    # objects

    def add(self, obj: Obj) -> Obj:
        self.tables.setdefault(obj["object"], {})[obj["id"]] = obj
        return obj

    def get(self, kind: str, object_id: str) -> Obj | None:
        return self.tables.get(kind, {}).get(object_id)

    def find(self, object_id: str) -> Obj | None:
        for prefix, kind in PREFIXES.items():
            if object_id.startswith(prefix):
                found = self.get(kind, object_id)
                if found is not None:
                    return found
        return None

    def all(self, kind: str) -> list[Obj]:
        """Newest first, as Stripe lists."""
        return list(reversed(self.tables.get(kind, {}).values()))

    # events

    def emit(self, event_type: str, obj: Obj, previous: Obj | None = None) -> Obj:
        """Record an event with a snapshot of `obj` as it is now, and hand it to the webhook
        dispatcher."""
        data: Obj = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = {
            "id": new_id("evt_"),
            "object": "event",
            "api_version": self.settings.api_version,
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": len(self.endpoints),
            "request": {
                "id": self.request.id,
                "idempotency_key": self.request.idempotency_key,
            },
            "type": event_type,
        }
        self.add(event)
        self.events.append(event)
        for listener in self.listeners:
            listener(event)
        return event

    def add_endpoint(self, url: str, secret: str | None = None) -> WebhookEndpoint:
        endpoint = WebhookEndpoint(new_id("we_"), url, secret or new_id("whsec_", 32))
        self.endpoints[endpoint.id] = endpoint
        return endpoint

    def schedule(self, delay: float, action: Callable[[], None]) -> None:
        """Run `action` later (ACH settlement); nothing happens without a running loop, or
        when the configured delay is negative (settled only by the test hook)."""
        if self.scheduler is not None and delay >= 0:
            self.scheduler(delay, action)

    # idempotency

    def idempotent_result(self, api_key: str, key: str) -> IdempotentResult | None:
        found = self.idempotency.get((api_key, key))
        if found is not None and self.clock() - found.created >= IDEMPOTENCY_TTL_SECONDS:
            del self.idempotency[(api_key, key)]
            return None
        return found

    def remember(self, api_key: str, key: str, result: IdempotentResult) -> None:
        self.idempotency[(api_key, key)] = result
