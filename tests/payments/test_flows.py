"""Test mode end to end through payments' internal API, as the gateway's pages use it, on
SQLite and PostgreSQL: pay one item or all, cards that succeed or are declined, ACH debits
that settle, fail or come back, refunds in part and in full, the trust/operating split, and
what the firm sees and exports."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.payments import mirror
from services.payments.rules import ACH_PARTIAL_REFUND_REFUSED
from tests.payments.conftest import (
    ACH_R01,
    ACH_R03,
    CARD_DECLINED,
    FIRM,
    OTHER_FIRM,
    BillSpec,
    Payments,
    running,
)

pytestmark = pytest.mark.timeout(120)

INV_A = BillSpec("clio:1042", "1042", 125_000)
INV_B = BillSpec("clio:1043", "1043", 30_050)
TRUST = BillSpec("clio:t17", "TR-17", 50_000, kind="trust_request")


def items_by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["invoice_id"]: i for i in view["items"]}


def keys(published: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [key for key, _ in published]


async def linked(payments: Payments, *bills: BillSpec, **kw: Any) -> str:
    await payments.bills(*bills)
    return await payments.link(*bills, **kw)


# --- paying -------------------------------------------------------------------------------


async def test_pay_one_item_by_card(payments: Payments) -> None:
    token = await linked(payments, INV_A, INV_B)
    paid = await payments.pay_card(token, [INV_A.invoice_id])

    assert paid["status"] == "succeeded" and paid["method"] == "card"
    assert paid["card_last4"] == "4242" and paid["amount_minor"] == 125_000
    assert [(a["number"], a["amount_minor"]) for a in paid["allocations"]] == [("1042", 125_000)]
    view = items_by_id(await payments.view(token))
    assert view[INV_A.invoice_id] | {"due_at": None} == {
        "invoice_id": INV_A.invoice_id,
        "number": "1042",
        "kind": "invoice",
        "due_at": None,
        "currency": "USD",
        "balance_minor": 0,
        "status": "paid",
    }
    assert view[INV_B.invoice_id]["status"] == "unpaid"
    assert (await payments.view(token))["total_due_minor"] == 30_050

    # Paid items cannot be paid again.
    again = await payments.start(token, [INV_A.invoice_id])
    assert again.status_code == 409 and "Nothing is left to pay" in again.json()["detail"]
    [(key, event)] = await payments.published()
    assert key == "payment.succeeded"
    assert event["payment_id"] == paid["id"] and event["allocations"] == [
        {"invoice_id": INV_A.invoice_id, "amount_minor": 125_000}
    ]


async def test_pay_all_covers_every_unpaid_item_in_one_payment(payments: Payments) -> None:
    token = await linked(payments, INV_A, INV_B, TRUST)
    await payments.pay_card(token, [INV_B.invoice_id])

    session_id = await payments.session(token)  # Pay All: every item still unpaid
    checkout = (await payments.http.get(f"/internal/checkout/{session_id}")).json()
    assert checkout["status"] == "open" and checkout["processor"] == "test"
    assert checkout["redirect_url"] is None and checkout["methods"] == ["card", "ach"]
    assert checkout["amount_minor"] == 175_000
    assert [i["invoice_id"] for i in checkout["items"]] == [INV_A.invoice_id, TRUST.invoice_id]

    paid = (await payments.card(session_id)).json()
    assert paid["amount_minor"] == sum(a["amount_minor"] for a in paid["allocations"]) == 175_000
    view = await payments.view(token)
    assert {i["status"] for i in view["items"]} == {"paid"} and view["total_due_minor"] == 0
    done = (await payments.http.get(f"/internal/checkout/{session_id}")).json()
    assert (done["status"], done["payment_id"], done["payment_status"], done["method"]) == (
        "complete",
        paid["id"],
        "succeeded",
        "card",
    )


async def test_an_item_asked_for_twice_is_paid_once(payments: Payments) -> None:
    token = await linked(payments, INV_A, INV_B)
    paid = await payments.pay_card(token, [INV_A.invoice_id, INV_A.invoice_id])
    assert paid["amount_minor"] == 125_000
    assert [a["invoice_id"] for a in paid["allocations"]] == [INV_A.invoice_id]


async def test_declined_card_charges_nothing_and_the_client_can_retry(
    payments: Payments,
) -> None:
    token = await linked(payments, INV_A)
    session_id = await payments.session(token)

    declined = await payments.card(session_id, CARD_DECLINED)
    assert declined.status_code == 402
    assert declined.json()["detail"] == {
        "field": "card_number",
        "message": "Your card was declined.",
    }
    assert (await payments.view(token))["items"][0]["status"] == "unpaid"
    assert (await payments.http.get(f"/internal/firms/{FIRM}/payments")).json() == []
    assert await payments.published() == []

    paid = await payments.card(session_id)
    assert paid.status_code == 200 and paid.json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("card_number", "4242 4242 4242 4241", "Your card number is invalid."),
        ("exp", "01 / 20", "Your card's expiration date is in the past."),
        ("cvc", "1", "Your card's security code is incomplete."),
        ("name", " ", "Enter the name on the card."),
    ],
)
async def test_card_field_errors_name_the_field(
    payments: Payments, field: str, value: str, message: str
) -> None:
    token = await linked(payments, INV_A)
    resp = await payments.card(await payments.session(token), **{field: value})
    assert resp.status_code == 402
    assert resp.json()["detail"] == {"field": field, "message": message}


async def test_double_submit_charges_once(payments: Payments) -> None:
    token = await linked(payments, INV_A)
    session_id = await payments.session(token)
    first, second = await asyncio.gather(payments.card(session_id), payments.card(session_id))
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    third = await payments.card(session_id)  # a submit after the fact, too
    assert third.json()["id"] == first.json()["id"]
    listed = (await payments.http.get(f"/internal/firms/{FIRM}/payments")).json()
    assert len(listed) == 1
    assert keys(await payments.published()) == ["payment.succeeded"]


async def test_a_second_tab_cannot_pay_what_the_first_paid(payments: Payments) -> None:
    token = await linked(payments, INV_A)
    first, second = await payments.session(token), await payments.session(token)
    assert (await payments.card(first)).status_code == 200
    late = await payments.card(second)
    assert late.status_code == 409
    assert late.json()["detail"] == {
        "field": None,
        "message": "These bills were paid in the meantime; nothing was charged.",
    }
    assert len((await payments.http.get(f"/internal/firms/{FIRM}/payments")).json()) == 1


async def test_ach_is_processing_until_it_settles(payments: Payments) -> None:
    token = await linked(payments, INV_A, TRUST)
    paid = await payments.pay_ach(token)
    assert paid["status"] == "processing" and paid["method"] == "ach"
    assert paid["bank_last4"] == "6789" and paid["card_last4"] is None

    view = await payments.view(token)
    assert {i["status"] for i in view["items"]} == {"processing"}
    assert view["total_due_minor"] == 0
    retry = await payments.start(token)
    assert retry.status_code == 409  # nobody pays twice while the bank works
    assert keys(await payments.published()) == ["payment.processing"]
    detail = await payments.detail(paid["id"])
    assert detail["deposits"] == [] and detail["refundable_minor"] == 0
    assert detail["refund_block_reason"].startswith("An ACH payment can be refunded only after")

    assert await payments.settle() == 1
    assert await payments.settle() == 0
    settled = await payments.detail(paid["id"])
    assert settled["status"] == "succeeded" and settled["succeeded_at"] is not None
    assert {i["status"] for i in (await payments.view(token))["items"]} == {"paid"}
    assert keys(await payments.published()) == ["payment.processing", "payment.succeeded"]
    assert settled["fee_minor"] == 500  # 0.8% of $1,750.00 is $14.00: capped at $5.00
    assert [t["text"] for t in settled["timeline"]] == [
        "Bank payment of $1,750.00 started (ACH): processing until it settles",
        "ACH payment of $1,750.00 settled",
    ]


@pytest.mark.parametrize(
    ("account", "code", "reason"),
    [(ACH_R01, "R01", "Insufficient funds"), (ACH_R03, "R03", "No account")],
)
async def test_ach_that_fails_restores_the_balance(
    payments: Payments, account: str, code: str, reason: str
) -> None:
    token = await linked(payments, INV_A, INV_B)
    paid = await payments.pay_ach(token, account=account)
    await payments.settle()

    failed = await payments.detail(paid["id"])
    assert failed["status"] == "failed" and reason in failed["failure_reason"]
    assert failed["deposits"] == [] and failed["fee_minor"] == 0
    view = await payments.view(token)
    assert {i["status"] for i in view["items"]} == {"unpaid"}
    assert view["total_due_minor"] == 155_050
    published = await payments.published()
    assert keys(published) == ["payment.processing", "payment.failed"]
    assert published[1][1]["failure_code"] == code and published[1][1]["returned"] is False
    # The client can pay again.
    again = await payments.pay_card(token)
    assert again["status"] == "succeeded" and again["amount_minor"] == 155_050


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("routing_number", "110000001"),
        ("routing_number", "11000000"),
        ("account_number", "123"),
        ("account_number", "123456789012345678"),
        ("account_type", "brokerage"),
        ("name", ""),
    ],
)
async def test_ach_field_errors_name_the_field(payments: Payments, field: str, value: str) -> None:
    token = await linked(payments, INV_A)
    resp = await payments.ach(await payments.session(token), **{field: value})
    assert resp.status_code == 402 and resp.json()["detail"]["field"] == field


async def test_ach_return_after_settlement_restores_the_balances(payments: Payments) -> None:
    token = await linked(payments, INV_A, TRUST)
    paid = await payments.pay_ach(token)
    early = await payments.http.post(f"/internal/testmode/payments/{paid['id']}/return", json={})
    assert early.status_code == 409  # not settled yet: nothing to return
    await payments.settle()

    returned = await payments.http.post(
        f"/internal/testmode/payments/{paid['id']}/return", json={"code": "R10"}
    )
    assert returned.status_code == 200 and returned.json()["status"] == "returned"
    detail = await payments.detail(paid["id"])
    assert "R10" in detail["failure_reason"]
    assert {d["status"] for d in detail["deposits"]} == {"returned"}
    assert detail["refund_block_reason"] is not None
    assert {i["status"] for i in (await payments.view(token))["items"]} == {"unpaid"}
    published = await payments.published()
    assert keys(published) == ["payment.processing", "payment.succeeded", "payment.failed"]
    assert published[-1][1]["returned"] is True
    assert (await payments.refund(paid["id"], full=True)).status_code == 409


# --- refunds ------------------------------------------------------------------------------


async def test_card_partial_refund_per_item(payments: Payments) -> None:
    token = await linked(payments, INV_A, INV_B)
    paid = await payments.pay_card(token)

    resp = await payments.refund(paid["id"], items=[(INV_A.invoice_id, 25_000)])
    assert resp.status_code == 200, resp.text
    refund = resp.json()
    assert refund["status"] == "succeeded" and refund["amount_minor"] == 25_000
    assert refund["items"] == [
        {"invoice_id": INV_A.invoice_id, "number": "1042", "amount_minor": 25_000}
    ]
    detail = await payments.detail(paid["id"])
    assert detail["status"] == "partially_refunded" and detail["refunded_minor"] == 25_000
    assert detail["refundable_minor"] == 155_050 - 25_000
    assert {a["invoice_id"]: a["refunded_minor"] for a in detail["allocations"]} == {
        INV_A.invoice_id: 25_000,
        INV_B.invoice_id: 0,
    }
    [operating] = detail["deposits"]
    assert (operating["reversed_minor"], operating["status"]) == (25_000, "partially_reversed")
    # The refunded part of the bill is owed again.
    view = items_by_id(await payments.view(token))
    assert (view[INV_A.invoice_id]["status"], view[INV_A.invoice_id]["balance_minor"]) == (
        "unpaid",
        25_000,
    )
    assert view[INV_B.invoice_id]["status"] == "paid"
    key, event = (await payments.published())[-1]
    assert key == "payment.refunded" and event["refund_id"] == refund["id"]
    assert event["refunded_minor"] == 25_000
    assert event["allocations"] == [{"invoice_id": INV_A.invoice_id, "amount_minor": 25_000}]

    # The rest in full: every item's remainder.
    rest = (await payments.refund(paid["id"], full=True)).json()
    assert rest["amount_minor"] == 130_050
    final = await payments.detail(paid["id"])
    assert final["status"] == "refunded" and final["refunded_minor"] == 155_050
    assert final["refund_block_reason"] == "This payment has been refunded in full."
    assert [k for k in keys(await payments.published())].count("payment.refunded") == 2


async def test_partial_ach_refund_is_refused_with_the_seed_rule(payments: Payments) -> None:
    token = await linked(payments, INV_A, INV_B)
    paid = await payments.pay_ach(token)
    await payments.settle()

    resp = await payments.refund(paid["id"], items=[(INV_A.invoice_id, 1_000)])
    assert resp.status_code == 409
    assert resp.json()["detail"] == ACH_PARTIAL_REFUND_REFUSED
    one_item = await payments.refund(paid["id"], items=[(INV_A.invoice_id, 125_000)])
    assert one_item.status_code == 409  # one item of a Pay All is a partial refund too
    detail = await payments.detail(paid["id"])
    assert detail["refunds"] == [] and detail["status"] == "succeeded"
    assert detail["partial_refund_allowed"] is False


async def test_refunding_an_ach_pay_all_refunds_every_item(payments: Payments) -> None:
    token = await linked(payments, INV_A, INV_B, TRUST)
    paid = await payments.pay_ach(token)
    processing = await payments.refund(paid["id"], full=True)
    assert processing.status_code == 409
    assert processing.json()["detail"].startswith("An ACH payment can be refunded only after")
    await payments.settle()

    resp = await payments.refund(paid["id"], full=True)
    assert resp.status_code == 200, resp.text
    assert {i["invoice_id"]: i["amount_minor"] for i in resp.json()["items"]} == {
        INV_A.invoice_id: 125_000,
        INV_B.invoice_id: 30_050,
        TRUST.invoice_id: 50_000,
    }
    detail = await payments.detail(paid["id"])
    assert detail["status"] == "refunded" and detail["refunded_minor"] == 205_050
    deposits = {d["account"]: d for d in detail["deposits"]}
    assert deposits["trust"]["reversed_minor"] == 50_000
    assert deposits["trust"]["status"] == "reversed"
    # Operating gives back what it received; the fee is not returned by the processor.
    assert deposits["operating"]["reversed_minor"] == 155_050 - 500
    view = await payments.view(token)
    assert {i["status"] for i in view["items"]} == {"unpaid"}
    assert view["total_due_minor"] == 205_050


async def test_the_same_refund_id_refunds_once(payments: Payments) -> None:
    token = await linked(payments, INV_A)
    paid = await payments.pay_card(token)
    refund_id = str(uuid.uuid4())
    first, second = await asyncio.gather(
        payments.refund(paid["id"], items=[(INV_A.invoice_id, 10_000)], refund_id=refund_id),
        payments.refund(paid["id"], items=[(INV_A.invoice_id, 10_000)], refund_id=refund_id),
    )
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"] == refund_id
    detail = await payments.detail(paid["id"])
    assert detail["refunded_minor"] == 10_000 and len(detail["refunds"]) == 1
    assert keys(await payments.published()).count("payment.refunded") == 1


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([(INV_A.invoice_id, 0)], "amount"),
        ([(INV_A.invoice_id, 125_001)], "amount"),
        ([(INV_A.invoice_id, -5)], "amount"),
        ([("clio:elsewhere", 100)], "items"),
    ],
)
async def test_refund_amounts_are_checked(
    payments: Payments, items: list[tuple[str, int]], field: str
) -> None:
    token = await linked(payments, INV_A)
    paid = await payments.pay_card(token)
    resp = await payments.refund(paid["id"], items=items)
    assert resp.status_code == 422 and resp.json()["detail"]["field"] == field
    assert (await payments.detail(paid["id"]))["refunded_minor"] == 0


async def test_no_refund_goes_over_what_was_paid(payments: Payments) -> None:
    token = await linked(payments, INV_A)
    paid = await payments.pay_card(token)
    ok = await payments.refund(paid["id"], items=[(INV_A.invoice_id, 100_000)])
    assert ok.status_code == 200
    over = await payments.refund(paid["id"], items=[(INV_A.invoice_id, 25_001)])
    assert over.status_code == 422
    assert (await payments.detail(paid["id"]))["refundable_minor"] == 25_000


async def test_a_failed_refund_is_shown_and_restores_nothing(database_url: str) -> None:
    async with running(database_url, test_refund_fail=True) as payments:
        token = await linked(payments, INV_A)
        paid = await payments.pay_card(token)
        resp = await payments.refund(paid["id"], full=True)
        assert resp.status_code == 200 and resp.json()["status"] == "failed"
        assert "failed" in resp.json()["failure_reason"]
        detail = await payments.detail(paid["id"])
        assert detail["status"] == "succeeded" and detail["refunded_minor"] == 0
        assert detail["refundable_minor"] == 125_000  # a failed refund gives its share back
        [refund] = detail["refunds"]
        assert refund["status"] == "failed" and refund["failure_reason"]
        assert any("failed" in t["text"] for t in detail["timeline"])
        assert (await payments.view(token))["items"][0]["status"] == "paid"
        assert "payment.refunded" not in keys(await payments.published())


# --- trust and operating ------------------------------------------------------------------


async def test_trust_and_invoice_pay_all_is_two_deposits_and_no_fee_from_trust(
    payments: Payments,
) -> None:
    token = await linked(payments, INV_A, TRUST)
    paid = await payments.pay_card(token)
    assert paid["amount_minor"] == 175_000
    detail = await payments.detail(paid["id"])
    fee = 5_075 + 30  # 2.9% of $1,750.00 + 30 cents
    assert detail["fee_minor"] == fee
    deposits = {d["account"]: d for d in detail["deposits"]}
    assert deposits["trust"] | {"ref": None} == {
        "account": "trust",
        "amount_minor": 50_000,
        "fee_minor": 0,
        "net_minor": 50_000,
        "reversed_minor": 0,
        "status": "paid",
        "ref": None,
    }
    assert (
        deposits["operating"]["amount_minor"],
        deposits["operating"]["fee_minor"],
        deposits["operating"]["net_minor"],
    ) == (125_000, fee, 125_000 - fee)
    assert deposits["trust"]["ref"] != deposits["operating"]["ref"]


async def test_a_trust_only_payment_charges_its_fee_to_operating(payments: Payments) -> None:
    token = await linked(payments, TRUST)
    paid = await payments.pay_card(token)
    deposits = {d["account"]: d for d in (await payments.detail(paid["id"]))["deposits"]}
    fee = 1_450 + 30
    assert deposits["trust"]["fee_minor"] == 0 and deposits["trust"]["net_minor"] == 50_000
    assert (deposits["operating"]["amount_minor"], deposits["operating"]["net_minor"]) == (
        0,
        -fee,
    )


# --- links --------------------------------------------------------------------------------


async def test_expired_and_unknown_links(payments: Payments) -> None:
    await payments.bills(INV_A)
    expired = await payments.link(INV_A, expires_in=timedelta(seconds=-1))
    view = await payments.view(expired)
    assert view["status"] == "expired" and view["items"] == []
    assert view["firm"]["email"] == "billing@hartwell.test"
    assert view["firm"]["phone"] == "+1 555 0100"
    refused = await payments.start(expired)
    assert refused.status_code == 409 and "expired" in refused.json()["detail"]

    unknown = await payments.view("no-such-token")
    assert unknown["status"] == "unknown" and unknown["firm"] is None
    assert (await payments.http.get("/internal/checkout/chk_nope")).status_code == 404


async def test_pay_all_outstanding_pays_every_unpaid_bill_of_the_client(
    payments: Payments,
) -> None:
    other_matter = BillSpec("clio:2001", "2001", 7_500)
    someone_else = BillSpec("clio:3001", "3001", 9_900, client_id="c-omar", client_name="Omar")
    await payments.bills(INV_A, INV_B, other_matter, someone_else)
    plain = await payments.link(INV_A)
    token = await payments.link(INV_A, pay_all_outstanding=True)

    assert (await payments.view(plain))["outstanding"] is None
    refused = await payments.start(plain, scope="outstanding")
    assert refused.status_code == 409
    view = await payments.view(token)
    assert view["pay_all_outstanding"] is True
    outstanding = view["outstanding"]
    assert sorted(i["invoice_id"] for i in outstanding["items"]) == sorted(
        [INV_A.invoice_id, INV_B.invoice_id, other_matter.invoice_id]
    )
    assert outstanding["total_minor"] == 125_000 + 30_050 + 7_500

    paid = await payments.pay_card(token, scope="outstanding")
    assert paid["amount_minor"] == outstanding["total_minor"]
    after = await payments.view(token)
    assert after["outstanding"] == {"items": [], "total_minor": 0}
    assert (await payments.view(plain))["items"][0]["status"] == "paid"


async def test_bills_in_two_currencies_are_paid_separately(payments: Payments) -> None:
    cad = BillSpec("clio:cad1", "C-1", 10_000, currency="CAD")
    token = await linked(payments, INV_A, cad)
    resp = await payments.start(token)
    assert resp.status_code == 409 and "currencies" in resp.json()["detail"]
    assert (await payments.start(token, [cad.invoice_id])).status_code == 200


async def test_a_sync_that_records_the_payment_does_not_count_it_twice(
    payments: Payments,
) -> None:
    """Once the firm records the payment in Clio, the synced balance shows it; the payment
    made here no longer reduces the balance (it would count twice)."""
    token = await linked(payments, INV_A)
    await payments.pay_card(token, [INV_A.invoice_id])
    from dataclasses import replace

    from tests.payments.conftest import invoice_event

    recorded = replace(INV_A, balance_minor=0, state="paid")
    async with payments.ledger.service.sessionmaker() as s, s.begin():
        await mirror.on_invoice_updated(s, invoice_event(recorded))
    item = (await payments.view(token))["items"][0]
    assert (item["status"], item["balance_minor"]) == ("paid", 0)
    # A new bill on the same invoice (balance raised in Clio) is owed in full again.
    raised = replace(INV_A, balance_minor=4_000)
    async with payments.ledger.service.sessionmaker() as s, s.begin():
        await mirror.on_invoice_updated(s, invoice_event(raised))
    item = (await payments.view(token))["items"][0]
    assert (item["status"], item["balance_minor"]) == ("unpaid", 4_000)


# --- the firm's side ----------------------------------------------------------------------


async def test_firm_lists_filters_and_cannot_see_other_firms(payments: Payments) -> None:
    token = await linked(payments, INV_A, INV_B)
    card = await payments.pay_card(token, [INV_A.invoice_id])
    ach = await payments.pay_ach(token, [INV_B.invoice_id])

    listed = (await payments.http.get(f"/internal/firms/{FIRM}/payments")).json()
    assert [p["id"] for p in listed] == [ach["id"], card["id"]]  # newest first
    processing = await payments.http.get(
        f"/internal/firms/{FIRM}/payments", params={"status": "processing"}
    )
    assert [p["id"] for p in processing.json()] == [ach["id"]]
    by_number = await payments.http.get(f"/internal/firms/{FIRM}/payments", params={"q": "1042"})
    assert [p["id"] for p in by_number.json()] == [card["id"]]

    assert (await payments.http.get(f"/internal/firms/{OTHER_FIRM}/payments")).json() == []
    other = await payments.http.get(f"/internal/firms/{OTHER_FIRM}/payments/{card['id']}")
    assert other.status_code == 404
    refund = await payments.http.post(
        f"/internal/firms/{OTHER_FIRM}/payments/{card['id']}/refunds",
        json={"refund_id": "r-1", "full": True},
    )
    assert refund.status_code == 404
    assert (await payments.http.get(f"/internal/firms/{FIRM}/payments/pay_nope")).status_code == 404


async def test_csv_has_one_row_per_allocation(payments: Payments) -> None:
    empty = await payments.http.get(f"/internal/firms/{FIRM}/payments.csv")
    assert empty.status_code == 200 and empty.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(empty.text)))[0][:3] == [
        "payment_id",
        "created_at",
        "succeeded_at",
    ]
    assert len(list(csv.reader(io.StringIO(empty.text)))) == 1

    token = await linked(payments, INV_A, TRUST)
    paid = await payments.pay_card(token)
    await payments.refund(paid["id"], items=[(INV_A.invoice_id, 1_234)])
    rows = list(
        csv.DictReader(
            io.StringIO((await payments.http.get(f"/internal/firms/{FIRM}/payments.csv")).text)
        )
    )
    assert [(r["invoice_number"], r["kind"], r["account"]) for r in rows] == [
        ("1042", "invoice", "operating"),
        ("TR-17", "trust_request", "trust"),
    ]
    first = rows[0]
    assert (first["allocated"], first["refunded"], first["payment_amount"]) == (
        "1250.00",
        "12.34",
        "1750.00",
    )
    assert (first["fee"], first["currency"], first["status"], first["method"]) == (
        "51.05",
        "USD",
        "partially_refunded",
        "card",
    )
    assert first["payer_name"] == "Dana Whitfield" and first["payment_id"] == paid["id"]


async def test_a_payer_name_cannot_become_a_spreadsheet_formula(payments: Payments) -> None:
    token = await linked(payments, INV_A)
    resp = await payments.card(await payments.session(token), name='=HYPERLINK("x")')
    assert resp.status_code == 200
    [row] = list(
        csv.DictReader(
            io.StringIO((await payments.http.get(f"/internal/firms/{FIRM}/payments.csv")).text)
        )
    )
    assert row["payer_name"] == '\'=HYPERLINK("x")'


async def test_internal_api_needs_the_token(payments: Payments) -> None:
    resp = await payments.http.get(
        f"/internal/firms/{FIRM}/payments", headers={"X-Internal-Token": "wrong"}
    )
    assert resp.status_code == 401
