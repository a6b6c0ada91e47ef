"""What a batch of sends is made of, read before the sends' transaction: each send's envelope
with the firm's profile, its bills and, for PDF delivery, its PDFs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import suppressions
from services.envelope.compose import ComposedEmail
from services.envelope.models import Envelope, Firm, Invoice
from services.envelope.rendering import Renderer
from services.envelope.rules import (
    REMOVED_STATES,
    Refusal,
    bill_filename,
    carries_statement,
    statement_filename,
)
from shared.events import Delivery, EnvelopeSendRequested, FirmProfile
from shared.schema import firm_profile as profile_of


@dataclass(frozen=True)
class PreparedSend:
    """A send's inputs, read before its transaction, and its PDFs."""

    envelope: Envelope
    firm: FirmProfile
    invoices: list[Invoice]
    attachments: list[dict[str, str]]
    # The firm's suppressed addresses among the send's recipients, with why (suppressions.py).
    suppressed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SendOutcome:
    """A send as decided: its email, or why it has none (`refusal`, `error`)."""

    ev: EnvelopeSendRequested
    inputs: PreparedSend
    composed: ComposedEmail | None
    refusal: Refusal | None
    error: str | None


async def read_sends(
    s: AsyncSession,
    evs: list[EnvelopeSendRequested],
    renderer: Renderer,
    *,
    with_pdfs: bool,
) -> dict[str, PreparedSend]:
    """What each send is made of, by send id: its envelope with the firm's profile, its
    bills and (`with_pdfs`, for PDF delivery) its PDFs; a send whose envelope does not
    exist (for its firm) is left out. A read per kind for all the sends together; with
    PDFs, `s` is left closed (see `Renderer.ensure_for_emails`)."""
    found = await s.execute(
        select(Envelope, Firm.profile)
        .outerjoin(Firm, Firm.firm_id == Envelope.firm_id)
        .where(Envelope.id.in_({ev.envelope_id for ev in evs}))
    )
    envelopes = {env.id: (env, profile_of(profile)) for env, profile in found}
    wanted: dict[str, list[str]] = {}  # send id -> its bills' ids
    for ev in evs:
        env_firm = envelopes.get(ev.envelope_id)
        if env_firm is not None and env_firm[0].firm_id == ev.firm_id:
            wanted[ev.send_id] = ev.invoice_ids or json.loads(env_firm[0].invoice_ids)
    by_firm: dict[str, set[str]] = {}
    for ev in evs:
        if ev.send_id in wanted:
            by_firm.setdefault(ev.firm_id, set()).update(wanted[ev.send_id])
    bills: dict[tuple[str, str], Invoice] = {}
    for firm_id, ids in by_firm.items():
        for inv in await s.scalars(
            select(Invoice).where(Invoice.firm_id == firm_id, Invoice.invoice_id.in_(ids))
        ):
            bills[(firm_id, inv.invoice_id)] = inv
    out: dict[str, PreparedSend] = {}
    for ev in evs:
        if ev.send_id not in wanted:
            continue
        env, firm = envelopes[ev.envelope_id]
        # A bill voided or deleted in Clio since it was put in the envelope is left out.
        invoices = [
            bills[(ev.firm_id, i)]
            for i in wanted[ev.send_id]
            if (ev.firm_id, i) in bills and bills[(ev.firm_id, i)].state not in REMOVED_STATES
        ]
        out[ev.send_id] = PreparedSend(env, firm, invoices, [])
    # Suppressed recipients (a hard bounce): one read per firm for all its sends.
    recipients: dict[str, set[str]] = {}
    for ev in evs:
        if ev.send_id in out:
            recipients.setdefault(ev.firm_id, set()).update(ev.to)
    for firm_id, addresses in recipients.items():
        blocked = await suppressions.messages(s, firm_id, addresses)
        for ev in evs:
            p = out.get(ev.send_id)
            if blocked and p is not None and ev.firm_id == firm_id:
                mine = {a.strip().lower() for a in ev.to} & set(blocked)
                out[ev.send_id] = replace(p, suppressed={a: blocked[a] for a in mine})
    if with_pdfs:
        await _add_attachments(s, evs, out, renderer)
    return out


async def _add_attachments(
    s: AsyncSession,
    evs: list[EnvelopeSendRequested],
    sends: dict[str, PreparedSend],
    renderer: Renderer,
) -> None:
    """Each PDF-delivery send's PDFs, into `sends`: each bill's own and, when there are
    several, first the statement of them all with its Pay All link; all normally
    rendered ahead of time, found with two reads per firm in `s` (left closed)."""
    today = datetime.now(UTC).date()
    by_firm: dict[str, list[str]] = {}
    for ev in evs:
        prepared = sends.get(ev.send_id)
        if ev.delivery == Delivery.attachment and prepared is not None and prepared.invoices:
            by_firm.setdefault(ev.firm_id, []).append(ev.send_id)
    for firm_id, send_ids in by_firm.items():
        emails = [sends[i] for i in send_ids]
        found = await renderer.ensure_for_emails(
            s,
            firm_id,
            emails[0].firm,
            [
                (
                    p.invoices,
                    p.envelope.client_name if carries_statement(len(p.invoices)) else None,
                )
                for p in emails
            ],
            statement_date=today,
        )
        for send_id, p, (keys, statement) in zip(send_ids, emails, found, strict=True):
            files = [
                {"filename": bill_filename(i.kind, i.number), "pdf_key": keys[i.invoice_id]}
                for i in p.invoices
                if i.invoice_id in keys
            ]
            if statement is not None:
                files.insert(0, {"filename": statement_filename(today), "pdf_key": statement})
            sends[send_id] = replace(p, attachments=files)
