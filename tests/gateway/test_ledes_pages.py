"""Invoices > Import LEDES, the gateway's side: the upload goes to sync as the file's bytes
with the chosen due term; the result page lists what was imported, each bad line by number,
and the clients needing an email; sync refusing (413) is a clear page, never a 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.sync import ledes
from tests.gateway.conftest import FIRM_ID, Gateway
from tests.unit.test_ledes import line

pytestmark = pytest.mark.timeout(60)

IMPORTS = f"/internal/firms/{FIRM_ID}/ledes/imports"
RESULT: dict[str, Any] = {
    "import_id": 7,
    "filename": "november.txt",
    "uploaded_at": "2026-12-07T10:00:00Z",
    "imported": [
        {
            "invoice_id": "ledes:abc",
            "number": "INV-1",
            "client_ref": "ACME",
            "client_name": "ACME",
            "total_minor": 100000,
            "outcome": "new",
            "published": False,
        }
    ],
    "skipped": [
        {
            "number": "INV-2",
            "client_ref": "ACME",
            "law_firm_id": "12-3456789",
            "first_line": 4,
            "problems": [{"line": 4, "reason": "LINE_ITEM_TOTAL is not an amount"}],
        }
    ],
    "problems": [],
    "clients_needing_email": [{"client_ref": "ACME", "name": "ACME", "invoices": 1}],
}


async def upload(gateway: Gateway, data: bytes, **fields: str) -> httpx.Response:
    await gateway.client.get("/invoices/import")
    return await gateway.client.http.post(
        "/invoices/import",
        data={"csrf_token": gateway.client.csrf, **fields},
        files={"file": ("november.txt", data, "text/plain")},
    )


async def test_an_upload_with_one_bad_line_is_reported(gateway: Gateway) -> None:
    gateway.sync.on("GET", IMPORTS, body=[])
    gateway.sync.on("POST", IMPORTS, body=RESULT)
    gateway.sync.on("GET", f"{IMPORTS}/7", body=RESULT)
    await gateway.login()
    page = await gateway.client.get("/invoices/import")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.text
    data = ledes.render([line(INVOICE_TOTAL="1000.00"), line(LINE_ITEM_TOTAL="ten")]).encode()
    resp = await upload(gateway, data, due_days="45")
    assert resp.status_code == 303 and resp.headers["location"] == "/invoices/import/7"
    (sent,) = gateway.sync.sent("POST", IMPORTS)
    assert sent.content == data
    assert (sent.url.params["due_days"], sent.url.params["filename"]) == ("45", "november.txt")

    result = await gateway.client.get("/invoices/import/7")
    assert result.status_code == 200
    assert "1 invoice imported (1 waiting for a client email); 1 not imported" in result.text
    assert '<tr class="skipped" data-invoice="INV-2">' in result.text
    assert '<td class="num">4</td><td>LINE_ITEM_TOTAL is not an amount</td>' in result.text
    assert 'data-client="ACME"' in result.text and 'name="email"' in result.text


async def test_a_client_email_goes_to_sync(gateway: Gateway) -> None:
    gateway.sync.on("GET", f"{IMPORTS}/7", body=RESULT)
    clients = f"/internal/firms/{FIRM_ID}/ledes/clients"
    gateway.sync.on("POST", clients, body={"client_ref": "ACME", "published": 1})
    await gateway.login()
    await gateway.client.get("/invoices/import/7")
    bad = await gateway.client.post(
        "/invoices/import/7/clients", {"client_ref": "ACME", "email": "nope"}
    )
    assert bad.status_code == 422 and "Enter an email address" in bad.text
    assert 'value="nope"' in bad.text  # what was typed is kept
    assert gateway.sync.sent("POST", clients) == []
    ok = await gateway.client.post(
        "/invoices/import/7/clients", {"client_ref": "ACME", "email": "ap@acme.test", "name": "A"}
    )
    assert ok.status_code == 303
    assert gateway.sync.json_sent("POST", clients) == [
        {"client_ref": "ACME", "email": "ap@acme.test", "name": "A"}
    ]
    refused = await gateway.client.post(
        "/invoices/import/7/clients", {"client_ref": "ACME", "email": "a@b.co"}, csrf=False
    )
    assert refused.status_code == 403


async def test_sync_refusing_the_file_is_a_clear_page(gateway: Gateway) -> None:
    gateway.sync.on("GET", IMPORTS, body=[])
    gateway.sync.on("POST", IMPORTS, status=413, body={"detail": "The file is larger than 5 MB."})
    await gateway.login()
    resp = await upload(gateway, b"LEDES1998B[]\n")
    assert resp.status_code == 413
    assert "The file is larger than 5 MB." in resp.text
    # Over the limit by its declared size: refused before the form is read or sync is asked.
    big = await upload(gateway, b"x" * (6 * 1024 * 1024))
    assert big.status_code == 413 and "larger than 5 MB" in big.text
    assert len(gateway.sync.sent("POST", IMPORTS)) == 1
