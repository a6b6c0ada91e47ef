"""Replay: 500 webhook deliveries, 30% of them repeats, in shuffled order, give the same
ledger as the same events delivered once and in order: payments, allocations, refunds,
deposits, item balances and the transitions announced on the bus.

The events cover every kind: cards charged at once or after a decline, ACH debits that
settle, fail or come back after settling, refunds that succeed or fail, a refund made on the
processor's dashboard, and events about sessions that do not exist. Refunds are asked for by
the firm (a command, not an event) once it sees the payment paid, in both runs.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.payments import checkout as checkout_module
from services.payments.balances import item_views
from services.payments.checkout import create_checkout
from services.payments.ledger import payment_id_for
from services.payments.models import (
    Allocation,
    Bill,
    Deposit,
    Payment,
    ProcessorEventRecord,
    Refund,
    RefundItem,
)
from services.payments.processors import ProcessorEvent
from services.payments.refunds import RefundRequest, record_refund
from tests.conftest import create_pg_database, drop_pg_database
from tests.payments.conftest import FIRM, BillSpec, Payments, running

pytestmark = pytest.mark.timeout(600)

DELIVERIES = 500
REPEATS = 150  # 30% of the deliveries are repeats of an event already in the stream
T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
REQUESTED_AT = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


@dataclass
class Command:
    """A refund the firm asks for once it sees the payment paid."""

    refund_id: str
    full: bool
    items: list[tuple[str, int]]


@dataclass
class Scenario:
    index: int
    kind: str
    bills: list[BillSpec]
    expected: str | None  # the payment's final status; None: no payment at all
    events: list[ProcessorEvent] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return f"chk_{self.index:05d}{'0' * 27}"

    @property
    def payment_id(self) -> str:
        return payment_id_for(self.session_id)


KINDS = (
    ("card", "succeeded"),
    ("card_after_decline", "succeeded"),
    ("card_refunds", "partially_refunded"),
    ("card_dashboard_refund", "partially_refunded"),
    ("ach_settles", "succeeded"),
    ("ach_fails", "failed"),
    ("ach_returned", "returned"),
    ("ach_full_refund", "refunded"),
    ("unknown_session", None),
)


class Builder:
    """Scenarios and their events, from one seed: both runs get exactly the same."""

    def __init__(self, seed: int = 20260202) -> None:
        self.rng = random.Random(seed)
        self.scenarios: list[Scenario] = []

    def event(self, sc: Scenario, n: int, kind: str, minutes: float, **kw: Any) -> None:
        sc.events.append(
            ProcessorEvent(
                event_id=f"evt_{sc.index:05d}_{n}",
                kind=kind,  # type: ignore[arg-type]
                occurred_at=T0 + timedelta(hours=sc.index, minutes=minutes),
                raw_type=kind,
                **kw,
            )
        )

    def bills(self, index: int) -> list[BillSpec]:
        out = []
        for j in range(self.rng.randint(1, 3)):
            kind = "trust_request" if self.rng.random() < 0.3 else "invoice"
            out.append(
                BillSpec(
                    f"clio:{index}-{j}",
                    f"{1000 + index}-{j}",
                    self.rng.randint(100, 400_000),
                    kind=kind,
                    client_id=f"c-{index}",
                    client_name=f"Client {index}",
                )
            )
        return out

    def build(self) -> list[ProcessorEvent]:
        """Exactly DELIVERIES - REPEATS distinct events, in the order they happened."""
        wanted = DELIVERIES - REPEATS
        index = total = 0
        while True:
            kind, expected = KINDS[index % len(KINDS)]
            sc = Scenario(index, kind, self.bills(index), expected)
            getattr(self, kind)(sc)
            if total + len(sc.events) > wanted:
                break
            self.scenarios.append(sc)
            total += len(sc.events)
            index += 1
        while total < wanted:  # fill up with one-event scenarios
            sc = Scenario(index, "unknown_session", [], None)
            self.unknown_session(sc)
            self.scenarios.append(sc)
            total += 1
            index += 1
        events = [e for sc in self.scenarios for e in sc.events]
        return sorted(events, key=lambda e: (e.occurred_at, e.event_id))

    # --- one builder per kind -------------------------------------------------------------

    def _ids(self, sc: Scenario, method: str) -> dict[str, Any]:
        return {
            "session_id": sc.session_id,
            "payment_ref": f"pi_{sc.index:05d}",
            "method": method,
            "amount_minor": sum(b.balance_minor for b in sc.bills),
        }

    def card(self, sc: Scenario, start: int = 0) -> None:
        ids = self._ids(sc, "card")
        self.event(sc, start, "payment.succeeded", 1, charge_ref=f"ch_{sc.index}", last4="4242",
                   payer_name=f"Payer {sc.index}", **ids)  # fmt: skip
        self.event(sc, start + 1, "checkout.completed", 1.5, payer_email=f"p{sc.index}@x.test",
                   **ids)  # fmt: skip

    def card_after_decline(self, sc: Scenario) -> None:
        self.event(sc, 9, "payment.failed", 0, failure_code="card_declined",
                   failure_reason="Your card was declined.", **self._ids(sc, "card"))  # fmt: skip
        self.card(sc)

    def card_refunds(self, sc: Scenario) -> None:
        """One partial refund that succeeds, another that fails."""
        self.card(sc)
        first = sc.bills[0]
        part = first.balance_minor // 3
        ok, bad = f"rf_{sc.index}_a", f"rf_{sc.index}_b"
        sc.commands += [
            Command(ok, False, [(first.invoice_id, part)]),
            Command(bad, False, [(first.invoice_id, (first.balance_minor - part) // 2)]),
        ]
        ref = f"pi_{sc.index:05d}"
        self.event(sc, 5, "refund.succeeded", 60, refund_id=ok, refund_ref=f"re_{ok}",
                   payment_ref=ref, amount_minor=part)  # fmt: skip
        self.event(sc, 6, "refund.failed", 61, refund_id=bad, refund_ref=f"re_{bad}",
                   payment_ref=ref, failure_reason="The bank refused the refund.")  # fmt: skip

    def card_dashboard_refund(self, sc: Scenario) -> None:
        self.card(sc)
        amount = max(sum(b.balance_minor for b in sc.bills) // 4, 1)
        self.event(sc, 5, "refund.succeeded", 90, refund_ref=f"re_dash_{sc.index}",
                   payment_ref=f"pi_{sc.index:05d}", amount_minor=amount)  # fmt: skip

    def _ach(self, sc: Scenario) -> dict[str, Any]:
        ids = self._ids(sc, "ach")
        self.event(sc, 0, "payment.processing", 0, payer_name=f"Payer {sc.index}", last4="6789",
                   **ids)  # fmt: skip
        self.event(sc, 1, "checkout.completed", 0.5, **ids)
        return ids

    def ach_settles(self, sc: Scenario) -> None:
        ids = self._ach(sc)
        self.event(sc, 2, "payment.succeeded", 3 * 24 * 60, charge_ref=f"py_{sc.index}",
                   fee_minor=min(ids["amount_minor"] // 125, 500), **ids)  # fmt: skip

    def ach_fails(self, sc: Scenario) -> None:
        ids = self._ach(sc)
        self.event(sc, 2, "payment.failed", 3 * 24 * 60, failure_code="R01",
                   failure_reason="Insufficient funds", **ids)  # fmt: skip

    def ach_returned(self, sc: Scenario) -> None:
        self.ach_settles(sc)
        self.event(sc, 3, "payment.disputed", 10 * 24 * 60, payment_ref=f"pi_{sc.index:05d}",
                   failure_code="R10", failure_reason="Not authorized")  # fmt: skip

    def ach_full_refund(self, sc: Scenario) -> None:
        self.ach_settles(sc)
        refund_id = f"rf_{sc.index}_full"
        sc.commands.append(
            Command(refund_id, True, [(b.invoice_id, b.balance_minor) for b in sc.bills])
        )
        self.event(sc, 4, "refund.succeeded", 5 * 24 * 60, refund_id=refund_id,
                   refund_ref=f"re_{refund_id}", payment_ref=f"pi_{sc.index:05d}",
                   amount_minor=sum(b.balance_minor for b in sc.bills))  # fmt: skip

    def unknown_session(self, sc: Scenario) -> None:
        self.event(sc, 0, "payment.succeeded", 0, session_id=f"chk_unknown_{sc.index}",
                   payment_ref=f"pi_unknown_{sc.index}", method="card")  # fmt: skip


# --- running a stream -----------------------------------------------------------------------


async def prepare(payments: Payments, builder: Builder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bills, links and checkout sessions (with the same ids) in each database."""
    for sc in builder.scenarios:
        if sc.kind == "unknown_session":
            continue
        await payments.bills(*sc.bills)
        token = await payments.link(*sc.bills)
        monkeypatch.setattr(checkout_module, "new_session_id", lambda sc=sc: sc.session_id)
        await create_checkout(payments.ledger, token, [], "items")


async def run_commands(payments: Payments, due: dict[str, list[Command]], payment_id: str) -> None:
    commands = due.get(payment_id)
    if not commands:
        return
    ledger = payments.ledger
    async with ledger.tx() as s:
        payment = await s.get(Payment, payment_id)
        if payment is None or payment.status not in ("succeeded", "partially_refunded"):
            return
        for c in commands:
            request = RefundRequest(c.refund_id, "replay", c.full, c.items)
            await record_refund(ledger, s, payment, request, c.items, at=REQUESTED_AT)
    del due[payment_id]


async def deliver_all(payments: Payments, builder: Builder, stream: list[ProcessorEvent]) -> None:
    due = {sc.payment_id: list(sc.commands) for sc in builder.scenarios if sc.commands}
    for event in stream:
        payment_id = await payments.ledger.apply(event)
        if payment_id:
            await run_commands(payments, due, payment_id)
    assert not due, "every refund was asked for once its payment was paid"


async def snapshot(payments: Payments, builder: Builder) -> dict[str, Any]:
    """Everything the ledger holds, minus what only says when a row was written."""
    async with payments.ledger.service.sessionmaker() as s:

        async def rows(model: Any, *columns: str) -> list[tuple[Any, ...]]:
            found = await s.scalars(select(model))
            return sorted(tuple(getattr(r, c) for c in columns) for r in found)

        bills = [b.invoice_id for sc in builder.scenarios for b in sc.bills]
        views = await item_views(s, FIRM, bills)
        return {
            "payments": await rows(
                Payment,
                "id",
                "status",
                "method",
                "amount_minor",
                "refunded_minor",
                "fee_minor",
                "payer_name",
                "payer_email",
                "card_last4",
                "bank_last4",
                "processor_ref",
                "charge_ref",
                "created_at",
                "succeeded_at",
                "failure_code",
                "failure_reason",
            ),  # fmt: skip
            "allocations": await rows(
                Allocation, "payment_id", "invoice_id", "account", "amount_minor", "refunded_minor"
            ),
            "refunds": await rows(
                Refund,
                "id",
                "payment_id",
                "amount_minor",
                "status",
                "processor_ref",
                "failure_reason",
                "created_at",
            ),  # fmt: skip
            "refund_items": await rows(RefundItem, "refund_id", "invoice_id", "amount_minor"),
            "deposits": await rows(
                Deposit,
                "payment_id",
                "account",
                "amount_minor",
                "fee_minor",
                "net_minor",
                "reversed_minor",
                "status",
                "ref",
                "transferred",
            ),  # fmt: skip
            "events": await rows(ProcessorEventRecord, "event_id", "payment_id", "kind"),
            "items": sorted((v.invoice_id, v.balance_minor, v.status) for v in views),
            "bills": await rows(Bill, "invoice_id", "source_balance_minor"),
            "announced": await announced(payments),
        }


async def announced(payments: Payments) -> Counter[str]:
    """The transitions published, without their event ids and times."""
    out: Counter[str] = Counter()
    for key, body in await payments.published():
        transition = {
            k: body.get(k)
            for k in (
                "payment_id",
                "method",
                "currency",
                "amount_minor",
                "allocations",
                "refund_id",
                "refunded_minor",
                "returned",
                "failure_code",
            )
        }
        out[json.dumps([key, transition], sort_keys=True)] += 1
    return out


@pytest.fixture
async def two_databases(backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    if backend == "sqlite":
        yield (
            f"sqlite+aiosqlite:///{tmp_path / 'in_order.db'}",
            f"sqlite+aiosqlite:///{tmp_path / 'shuffled.db'}",
        )
        return
    urls = (await create_pg_database(), await create_pg_database())
    try:
        yield urls
    finally:
        for url in urls:
            await drop_pg_database(url)


async def test_shuffled_repeated_webhooks_give_the_same_ledger(
    two_databases: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = Builder()
    once = builder.build()
    rng = random.Random(7)
    shuffled = once + [rng.choice(once) for _ in range(REPEATS)]
    rng.shuffle(shuffled)
    assert len(shuffled) == DELIVERIES and len({e.event_id for e in shuffled}) == len(once)
    assert shuffled != sorted(shuffled, key=lambda e: (e.occurred_at, e.event_id))

    results = []
    for url, stream in zip(two_databases, (once, shuffled), strict=True):
        async with running(url) as payments:
            await prepare(payments, builder, monkeypatch)
            await deliver_all(payments, builder, stream)
            results.append(await snapshot(payments, builder))
    in_order, out_of_order = results

    for part in in_order:
        assert out_of_order[part] == in_order[part], f"{part} differ"

    # And the ledger is the one the events describe, not merely the same twice.
    statuses = dict((p[0], p[1]) for p in in_order["payments"])
    for sc in builder.scenarios:
        assert statuses.get(sc.payment_id) == sc.expected, sc.kind
    kinds = Counter(key for key, _ in (json.loads(k) for k in in_order["announced"]))
    assert set(kinds) == {
        "payment.processing",
        "payment.succeeded",
        "payment.failed",
        "payment.refunded",
    }
    unmatched = [e for e in in_order["events"] if e[1] is None]
    assert {e[0].split("_")[1] for e in unmatched} == {
        f"{sc.index:05d}" for sc in builder.scenarios if sc.kind == "unknown_session"
    }
