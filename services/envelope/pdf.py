"""PDF invoices, trust requests and combined statements, laid out by WeasyPrint.

Every string shown comes from the source system or the firm's profile, so the templates are
autoescaped and the renderer may load nothing but data: URLs: no value can make it fetch a
remote address or read a local file. Rendering is pure CPU work; call it from a worker thread
or process.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import segno
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel
from weasyprint import CSS, HTML
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import URLFetcher, URLFetcherResponse

from shared.events import FirmProfile, InvoiceKind, InvoiceSnapshot, InvoiceState, LineItem
from shared.money import format_money

log = logging.getLogger(__name__)

# Bump when a change to the code or templates alters the output, so cached PDFs are not reused.
TEMPLATE_VERSION = "pdf-1"

TEMPLATES = Path(__file__).parent / "templates" / "pdf"

# A template edit that forgets to bump TEMPLATE_VERSION must still invalidate cached PDFs.
_TEMPLATE_DIGEST = hashlib.sha256(
    b"".join(
        p.name.encode() + b"\0" + p.read_bytes() + b"\0"
        for p in sorted(TEMPLATES.iterdir())
        if p.is_file()
    )
).hexdigest()

_STYLESHEET = (TEMPLATES / "pdf.css").read_text(encoding="utf-8")

# Jinja environments are safe to share between threads once built; templates are compiled once.
_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

KIND_LABELS = {InvoiceKind.invoice: "Invoice", InvoiceKind.trust_request: "Trust request"}


class ExternalResourceRefused(ValueError):
    """WeasyPrint asked for something other than a data: URL."""


class DataOnlyFetcher(URLFetcher):
    """Serves data: URLs (the embedded QR code) and refuses everything else.

    WeasyPrint treats a fetcher error as a missing resource, so a stray <img> or url() leaves a
    gap in the page instead of a request to the network or the filesystem.
    """

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> URLFetcherResponse:
        if url[:5].lower() != "data:":
            log.warning("pdf: refused to fetch %.100s", url)
            raise ExternalResourceRefused(f"refused to fetch {url[:100]}")
        return super().fetch(url, headers)


class _PerThread(threading.local):
    """FontConfiguration keeps Pango state and caches that are not safe to share across
    threads; building one costs a fontconfig scan, so each thread keeps its own."""

    pid: int = -1
    font_config: FontConfiguration | None = None
    stylesheet: CSS | None = None


_per_thread = _PerThread()


def _resources() -> tuple[FontConfiguration, CSS]:
    # A forked worker inherits the parent's Pango objects; rebuild rather than trust them.
    if _per_thread.pid != os.getpid() or _per_thread.stylesheet is None:
        font_config = FontConfiguration()
        _per_thread.stylesheet = CSS(
            string=_STYLESHEET, font_config=font_config, url_fetcher=DataOnlyFetcher()
        )
        _per_thread.font_config = font_config
        _per_thread.pid = os.getpid()
    assert _per_thread.font_config is not None
    return _per_thread.font_config, _per_thread.stylesheet


def html_to_pdf(html: str) -> bytes:
    """Lay out trusted template output. No base URL: relative links resolve to nothing."""
    font_config, stylesheet = _resources()
    document = HTML(string=html, base_url=None, url_fetcher=DataOnlyFetcher())
    # Tagged, so screen readers get headings and table structure (about +10 ms a page).
    pdf: bytes | None = document.write_pdf(
        stylesheets=[stylesheet], font_config=font_config, pdf_tags=True
    )
    assert pdf is not None
    return pdf


# --- formatting -------------------------------------------------------------------------


def format_date(value: dt.date | None, missing: str = "", *, short: bool = False) -> str:
    # Spelled out by hand: strftime("%B") follows the process locale.
    if value is None:
        return missing
    month = _MONTHS[value.month - 1]
    if short and len(month) > 4:
        month = month[:3] + "."
    return f"{month} {value.day}, {value.year}"


def format_quantity(text: str, kind: str) -> str:
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return text  # shown as the source sent it; it is escaped like everything else
    exponent = value.normalize().as_tuple().exponent
    if not value.is_finite() or not isinstance(exponent, int):
        return text
    # Hours read as 1.50, 0.25; expense counts read as 1, 3.
    places = max(-exponent, 2 if kind == "fee" else 0)
    return f"{value:,.{places}f}"


def _linkable(url: str | None) -> str | None:
    # The link becomes a PDF annotation a reader may open; only web addresses qualify.
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None


def _qr_data_uri(url: str) -> str:
    # Vector, so it prints sharp at any size; medium error correction survives a crease.
    return segno.make(url, error="m").svg_data_uri(border=0, dark="#17263c")


# The parts of the firm's profile a PDF shows; other settings must not change a PDF's key.
FIRM_FIELDS = frozenset({"name", "address", "phone", "email", "website"})


def _firm_view(firm: FirmProfile) -> dict[str, Any]:
    return {
        "name": firm.name,
        "address_lines": firm.address_lines,
        "phone": firm.phone or "",
        "email": firm.email or "",
        "website": firm.website or "",
    }


def _pay_view(pay_url: str | None) -> dict[str, Any] | None:
    if not pay_url:
        return None
    return {"url": pay_url, "href": _linkable(pay_url), "qr": _qr_data_uri(pay_url)}


_SECTIONS = (("fee", "Professional services"), ("expense", "Expenses"), ("other", "Other charges"))


def _sections(items: list[LineItem], currency: str) -> list[dict[str, Any]]:
    sections = []
    for kind, title in _SECTIONS:
        rows = [i for i in items if i.kind == kind]
        if not rows:
            continue
        subtotal = sum(i.total_minor for i in rows)
        sections.append(
            {
                "kind": kind,
                "title": title,
                "rows": [
                    {
                        "date": format_date(i.date, short=True),
                        "description": i.description,
                        "quantity": format_quantity(i.quantity, kind),
                        "rate": format_money(i.rate_minor, currency),
                        "amount": format_money(i.total_minor, currency),
                    }
                    for i in rows
                ],
                "subtotal_minor": subtotal,
                "subtotal": format_money(subtotal, currency),
            }
        )
    return sections


# --- public API -------------------------------------------------------------------------


def render_invoice_pdf(
    invoice: InvoiceSnapshot,
    firm: FirmProfile,
    *,
    pay_url: str | None,
    view_url: str | None = None,
) -> bytes:
    """One invoice or trust request, with its pay link as text and QR code while unpaid."""
    cur = invoice.currency
    trust = invoice.kind == InvoiceKind.trust_request
    void = invoice.state in (InvoiceState.void, InvoiceState.deleted)
    paid = not void and invoice.balance_minor <= 0
    sections = _sections(invoice.line_items, cur)
    # Clio totals can include discounts, taxes or interest that are not line items; show the
    # difference so the rows visibly add up to the total.
    adjustment = invoice.total_minor - sum(s["subtotal_minor"] for s in sections)
    context = {
        "firm": _firm_view(firm),
        "title": "Trust request" if trust else "Invoice",
        "doc_label": f"{'Trust request' if trust else 'Invoice'} {invoice.number}",
        "trust": trust,
        "number": invoice.number,
        "client_name": invoice.client_name,
        "client_email": invoice.client_email or "",
        "matter_number": invoice.matter_number or "",
        "matter_description": invoice.matter_description or "",
        "subject": invoice.subject or "",
        "issued": format_date(invoice.issued_at),
        "due": format_date(invoice.due_at, "Upon receipt"),
        "sections": sections,
        "show_subtotals": len(sections) > 1,
        "adjustment": format_money(adjustment, cur) if sections and adjustment else None,
        "total": format_money(invoice.total_minor, cur),
        "paid_amount": format_money(invoice.paid_minor, cur),
        "balance": format_money(invoice.balance_minor, cur),
        "stamp": "VOID" if void else ("PAID" if paid else None),
        "pay": None if paid or void else _pay_view(pay_url),
        "view_url": view_url or "",
        "view_href": _linkable(view_url),
    }
    return html_to_pdf(_env.get_template("invoice.html").render(context))


def render_statement_pdf(
    invoices: list[InvoiceSnapshot],
    firm: FirmProfile,
    *,
    client_name: str,
    pay_url: str | None,
    statement_date: dt.date,
) -> bytes:
    """Several bills of one client in one table, with their total due and the Pay All link."""
    rows = []
    due_by_currency: dict[str, int] = {}
    for inv in invoices:
        due_by_currency[inv.currency] = due_by_currency.get(inv.currency, 0) + inv.balance_minor
        overdue = inv.balance_minor > 0 and inv.due_at is not None and inv.due_at < statement_date
        rows.append(
            {
                "number": inv.number,
                "kind": KIND_LABELS.get(inv.kind, inv.kind),
                "matter_number": inv.matter_number or "",
                "matter_description": inv.matter_description or "",
                "issued": format_date(inv.issued_at, "—", short=True),
                "due": format_date(inv.due_at, "On receipt", short=True),
                "overdue": overdue,
                "total": format_money(inv.total_minor, inv.currency),
                "balance": format_money(inv.balance_minor, inv.currency),
            }
        )
    # Mixed currencies cannot be added up; each gets its own total line.
    totals = [format_money(minor, cur) for cur, minor in sorted(due_by_currency.items())]
    anything_due = any(minor > 0 for minor in due_by_currency.values())
    context = {
        "firm": _firm_view(firm),
        "title": "Statement",
        "doc_label": f"Statement {format_date(statement_date)}",
        "client_name": client_name,
        "statement_date": format_date(statement_date),
        "rows": rows,
        "totals": totals or [format_money(0, "USD")],
        "has_trust": any(inv.kind == InvoiceKind.trust_request for inv in invoices),
        "stamp": None if anything_due or not invoices else "PAID",
        "pay": _pay_view(pay_url) if anything_due else None,
    }
    return html_to_pdf(_env.get_template("statement.html").render(context))


def _json_default(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dt.date):  # datetimes too
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"cannot key a PDF on {type(value).__name__}")


def pdf_cache_key(kind: str, payload: dict[str, Any]) -> str:
    """sha256 over everything that shapes the PDF: `kind`, the payload (the arguments of the
    render call, models included) and the template version.

    Canonical JSON (sorted keys, fixed separators) keeps the key independent of dict order.
    """
    document = {
        "kind": kind,
        "template_version": TEMPLATE_VERSION,
        "template_digest": _TEMPLATE_DIGEST,
        "payload": payload,
    }
    text = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def invoice_cache_key(
    invoice: InvoiceSnapshot, firm: FirmProfile, *, pay_url: str | None, view_url: str | None = None
) -> str:
    """The key for exactly what render_invoice_pdf is given."""
    return pdf_cache_key(
        "invoice", {"invoice": invoice, "firm": firm, "pay_url": pay_url, "view_url": view_url}
    )


def statement_cache_key(
    invoices: list[InvoiceSnapshot],
    firm: FirmProfile,
    *,
    client_name: str,
    pay_url: str | None,
    statement_date: dt.date,
) -> str:
    """The key for exactly what render_statement_pdf is given."""
    return pdf_cache_key(
        "statement",
        {
            "invoices": invoices,
            "firm": firm,
            "client_name": client_name,
            "pay_url": pay_url,
            "statement_date": statement_date,
        },
    )


# --- process pool entry points ----------------------------------------------------------
# A worker process is given plain dicts (cheap to pickle, nothing of the database or the
# bus) and imports only this module.


_COLLECT_PER_JOB = False  # set in a pool worker (start_worker)


def start_worker() -> None:
    """ProcessPoolExecutor initializer: build fonts and stylesheet before the first job, and
    leave when the process that started the pool is gone (a killed service must not leave
    workers behind, blocked on a queue nobody feeds)."""
    _resources()
    html_to_pdf("<p>warm</p>")  # the first layout loads fonts and shaping caches: not in a job
    # Garbage collection by the job, not by allocation counts. A layout makes millions of
    # objects, and the collector, run every 700 allocations, went through them (and through
    # WeasyPrint's fonts and caches, alive as long as the worker) again and again: a fifth
    # of each render. What exists now is frozen out of its sight; each job's cyclic
    # garbage is collected once, when the job ends (bench/render_pdfs.py: 160 -> 128 ms of
    # CPU per invoice, the same peak memory).
    global _COLLECT_PER_JOB
    gc.collect()
    gc.freeze()
    gc.disable()
    _COLLECT_PER_JOB = True
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(0)

    threading.Thread(target=watch, name="pdf-worker-watch", daemon=True).start()


def render_job(kind: str, args: dict[str, Any]) -> tuple[bytes, int]:
    """Render one PDF from plain values, as pdf_cache_key(kind, args) keys it; returns the
    PDF and the pid of the process that rendered it."""
    if kind == "invoice":
        content = render_invoice_pdf(
            InvoiceSnapshot.model_validate(args["invoice"]),
            FirmProfile.model_validate(args["firm"]),
            pay_url=args["pay_url"],
            view_url=args.get("view_url"),
        )
    elif kind == "statement":
        content = render_statement_pdf(
            [InvoiceSnapshot.model_validate(i) for i in args["invoices"]],
            FirmProfile.model_validate(args["firm"]),
            client_name=args["client_name"],
            pay_url=args["pay_url"],
            statement_date=dt.date.fromisoformat(args["statement_date"]),
        )
    else:
        raise ValueError(f"unknown PDF kind {kind!r}")
    if _COLLECT_PER_JOB:
        gc.collect()
    return content, os.getpid()
