"""The firm's Payments tab: list, filters, detail, refunds (card in part, ACH only in full,
with a confirmation step and refusals shown on the page), and the CSV export."""

from __future__ import annotations

import html
import re

import httpx
import pytest

from services.gateway.web_payments import ACH_WARNING, parse_amount
from tests.gateway.conftest import FIRM_ID, Gateway, allocation, detail, payment, refund_out, row

pytestmark = pytest.mark.timeout(60)

BASE = f"/internal/firms/{FIRM_ID}/payments"
CARD = payment(
    "pay_card",
    "card",
    "partially_refunded",
    [allocation("clio:1", "INV-1", 6_000, refunded=1_000), allocation("clio:2", "INV-2", 4_000)],
    refunded=1_000,
)
ACH = payment(
    "pay_ach",
    "ach",
    "succeeded",
    [
        allocation("clio:3", "INV-3", 10_000),
        allocation("clio:4", "TR-4", 5_000, kind="trust_request"),
    ],
)
PENDING_ACH = payment("pay_wait", "ach", "processing", [allocation("clio:5", "INV-5", 2_500)])
RID = "4a5b6c7d-0000-4000-8000-000000000001"


def refund_row(page: str, invoice_id: str) -> str:
    """The refund form's row of one bill (the allocations table has one too)."""
    return row(page.split('id="refund-form"', 1)[1], "invoice", invoice_id)


def refund_ids(page: str) -> list[str]:
    return re.findall(r'name="refund_id" value="([^"]+)"', page)


async def test_the_list_reads_as_the_firm_expects(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", BASE, body=[CARD, ACH, PENDING_ACH])
    resp = await gateway.client.get("/payments")
    assert resp.status_code == 200
    page = html.unescape(resp.text)
    card, ach, wait = (row(page, "payment", p["id"]) for p in (CARD, ACH, PENDING_ACH))
    assert "Card •••• 4242" in card and "Partially refunded" in card
    assert "$100.00" in card and "$10.00" in card and "INV-1, INV-2" in card
    assert "Bank •••• 6789" in ach and ">Paid<" in ach and "$150.00" in ach
    assert "Processing (ACH)" in wait
    assert 'href="/payments/pay_card"' in card
    assert 'href="/payments.csv"' in page and "Export CSV" in page


async def test_filters_reach_payments(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", BASE, body=[])
    resp = await gateway.client.get("/payments", params={"status": "processing", "q": " Shah "})
    assert "No payments match." in resp.text
    assert '<option value="processing" selected' in resp.text
    assert 'href="/payments.csv?status=processing&amp;q=Shah"' in resp.text, "export what is shown"
    (sent,) = gateway.payments.sent("GET", BASE)
    assert dict(sent.url.params) == {"status": "processing", "q": "Shah"}
    # A status payments does not have is not passed on.
    await gateway.client.get("/payments", params={"status": "bogus"})
    assert dict(gateway.payments.sent("GET", BASE)[-1].url.params) == {}


async def test_payments_need_a_login(gateway: Gateway) -> None:
    for url in ("/payments", "/payments/pay_card", "/payments.csv"):
        resp = await gateway.client.get(url)
        assert resp.status_code == 303 and resp.headers["location"] == "/login"
    assert gateway.payments.requests == []


async def test_card_detail_offers_refunds_per_item(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", f"{BASE}/pay_card", body=detail(CARD))
    resp = await gateway.client.get("/payments/pay_card")
    assert resp.status_code == 200
    page = html.unescape(resp.text)
    # Prefilled with what is left on each item.
    assert 'value="50.00"' in refund_row(page, "clio:1")
    assert "$50.00" in refund_row(page, "clio:1"), "left to refund"
    amounts = re.findall(r'name="amount" inputmode="decimal" value="([^"]+)"', page)
    assert amounts == ["50.00", "40.00"]
    assert "Refund in full ($90.00)" in page and 'id="refund-button"' in page
    assert ACH_WARNING not in page
    assert "Card •••• 4242" in page and "priya@example.com" in page
    deposits = row(page, "account", "operating")
    assert "Operating" in deposits and "$3.20" in deposits and "$96.80" in deposits
    assert "Paid by card" in page, "the timeline"
    assert len(refund_ids(page)) == 1


async def test_ach_detail_offers_only_a_full_refund_with_the_warning(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", f"{BASE}/pay_ach", body=detail(ACH))
    page = html.unescape((await gateway.client.get("/payments/pay_ach")).text)
    assert ACH_WARNING in page
    assert 'name="amount"' not in page, "no partial amounts for ACH"
    assert 'id="refund-button"' not in page
    assert "Refund in full ($150.00)" in page
    assert "Trust request" in row(page, "invoice", "clio:4")


async def test_processing_ach_cannot_be_refunded_yet(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", f"{BASE}/pay_wait", body=detail(PENDING_ACH))
    page = (await gateway.client.get("/payments/pay_wait")).text
    assert "An ACH payment can be refunded only after it settles." in page
    assert 'id="refund-form"' not in page and "Refund in full" not in page
    assert "Processing (ACH)" in page


async def test_card_partial_refund_is_confirmed_then_sent_once(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", f"{BASE}/pay_card", body=detail(CARD))
    refunds = f"{BASE}/pay_card/refunds"
    gateway.payments.on("POST", refunds, body=refund_out(RID, 2_500, "succeeded"))
    page = (await gateway.client.get("/payments/pay_card")).text
    (refund_id,) = refund_ids(page)
    form = {"refund_id": refund_id, "item": ["clio:1", "clio:2"], "amount": ["25.00", ""]}
    asked = await gateway.client.post("/payments/pay_card/refunds", form)
    assert asked.status_code == 200
    confirm = html.unescape(asked.text)
    assert "Refund $25.00 to Priya Shah?" in confirm
    assert 'id="confirm-refund-button"' in confirm
    assert refund_ids(confirm) == [refund_id], "the confirmation carries the same refund id"
    assert not gateway.payments.sent("POST", refunds), "nothing is refunded before confirming"

    done = await gateway.client.post("/payments/pay_card/refunds", form | {"confirm": "1"})
    assert done.status_code == 303
    assert done.headers["location"] == f"/payments/pay_card?refund={refund_id}"
    assert gateway.payments.json_sent("POST", refunds) == [
        {
            "refund_id": refund_id,
            "requested_by": "Sam Staff",
            "full": False,
            "items": [{"invoice_id": "clio:1", "amount_minor": 2_500}],
        }
    ]
    refund = {
        "id": refund_id,
        "amount_minor": 2_500,
        "status": "succeeded",
        "created_at": "2025-05-18T10:00:00Z",
        "requested_by": "Sam Staff",
        "failure_reason": None,
        "items": [{"invoice_id": "clio:1", "number": "INV-1", "amount_minor": 2_500}],
    }
    gateway.payments.on("GET", f"{BASE}/pay_card", body=detail(CARD, refunds=[refund]))
    after = html.unescape((await gateway.client.get(done.headers["location"])).text)
    assert "Refunded $25.00." in after
    refunded = row(after, "refund", refund_id)
    assert "Succeeded" in refunded and "INV-1 ($25.00)" in refunded and "Sam Staff" in refunded
    assert refund_id not in refund_ids(after), "a new form gets a new refund id"


async def test_full_ach_refund_sends_full_and_no_items(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", f"{BASE}/pay_ach", body=detail(ACH))
    refunds = f"{BASE}/pay_ach/refunds"
    gateway.payments.on("POST", refunds, body=refund_out(RID, 15_000, "pending"))
    page = (await gateway.client.get("/payments/pay_ach")).text
    (refund_id,) = refund_ids(page)
    first = {"refund_id": refund_id, "full": "1"}
    asked = html.unescape((await gateway.client.post("/payments/pay_ach/refunds", first)).text)
    assert "Refund $150.00 to Priya Shah?" in asked and ACH_WARNING in asked
    done = await gateway.client.post(
        "/payments/pay_ach/refunds", {"refund_id": refund_id, "full": "1", "confirm": "1"}
    )
    assert done.status_code == 303
    assert gateway.payments.json_sent("POST", refunds) == [
        {"refund_id": refund_id, "requested_by": "Sam Staff", "full": True, "items": []}
    ]


async def test_a_refused_refund_is_shown_on_the_page(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", f"{BASE}/pay_ach", body=detail(ACH))
    gateway.payments.on("POST", f"{BASE}/pay_ach/refunds", status=409, body={"detail": ACH_WARNING})
    page = (await gateway.client.get("/payments/pay_ach")).text
    (refund_id,) = refund_ids(page)
    form = {"refund_id": refund_id, "item": "clio:3", "amount": "10.00", "confirm": "1"}
    resp = await gateway.client.post("/payments/pay_ach/refunds", form)
    assert resp.status_code == 409
    text = html.unescape(resp.text)
    assert re.search(r'id="refund-error">ACH payments are not eligible for partial refunds', text)
    assert "Payment of $150.00" in text, "the payment's page, not an error page"


async def test_payments_422_lands_at_the_field(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", f"{BASE}/pay_card", body=detail(CARD))
    message = "More than was paid for this bill."
    gateway.payments.on(
        "POST",
        f"{BASE}/pay_card/refunds",
        status=422,
        body={"detail": {"field": "clio:2", "message": message}},
    )
    page = (await gateway.client.get("/payments/pay_card")).text
    (refund_id,) = refund_ids(page)
    form = {"refund_id": refund_id, "item": "clio:2", "amount": "40.00", "confirm": "1"}
    resp = await gateway.client.post("/payments/pay_card/refunds", form)
    assert resp.status_code == 422
    assert re.search(rf'field-error" role="alert">{message}', refund_row(resp.text, "clio:2"))
    assert 'value="40.00"' in refund_row(resp.text, "clio:2"), "what was typed stays"


async def test_amounts_are_checked_before_anything_is_sent(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", f"{BASE}/pay_card", body=detail(CARD))
    page = (await gateway.client.get("/payments/pay_card")).text
    (refund_id,) = refund_ids(page)
    cases = [
        ({"item": ["clio:1", "clio:2"], "amount": ["12.345", ""]}, "clio:1", "at most 2 decimals"),
        ({"item": ["clio:1", "clio:2"], "amount": ["", "40.01"]}, "clio:2", "At most $40.00"),
        ({"item": ["clio:1", "clio:2"], "amount": ["abc", ""]}, "clio:1", "Enter an amount"),
    ]
    for form, invoice_id, message in cases:
        resp = await gateway.client.post(
            "/payments/pay_card/refunds", form | {"refund_id": refund_id, "confirm": "1"}
        )
        assert resp.status_code == 422
        typed_row = refund_row(html.unescape(resp.text), invoice_id)
        assert message in typed_row
    nothing = await gateway.client.post(
        "/payments/pay_card/refunds",
        {"refund_id": refund_id, "item": ["clio:1", "clio:2"], "amount": ["0", ""], "confirm": "1"},
    )
    assert nothing.status_code == 422 and "Enter the amount to refund" in nothing.text
    assert not gateway.payments.sent("POST", f"{BASE}/pay_card/refunds")


async def test_refund_needs_the_forms_csrf_token(gateway: Gateway) -> None:
    await gateway.login()
    gateway.payments.on("GET", f"{BASE}/pay_ach", body=detail(ACH))
    resp = await gateway.client.post(
        "/payments/pay_ach/refunds", {"refund_id": RID, "full": "1", "confirm": "1"}, csrf=False
    )
    assert resp.status_code == 403
    assert not gateway.payments.sent("POST", f"{BASE}/pay_ach/refunds")


async def test_another_firms_payment_is_not_found(gateway: Gateway) -> None:
    await gateway.login()
    resp = await gateway.client.get("/payments/someone-elses")
    assert resp.status_code == 404 and "No such payment." in resp.text
    (sent,) = gateway.payments.sent("GET", f"{BASE}/someone-elses")
    assert FIRM_ID in sent.url.path, "always asked within the user's own firm"


async def test_csv_export_streams_payments_csv(gateway: Gateway) -> None:
    await gateway.login()
    csv = (
        b"payment_id,created_at,succeeded_at,client_name,payer_name,payer_email,method,status,"
        b"invoice_number,kind,account,allocated,refunded,payment_amount,fee,currency\r\n"
        b'pay_card,2025-05-17T15:04:00Z,2025-05-17T15:04:05Z,"Shah, Priya",Priya Shah,'
        b"priya@example.com,card,succeeded,INV-1,invoice,operating,60.00,0.00,100.00,3.20,USD\r\n"
    )
    gateway.payments.handle(
        "GET",
        f"{BASE}.csv",
        lambda request: httpx.Response(
            200, content=csv, headers={"content-type": "text/csv; charset=utf-8"}
        ),
    )
    resp = await gateway.client.get("/payments.csv")
    assert resp.status_code == 200
    assert resp.content == csv
    assert resp.headers["content-type"].startswith("text/csv")
    assert re.fullmatch(
        r'attachment; filename="payments-\d{4}-\d{2}-\d{2}\.csv"',
        resp.headers["content-disposition"],
    )
    assert dict(gateway.payments.sent("GET", f"{BASE}.csv")[0].url.params) == {}
    filtered = await gateway.client.get("/payments.csv", params={"status": "refunded", "q": "Shah"})
    assert filtered.content == csv
    last = gateway.payments.sent("GET", f"{BASE}.csv")[-1]
    assert dict(last.url.params) == {"status": "refunded", "q": "Shah"}


async def test_csv_export_failure_is_a_page(gateway: Gateway) -> None:
    await gateway.login()
    resp = await gateway.client.get("/payments.csv")  # the fake answers 404
    assert resp.status_code == 502 and "not available" in resp.text


def test_amounts_as_typed_become_minor_units() -> None:
    assert parse_amount("1,234.50", "USD") == 123_450
    assert parse_amount("$12", "USD") == 1_200
    assert parse_amount(" 0.07 ", "USD") == 7
    assert parse_amount("", "USD") == 0
    assert parse_amount("1500", "JPY") == 1_500
    for bad in ("1.999", "-5", "1e3", "12.", "abc"):
        with pytest.raises(ValueError):
            parse_amount(bad, "USD")
    with pytest.raises(ValueError):
        parse_amount("15.5", "JPY")
