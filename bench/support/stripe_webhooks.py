"""payments.py's webhook deliveries: what happens to each checkout session (a story), the
events Stripe sends for it, normalised as StripeProcessor normalises them, and their
delivery to POST /webhooks/stripe, signed as Stripe signs, by concurrent clients."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from bench.support.common import INTERNAL
from bench.support.paylinks import LinkSpec, World
from services.payments import rules

# The webhook endpoint's signing secret, given to the payments service as
# STRIPE_WEBHOOK_SECRET (test mode then verifies with it instead of its built-in one).
WEBHOOK_SECRET = "whsec_envelopepay_bench"  # noqa: S105 - a benchmark's own secret
BENCH_FIRM_ID = "6b0e5c1e-0bec-4a7e-9d2f-000000000004"


# What happens to one checkout session, as Stripe would report it, and how often.
STORIES = {
    "card": 0.55,  # paid by card
    "card_retry": 0.05,  # a card declined, then another card paid
    "card_refund": 0.10,  # paid by card, refunded later on Stripe's dashboard (part or all)
    "ach": 0.20,  # ACH debit, processing, settled three days later
    "ach_failed": 0.07,  # ACH debit returned R01 before it settled
    "ach_pending": 0.03,  # ACH debit still processing
}
UNIQUE_EVENTS = {
    "card": 2,
    "card_retry": 3,
    "card_refund": 3,
    "ach": 4,
    "ach_failed": 4,
    "ach_pending": 2,
}
# The bus events each story's payment must announce, in this order.
ANNOUNCED = {
    "card": ["payment.succeeded"],
    "card_retry": ["payment.succeeded"],
    "card_refund": ["payment.succeeded", "payment.refunded"],
    "ach": ["payment.processing", "payment.succeeded"],
    "ach_failed": ["payment.processing", "payment.failed"],
    "ach_pending": ["payment.processing"],
}


def now() -> float:
    return time.perf_counter()


@dataclass
class Story:
    kind: str
    link: LinkSpec
    refund_minor: int = 0
    session_id: str = ""
    events: list[bytes] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    @property
    def unique_events(self) -> int:
        return UNIQUE_EVENTS[self.kind]

    @property
    def method(self) -> str:
        return "ach" if self.kind.startswith("ach") else "card"

    @property
    def status(self) -> str:
        if self.kind == "card_refund":
            full = self.refund_minor >= self.link.amount_minor
            return "refunded" if full else "partially_refunded"
        return {"ach_failed": "failed", "ach_pending": "processing"}.get(self.kind, "succeeded")

    @property
    def fee_minor(self) -> int:
        if self.status in ("failed", "processing"):
            return 0
        return rules.processing_fee(self.method, self.link.amount_minor)


def event_body(rng: random.Random, kind: str, at: datetime, **data: Any) -> tuple[str, bytes]:
    """A webhook body as test mode takes it (the ledger's normalised event, in Stripe's
    envelope: id, type, created, data); fields that are None are left out, as they are
    absent from the Stripe object they come from."""
    event_id = f"evt_{rng.getrandbits(96):024x}"
    body = {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": int(at.timestamp()),
        "livemode": False,
        "data": {k: v for k, v in data.items() if v is not None},
    }
    return event_id, json.dumps(body, separators=(",", ":")).encode()


Ev = tuple[str, datetime, dict[str, Any]]  # kind, created, data


class _Checkout:
    """The ids and payer of one story's checkout, and its events as the ledger takes them."""

    def __init__(self, rng: random.Random, st: Story) -> None:
        self.st = st
        self.amount = st.link.amount_minor
        self.pi, self.ch = f"pi_{rng.getrandbits(96):024x}", f"ch_{rng.getrandbits(96):024x}"
        self.payer = {
            "payer_name": f"Payer {st.link.client:04d}",
            "payer_email": "payer@bench.example",
        }

    def session(self, kind: str, at: datetime, method: str, **extra: Any) -> Ev:
        ours = {"session_id": self.st.session_id, "payment_ref": self.pi, "method": method}
        data = ours | {"amount_minor": self.amount} | self.payer | extra
        return kind, at + timedelta(seconds=1), data

    def intent(self, kind: str, at: datetime, **extra: Any) -> Ev:
        ours = {"session_id": self.st.session_id, "payment_ref": self.pi, "charge_ref": self.ch}
        return kind, at, ours | {"amount_minor": self.amount} | extra

    def declined(self, rng: random.Random, at: datetime) -> Ev:
        """payment_intent.payment_failed: the first card declined."""
        declined = {"failure_code": "card_declined", "failure_reason": "Your card was declined."}
        return self.intent(
            "payment.failed",
            at,
            charge_ref=f"ch_{rng.getrandbits(96):024x}",
            method="card",
            last4="0002",
            **declined,
            **self.payer,
        )

    def paid(self, at: datetime) -> list[Ev]:
        if self.st.method == "card":  # checkout.session.completed (paid), ...intent.succeeded
            return [
                self.session("payment.succeeded", at, "card"),
                self.intent("payment.succeeded", at),
            ]
        # checkout.session.completed (unpaid), payment_intent.processing
        return [
            self.session("payment.processing", at, "ach"),
            self.intent("payment.processing", at, method="ach"),
        ]

    def settled(self, at: datetime) -> list[Ev]:
        if self.st.kind == "ach":  # ...async_payment_succeeded, payment_intent.succeeded
            return [
                self.session("payment.succeeded", at, "ach"),
                self.intent("payment.succeeded", at),
            ]
        if self.st.kind == "ach_failed":  # ...async_payment_failed, ...intent.payment_failed
            return [
                self.session(
                    "payment.failed", at, "ach", failure_reason="The bank payment failed."
                ),
                self.intent(
                    "payment.failed",
                    at,
                    method="ach",
                    failure_code="R01",
                    failure_reason="Insufficient funds.",
                    last4="2227",
                ),
            ]
        return []

    def refunded(self, rng: random.Random, at: datetime) -> Ev:
        """charge.refunded, from Stripe's dashboard: none of our refund ids."""
        refund_ref = f"re_{rng.getrandbits(96):024x}"
        refund = {"amount_minor": self.st.refund_minor, "refund_ref": refund_ref}
        return "refund.succeeded", at, {"payment_ref": self.pi, "charge_ref": self.ch} | refund


def story_events(rng: random.Random, st: Story, t0: datetime) -> None:
    """The events Stripe sends for one checkout session, normalised as StripeProcessor
    normalises them: checkout.session.* carry our session id, the method and the payer;
    payment_intent.* carry the session id (from metadata) and the charge, and a method only
    when the event shows one (an intent that lists card and us_bank_account and succeeded
    names none); charge.refunded for a refund made on Stripe's dashboard names the intent,
    the charge and the amount, and none of our refund ids."""
    checkout = _Checkout(rng, st)
    paid, later = t0 + timedelta(minutes=1), t0 + timedelta(days=3)
    evs: list[Ev] = []
    if st.kind == "card_retry":
        evs.append(checkout.declined(rng, t0))
    evs += checkout.paid(paid)
    evs += checkout.settled(later)
    if st.kind == "card_refund":
        evs.append(checkout.refunded(rng, t0 + timedelta(days=2)))
    assert len(evs) == st.unique_events
    for kind, at, data in evs:
        event_id, payload = event_body(rng, kind, at, **data)
        st.event_ids.append(event_id)
        st.events.append(payload)


def plan_stories(rng: random.Random, unique_target: int) -> tuple[World, list[Story]]:
    """Stories until their events reach `unique_target`; a pay link (1-3 bills) each."""
    kinds: list[str] = []
    total = 0
    names, weights = list(STORIES), list(STORIES.values())
    while total < unique_target:
        kind = rng.choices(names, weights=weights)[0]
        kinds.append(kind)
        total += UNIQUE_EVENTS[kind]
    items = [rng.choice([1, 1, 1, 2, 2, 3]) for _ in kinds]
    world = World.make(rng, BENCH_FIRM_ID, len(kinds), items, 0.0, clients=max(1, len(kinds) // 3))
    stories = []
    for kind, link in zip(kinds, world.links, strict=True):
        refund = 0
        if kind == "card_refund":
            refund = link.amount_minor if rng.random() < 0.3 else link.amount_minor // 2
        stories.append(Story(kind, link, refund_minor=refund))
    return world, stories


async def open_sessions(
    payments_url: str, stories: list[Story], concurrency: int = 8
) -> dict[str, int]:
    """A checkout session per link, through the internal API, as the gateway asks for one
    when the client clicks Pay (test mode opens no processor session, so no network). A
    5xx is tried again (as a client clicks Pay again), and counted."""
    sem = asyncio.Semaphore(concurrency)
    failures: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=payments_url, headers=INTERNAL, timeout=120) as client:

        async def one(st: Story) -> None:
            last = ""
            for _ in range(3):
                try:
                    async with sem:
                        resp = await client.post(
                            f"/internal/paylinks/{st.link.token}/checkout",
                            json={"invoice_ids": [], "scope": "items"},
                        )
                except httpx.TransportError as exc:
                    key = last = type(exc).__name__
                else:
                    if resp.status_code == 200:
                        st.session_id = resp.json()["session_id"]
                        return
                    key, last = str(resp.status_code), f"{resp.status_code} {resp.text[:300]}"
                    if resp.status_code < 500:
                        break
                failures[key] = failures.get(key, 0) + 1
            raise RuntimeError(f"checkout for a link: {last}")

        await asyncio.gather(*(one(st) for st in stories))
    return failures


def signature(payload: bytes, secret: str) -> str:
    """Stripe-Signature: t=<unix time>,v1=<HMAC-SHA256 of "<t>.<raw body>">, made at send time
    as Stripe does (a delivery repeated later carries a new timestamp, the same body)."""
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@dataclass
class Delivery:
    payload: bytes
    event_id: str
    first: bool  # the first delivery of its event in the sending order
    latency: float = 0.0
    status: str = ""
    sent_at: float = 0.0  # seconds from the start of the run
    detail: str = ""


async def deliver(url: str, deliveries: list[Delivery], concurrency: int) -> float:
    """Post every delivery, `concurrency` at a time (each worker a client waiting for its
    answer before the next); returns the wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    todo = iter(deliveries)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def worker() -> None:
            for d in todo:
                headers = {
                    "Stripe-Signature": signature(d.payload, WEBHOOK_SECRET),
                    "Content-Type": "application/json",
                }
                t = now()
                d.sent_at = t - started
                try:
                    resp = await client.post(url, content=d.payload, headers=headers)
                    d.status = str(resp.status_code)
                    if resp.status_code != 200:
                        d.detail = resp.text[:200]
                except httpx.HTTPError as exc:
                    d.status = type(exc).__name__
                    d.detail = repr(exc)[:200]
                d.latency = now() - t

        started = now()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return now() - started
