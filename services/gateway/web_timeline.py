"""An envelope's timeline page (`/envelopes/{id}/timeline`), reached from the Invoices page's
Email column, and Clear of a suppressed address (the Invoices page's bounce alert).

What each line and state is called lives here (`LINE_LABELS`, `email_label`), so the
Invoices page and the timeline read the same."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services.gateway.clients.timeline import TimelineClient, timeline_client
from services.gateway.deps import CurrentUser, FormUser, ServiceDep, show
from services.gateway.firms import zone_of
from services.gateway.models import Firm
from shared.api.timeline import TimelineLine, TimelineOut
from shared.runtime import Service

router = APIRouter()
TimelineDep = Annotated[TimelineClient, Depends(timeline_client)]

# A bill's email state on the Invoices page: (label, badge css).
STATE_LABELS: dict[str, tuple[str, str]] = {
    "queued": ("Queued", "muted"),
    "sent": ("Sent", "processing"),
    "delayed": ("Delayed", "unpaid"),
    "delivered": ("Delivered", "processing"),
    "opened": ("Opened", "paid"),
    "clicked": ("Clicked", "paid"),
    "viewed": ("Viewed", "paid"),
    "bounced": ("Bounced", "void"),
    "failed": ("Failed", "void"),
}
TARGETS = {"view_invoice": "View Invoice", "pay_online": "Pay Online", "pay_all": "Pay All"}


async def firm_zone(service: Service, firm_id: str) -> tzinfo:
    """The firm's time zone where the gateway knows it, else UTC."""
    async with service.sessionmaker() as s:
        firm = await s.get(Firm, firm_id)
    return zone_of(firm.time_zone if firm else None)


def when(at: datetime | None, zone: tzinfo = UTC) -> str:
    """ "Dec 7, 14:02" in the firm's zone (with the year when not this year's)."""
    if at is None:
        return ""
    local = at.astimezone(zone)
    now = datetime.now(zone)
    day = f"{local:%b} {local.day}" + ("" if local.year == now.year else f", {local.year}")
    return f"{day}, {local:%H:%M}"


def email_label(
    event: str | None, at: datetime | None, status: str | None, zone: tzinfo = UTC
) -> tuple[str, str, str]:
    """(label, time, css) of a bill's latest email: its tracked state, else its send status.
    "Sent" shows no time of its own: Last Sent, beside it, is that time."""
    state = event or status
    if not state:
        return "", "", ""
    label, css = STATE_LABELS.get(state, (state.capitalize(), "muted"))
    return label, (when(at, zone) if event and event != "sent" else ""), css


def _page(detail: str | None, numbers: dict[str, str]) -> str:
    """A client page as the timeline names it (timeline.page_of on envelope's side)."""
    if not detail:
        return "a page"
    if detail == "pay_page":
        return "the pay page"
    if detail == "statement":
        return "the statement"
    kind, _, invoice_id = detail.partition(":")
    number = numbers.get(invoice_id, invoice_id)
    if kind == "invoice":
        return f"invoice {number}"
    if kind == "pay_online":
        return f"the pay page for {number}"
    return "a page"


def line_text(line: TimelineLine, numbers: dict[str, str]) -> str:
    """What a timeline line says."""
    who = line.recipient or ""
    kind, detail = line.kind, line.detail
    if kind == "queued":
        return f"Queued for {who}" + (f": “{detail}”" if detail else "")
    if kind == "sent":
        return f"Sent to {who} (accepted by the mail server)"
    if kind == "refused":
        return f"Refused for {who}" + (f": {detail}" if detail else "")
    if kind == "failed":
        return f"Failed{' for ' + who if who else ''}" + (f": {detail}" if detail else "")
    if kind == "delivered":
        return f"Delivered to {who}"
    if kind == "delayed":
        return f"Delivery to {who} delayed (the server will retry)" + (
            f": {detail}" if detail else ""
        )
    if kind == "bounced":
        return f"Bounced for {who}" + (f": {detail}" if detail else "")
    if kind == "opened":
        if line.machine:
            return f"Opened by a mail privacy proxy or scanner for {who} (not counted as read)"
        return f"Opened by {who}"
    if kind == "clicked":
        target, _, page = (detail or "").partition("|")
        link = TARGETS.get(target, "a link")
        if line.machine:
            return f"{link} followed by a link scanner for {who} (not counted)"
        return f"{who} clicked {link}" + (
            f" ({_page(page, numbers)})" if page and page != "page" else ""
        )
    if kind == "viewed":
        return f"{who} viewed {_page(detail, numbers)}"
    if kind == "paid":
        return f"Paid: {detail}" if detail else "Paid"
    return f"{kind.capitalize()} {who}".strip()


LINE_CSS = {
    "sent": "processing",
    "delivered": "processing",
    "refused": "void",
    "failed": "void",
    "bounced": "void",
    "delayed": "unpaid",
    "paid": "paid",
    "opened": "paid",
    "clicked": "paid",
    "viewed": "paid",
}


@router.get("/envelopes/{envelope_id}/timeline", response_class=HTMLResponse)
async def timeline_page(
    request: Request,
    envelope_id: str,
    user: CurrentUser,
    service: ServiceDep,
    timelines: TimelineDep,
) -> HTMLResponse:
    found: TimelineOut | None = None
    if len(envelope_id) <= 64:
        found = await timelines.timeline(user.firm_id, envelope_id)
    if found is None:
        raise HTTPException(status_code=404, detail="No such envelope.")
    zone = await firm_zone(service, user.firm_id)
    label, _, css = email_label(found.state, found.state_at, None, zone)
    at = when(found.state_at, zone)
    lines: list[dict[str, Any]] = [
        {
            "when": when(line.at, zone),
            "kind": line.kind,
            "text": line_text(line, found.numbers),
            "css": "muted" if line.machine else LINE_CSS.get(line.kind, ""),
            "machine": line.machine,
        }
        for line in found.lines
    ]
    people = {x.recipient for x in found.lines if x.kind == "opened" and not x.machine}
    machines = sum(1 for x in found.lines if x.kind == "opened" and x.machine)
    return show(
        request,
        "timeline.html",
        user,
        t=found,
        state_label=label,
        state_at=at,
        state_css=css,
        lines=list(reversed(lines)),
        bills=[found.numbers.get(i, i) for i in found.invoice_ids],
        opened_by=sorted(p for p in people if p),
        machine_opens=machines,
    )


@router.post("/suppressions/clear")
async def clear_suppression(
    user: FormUser,
    timelines: TimelineDep,
    address: Annotated[str, Form(max_length=320)] = "",
) -> RedirectResponse:
    """Clear: the address may be sent to again (the firm fixed it, or it was a mistake)."""
    if not address.strip() or not await timelines.clear(user.firm_id, address.strip()):
        raise HTTPException(status_code=404, detail="That address is not suppressed.")
    return RedirectResponse("/invoices", status_code=303)
