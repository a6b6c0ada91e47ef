"""The client's pay page, checkout and receipt, with payments answering by its contract."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable

import httpx
import pytest

from services.gateway import public
from services.gateway.public import PAYLINK_COOKIE
from tests.gateway.conftest import (
    Gateway,
    allocation,
    checkout,
    item,
    label_of,
    paylink,
    payment,
    row,
    unknown_link,
)

pytestmark = pytest.mark.timeout(60)

TOKEN = "tok_" + "a" * 40
LINK = f"/internal/paylinks/{TOKEN}"
SID = "0b7f7a3e-1111-4c2d-8e9f-000000000001"
A = item("clio:1", "INV-1", 12_000)
B = item("clio:2", "INV-2", 8_050, kind="trust_request")
PAID = item("clio:3", "INV-3", 0, status="paid")
PROCESSING = item("clio:4", "INV-4", 5_000, status="processing")


def pay_forms(page: str) -> list[list[str]]:
    """The invoice ids each Pay / Pay All form on the page would pay."""
    forms = re.findall(r'<form method="post" action="/pay/[^"]+/checkout"(.*?)</form>', page, re.S)
    return [re.findall(r'name="invoice_ids" value="([^"]+)"', f) for f in forms]


async def open_pay_page(gw: Gateway) -> str:
    resp = await gw.client.get(f"/pay/{TOKEN}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    return resp.text


async def test_expired_link_shows_the_firms_contact_not_an_error(gateway: Gateway) -> None:
    gateway.payments.on("GET", LINK, body=paylink([A], status="expired"))
    resp = await gateway.client.get(f"/pay/{TOKEN}")
    assert resp.status_code == 410
    page = html.unescape(resp.text)
    assert "This link is no longer active" in page
    assert "Hartwell & Moreno" in page
    assert "billing@hartwell.test" in page and "+1 555 0100" in page
    assert "INV-1" not in page, "no bill of an expired link is shown"
    assert "<button" not in page and "/checkout" not in page
    assert resp.headers["cache-control"] == "no-store"

    # Checkout on an expired link goes to the same page, and asks payments for nothing.
    await gateway.client.get("/login")
    resp = await gateway.client.post(f"/pay/{TOKEN}/checkout", {"invoice_ids": "clio:1"})
    assert resp.status_code == 410
    assert not gateway.payments.sent("POST", f"{LINK}/checkout")


async def test_unknown_link_is_a_clear_not_found_page(gateway: Gateway) -> None:
    gateway.payments.on("GET", LINK, body=unknown_link())
    resp = await gateway.client.get(f"/pay/{TOKEN}")
    assert resp.status_code == 404
    assert "This link is no longer active" in resp.text
    assert "could not find the bills for this link" in resp.text
    # payments answering 404 itself reads the same.
    gateway.payments.routes.clear()
    again = await gateway.client.get(f"/pay/{TOKEN}")
    assert again.status_code == 404 and "could not find the bills" in again.text
    # A token the envelope service never issued is not waited for: payments asked once.
    assert len(gateway.payments.sent("GET", LINK)) == 2
    assert len(gateway.envelope.sent("GET", f"/internal/links/{TOKEN}")) == 2


async def test_a_link_just_sent_is_waited_for_until_payments_knows_it(gateway: Gateway) -> None:
    """The email can reach the client before payments has learnt of its link (paylink.issued
    is gathered into batches, and runs behind the mail in a big Send All). A link the
    envelope service issued is waited for, and the page shows the bills."""
    gateway.envelope.on("GET", f"/internal/links/{TOKEN}", body={"issued": True})
    answers = iter([unknown_link()] * 2)

    def payments_learns_late(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(answers, paylink([A])))

    gateway.payments.handle("GET", LINK, payments_learns_late)
    page = await open_pay_page(gateway)
    assert pay_forms(page) == [["clio:1"]]
    assert len(gateway.payments.sent("GET", LINK)) == 3


async def test_a_link_payments_has_not_learnt_of_asks_the_client_to_wait(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(public, "LINK_ARRIVAL_WAIT_SECONDS", 0.5)
    gateway.envelope.on("GET", f"/internal/links/{TOKEN}", body={"issued": True})
    gateway.payments.on("GET", LINK, body=unknown_link())
    resp = await gateway.client.get(f"/pay/{TOKEN}")
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "3"
    assert resp.headers["cache-control"] == "no-store"
    assert "Your bills are on their way" in resp.text
    assert '<meta http-equiv="refresh" content="3">' in resp.text
    assert "no longer active" not in resp.text and "<form" not in resp.text
    # Checkout on it asks payments for no session.
    await gateway.client.get("/login")
    resp = await gateway.client.post(f"/pay/{TOKEN}/checkout", {"invoice_ids": "clio:1"})
    assert resp.status_code == 503
    assert not gateway.payments.sent("POST", f"{LINK}/checkout")


async def test_paid_and_processing_items_cannot_be_paid_again(gateway: Gateway) -> None:
    gateway.payments.on("GET", LINK, body=paylink([A, PROCESSING, PAID]))
    page = await open_pay_page(gateway)
    assert pay_forms(page) == [["clio:1"]], "only the unpaid bill has a Pay button"
    assert "Processing (ACH)" in row(page, "invoice", "clio:4")
    assert "<button" not in row(page, "invoice", "clio:4")
    assert ">Paid<" in row(page, "invoice", "clio:3")
    assert "<button" not in row(page, "invoice", "clio:3")
    assert "$120.00" in row(page, "invoice", "clio:1")
    assert "Jun 30, 2025" in row(page, "invoice", "clio:1")
    assert f'href="/v/{TOKEN}/clio:1"' in row(page, "invoice", "clio:1")
    assert "Pay All" not in page, "one unpaid bill: no Pay All"
    assert "Everything on this link is paid" not in page


async def test_a_link_with_nothing_left_to_pay_says_why(gateway: Gateway) -> None:
    gateway.payments.on("GET", LINK, body=paylink([PAID]))
    page = await open_pay_page(gateway)
    assert "Everything on this link is paid. Thank you." in page and pay_forms(page) == []
    gateway.payments.on("GET", LINK, body=paylink([PAID, PROCESSING]))
    page = await open_pay_page(gateway)
    assert "Everything on this link is paid" not in page
    assert "your bank payment is processing" in page and pay_forms(page) == []
    assert "Hartwell &amp; Moreno" in page and "billing@hartwell.test" in page


async def test_pay_all_pays_every_unpaid_item_and_goes_to_checkout(gateway: Gateway) -> None:
    gateway.payments.on("GET", LINK, body=paylink([A, B, PAID]))
    gateway.payments.on("POST", f"{LINK}/checkout", body={"session_id": SID, "redirect_url": None})
    page = await open_pay_page(gateway)
    forms = pay_forms(page)
    assert ["clio:1", "clio:2"] in forms, "Pay All covers both unpaid bills"
    assert "Pay All ($200.50)" in page
    assert "Trust request INV-2" in page

    resp = await gateway.client.post(
        f"/pay/{TOKEN}/checkout", {"invoice_ids": ["clio:1", "clio:2"]}
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == f"/checkout/{SID}"
    assert TOKEN not in resp.headers["location"], "the token never rides in the checkout URL"
    assert gateway.payments.json_sent("POST", f"{LINK}/checkout") == [
        {"invoice_ids": ["clio:1", "clio:2"], "scope": "items"}
    ]
    assert PAYLINK_COOKIE in resp.headers["set-cookie"]
    assert "Path=/checkout" in resp.headers["set-cookie"]
    assert "HttpOnly" in resp.headers["set-cookie"]


async def test_checkout_without_csrf_is_refused(gateway: Gateway) -> None:
    gateway.payments.on("GET", LINK, body=paylink([A, B]))
    await open_pay_page(gateway)
    resp = await gateway.client.post(
        f"/pay/{TOKEN}/checkout", {"invoice_ids": "clio:1"}, csrf=False
    )
    assert resp.status_code == 403
    assert "This page expired" in resp.text
    assert not gateway.payments.sent("POST", f"{LINK}/checkout")


async def test_pay_full_balance_when_the_firm_sent_the_whole_balance(gateway: Gateway) -> None:
    other_matter = item("clio:9", "INV-9", 30_000)
    gateway.payments.on("GET", LINK, body=paylink([A, B], outstanding=[A, B, other_matter]))
    gateway.payments.on("POST", f"{LINK}/checkout", body={"session_id": SID, "redirect_url": None})
    page = await open_pay_page(gateway)
    section = page.split('id="outstanding"', 1)[1]
    assert "INV-9" in section and "Pay full balance ($500.50)" in section
    resp = await gateway.client.post(f"/pay/{TOKEN}/checkout", {"scope": "outstanding"})
    assert resp.status_code == 303
    assert gateway.payments.json_sent("POST", f"{LINK}/checkout") == [
        {"invoice_ids": [], "scope": "outstanding"}
    ]


async def test_no_full_balance_section_for_an_ordinary_envelope(gateway: Gateway) -> None:
    gateway.payments.on("GET", LINK, body=paylink([A, B]))
    page = await open_pay_page(gateway)
    assert 'id="outstanding"' not in page and "Pay full balance" not in page


async def test_stripe_checkout_redirects_to_the_hosted_page(gateway: Gateway) -> None:
    hosted = "https://checkout.stripe.com/c/pay/cs_test_123"
    gateway.payments.on("GET", LINK, body=paylink([A]))
    gateway.payments.on(
        "POST", f"{LINK}/checkout", body={"session_id": SID, "redirect_url": hosted}
    )
    await open_pay_page(gateway)
    resp = await gateway.client.post(f"/pay/{TOKEN}/checkout", {"invoice_ids": "clio:1"})
    assert resp.status_code == 303 and resp.headers["location"] == hosted


async def test_an_open_stripe_session_goes_back_to_its_hosted_page(gateway: Gateway) -> None:
    hosted = "https://checkout.stripe.com/c/pay/cs_test_123"
    stripe = checkout(SID, [A]) | {"processor": "stripe", "redirect_url": hosted}
    gateway.payments.on("GET", f"/internal/checkout/{SID}", body=stripe)
    resp = await gateway.client.get(f"/checkout/{SID}")
    assert resp.status_code == 303 and resp.headers["location"] == hosted
    # Back from Stripe before its webhook: the payment is being confirmed, not failed.
    done = await gateway.client.get(f"/checkout/{SID}/done")
    assert done.status_code == 200
    assert "Payment processing" in done.text and "confirming your payment" in done.text


async def test_processor_down_leaves_the_client_on_the_pay_page(gateway: Gateway) -> None:
    gateway.payments.on("GET", LINK, body=paylink([A]))
    gateway.payments.on("POST", f"{LINK}/checkout", status=502, body={"detail": "stripe down"})
    await open_pay_page(gateway)
    resp = await gateway.client.post(f"/pay/{TOKEN}/checkout", {"invoice_ids": "clio:1"})
    assert resp.status_code == 503
    assert "Nothing was charged" in resp.text and "Bills from Hartwell" in resp.text


async def test_nothing_payable_is_said_on_the_pay_page(gateway: Gateway) -> None:
    gateway.payments.on("GET", LINK, body=paylink([A]))
    gateway.payments.on(
        "POST", f"{LINK}/checkout", status=409, body={"detail": "This bill is already paid."}
    )
    await open_pay_page(gateway)
    resp = await gateway.client.post(f"/pay/{TOKEN}/checkout", {"invoice_ids": "clio:1"})
    assert resp.status_code == 409
    assert "This bill is already paid." in resp.text
    assert "Bills from Hartwell" in resp.text


async def start(gw: Gateway, items: list[dict]) -> None:
    """The client pressed Pay: the gateway now holds the signed link cookie."""
    gw.payments.on("GET", LINK, body=paylink(items))
    gw.payments.on("POST", f"{LINK}/checkout", body={"session_id": SID, "redirect_url": None})
    gw.payments.on("GET", f"/internal/checkout/{SID}", body=checkout(SID, items))
    await open_pay_page(gw)
    resp = await gw.client.post(f"/pay/{TOKEN}/checkout", {"invoice_ids": "clio:1"})
    assert resp.status_code == 303


async def test_checkout_page_shows_test_mode_numbers_and_both_methods(gateway: Gateway) -> None:
    await start(gateway, [A, B])
    resp = await gateway.client.get(f"/checkout/{SID}")
    assert resp.status_code == 200
    page = resp.text
    assert "TEST MODE" in page
    for number in ("4242 4242 4242 4242", "4000 0000 0000 0002", "110000000", "000123456789"):
        assert number in page
    assert "$200.50" in page
    for field in ("card_number", "exp", "cvc", "name", "holder_name", "routing_number"):
        label_of(page, field)
    assert 'id="method-card" checked' in page and 'id="method-ach" >' in page
    assert "data-once" in page
    assert f'href="/pay/{TOKEN}"' in page, "a way back to the bills"


async def test_declined_card_shows_the_message_at_the_card_number(gateway: Gateway) -> None:
    await start(gateway, [A])
    card_path = f"/internal/checkout/{SID}/card"
    gateway.payments.on(
        "POST",
        card_path,
        status=402,
        body={"detail": {"field": "card_number", "message": "Your card was declined."}},
    )
    await gateway.client.get(f"/checkout/{SID}")
    typed = {
        "method": "card",
        "email": "priya@example.com",
        "card_number": "4000 0000 0000 0002",
        "exp": "12 / 34",
        "cvc": "123",
        "name": "Priya Shah",
    }
    resp = await gateway.client.post(f"/checkout/{SID}", typed)
    assert resp.status_code == 402
    page = resp.text
    assert "Your card was declined." in label_of(page, "card_number")
    assert 'aria-invalid="true"' in label_of(page, "card_number")
    assert 'value="Priya Shah"' in label_of(page, "name")
    assert 'value="priya@example.com"' in label_of(page, "email")
    assert 'value="12 / 34"' in label_of(page, "exp")
    assert "4000 0000 0000 0002" not in page.replace("<code>4000 0000 0000 0002</code>", "")
    assert 'value="123"' not in page, "the CVC is never shown again"
    assert gateway.payments.json_sent("POST", card_path) == [
        {k: v for k, v in typed.items() if k != "method"}
    ]


async def test_bank_account_errors_stay_on_the_bank_tab(gateway: Gateway) -> None:
    await start(gateway, [A])
    ach_path = f"/internal/checkout/{SID}/ach"
    message = "Your routing number is invalid."
    gateway.payments.on(
        "POST",
        ach_path,
        status=402,
        body={"detail": {"field": "routing_number", "message": message}},
    )
    await gateway.client.get(f"/checkout/{SID}")
    typed = {
        "method": "ach",
        "email": "priya@example.com",
        "holder_name": "Priya Shah",
        "routing_number": "123456789",
        "account_number": "000123456789",
        "account_type": "savings",
    }
    resp = await gateway.client.post(f"/checkout/{SID}", typed)
    assert resp.status_code == 402
    page = resp.text
    assert message in label_of(page, "routing_number")
    assert 'id="method-ach" checked' in page
    assert 'value="123456789"' in label_of(page, "routing_number")
    assert 'value="Priya Shah"' in label_of(page, "holder_name")
    assert '<option value="savings" selected' in page
    assert 'value="000123456789"' not in page, "the account number is never shown again"
    assert gateway.payments.json_sent("POST", ach_path) == [
        {
            "name": "Priya Shah",
            "email": "priya@example.com",
            "routing_number": "123456789",
            "account_number": "000123456789",
            "account_type": "savings",
        }
    ]
    # The account holder's name error lands at the bank form's own name field.
    gateway.payments.on(
        "POST", ach_path, status=402, body={"detail": {"field": "name", "message": "Enter a name."}}
    )
    resp = await gateway.client.post(f"/checkout/{SID}", typed | {"holder_name": ""})
    assert "Enter a name." in label_of(resp.text, "holder_name")
    assert "Enter a name." not in label_of(resp.text, "name")


async def test_session_paid_meanwhile_is_said_above_the_form(gateway: Gateway) -> None:
    await start(gateway, [A])
    gateway.payments.on(
        "POST",
        f"/internal/checkout/{SID}/card",
        status=409,
        body={"detail": {"field": None, "message": "This checkout has expired."}},
    )
    await gateway.client.get(f"/checkout/{SID}")
    resp = await gateway.client.post(f"/checkout/{SID}", {"method": "card", "name": "P"})
    assert resp.status_code == 409
    assert re.search(r'class="alert" role="alert">This checkout has expired.<', resp.text)


async def test_card_payment_ends_on_payment_received(gateway: Gateway) -> None:
    await start(gateway, [A])
    gateway.payments.on(
        "POST",
        f"/internal/checkout/{SID}/card",
        body=payment("pay_1", "card", "succeeded", [allocation("clio:1", "1001", 1)]),
    )
    await gateway.client.get(f"/checkout/{SID}")
    resp = await gateway.client.post(f"/checkout/{SID}", {"method": "card", "name": "P"})
    assert resp.status_code == 303 and resp.headers["location"] == f"/checkout/{SID}/done"
    gateway.payments.on(
        "GET",
        f"/internal/checkout/{SID}",
        body=checkout(SID, [A], "pay_1", "succeeded", "card", status="complete"),
    )
    receipt = await gateway.client.get(f"/checkout/{SID}/done")
    assert receipt.status_code == 200
    assert "Payment received" in receipt.text and "$120.00" in receipt.text
    assert "4 business days" not in receipt.text
    assert f'href="/pay/{TOKEN}"' in receipt.text
    # Opening the checkout again shows the receipt, not a second payment form.
    again = await gateway.client.get(f"/checkout/{SID}")
    assert again.status_code == 303 and again.headers["location"].endswith("/done")


async def test_ach_payment_ends_on_payment_processing(gateway: Gateway) -> None:
    await start(gateway, [A])
    gateway.payments.on(
        "GET",
        f"/internal/checkout/{SID}",
        body=checkout(SID, [A], "pay_2", "processing", "ach", status="complete"),
    )
    receipt = await gateway.client.get(f"/checkout/{SID}/done")
    page = receipt.text
    assert "Payment processing" in page and "Payment received" not in page
    assert "Bank payments take up to 4 business days to settle; the bill stays open" in page
    assert f'href="/pay/{TOKEN}"' in page


async def test_failed_payment_offers_to_pay_again(gateway: Gateway) -> None:
    await start(gateway, [A])
    gateway.payments.on(
        "GET",
        f"/internal/checkout/{SID}",
        body=checkout(SID, [A], "pay_3", "failed", "ach", status="complete"),
    )
    page = (await gateway.client.get(f"/checkout/{SID}/done")).text
    assert "Payment failed" in page and "Payment received" not in page
    assert f'href="/pay/{TOKEN}"' in page


async def test_a_tampered_link_cookie_gives_no_way_back(gateway: Gateway) -> None:
    await start(gateway, [A])
    gateway.payments.on(
        "GET",
        f"/internal/checkout/{SID}",
        body=checkout(SID, [A], "pay_1", "succeeded", "card", status="complete"),
    )
    other = "tok_" + "b" * 40
    jar = gateway.client.http.cookies
    raw = jar.get(PAYLINK_COOKIE, path="/checkout")
    assert raw and raw.startswith(f"{SID}.{TOKEN}.")

    def receipt_with(cookie: str) -> Awaitable[httpx.Response]:
        jar.clear()
        jar.set(PAYLINK_COOKIE, cookie, domain="gateway.local", path="/checkout")
        return gateway.client.get(f"/checkout/{SID}/done")

    assert f'href="/pay/{TOKEN}"' in (await receipt_with(raw)).text
    page = (await receipt_with(raw.replace(TOKEN, other))).text
    assert "Payment received" in page
    assert "/pay/" not in page
    forged = f"{SID}.{other}.{'0' * 32}"
    assert "/pay/" not in (await receipt_with(forged)).text


async def test_an_expired_checkout_offers_a_fresh_start(gateway: Gateway) -> None:
    await start(gateway, [A])
    gateway.payments.on(
        "GET", f"/internal/checkout/{SID}", body=checkout(SID, [A], status="expired")
    )
    resp = await gateway.client.get(f"/checkout/{SID}")
    assert resp.status_code == 410
    assert "This payment page expired. Nothing was charged." in resp.text
    assert 'id="checkout-form"' not in resp.text
    assert f'href="/pay/{TOKEN}"' in resp.text


async def test_unknown_checkout_is_a_clear_page(gateway: Gateway) -> None:
    resp = await gateway.client.get("/checkout/nope")
    assert resp.status_code == 404
    assert "This link is no longer active" in resp.text
