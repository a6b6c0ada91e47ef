"""send_all.py's world: 1,000 unpaid bills (about 10 % trust requests, 2-6 lines on the
others) for 300 clients, skewed so a few clients have more than ten bills; deterministic,
so every case seeds the same. Seeded through the Clio sandbox's hooks, concurrently."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx

CLIENT_PREFIX = "Bench Client"
SEED = 20_250_517
MAX_PER_ENVELOPE = 10  # EnvelopeSettings.max_items_per_envelope


def now() -> float:
    return time.monotonic()


@dataclass
class Plan:
    """Deterministic: every case seeds the same clients and bills."""

    clients: int
    invoices: int
    per_client: list[int] = field(default_factory=list)
    bills: list[dict[str, Any]] = field(default_factory=list)  # per bill, client index + spec

    @classmethod
    def make(cls, clients: int, invoices: int, trust_share: float = 0.1) -> Plan:
        if invoices < clients:
            raise SystemExit("need at least one invoice per client")
        rng = random.Random(SEED)
        counts = [1] * clients
        # The rest skewed (a few large clients with more than ten bills, most with one to
        # three), so combine makes both single and split envelopes.
        weights = [1 / (i + 1) ** 0.9 for i in range(clients)]
        for i in rng.choices(range(clients), weights=weights, k=invoices - clients):
            counts[i] += 1
        plan = cls(clients=clients, invoices=invoices, per_client=counts)
        today = date.today()
        for client, n in enumerate(counts):
            for _ in range(n):
                spec = bill_spec(rng, today, trust_share)
                plan.bills.append({"client": client, "spec": spec})
        return plan

    @property
    def envelopes(self) -> int:
        return sum(math.ceil(n / MAX_PER_ENVELOPE) for n in self.per_client)


def bill_spec(rng: random.Random, today: date, trust_share: float) -> dict[str, Any]:
    """A bill as the Clio sandbox's hook takes it: a trust request, or 2-6 line items."""
    issued = today - timedelta(days=rng.randint(1, 90))
    if rng.random() < trust_share:
        return {
            "kind": "trust_kind",
            "total": f"{rng.randint(5, 100) * 100}.00",
            "issued_at": issued.isoformat(),
        }
    lines = []
    for _ in range(rng.randint(2, 6)):
        expense = rng.random() < 0.25
        lines.append(
            {
                "description": rng.choice(["Filing fee", "Courier", "Copies", "Travel"])
                if expense
                else rng.choice(
                    [
                        "Draft and revise motion to compel",
                        "Telephone conference with client",
                        "Review discovery responses",
                        "Research: statute of limitations",
                        "Prepare for and attend deposition",
                    ]
                ),
                "price": f"{rng.randint(20, 450)}.00",
                "quantity": "1" if expense else f"{rng.randint(1, 24) / 4:.2f}",
                "kind": "Expense" if expense else "Service",
                "date": (issued - timedelta(days=rng.randint(0, 20))).isoformat(),
            }
        )
    return {"line_items": lines, "issued_at": issued.isoformat()}


async def seed_clio(clio_url: str, plan: Plan, concurrency: int = 32) -> dict[str, Any]:
    """Contacts and bills through the sandbox hooks, concurrently."""
    sem = asyncio.Semaphore(concurrency)
    started = now()
    async with httpx.AsyncClient(base_url=clio_url, timeout=60) as client:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with sem:
                resp = await client.post(path, json=body)
            if resp.status_code != 201:
                raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:300]}")
            return resp.json()["data"]

        contacts = await asyncio.gather(
            *(
                post(
                    "/sandbox/contacts",
                    {
                        "type": "Company",
                        "name": f"{CLIENT_PREFIX} {i:03d} LLC",
                        "primary_email_address": f"client{i:03d}@bench.example",
                    },
                )
                for i in range(plan.clients)
            )
        )
        ids = [c["id"] for c in contacts]
        bills = await asyncio.gather(
            *(
                post("/sandbox/bills", {"client_id": ids[b["client"]], **b["spec"]})
                for b in plan.bills
            )
        )
    return {
        "seconds": round(now() - started, 2),
        "contacts": len(contacts),
        "bills": len(bills),
        "trust_requests": sum(1 for b in plan.bills if b["spec"].get("kind") == "trust_kind"),
    }
