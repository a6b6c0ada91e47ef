"""The PDF renderer: what a client reads in the PDF, that hostile source values stay text,
that nothing is fetched, and that cache keys follow the content."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pypdf import PdfReader
from weasyprint import HTML

from services.envelope import pdf
from services.envelope.pdf import (
    DataOnlyFetcher,
    ExternalResourceRefused,
    invoice_cache_key,
    pdf_cache_key,
    render_invoice_pdf,
    render_statement_pdf,
    statement_cache_key,
)
from shared.events import FirmProfile, InvoiceSnapshot, LineItem
from shared.money import format_money

PAY_URL = "https://pay.example-law.test/p/Qm3xT8vL0aK2rR9bN4cW1yH7uE5sD6fG"
VIEW_URL = "https://pay.example-law.test/v/Qm3xT8vL0aK2rR9b"

FIRM = FirmProfile(
    name="Hartwell & Moreno LLP",
    email="billing@hartwellmoreno.test",
    phone="(415) 555-0182",
    address="450 Mission Street, Suite 1200\nSan Francisco, CA 94105",
    website="www.hartwellmoreno.test",
)


def fee(day: int, description: str, hours: str, rate: int, total: int) -> LineItem:
    return LineItem(
        kind="fee",
        date=dt.date(2025, 3, day),
        description=description,
        quantity=hours,
        rate_minor=rate,
        total_minor=total,
    )


def expense(day: int, description: str, amount: int) -> LineItem:
    return LineItem(
        kind="expense",
        date=dt.date(2025, 3, day),
        description=description,
        quantity="1",
        rate_minor=amount,
        total_minor=amount,
    )


def make_invoice(**changes: object) -> InvoiceSnapshot:
    base = InvoiceSnapshot(
        invoice_id="inv-1",
        source_id="src-1",
        number="INV-2025-0142",
        kind="invoice",
        state="awaiting_payment",
        client_id="c-1",
        client_name="Northgate Provisions, Inc.",
        client_email="ap@northgate.test",
        matter_number="00318-Northgate",
        matter_description="Lease renewal, 1200 Harbor Blvd.",
        subject="Professional services through March 31, 2025",
        issued_at=dt.date(2025, 4, 1),
        due_at=dt.date(2025, 5, 1),
        total_minor=228750,
        balance_minor=178750,
        paid_minor=50000,
        line_items=[
            fee(3, "Review of lease", "1.5", 42500, 63750),
            fee(7, "Call with client", "0.4", 42500, 17000),
            fee(12, "Draft lease amendment", "3.2", 42500, 136000),
            expense(12, "Courier", 4500),
            expense(14, "Recording fee", 7500),
        ],
    )
    return base.model_copy(update=changes)


def text_of(document: bytes) -> str:
    reader = PdfReader(io.BytesIO(document))
    return "\n".join(page.extract_text() for page in reader.pages)


def link_targets(document: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(document))
    uris = []
    for page in reader.pages:
        for annot in page.get("/Annots") or []:
            action = annot.get_object().get("/A")
            if action and "/URI" in action:
                uris.append(str(action["/URI"]))
    return uris


# --- invoice ----------------------------------------------------------------------------


def test_invoice_shows_what_the_client_needs() -> None:
    document = render_invoice_pdf(make_invoice(), FIRM, pay_url=PAY_URL, view_url=VIEW_URL)
    assert document.startswith(b"%PDF-")
    text = text_of(document)
    for expected in (
        "INVOICE",
        "INV-2025-0142",
        "Northgate Provisions, Inc.",
        "00318-Northgate",
        "Lease renewal, 1200 Harbor Blvd.",
        "Professional services through March 31, 2025",
        "April 1, 2025",
        "May 1, 2025",
        format_money(228750, "USD"),  # total
        format_money(50000, "USD"),  # paid
        "$1,787.50",  # balance
        "$1,360.00",  # a line item
        "Professional services",
        "Expenses",
        "How to pay",
        PAY_URL,
        VIEW_URL,
        FIRM.name,
        "450 Mission Street, Suite 1200",
        "(415) 555-0182",
        "billing@hartwellmoreno.test",
        "www.hartwellmoreno.test",
    ):
        assert expected in text, expected
    assert "PAID" not in text
    assert PAY_URL in link_targets(document)
    assert len(PdfReader(io.BytesIO(document)).pages) == 1


def test_line_item_quantities_and_fee_expense_sections() -> None:
    text = text_of(render_invoice_pdf(make_invoice(), FIRM, pay_url=PAY_URL))
    assert "1.50" in text and "0.40" in text  # hours keep two places
    assert "Total professional services $2,167.50" in text
    assert "Total expenses $120.00" in text


def test_invoice_without_line_items_has_no_table() -> None:
    text = text_of(render_invoice_pdf(make_invoice(line_items=[]), FIRM, pay_url=PAY_URL))
    assert "DESCRIPTION" not in text
    assert "$1,787.50" in text


def test_totals_that_do_not_match_the_lines_show_the_adjustment() -> None:
    invoice = make_invoice(total_minor=218750, balance_minor=168750)  # a $100 discount
    text = text_of(render_invoice_pdf(invoice, FIRM, pay_url=PAY_URL))
    assert "adjustments -$100.00" in text


def test_paid_invoice_shows_paid_and_no_pay_box() -> None:
    invoice = make_invoice(state="paid", balance_minor=0, paid_minor=228750)
    document = render_invoice_pdf(invoice, FIRM, pay_url=PAY_URL, view_url=VIEW_URL)
    text = text_of(document)
    assert "PAID" in text
    assert "Paid in full" in text
    assert "$0.00" in text
    assert PAY_URL not in text
    assert "How to pay" not in text
    assert PAY_URL not in link_targets(document)


def test_void_invoice_asks_for_nothing() -> None:
    text = text_of(render_invoice_pdf(make_invoice(state="void"), FIRM, pay_url=PAY_URL))
    assert "VOID" in text
    assert PAY_URL not in text


def test_trust_request() -> None:
    trust = make_invoice(
        kind="trust_request",
        number="TR-0031",
        line_items=[],
        total_minor=1000000,
        balance_minor=1000000,
        paid_minor=0,
    )
    text = text_of(render_invoice_pdf(trust, FIRM, pay_url=PAY_URL))
    assert "TRUST REQUEST" in text
    assert "INVOICE" not in text
    assert "TR-0031" in text
    assert "$10,000.00" in text
    assert "client trust account" in text
    assert PAY_URL in text


def test_no_pay_url_means_no_pay_box() -> None:
    text = text_of(render_invoice_pdf(make_invoice(), FIRM, pay_url=None))
    assert "How to pay" not in text
    assert "$1,787.50" in text


def test_a_non_web_pay_url_is_printed_but_not_linked() -> None:
    url = "javascript:alert(1)"
    document = render_invoice_pdf(make_invoice(), FIRM, pay_url=url)
    assert url in text_of(document)
    assert link_targets(document) == []


def test_other_currencies() -> None:
    text = text_of(render_invoice_pdf(make_invoice(currency="EUR"), FIRM, pay_url=PAY_URL))
    assert "€1,787.50" in text


# --- statement --------------------------------------------------------------------------


def statement_items() -> list[InvoiceSnapshot]:
    return [
        make_invoice(),
        make_invoice(
            invoice_id="inv-2",
            number="TR-0031",
            kind="trust_request",
            line_items=[],
            total_minor=1000000,
            balance_minor=1000000,
            paid_minor=0,
        ),
        make_invoice(
            invoice_id="inv-3",
            number="INV-2025-0097",
            issued_at=dt.date(2025, 2, 1),
            due_at=dt.date(2025, 3, 3),
            total_minor=98000,
            balance_minor=98000,
            paid_minor=0,
            matter_number="00322-Northgate",
        ),
        make_invoice(
            invoice_id="inv-4",
            number="INV-2025-0155",
            total_minor=31500,
            balance_minor=31500,
            paid_minor=0,
        ),
    ]


def test_statement_lists_every_item_and_the_total_due() -> None:
    items = statement_items()
    document = render_statement_pdf(
        items,
        FIRM,
        client_name="Northgate Provisions, Inc.",
        pay_url=PAY_URL,
        statement_date=dt.date(2025, 4, 20),
    )
    text = text_of(document)
    for item in items:
        assert item.number in text
        assert format_money(item.balance_minor, item.currency) in text
    grand_total = sum(i.balance_minor for i in items)
    assert format_money(grand_total, "USD") == "$13,082.50"
    assert "Total due $13,082.50" in text
    for expected in (
        "STATEMENT",
        "Northgate Provisions, Inc.",
        "April 20, 2025",
        "Trust request",
        "Invoice",
        "00322-Northgate",
        "Mar. 3, 2025",
        "PAST DUE",
        "Pay all online",
    ):
        assert expected in text, expected
    assert PAY_URL in text
    assert PAY_URL in link_targets(document)
    assert text.count("PAST DUE") == 1  # only the one due before the statement date
    assert len(PdfReader(io.BytesIO(document)).pages) == 1


def test_statement_with_nothing_due_has_no_pay_box() -> None:
    items = [make_invoice(balance_minor=0, paid_minor=228750, state="paid")]
    text = text_of(
        render_statement_pdf(
            items,
            FIRM,
            client_name="Northgate",
            pay_url=PAY_URL,
            statement_date=dt.date(2025, 4, 20),
        )
    )
    assert "PAID" in text
    assert PAY_URL not in text


def test_statement_never_adds_up_different_currencies() -> None:
    items = [make_invoice(), make_invoice(invoice_id="inv-2", number="INV-9", currency="GBP")]
    text = text_of(
        render_statement_pdf(
            items,
            FIRM,
            client_name="Northgate",
            pay_url=PAY_URL,
            statement_date=dt.date(2025, 4, 20),
        )
    )
    assert "$1,787.50" in text and "£1,787.50" in text
    assert "$3,575.00" not in text and "£3,575.00" not in text


# --- hostile input ----------------------------------------------------------------------

HOSTILE = ["<script>alert(1)</script>", "{{ 7*7 }}", "{% raw %}", "<b>bold</b> &amp; co"]


def test_hostile_strings_are_printed_literally() -> None:
    invoice = make_invoice(
        client_name=HOSTILE[0],
        subject=HOSTILE[1],
        matter_description=HOSTILE[2],
        matter_number=HOSTILE[3],
        line_items=[
            LineItem(
                kind="fee",
                description=" ".join(HOSTILE),
                quantity="{{ 7*7 }}",
                rate_minor=10000,
                total_minor=10000,
            )
        ],
        total_minor=10000,
        balance_minor=10000,
        paid_minor=0,
    )
    firm = FIRM.model_copy(
        update={"name": "{{ 7*7 }} LLP", "address": "<script>x</script>\n{% raw %}"}
    )
    text = text_of(render_invoice_pdf(invoice, firm, pay_url=PAY_URL + "?q={{7*7}}"))
    for value in HOSTILE:
        assert value in text, value
    assert "{{ 7*7 }} LLP" in text
    assert "<script>x</script>" in text
    assert "49" not in text

    statement = text_of(
        render_statement_pdf(
            [invoice],
            firm,
            client_name="<script>alert(1)</script> {{ 7*7 }}",
            pay_url=PAY_URL,
            statement_date=dt.date(2025, 4, 20),
        )
    )
    assert "<script>alert(1)</script> {{ 7*7 }}" in statement
    assert "{% raw %}" in statement
    assert "49" not in statement


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local server that records every request, so a fetch cannot go unnoticed."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    _Recorder.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_recorder_sees_weasyprints_default_fetches(web_server: str) -> None:
    # Proves the next tests can fail: without our fetcher, WeasyPrint does request the image.
    HTML(string=f'<img src="{web_server}/control.png">').write_pdf()
    assert "/control.png" in _Recorder.hits


def test_an_img_tag_in_a_client_name_is_text_and_fetches_nothing(web_server: str) -> None:
    tag = f'<img src="{web_server}/client.png">'
    invoice = make_invoice(client_name=tag, subject=f"<link rel=stylesheet href={web_server}/s>")
    firm = FIRM.model_copy(update={"website": f'<img src="{web_server}/firm.png">'})
    document = render_invoice_pdf(invoice, firm, pay_url=PAY_URL, view_url=f"{web_server}/view")
    assert tag in text_of(document)
    assert _Recorder.hits == []


def test_the_renderer_itself_refuses_external_resources(web_server: str) -> None:
    # Even markup that reached the renderer unescaped cannot make it fetch.
    html = (
        f'<link rel="stylesheet" href="{web_server}/style.css">'
        f'<style>@import url("{web_server}/import.css"); '
        f'body {{ background: url("{web_server}/bg.png") }}</style>'
        f'<img src="{web_server}/img.png"><img src="file:///etc/hostname"><p>still renders</p>'
    )
    document = pdf.html_to_pdf(html)
    assert "still renders" in text_of(document)
    assert _Recorder.hits == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/x.png", "https://example.com/x", "file:///etc/passwd", "ftp://h/x"]
)
def test_fetcher_refuses_everything_but_data_urls(url: str) -> None:
    with pytest.raises(ExternalResourceRefused):
        DataOnlyFetcher().fetch(url)


def test_fetcher_serves_data_urls() -> None:
    response = DataOnlyFetcher().fetch("data:text/plain;base64,aGVsbG8=")
    assert response.read() == b"hello"


# --- cache keys -------------------------------------------------------------------------


def test_cache_key_is_stable_and_follows_the_content() -> None:
    key = invoice_cache_key(make_invoice(), FIRM, pay_url=PAY_URL)
    assert len(key) == 64
    assert key == invoice_cache_key(make_invoice(), FIRM, pay_url=PAY_URL)
    assert key != invoice_cache_key(make_invoice(balance_minor=178749), FIRM, pay_url=PAY_URL)
    assert key != invoice_cache_key(make_invoice(), FIRM, pay_url=PAY_URL + "x")
    assert key != invoice_cache_key(make_invoice(), FIRM, pay_url=PAY_URL, view_url=VIEW_URL)
    renamed = FIRM.model_copy(update={"name": "Hartwell LLP"})
    assert key != invoice_cache_key(make_invoice(), renamed, pay_url=PAY_URL)


def test_pdf_cache_key_ignores_dict_order_but_not_values_or_kind() -> None:
    due = dt.date(2025, 1, 2)
    key = pdf_cache_key("invoice", {"balance_minor": 100, "number": "INV-1", "due": due})
    assert key == pdf_cache_key("invoice", {"due": due, "number": "INV-1", "balance_minor": 100})
    assert key != pdf_cache_key("invoice", {"balance_minor": 101, "number": "INV-1", "due": due})
    assert key != pdf_cache_key("statement", {"balance_minor": 100, "number": "INV-1", "due": due})


def test_cache_key_changes_with_the_template_version(monkeypatch: pytest.MonkeyPatch) -> None:
    key = pdf_cache_key("invoice", {"n": 1})
    monkeypatch.setattr(pdf, "TEMPLATE_VERSION", pdf.TEMPLATE_VERSION + "-next")
    assert pdf_cache_key("invoice", {"n": 1}) != key


def test_statement_cache_key() -> None:
    def key_of(items: list[InvoiceSnapshot]) -> str:
        return statement_cache_key(
            items,
            FIRM,
            client_name="Northgate",
            pay_url=PAY_URL,
            statement_date=dt.date(2025, 4, 20),
        )

    key = key_of(statement_items())
    assert key == key_of(statement_items())
    items = statement_items()
    items[2] = items[2].model_copy(update={"balance_minor": 0})
    assert key != key_of(items)


def test_cache_key_refuses_values_it_cannot_canonicalise() -> None:
    with pytest.raises(TypeError):
        pdf_cache_key("invoice", {"x": object()})


# --- concurrency ------------------------------------------------------------------------


def test_rendering_from_several_threads_at_once() -> None:
    numbers = [f"INV-T{n:03d}" for n in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        documents = list(
            pool.map(
                lambda number: render_invoice_pdf(
                    make_invoice(number=number), FIRM, pay_url=PAY_URL
                ),
                numbers,
            )
        )
    for number, document in zip(numbers, documents, strict=True):
        text = text_of(document)
        assert number in text
        assert "$1,787.50" in text


def _worker_collects_per_job() -> tuple[bool, int, int, list[int]]:
    """In a fresh process, as a pool worker runs: what start_worker left of the collector,
    and the cyclic garbage left over after each of three jobs."""
    import gc

    pdf.start_worker()
    enabled, frozen = gc.isenabled(), gc.get_freeze_count()
    pending = gc.get_count()[0]
    args = {
        "invoice": make_invoice().model_dump(mode="json"),
        "firm": FIRM.model_dump(mode="json"),
        "pay_url": PAY_URL,
        "view_url": VIEW_URL,
    }
    leftover = []
    for _ in range(3):
        content, _pid = pdf.render_job("invoice", args)
        assert content.startswith(b"%PDF")
        leftover.append(gc.collect())  # what the job's own collection did not free
    return enabled, frozen, pending, leftover


def test_a_pool_worker_collects_garbage_once_per_job() -> None:
    """Pool workers collect by the job: no collection during a layout, what lives as long
    as the worker frozen out of the collector's sight, and each job's cyclic garbage
    freed when the job ends (a layout leaves megabytes of it)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        enabled, frozen, pending, leftover = pool.apply(_worker_collects_per_job)
    assert not enabled
    assert frozen > 10_000  # WeasyPrint, fonts, stylesheet
    assert pending < 100
    assert leftover == [0, 0, 0]
