"""Webhook delivery as Stripe does it: a JSON POST of the event to every endpoint, signed
with `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, retried with a
growing pause when the endpoint does not answer 2xx.

The body is pretty-printed JSON, like Stripe's, so a receiver that verifies a re-serialised
body instead of the raw bytes fails here as it would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

import httpx

from sandbox.stripe.objects import Obj
from sandbox.stripe.state import Delivery, DeliveryAttempt, SandboxState, WebhookEndpoint

log = logging.getLogger("sandbox.stripe.webhooks")
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
ATTEMPT_TIMEOUT_SECONDS = 10.0


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event_body(event: Obj) -> bytes:
    return json.dumps(event, indent=2).encode("utf-8")


@dataclass
class Job:
    delivery: Delivery
    endpoint: WebhookEndpoint
    payload: bytes


class Dispatcher:
    """Delivers events in the order they happened; a failed attempt goes back in the queue
    after its pause, so one dead endpoint does not hold up the others' events."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=ATTEMPT_TIMEOUT_SECONDS)
        self._task = asyncio.create_task(self._run(), name="stripe-sandbox-webhooks")
        self.state.listeners.append(self.enqueue)

    async def stop(self) -> None:
        if self.enqueue in self.state.listeners:
            self.state.listeners.remove(self.enqueue)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    def enqueue(self, event: Obj) -> None:
        """Queue `event` for every endpoint (on creation, and again on a resend)."""
        payload = event_body(event)
        deliveries = self.state.deliveries.setdefault(event["id"], [])
        for endpoint in self.state.endpoints.values():
            delivery = Delivery(event["id"], endpoint.id, endpoint.url)
            deliveries.append(delivery)
            self._queue.put_nowait(Job(delivery, endpoint, payload))

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._attempt(job)
            except Exception:  # a bug here must not stop every later delivery
                log.exception("webhook delivery of %s failed", job.delivery.event_id)

    async def _attempt(self, job: Job) -> None:
        assert self._client is not None
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": signature_header(
                job.payload, job.endpoint.secret, int(time.time())
            ),
            "User-Agent": USER_AGENT,
        }
        status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(
                job.endpoint.url, content=job.payload, headers=headers
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        job.delivery.attempts.append(DeliveryAttempt(time.time(), status, error))
        if status is not None and 200 <= status < 300:
            job.delivery.status = "succeeded"
            return
        self._retry_or_give_up(job)

    def _retry_or_give_up(self, job: Job) -> None:
        settings = self.state.settings
        tries = len(job.delivery.attempts)
        if tries >= settings.webhook_attempts:
            job.delivery.status = "failed"
            log.warning("gave up on %s to %s", job.delivery.event_id, job.delivery.url)
            return
        pause = settings.webhook_backoff_seconds * 2 ** (tries - 1)
        asyncio.get_running_loop().call_later(pause, self._queue.put_nowait, job)
