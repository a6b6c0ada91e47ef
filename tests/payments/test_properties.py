"""Properties that hold whatever happens: allocations always sum to their payment, no balance
goes below zero, no refund exceeds what was paid, trust never pays a fee. First on the rules
alone, then on the service driven by random sequences of payments, settlements, refunds,
returns and syncs (SQLite; the backends are compared elsewhere)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.payments import deposit_rules, mirror, rules
from services.payments.balances import item_views
from services.payments.models import Allocation, Deposit, Payment, Refund, RefundItem
from tests.payments.conftest import (
    ACH_OK,
    ACH_R01,
    CARD_DECLINED,
    CARD_OK,
    FIRM,
    BillSpec,
    Payments,
    invoice_event,
    running,
)

pytestmark = pytest.mark.timeout(300)

KINDS = st.sampled_from(["invoice", "trust_request"])
AMOUNTS = st.integers(min_value=1, max_value=2_000_000)


# --- the rules alone ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(st.tuples(KINDS, AMOUNTS), min_size=1, max_size=10), st.sampled_from(["card", "ach"])
)
def test_deposits_add_up_and_trust_pays_no_fee(
    allocations: list[tuple[str, int]], method: str
) -> None:
    total = sum(a for _, a in allocations)
    fee = rules.processing_fee(method, total)
    plans = deposit_rules.split_deposits(allocations, fee)
    assert sum(p.amount_minor for p in plans) == total
    assert sum(p.fee_minor for p in plans) == fee
    assert all(p.fee_minor == 0 for p in plans if p.account == "trust")
    trust = sum(a for k, a in allocations if k == "trust_request")
    assert sum(p.net_minor for p in plans if p.account == "trust") == trust


LEFTS = st.lists(
    st.builds(
        lambda kind, allocated, share: rules.AllocationLeft(
            f"inv-{uuid.uuid4().hex[:6]}", kind, allocated, allocated * share // 100
        ),
        KINDS,
        AMOUNTS,
        st.integers(0, 100),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    LEFTS,
    st.sampled_from(["card", "ach"]),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 4), st.integers(-5, 2_500_000)), max_size=6),
)
def test_a_planned_refund_never_exceeds_what_is_left(
    lefts: list[rules.AllocationLeft],
    method: str,
    full: bool,
    asks: list[tuple[int, int]],
) -> None:
    items = [(lefts[i % len(lefts)].invoice_id, amount) for i, amount in asks]
    try:
        planned = rules.plan_refund(
            status="succeeded", method=method, allocations=lefts, full=full, items=items
        )
    except (rules.RefundRefused, rules.RefundInvalid):
        return
    left = {a.invoice_id: a.left_minor for a in lefts}
    assert all(0 < amount <= left[i] for i, amount in planned)
    assert len({i for i, _ in planned}) == len(planned)
    if method == "ach":  # all of it or nothing
        assert sorted(planned) == sorted((i, a) for i, a in left.items() if a > 0)


FACT_KINDS = st.sampled_from(
    [
        "payment.processing",
        "checkout.completed",
        "payment.succeeded",
        "payment.failed",
        "payment.disputed",
        "refund.succeeded",
    ]  # fmt: skip
)


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(FACT_KINDS, st.integers(0, 10_000), st.sampled_from([None, "card", "ach"])),
        min_size=1,
        max_size=6,
        unique_by=lambda t: t[1],
    ),
    st.randoms(use_true_random=False),
)
def test_a_payments_state_is_the_same_in_any_order(
    raw: list[tuple[str, int, str | None]], rnd: Any
) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    facts = [
        rules.Fact(f"e{n}", kind, t0 + timedelta(seconds=at), method=method, fee_minor=at)
        for n, (kind, at, method) in enumerate(raw)
    ]
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    a, b = rules.derive_payment(facts), rules.derive_payment(shuffled)
    assert (a.rank, a.method, a.fee_minor, a.succeeded_at, a.first_at) == (
        b.rank,
        b.method,
        b.fee_minor,
        b.succeeded_at,
        b.first_at,
    )


# --- the service under random use -----------------------------------------------------------

OPS = st.one_of(
    st.tuples(
        st.just("pay"),
        st.sampled_from(["card", "declined", "ach", "ach_r01"]),
        st.lists(st.integers(0, 3), max_size=4, unique=True),
    ),
    st.tuples(st.just("settle")),
    st.tuples(
        st.just("refund"),
        st.integers(0, 5),
        st.booleans(),
        st.lists(st.tuples(st.integers(0, 3), st.integers(-10, 600_000)), max_size=3),
    ),
    st.tuples(st.just("return"), st.integers(0, 5)),
    st.tuples(st.just("sync"), st.integers(0, 3), st.integers(0, 600_000)),
)


@pytest.fixture
async def sqlite_payments(tmp_path: Path) -> AsyncIterator[Payments]:
    async with running(f"sqlite+aiosqlite:///{tmp_path / 'props.db'}") as p:
        yield p


async def check_invariants(payments: Payments, bills: list[BillSpec]) -> None:
    """Over this example's bills and every payment made on them."""
    ids = [b.invoice_id for b in bills]
    async with payments.ledger.service.sessionmaker() as s:
        for view in await item_views(s, FIRM, ids):
            assert view.balance_minor >= 0, view
        touching = select(Allocation.payment_id).where(Allocation.invoice_id.in_(ids))
        for p in await s.scalars(select(Payment).where(Payment.id.in_(touching))):
            allocations = list(
                await s.scalars(select(Allocation).where(Allocation.payment_id == p.id))
            )
            assert sum(a.amount_minor for a in allocations) == p.amount_minor
            # One allocation per item: an item asked for twice is not charged twice.
            assert len({a.invoice_id for a in allocations}) == len(allocations)
            assert all(0 <= a.refunded_minor <= a.amount_minor for a in allocations)
            assert 0 <= p.refunded_minor <= p.amount_minor
            refunds = list(await s.scalars(select(Refund).where(Refund.payment_id == p.id)))
            live = [r.id for r in refunds if r.status != "failed"]
            per_item: dict[str, int] = {}
            if live:
                for item in await s.scalars(
                    select(RefundItem).where(RefundItem.refund_id.in_(live))
                ):
                    per_item[item.invoice_id] = per_item.get(item.invoice_id, 0) + item.amount_minor
            allocated = {a.invoice_id: a.amount_minor for a in allocations}
            assert all(per_item[i] <= allocated[i] for i in per_item), (per_item, allocated)
            for d in await s.scalars(select(Deposit).where(Deposit.payment_id == p.id)):
                assert 0 <= d.reversed_minor <= max(d.amount_minor - d.fee_minor, d.amount_minor)
                if d.account == "trust":
                    assert d.fee_minor == 0 and d.net_minor == d.amount_minor


async def run_op(
    payments: Payments, token: str, bills: list[BillSpec], op: tuple[Any, ...], seen: set[str]
) -> None:
    """One step a client, the firm, the bank or Clio might take."""
    paid = [p["id"] for p in (await payments.http.get(f"/internal/firms/{FIRM}/payments")).json()]
    mine = [p for p in paid if p in seen]
    if op[0] == "pay":
        ids = [bills[i % len(bills)].invoice_id for i in op[2]]
        start = await payments.start(token, ids)
        assert start.status_code in (200, 409), start.text
        if start.status_code == 409:
            return
        session_id = start.json()["session_id"]
        how = op[1]
        if how in ("card", "declined"):
            resp = await payments.card(session_id, CARD_OK if how == "card" else CARD_DECLINED)
        else:
            resp = await payments.ach(session_id, ACH_OK if how == "ach" else ACH_R01)
        assert resp.status_code in (200, 402), resp.text
        if resp.status_code == 200:
            seen.add(resp.json()["id"])
    elif op[0] == "settle":
        await payments.settle()
    elif op[0] == "refund" and mine:
        payment_id = mine[op[1] % len(mine)]
        items = [(bills[i % len(bills)].invoice_id, amount) for i, amount in op[3]]
        resp = await payments.refund(payment_id, full=op[2], items=items)
        assert resp.status_code in (200, 409, 422), resp.text
    elif op[0] == "return" and mine:
        resp = await payments.http.post(
            f"/internal/testmode/payments/{mine[op[1] % len(mine)]}/return", json={}
        )
        assert resp.status_code in (200, 409), resp.text
    elif op[0] == "sync":
        bill = bills[op[1] % len(bills)]
        changed = replace(bill, balance_minor=op[2])
        async with payments.ledger.service.sessionmaker() as s, s.begin():
            await mirror.on_invoice_updated(s, invoice_event(changed))


_counter = itertools.count()


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(st.tuples(KINDS, st.integers(1, 500_000)), min_size=1, max_size=4),
    st.lists(OPS, min_size=1, max_size=8),
)
async def test_invariants_hold_under_any_sequence(
    sqlite_payments: Payments, specs: list[tuple[str, int]], ops: list[tuple[Any, ...]]
) -> None:
    payments = sqlite_payments
    run = next(_counter)
    seen: set[str] = set()
    bills = [
        BillSpec(f"clio:p{run}-{n}", f"P{run}-{n}", amount, kind=kind, client_id=f"c-{run}")
        for n, (kind, amount) in enumerate(specs)
    ]
    await payments.bills(*bills)
    token = await payments.link(*bills)
    for op in ops:
        await run_op(payments, token, bills, op, seen)
        await check_invariants(payments, bills)
