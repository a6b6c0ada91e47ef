"""To record in Clio, in payments: which payments the firm still has to enter in Clio, when
Clio's synced figures take them off the list (partial payments, several on one bill, ACH,
refunds, a payment recorded in Clio before ours was known), marking them recorded (and what
another firm's or a forged id does), and invoice.removed: no longer payable. Both backends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select

from services.payments import mirror
from services.payments.models import Allocation
from shared.events import InvoiceRemoved, InvoiceSnapshot, InvoiceUpdated
from tests.payments.conftest import FIRM, OTHER_FIRM, BillSpec, Payments

A = BillSpec("clio:501", "INV-501", 100_000)
B = BillSpec("clio:502", "INV-502", 40_000)
LATER = timedelta(seconds=1)


async def clio_shows(
    p: Payments,
    bill: BillSpec,
    *,
    paid: int,
    balance: int,
    state: str = "awaiting_payment",
    at: datetime | None = None,
) -> None:
    """A sync's invoice.updated: what Clio shows of the bill now."""
    ev = InvoiceUpdated(
        firm_id=FIRM,
        occurred_at=at or datetime.now(UTC),
        invoice=InvoiceSnapshot(
            invoice_id=bill.invoice_id,
            source_id=bill.invoice_id.split(":")[-1],
            number=bill.number,
            kind=bill.kind,  # type: ignore[arg-type]
            state=state,  # type: ignore[arg-type]
            client_id=bill.client_id,
            client_name=bill.client_name,
            due_at=date(2026, 5, 1),
            total_minor=bill.balance_minor,
            balance_minor=balance,
            paid_minor=paid,
        ),
    )
    async with p.ledger.service.sessionmaker() as s, s.begin():
        await mirror.on_invoice_updated(s, ev)


async def removed(p: Payments, bill: BillSpec, at: datetime, state: str = "void") -> None:
    ev = InvoiceRemoved(
        firm_id=FIRM,
        invoice_id=bill.invoice_id,
        reason="voided in Clio",
        state=state,  # type: ignore[arg-type]
        occurred_at=at,
    )
    async with p.ledger.service.sessionmaker() as s, s.begin():
        await mirror.on_invoice_removed(s, ev)


async def listed(p: Payments, firm_id: str = FIRM) -> dict[str, Any]:
    resp = await p.http.get(f"/internal/firms/{firm_id}/record")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def pending(data: dict[str, Any]) -> dict[str, int]:
    return {i["invoice_id"]: i["amount_minor"] for i in data["pending"]}


async def recorded_events(p: Payments) -> list[dict[str, Any]]:
    return [body for key, body in await p.published() if key == "payment.recorded"]


async def test_a_pay_all_lists_each_bill_with_what_to_enter(payments: Payments) -> None:
    await payments.bills(A, B)
    token = await payments.link(A, B)
    paid = await payments.pay_card(token)
    data = await listed(payments)
    assert pending(data) == {A.invoice_id: 100_000, B.invoice_id: 40_000}
    item = next(i for i in data["pending"] if i["invoice_id"] == A.invoice_id)
    assert item["source_id"] == "501" and item["number"] == "INV-501"
    assert item["method"] == "card" and item["payment_id"] == paid["id"]
    assert item["payer_name"] == "Dana Whitfield" and item["reference"]
    assert item["paid_at"] and item["client_name"] == "Dana Whitfield"
    assert data["recorded"] == []
    assert await recorded_events(payments) == []


async def test_it_leaves_the_list_when_clio_shows_it_and_envelope_hears(
    payments: Payments,
) -> None:
    await payments.bills(A, B)
    token = await payments.link(A, B)
    await payments.pay_card(token)
    await clio_shows(payments, B, paid=0, balance=40_000)  # a sync, nothing recorded yet
    assert set(pending(await listed(payments))) == {A.invoice_id, B.invoice_id}
    await clio_shows(payments, A, paid=100_000, balance=0, state="paid")
    data = await listed(payments)
    assert pending(data) == {B.invoice_id: 40_000}
    assert [(i["invoice_id"], i["recorded_how"]) for i in data["recorded"]] == [
        (A.invoice_id, "synced")
    ]
    (ev,) = await recorded_events(payments)
    assert ev["allocations"] == [{"invoice_id": A.invoice_id, "amount_minor": 100_000}]
    assert ev["how"] == "synced"
    # The next sync of the same figures changes nothing and says nothing again.
    await clio_shows(payments, A, paid=100_000, balance=0, state="paid")
    assert len(await recorded_events(payments)) == 1
    # The pay page: Clio's balance, nothing subtracted twice.
    view = await payments.view(token)
    assert {i["invoice_id"]: i["balance_minor"] for i in view["items"]}[A.invoice_id] == 0


async def test_a_payment_recorded_only_in_part_stays(payments: Payments) -> None:
    await payments.bills(A)
    token = await payments.link(A)
    await payments.pay_card(token)
    # Clio moved by less than the payment (the firm recorded part, or another payment).
    await clio_shows(payments, A, paid=50_000, balance=50_000)
    assert pending(await listed(payments)) == {A.invoice_id: 100_000}
    await clio_shows(payments, A, paid=100_000, balance=0, state="paid")
    assert pending(await listed(payments)) == {}


async def test_two_payments_on_one_bill_leave_one_by_one(payments: Payments) -> None:
    bill = BillSpec("clio:610", "INV-610", 90_000)
    await payments.bills(bill)
    t1 = await payments.link(bill)
    await payments.pay_card(t1)  # 90,000 on INV-610
    # Clio then shows a new charge of 30,000 on INV-610 (our payment not recorded yet: its
    # balance is 120,000) and the client pays that too: two payments of one bill waiting.
    await clio_shows(payments, bill, paid=0, balance=120_000)
    t2 = await payments.link(bill)
    await payments.pay_card(t2)
    data = await listed(payments)
    assert sorted(i["amount_minor"] for i in data["pending"]) == [30_000, 90_000]
    # The firm records the later, smaller one first: only it leaves.
    await clio_shows(payments, bill, paid=30_000, balance=90_000)
    data = await listed(payments)
    assert [i["amount_minor"] for i in data["pending"]] == [90_000]
    # The same figures again do not take the other one too.
    await clio_shows(payments, bill, paid=30_000, balance=90_000)
    assert [i["amount_minor"] for i in (await listed(payments))["pending"]] == [90_000]
    await clio_shows(payments, bill, paid=120_000, balance=0, state="paid")
    assert (await listed(payments))["pending"] == []


async def test_ach_is_listed_once_settled_and_recorded_early_is_found(
    payments: Payments,
) -> None:
    await payments.bills(A)
    token = await payments.link(A)
    await payments.pay_ach(token)
    assert (await listed(payments))["pending"] == []  # processing: no money yet
    # The firm recorded it in Clio before it settled (before our succeeded event).
    await clio_shows(payments, A, paid=100_000, balance=0, state="paid")
    assert (await listed(payments))["pending"] == []
    await payments.settle()
    data = await listed(payments)
    assert data["pending"] == [] and data["recorded"][0]["recorded_how"] == "synced"
    assert len(await recorded_events(payments)) == 1


async def test_ach_settled_is_listed(payments: Payments) -> None:
    await payments.bills(A)
    token = await payments.link(A)
    await payments.pay_ach(token)
    await payments.settle()
    assert pending(await listed(payments)) == {A.invoice_id: 100_000}


async def test_refunds_lower_what_to_enter(payments: Payments) -> None:
    await payments.bills(A, B)
    token = await payments.link(A, B)
    paid = await payments.pay_card(token)
    resp = await payments.refund(paid["id"], items=[(A.invoice_id, 25_000)])
    assert resp.status_code == 200, resp.text
    assert pending(await listed(payments)) == {A.invoice_id: 75_000, B.invoice_id: 40_000}
    resp = await payments.refund(paid["id"], full=True)
    assert resp.status_code == 200, resp.text
    assert (await listed(payments))["pending"] == []


async def test_mark_recorded_is_audited_and_tells_envelope(payments: Payments) -> None:
    await payments.bills(A, B)
    token = await payments.link(A, B)
    await payments.pay_card(token)
    ids = [i["id"] for i in (await listed(payments))["pending"]]
    url = f"/internal/firms/{FIRM}/record/mark"
    resp = await payments.http.post(url, json={"ids": ids[:1], "by": "Sam Staff"})
    assert resp.status_code == 200 and resp.json() == {"marked": 1}
    data = await listed(payments)
    assert len(data["pending"]) == 1
    (done,) = data["recorded"]
    assert done["recorded_how"] == "marked" and done["recorded_by"] == "Sam Staff"
    assert done["recorded_at"]
    (ev,) = await recorded_events(payments)
    assert ev["how"] == "marked"
    # A double submit marks nothing more.
    resp = await payments.http.post(url, json={"ids": ids[:1], "by": "Sam Staff"})
    assert resp.json() == {"marked": 0}
    assert len(await recorded_events(payments)) == 1


async def test_another_firms_forged_or_huge_ids_change_nothing(payments: Payments) -> None:
    await payments.firm(OTHER_FIRM)
    await payments.bills(A)
    token = await payments.link(A)
    await payments.pay_card(token)
    (mine,) = [i["id"] for i in (await listed(payments))["pending"]]
    other_url = f"/internal/firms/{OTHER_FIRM}/record/mark"
    own_url = f"/internal/firms/{FIRM}/record/mark"
    # Another firm naming our item: 404, and nothing changed.
    resp = await payments.http.post(other_url, json={"ids": [mine], "by": "Mallory"})
    assert resp.status_code == 404
    # One real id among forged ones: 404, and the real one is not marked either.
    resp = await payments.http.post(own_url, json={"ids": [mine, 999_999], "by": "Sam"})
    assert resp.status_code == 404
    for body in (
        {"ids": list(range(1, 1_100)), "by": "Sam"},
        {"ids": [], "by": "Sam"},
        {"ids": ["x"], "by": "Sam"},
        {"ids": [mine], "by": ""},
        {"ids": [2**70], "by": "Sam"},
    ):
        resp = await payments.http.post(own_url, json=body)
        assert 400 <= resp.status_code < 500, (body, resp.status_code)
    assert pending(await listed(payments)) == {A.invoice_id: 100_000}
    assert (await listed(payments, OTHER_FIRM))["pending"] == []
    async with payments.ledger.service.sessionmaker() as s:
        assert not any(a.reconciled for a in await s.scalars(select(Allocation)))


async def test_a_removed_bill_is_no_longer_payable(payments: Payments) -> None:
    await payments.bills(A, B)
    token = await payments.link(A, B, pay_all_outstanding=True)
    at = datetime.now(UTC)
    await removed(payments, A, at)
    view = await payments.view(token)
    status = {i["invoice_id"]: i["status"] for i in view["items"]}
    assert status == {A.invoice_id: "removed", B.invoice_id: "unpaid"}
    assert view["total_due_minor"] == 40_000
    assert [i["invoice_id"] for i in view["outstanding"]["items"]] == [B.invoice_id]
    # Paying it, alone or in a Pay All, is refused: nothing is charged for it.
    assert (await payments.start(token, [A.invoice_id])).status_code == 409
    session = await payments.session(token, [A.invoice_id, B.invoice_id])
    started = await payments.http.get(f"/internal/checkout/{session}")
    planned = [i["invoice_id"] for i in started.json()["items"]]
    assert planned == [B.invoice_id]


async def test_a_stale_snapshot_does_not_bring_a_removed_bill_back(payments: Payments) -> None:
    await payments.bills(A)
    token = await payments.link(A)
    seen = datetime.now(UTC)
    await removed(payments, A, seen + LATER)
    # Seen by sync before the removal, delivered after it: skipped.
    await clio_shows(payments, A, paid=0, balance=100_000, at=seen)
    assert (await payments.view(token))["items"][0]["status"] == "removed"
    # A removal delivered twice, or late, changes nothing either.
    await removed(payments, A, seen)
    # Seen after the removal: Clio shows it payable again.
    await clio_shows(payments, A, paid=0, balance=100_000, at=seen + 2 * LATER)
    assert (await payments.view(token))["items"][0]["status"] == "unpaid"


async def test_a_removal_before_anything_else_is_kept(payments: Payments) -> None:
    at = datetime.now(UTC)
    await removed(payments, A, at, state="deleted")
    token = await payments.link(A)  # a link met later does not make it payable
    (item,) = (await payments.view(token))["items"]
    assert item["status"] == "removed" and item["number"] == A.number
