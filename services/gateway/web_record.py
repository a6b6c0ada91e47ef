"""To record in Clio: Clio's public API cannot record a payment against a bill, so every
payment made here (card or ACH, one bill or Pay All) is listed, bill by bill, for the firm to
enter in Clio, with a link to the bill there and what to enter. An item leaves the list when
the next sync shows Clio counts it, or when a firm user marks it recorded (audited: who and
when). The CSV export of the list is safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway.clients.base import Refused, ServiceUnavailable
from services.gateway.clients.payments import PaymentsClient
from services.gateway.clients.record import RecordClient
from services.gateway.deps import (
    CurrentUser,
    FormUser,
    SettingsDep,
    SyncClientDep,
    payments_client,
    show,
)
from services.gateway.settings import GatewaySettings
from shared.api.record import MAX_MARK, RecordItemOut
from shared.api.sync import ClioStatus
from shared.money import to_decimal

# Clio's web app per region; outside production the Clio sandbox stands in for it.
ID_RE = re.compile(r"^[1-9]\d{0,8}$")
CSV_HEADER = (
    "paid_at",
    "client",
    "bill",
    "kind",
    "amount",
    "currency",
    "method",
    "payer",
    "payer_email",
    "reference",
    "payment_id",
    "clio_link",
)


def record_client(payments: Annotated[PaymentsClient, Depends(payments_client)]) -> RecordClient:
    return RecordClient(getattr(payments, "http", None))


RecordClientDep = Annotated[RecordClient, Depends(record_client)]
router = APIRouter()


def clio_app_url(status: ClioStatus) -> str | None:
    """Where the firm's bills are in Clio's web app: its connection's region host, as sync
    reports it. None: not connected (no links)."""
    return status.app_url.rstrip("/") if status.connected and status.app_url else None


async def clio_base(sync: Any, firm_id: str) -> str | None:
    """`clio_app_url` of the firm's connection; a sync that does not answer leaves the
    links out (production) rather than the page."""
    try:
        status = await sync.clio(firm_id)
    except ServiceUnavailable:
        status = ClioStatus(connected=False)
    return clio_app_url(status)


def bill_link(base: str | None, item: RecordItemOut) -> str | None:
    if not base or not item.source_id or not item.invoice_id.startswith("clio:"):
        return None  # a LEDES import has no bill in Clio
    return f"{base}/nc/#/bills/{quote(item.source_id, safe='')}"


def method_label(item: RecordItemOut) -> str:
    if item.method == "ach":
        return f"Bank (ACH) •••• {item.last4}" if item.last4 else "Bank (ACH)"
    return f"Card •••• {item.last4}" if item.last4 else "Card"


def amount_text(minor: int, currency: str) -> str:
    return str(to_decimal(minor, currency))


def totals(items: list[RecordItemOut]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for i in items:
        out[i.currency] += i.amount_minor
    return dict(out)


def safe_cell(value: Any) -> str:
    """Text a spreadsheet will not run as a formula (names and emails come from clients)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r", "|", "%") else text


def csv_text(items: list[RecordItemOut], base: str | None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for i in items:
        writer.writerow(
            [
                safe_cell(i.paid_at.isoformat() if i.paid_at else ""),
                safe_cell(i.client_name),
                safe_cell(i.number),
                safe_cell("trust request" if i.kind == "trust_request" else "invoice"),
                amount_text(i.amount_minor, i.currency),
                safe_cell(i.currency),
                safe_cell(method_label(i)),
                safe_cell(i.payer_name),
                safe_cell(i.payer_email),
                safe_cell(i.reference),
                safe_cell(i.payment_id),
                safe_cell(bill_link(base, i)),
            ]
        )
    return buffer.getvalue()


def parse_ids(form: Any) -> list[int]:
    """The ids a form names: the row's own button (`one`) or the checked rows (`ids`).
    ValueError when there is none, too many, or one that is not an id."""
    one = form.get("one")
    raw = [one] if one else form.getlist("ids")
    if not raw:
        raise ValueError("Select at least one item to mark recorded.")
    if len(raw) > MAX_MARK:
        raise ValueError(f"Mark at most {MAX_MARK} items at once.")
    if not all(isinstance(v, str) and ID_RE.match(v) for v in raw):
        raise ValueError("Those items are not on your list. Reload the page.")
    return sorted({int(v) for v in raw})


async def page(
    request: Request,
    user: Any,
    record: RecordClient,
    sync: Any,
    settings: GatewaySettings,
    status_code: int = 200,
    error: str | None = None,
) -> HTMLResponse:
    data = await record.items(user.firm_id)
    base = await clio_base(sync, user.firm_id)
    marked = request.query_params.get("marked", "")
    return show(
        request,
        "record.html",
        user,
        status_code=status_code,
        pending=data.pending,
        recorded=data.recorded,
        totals=totals(data.pending),
        base=base,
        bill_link=bill_link,
        method_label=method_label,
        error=error,
        marked=int(marked) if marked.isdigit() and len(marked) < 7 else None,
    )


@router.get("/record", response_class=HTMLResponse)
async def record_page(
    request: Request,
    user: CurrentUser,
    record: RecordClientDep,
    sync: SyncClientDep,
    settings: SettingsDep,
) -> HTMLResponse:
    return await page(request, user, record, sync, settings)


@router.get("/record.csv")
async def record_csv(
    user: CurrentUser, record: RecordClientDep, sync: SyncClientDep, settings: SettingsDep
) -> Response:
    data = await record.items(user.firm_id)
    base = await clio_base(sync, user.firm_id)
    filename = f"to-record-in-clio-{datetime.now(UTC):%Y-%m-%d}.csv"
    return Response(
        csv_text(data.pending, base),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/record/mark", response_model=None)
async def mark_recorded(
    request: Request,
    user: FormUser,
    record: RecordClientDep,
    sync: SyncClientDep,
    settings: SettingsDep,
) -> Response:
    form = await request.form()
    try:
        ids = parse_ids(form)
    except ValueError as exc:
        return await page(request, user, record, sync, settings, status_code=400, error=str(exc))
    try:
        marked = await record.mark(user.firm_id, ids, user.name or user.email)
    except Refused as refused:
        if refused.status not in (404, 422):
            raise HTTPException(status_code=400, detail=refused.message) from refused
        error = (
            refused.message
            if isinstance(refused.detail, (str, dict)) and refused.message
            else "Those items are not on your list. Reload the page."
        )
        return await page(
            request, user, record, sync, settings, status_code=refused.status, error=error
        )
    return RedirectResponse(f"/record?marked={marked}", status_code=303)
