"""Clio's webhooks: subscriptions, the X-Hook-Secret handshake and signed deliveries.

A change to a bill, contact or matter (through the API or a test hook) becomes one asyncio
task per matching webhook, which POSTs `{"data": {"id", "etag"}, "meta": {"event",
"webhook_id"}}` signed with `X-Hook-Signature` (hex HMAC-SHA256 of the raw body, keyed by the
webhook's shared secret). `updated` goes out only when one of the webhook's fields changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from sandbox.clio import render
from sandbox.clio.fields import Catalog, Selection, project
from sandbox.clio.records import World

if TYPE_CHECKING:
    from sandbox.clio.state import SandboxState

MODELS = ("bill", "contact", "matter")
EVENTS = ("created", "updated", "deleted")
DEFAULT_TTL = timedelta(days=3)
MAX_TTL = timedelta(days=31)
DELIVERY_LOG_SIZE = 2000

MODEL_CATALOGS: dict[str, Catalog] = {
    "bill": render.BILL_CATALOG,
    "contact": render.CONTACT_CATALOG,
    "matter": render.MATTER_CATALOG,
}


def snapshot(world: World, model: str, record_id: int) -> dict[str, Any] | None:
    """The record as the API shows it with every field, or None when there is none."""
    if model == "bill":
        bill = world.bills.get(record_id)
        return None if bill is None else render.bill_full(world, bill)
    if model == "contact":
        contact = world.contacts.get(record_id)
        return None if contact is None else render.contact_full(contact)
    matter = world.matters.get(record_id)
    return None if matter is None else render.matter_full(world, matter)


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class Webhook:
    id: int
    region: str
    url: str
    model: str
    fields: str
    watched: Selection
    events: list[str]
    shared_secret: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    status: str = "pending"
    version: int = 1

    def live(self, now: datetime) -> bool:
        return self.status == "enabled" and now < self.expires_at


@dataclass(slots=True)
class Delivery:
    id: int
    webhook_id: int
    url: str
    event: str
    model: str
    record_id: int | None
    at: datetime
    attempts: int = 0
    status_code: int | None = None
    delivered: bool = False
    error: str | None = None
    done: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "webhook_id": self.webhook_id,
            "url": self.url,
            "event": self.event,
            "model": self.model,
            "record_id": self.record_id,
            "at": self.at.isoformat(),
            "attempts": self.attempts,
            "status_code": self.status_code,
            "delivered": self.delivered,
            "error": self.error,
            "done": self.done,
        }


@dataclass
class WebhookHub:
    state: SandboxState
    transport: httpx.AsyncBaseTransport | None = None
    webhooks: dict[int, Webhook] = field(default_factory=dict)
    deliveries: deque[Delivery] = field(default_factory=lambda: deque(maxlen=DELIVERY_LOG_SIZE))
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _next_id: int = 4_400_001
    _next_delivery: int = 1

    # --- subscriptions ----------------------------------------------------------------------

    def add(
        self,
        region: str,
        url: str,
        model: str,
        fields: str,
        watched: Selection,
        events: list[str],
        expires_at: datetime,
    ) -> Webhook:
        now = self.state.clock()
        hook = Webhook(
            id=self._next_id,
            region=region,
            url=url,
            model=model,
            fields=fields,
            watched=watched,
            events=events,
            shared_secret=secrets.token_hex(32),
            expires_at=expires_at,
            created_at=now,
            updated_at=now,
        )
        self._next_id += 1
        self.webhooks[hook.id] = hook
        self.handshake(hook)
        return hook

    def touch(self, hook: Webhook) -> None:
        hook.version += 1
        hook.updated_at = self.state.clock()

    def clear(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.webhooks.clear()
        self.deliveries.clear()

    def handshake(self, hook: Webhook) -> None:
        """POST the X-Hook-Secret in the background; an answer echoing it enables the hook."""
        hook.status = "pending"
        self._spawn(self._handshake(hook, self._log(hook, "handshake", None)))

    async def _handshake(self, hook: Webhook, delivery: Delivery) -> None:
        delivery.attempts = 1
        try:
            async with self._client() as http:
                response = await http.post(
                    hook.url,
                    content=b"{}",
                    headers={"X-Hook-Secret": hook.shared_secret, **_JSON},
                )
        except httpx.HTTPError as error:
            delivery.error = f"{type(error).__name__}: {error}"
        else:
            delivery.status_code = response.status_code
            echoed = response.headers.get("x-hook-secret", "")
            ok = response.status_code == 200 and hmac.compare_digest(echoed, hook.shared_secret)
            delivery.delivered = ok
            if ok and self.webhooks.get(hook.id) is hook:
                hook.status = "enabled"
                self.touch(hook)
            elif not ok:
                delivery.error = "the answer was not 200 with the X-Hook-Secret header echoed"
        delivery.done = True

    # --- events -----------------------------------------------------------------------------

    def watching(self, region: str, model: str) -> bool:
        return any(h.region == region and h.model == model for h in self.webhooks.values())

    def before(self, region: str, model: str, record_id: int) -> dict[str, Any] | None:
        """The record ahead of a change, when some webhook might need to compare."""
        if not self.watching(region, model):
            return None
        return snapshot(self.state.worlds[region], model, record_id)

    def changed(
        self,
        region: str,
        model: str,
        event: str,
        record_id: int,
        before: dict[str, Any] | None = None,
    ) -> None:
        """Deliver `event` for the record to each live webhook that wants it."""
        now = self.state.clock()
        hooks = [
            hook
            for hook in self.webhooks.values()
            if hook.region == region
            and hook.model == model
            and event in hook.events
            and hook.live(now)
        ]
        if not hooks:
            return
        after = snapshot(self.state.worlds[region], model, record_id)
        if after is None:
            return
        catalog = MODEL_CATALOGS[model]
        for hook in hooks:
            if event == "updated" and before is not None:
                old = project(before, hook.watched, catalog)
                if old == project(after, hook.watched, catalog):
                    continue
            payload = {
                "data": {"id": record_id, "etag": after["etag"]},
                "meta": {"event": event, "webhook_id": hook.id},
            }
            delivery = self._log(hook, event, record_id)
            self._spawn(self._deliver(hook, delivery, payload))

    async def _deliver(self, hook: Webhook, delivery: Delivery, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"X-Hook-Signature": sign(hook.shared_secret, body), **_JSON}
        delays = (*self.state.settings.webhook_retry_delays, None)
        async with self._client() as http:
            for delay in delays:
                delivery.attempts += 1
                try:
                    response = await http.post(hook.url, content=body, headers=headers)
                except httpx.HTTPError as error:
                    delivery.status_code, delivery.error = None, f"{type(error).__name__}: {error}"
                else:
                    delivery.status_code, delivery.error = response.status_code, None
                    if response.status_code < 400 or response.status_code == 410:
                        delivery.delivered = True
                        if response.status_code == 410:
                            # Gone: the receiver wants no more; Clio stops the webhook.
                            hook.status = "suspended"
                            self.touch(hook)
                        break
                # A webhook deleted, expired or suspended meanwhile gets no more tries.
                current = self.webhooks.get(hook.id) is hook
                if delay is None or not current or not hook.live(self.state.clock()):
                    break
                await asyncio.sleep(delay)
        delivery.done = True

    # --- plumbing ---------------------------------------------------------------------------

    def _log(self, hook: Webhook, event: str, record_id: int | None) -> Delivery:
        delivery = Delivery(
            id=self._next_delivery,
            webhook_id=hook.id,
            url=hook.url,
            event=event,
            model=hook.model,
            record_id=record_id,
            at=self.state.clock(),
        )
        self._next_delivery += 1
        self.deliveries.append(delivery)
        return delivery

    def _client(self) -> httpx.AsyncClient:
        timeout = self.state.settings.webhook_timeout
        return httpx.AsyncClient(transport=self.transport, timeout=timeout)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self) -> None:
        """Wait until every handshake and delivery started so far (and their retries) ends."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


_JSON = {"Content-Type": "application/json"}
