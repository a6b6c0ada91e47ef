"""To record in Clio, as the firm sees it (payments answering by its contract): the list with
the link to each bill in Clio and what to enter, Mark recorded per item and for a selection
(CSRF, who), the CSV (safe in a spreadsheet), and what forged or foreign ids get: a 4xx and
nothing changed. And the client's pay page for a bill removed in Clio."""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any

import pytest

from tests.gateway.conftest import FIRM, FIRM_ID, Gateway, item, paylink, row

pytestmark = pytest.mark.timeout(60)

LIST = f"/internal/firms/{FIRM_ID}/record"
MARK = f"/internal/firms/{FIRM_ID}/record/mark"


def record_item(n: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": n,
        "payment_id": f"pay_{n}",
        "invoice_id": f"clio:{n}",
        "source_id": str(n),
        "number": f"INV-{n}",
        "kind": "invoice",
        "client_name": "Priya Shah",
        "currency": "USD",
        "amount_minor": 12_345,
        "paid_at": "2026-12-01T15:04:00Z",
        "method": "card",
        "last4": "4242",
        "payer_name": "Priya Shah",
        "payer_email": "priya@example.test",
        "reference": f"ch_{n}",
        "recorded_at": None,
        "recorded_by": None,
        "recorded_how": None,
    } | changes


PENDING = [
    record_item(11),
    record_item(12, kind="trust_request", method="ach", last4="6789", amount_minor=50_000),
]
RECORDED = [
    record_item(
        9, recorded_at="2026-12-02T10:00:00Z", recorded_by="Sam Staff", recorded_how="marked"
    )
]


def clio_connected(gw: Gateway) -> None:
    """sync says the firm is connected, on the sandbox's host."""
    gw.sync.on(
        "GET",
        f"/internal/firms/{FIRM_ID}/clio",
        body={"connected": True, "region": "us", "app_url": "http://127.0.0.1:8090"},
    )


async def open_page(
    gw: Gateway, pending: list[dict[str, Any]] | None = None, *, clio: bool = True
) -> str:
    await gw.login()
    if clio:
        clio_connected(gw)
    gw.payments.on(
        "GET", LIST, body={"pending": PENDING if pending is None else pending, "recorded": RECORDED}
    )
    resp = await gw.client.get("/record")
    assert resp.status_code == 200, resp.text
    return resp.text


async def test_the_list_links_each_bill_in_clio_with_what_to_enter(gateway: Gateway) -> None:
    page = await open_page(gateway)
    assert 'href="/record"' in page and "To record in Clio" in page
    first = html.unescape(row(page, "item", "11"))
    assert 'href="http://127.0.0.1:8090/nc/#/bills/11"' in first
    assert "Invoice INV-11" in first and "$123.45" in first and "Card •••• 4242" in first
    assert "Priya Shah" in first and "ch_11" in first
    second = html.unescape(row(page, "item", "12"))
    assert "Trust request INV-12" in second and "Bank (ACH) •••• 6789" in second
    assert "$623.45" in html.unescape(page)  # the total to enter
    done = html.unescape(row(page.split('id="recorded"', 1)[1], "item", "9"))
    assert "Marked recorded by Sam Staff" in done


async def test_the_links_go_to_the_firms_clio_region_host(gateway: Gateway) -> None:
    gateway.sync.on(
        "GET",
        f"/internal/firms/{FIRM_ID}/clio",
        body={"connected": True, "region": "eu", "app_url": "https://eu.app.clio.com/"},
    )
    page = await open_page(gateway, clio=False)
    assert 'href="https://eu.app.clio.com/nc/#/bills/11"' in page


async def test_no_link_into_clio_without_a_connection(gateway: Gateway) -> None:
    gateway.sync.on("GET", f"/internal/firms/{FIRM_ID}/clio", body={"connected": False})
    page = await open_page(gateway, clio=False)
    assert "/nc/#/bills/" not in page
    assert "INV-11" in page  # the item is still listed, without its link


async def test_mark_one_and_a_selection_with_who(gateway: Gateway) -> None:
    await open_page(gateway)
    gateway.payments.on("POST", MARK, body={"marked": 1})
    resp = await gateway.client.post("/record/mark", {"one": "11"})
    assert resp.status_code == 303 and resp.headers["location"] == "/record?marked=1"
    resp = await gateway.client.http.post(
        "/record/mark", data={"csrf_token": gateway.client.csrf, "ids": ["11", "12"]}
    )
    assert resp.status_code == 303
    sent = gateway.payments.json_sent("POST", MARK)
    assert sent == [{"ids": [11], "by": "Sam Staff"}, {"ids": [11, 12], "by": "Sam Staff"}]
    page = (await gateway.client.get("/record?marked=2")).text
    assert "2 items marked recorded." in page


async def test_no_csrf_no_change(gateway: Gateway) -> None:
    await open_page(gateway)
    resp = await gateway.client.post("/record/mark", {"one": "11"}, csrf=False)
    assert resp.status_code == 403
    resp = await gateway.client.http.post(
        "/record/mark", data={"one": "11", "csrf_token": "forged"}
    )
    assert resp.status_code == 403
    assert gateway.payments.sent("POST", MARK) == []


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"ids": "abc"},
        {"ids": "-1"},
        {"ids": "0"},
        {"ids": "99999999999999999999999"},
        {"one": "1 OR 1=1"},
        {"ids": [str(i) for i in range(1, 1_200)]},
    ],
)
async def test_forged_or_huge_selections_are_refused_before_payments(
    gateway: Gateway, data: dict[str, Any]
) -> None:
    await open_page(gateway)
    resp = await gateway.client.http.post(
        "/record/mark", data=data | {"csrf_token": gateway.client.csrf}
    )
    assert resp.status_code == 400
    assert 'role="alert"' in resp.text
    assert gateway.payments.sent("POST", MARK) == []


async def test_another_firms_ids_are_refused_by_payments(gateway: Gateway) -> None:
    await open_page(gateway)
    gateway.payments.on(
        "POST",
        MARK,
        status=404,
        body={"detail": "Some of these items are not on your list. Reload the page."},
    )
    resp = await gateway.client.post("/record/mark", {"ids": "777"})
    assert resp.status_code == 404
    assert "not on your list" in resp.text
    gateway.payments.on("POST", MARK, status=422, body={"detail": [{"msg": "bad"}]})
    resp = await gateway.client.post("/record/mark", {"ids": "777"})
    assert resp.status_code == 422 and "not on your list" in resp.text


async def test_the_csv_is_safe_in_a_spreadsheet(gateway: Gateway) -> None:
    evil = record_item(
        13,
        client_name='=HYPERLINK("http://evil.test","x")',
        payer_name="+cmd|' /C calc'!A0",
        payer_email="@SUM(1+1)",
        number="-2+3",
    )
    await open_page(gateway, [evil])
    resp = await gateway.client.get("/record.csv")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(resp.text)))
    header, line = rows
    cells = dict(zip(header, line, strict=True))
    for value in cells.values():
        assert value[:1] not in ("=", "+", "-", "@"), value
    assert cells["client"].startswith("'=HYPERLINK")
    assert cells["amount"] == "123.45" and cells["clio_link"].endswith("/nc/#/bills/13")


async def test_the_page_escapes_what_clients_typed(gateway: Gateway) -> None:
    page = await open_page(gateway, [record_item(14, payer_name="<script>alert(1)</script>")])
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


async def test_a_removed_bill_on_the_pay_page_is_no_longer_payable(gateway: Gateway) -> None:
    token = "tok_" + "r" * 40
    items = [item("clio:1", "INV-1", 0, status="removed"), item("clio:2", "INV-2", 8_000)]
    gateway.payments.on("GET", f"/internal/paylinks/{token}", body=paylink(items))
    resp = await gateway.client.get(f"/pay/{token}")
    assert resp.status_code == 200
    page = html.unescape(resp.text)
    removed = row(page, "invoice", "clio:1")
    assert "No longer payable" in removed and 'name="invoice_ids"' not in removed
    assert "View Invoice" not in removed
    notice = page.split('id="no-longer-payable"', 1)[1].split("</div>", 1)[0]
    assert "Invoice INV-1 is no longer payable" in notice
    assert FIRM["email"] in notice and FIRM["phone"] in notice
    # Every Pay form on the page pays only the payable bill.
    forms = re.findall(r'name="invoice_ids" value="([^"]+)"', page)
    assert forms and set(forms) == {"clio:2"}


async def test_the_review_window_shows_a_removed_bill_as_not_sent(gateway: Gateway) -> None:
    from tests.gateway.test_tracking_pages import DRAFT, ENV, invoice

    base = f"/internal/firms/{FIRM_ID}"
    draft = DRAFT | {"invoice_ids": ["clio:1", "clio:2"]}
    gateway.envelope.on(
        "GET",
        f"{base}/invoices",
        body={
            "items": [
                invoice("clio:1", "INV-1", None),
                invoice("clio:2", "INV-2", None) | {"state": "void"},
            ],
            "total": 2,
            "page": 1,
            "per_page": 25,
        },
    )
    gateway.envelope.on("GET", f"{base}/envelopes/{ENV}", body=draft)
    gateway.envelope.on("POST", f"{base}/envelopes/drafts", body=[draft])
    gateway.envelope.on("POST", f"{base}/envelopes/{ENV}/preview", body=draft["preview"])
    gateway.envelope.on(
        "GET",
        f"{base}/templates",
        body={
            "items": [],
            "default_id": None,
            "builtin": {"name": "Standard", "subject": "s", "body": "b"},
            "autofill_fields": {},
        },
    )
    await open_page(gateway)  # logged in, with a page's CSRF token
    resp = await gateway.client.post("/envelopes/review", {"invoice_ids": ["clio:1", "clio:2"]})
    assert resp.status_code == 303, resp.text
    page = (await gateway.client.get(resp.headers["location"])).text
    items = page.split('<ul class="items">', 1)[1].split("</ul>", 1)[0]
    first, second = items.split("</li>")[:2]
    assert "INV-1" in first and "data-removed" not in first
    assert "INV-2" in second and "Voided in Clio: not sent" in second


async def test_the_list_and_its_csv_need_a_login(gateway: Gateway) -> None:
    for url in ("/record", "/record.csv"):
        resp = await gateway.client.get(url)
        assert resp.status_code in (302, 303) and "/login" in resp.headers["location"]
    resp = await gateway.client.http.post("/record/mark", data={"one": "11"})
    assert resp.status_code in (302, 303, 403)
    assert gateway.payments.requests == []
