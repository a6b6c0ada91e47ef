"""payments.py's world: bills and pay links, reaching the payments service the way they do in
the system, over the bus: an invoice.updated per bill (what sync publishes), then a
paylink.issued per link (what envelope publishes when it sends), each waited for until
payments' inbox has handled them all."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bench.support.bus import publish
from bench.support.db import Db
from shared.events import (
    Event,
    FirmProfile,
    FirmUpdated,
    InvoiceSnapshot,
    InvoiceUpdated,
    PayLinkIssued,
    PayLinkItem,
)
from shared.tokens import derive_token, hash_token

LINK_SECRET = "bench-link-secret"  # noqa: S105 - how the bench derives link tokens


def now() -> float:
    return time.perf_counter()


@dataclass
class BillSpec:
    invoice_id: str
    number: str
    kind: str
    client: int
    balance_minor: int
    due_at: date


@dataclass
class LinkSpec:
    token: str
    send_id: str
    client: int
    bills: list[BillSpec]
    pay_all_outstanding: bool = False

    @property
    def amount_minor(self) -> int:
        return sum(b.balance_minor for b in self.bills)


@dataclass
class World:
    firm_id: str
    clients: int
    links: list[LinkSpec] = field(default_factory=list)
    bills: list[BillSpec] = field(default_factory=list)

    @classmethod
    def make(
        cls,
        rng: random.Random,
        firm_id: str,
        links: int,
        items: list[int],
        pay_all_share: float,
        clients: int,
    ) -> World:
        """`links` links, the i-th with items[i] bills of its own, for `clients` clients
        (skewed: a few clients have many links, so their full balance is long)."""
        world = cls(firm_id=firm_id, clients=clients)
        weights = [1 / (i + 1) ** 0.8 for i in range(clients)]
        today = date.today()
        n = 0
        for i in range(links):
            client = i if i < clients else rng.choices(range(clients), weights=weights)[0]
            bills = []
            for _ in range(items[i]):
                n += 1
                trust = rng.random() < 0.1
                bill = BillSpec(
                    invoice_id=f"clio:{700_000 + n}",
                    number=f"{'TR' if trust else 'INV'}-{20_000 + n}",
                    kind="trust_request" if trust else "invoice",
                    client=client,
                    balance_minor=rng.randint(100, 5_000) * 100 + rng.choice([0, 50, 99]),
                    due_at=today + timedelta(days=rng.randint(-20, 40)),
                )
                bills.append(bill)
                world.bills.append(bill)
            send_id = str(uuid.UUID(int=rng.getrandbits(128)))
            world.links.append(
                LinkSpec(
                    # As envelope mints a send's link: derived from the send id.
                    token=derive_token(LINK_SECRET, "send", send_id),
                    send_id=send_id,
                    client=client,
                    bills=bills,
                    pay_all_outstanding=rng.random() < pay_all_share,
                )
            )
        return world

    def client_name(self, client: int) -> str:
        return f"Bench Client {client:04d} LLC"

    def client_email(self, client: int) -> str:
        return f"client{client:04d}@bench.example"

    def bill_events(self, firm: FirmProfile | None) -> list[Event]:
        """What sync publishes (and the gateway, for the firm): a firm.updated, and an
        invoice.updated per bill."""
        out: list[Event] = [FirmUpdated(firm_id=self.firm_id, firm=firm)] if firm else []
        for b in self.bills:
            out.append(
                InvoiceUpdated(
                    firm_id=self.firm_id,
                    invoice=InvoiceSnapshot(
                        invoice_id=b.invoice_id,
                        source_id=b.invoice_id.split(":")[1],
                        number=b.number,
                        kind=b.kind,  # type: ignore[arg-type]
                        state="awaiting_payment",
                        client_id=f"clio-contact:{b.client}",
                        client_name=self.client_name(b.client),
                        client_email=self.client_email(b.client),
                        issued_at=b.due_at - timedelta(days=30),
                        due_at=b.due_at,
                        currency="USD",
                        total_minor=b.balance_minor,
                        balance_minor=b.balance_minor,
                    ),
                )
            )
        return out

    def link_events(self) -> list[Event]:
        """What envelope publishes when it sends: a paylink.issued per link."""
        out: list[Event] = []
        expires = datetime.now(UTC) + timedelta(days=90)
        for link in self.links:
            out.append(
                PayLinkIssued(
                    firm_id=self.firm_id,
                    link_id=link.send_id,
                    token_hash=hash_token(link.token),
                    envelope_id=str(uuid.uuid5(uuid.NAMESPACE_URL, link.send_id)),
                    client_id=f"clio-contact:{link.client}",
                    client_name=self.client_name(link.client),
                    client_email=self.client_email(link.client),
                    items=[
                        PayLinkItem(
                            invoice_id=b.invoice_id,
                            number=b.number,
                            kind=b.kind,  # type: ignore[arg-type]
                            currency="USD",
                            balance_minor=b.balance_minor,
                            due_at=b.due_at,
                        )
                        for b in link.bills
                    ],
                    pay_all_outstanding=link.pay_all_outstanding,
                    expires_at=expires,
                )
            )
        return out


def wait_handled(db: Db, firm_id: str, routing_key: str, want: int, timeout: float) -> None:
    """Until payments' inbox has `want` events of this kind for the firm: handled, not only
    received (a handler that lost a race is rolled back and redelivered)."""
    started = now()
    handled = 0
    while now() - started < timeout:
        handled = db.count(
            f"SELECT count(*) FROM inbox WHERE routing_key = '{routing_key}' "
            f"AND firm_id = '{firm_id}'"
        )
        if handled >= want:
            return
        time.sleep(0.25)
    raise RuntimeError(f"payments handled {handled} of {want} {routing_key} in {timeout:.0f} s")


def seed(
    exchange: str, db: Db, world: World, firm: FirmProfile | None, timeout: float
) -> dict[str, Any]:
    """Bills first, as sync brings them in before anyone sends them; then the links, as
    envelope issues them when it sends. Each waited for until payments handled it all."""
    out: dict[str, Any] = {}
    bills = world.bill_events(firm)
    out["bill_events"] = len(bills)
    t = now()
    asyncio.run(publish(exchange, bills))
    if firm is not None:
        wait_handled(db, world.firm_id, "firm.updated", 1, timeout)
    wait_handled(db, world.firm_id, "invoice.updated", len(world.bills), timeout)
    out["bills_seconds"] = round(now() - t, 2)
    if firm is None:  # the firm comes from elsewhere (the gateway): it must be known too
        deadline = now() + timeout
        while not db.count(f"SELECT count(*) FROM firms WHERE firm_id = '{world.firm_id}'"):
            if now() > deadline:
                raise RuntimeError("payments never learnt the firm")
            time.sleep(0.25)
    links = world.link_events()
    out["link_events"] = len(links)
    t = now()
    asyncio.run(publish(exchange, links))
    wait_handled(db, world.firm_id, "paylink.issued", len(world.links), timeout)
    out["links_seconds"] = round(now() - t, 2)
    return out
