"""LEDES 1998B invoices into the system: parsed invoices become snapshots published as
`invoice.updated` (source "ledes"), like Clio's bills, once their client has an email.

What the format lacks comes from elsewhere: the due date from the upload (a date, or a term in
days from the invoice date), the client's name and email from the firm (LedesClient), the
balance is the total less what was paid here. LEDES has no source system that records a
payment, so sync keeps what was paid online (payment.* events) for these invoices itself:
a paid invoice's state becomes paid, and a re-import never reopens it (see `reimport_refusal`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync import ledes
from services.sync.models import LedesClient, LedesImport, LedesInvoice
from shared.api.ledes import (
    ClientEmail,
    ClientEmailResult,
    ClientNeedingEmail,
    ImportedInvoice,
    ImportOptions,
    ImportResult,
    LineProblem,
    SkippedInvoice,
)
from shared.events import (
    InvoiceKind,
    InvoiceSnapshot,
    InvoiceState,
    InvoiceUpdated,
    LineItem,
    PaymentEvent,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
)
from shared.outbox import add_events
from shared.runtime import Service

PREFIX = "ledes:"
EMAIL_RE = re.compile(r"^(?:(?![@<>,;])[!-~])+@[^@\s<>,;]+\.[^@\s<>,;]+$")
_SAFE_REF = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
CHUNK = 500  # ids in one IN (...): well under every driver's parameter limit


class UnknownClient(LookupError):
    pass


class BadEmail(ValueError):
    pass


# --- pure rules ---------------------------------------------------------------------------


def invoice_id_for(key: tuple[str, str, str]) -> str:
    """One id per (LAW_FIRM_ID, CLIENT_ID, INVOICE_NUMBER): a re-import finds its invoice.
    Hashed, since the file's ids may hold anything but | and end up in URLs."""
    digest = hashlib.sha256("\x1f".join(key).encode()).hexdigest()[:32]
    return f"{PREFIX}{digest}"


def client_id_for(client_ref: str) -> str:
    """The client id invoices carry: its own CLIENT_ID when that is URL-safe, never one that
    can collide with a Clio contact id."""
    if _SAFE_REF.match(client_ref):
        return f"ledes-{client_ref}"
    return "ledes-" + hashlib.sha256(client_ref.encode()).hexdigest()[:24]


def due_date(issued: date | None, options: ImportOptions) -> date | None:
    if options.due_date is not None:
        return options.due_date
    return issued + timedelta(days=options.due_days) if issued else None


def build_snapshot(
    inv: ledes.Invoice,
    *,
    client_name: str,
    client_email: str | None,
    due_at: date | None,
    paid_minor: int = 0,
) -> InvoiceSnapshot:
    total = inv.total_minor
    snap = InvoiceSnapshot(
        invoice_id=invoice_id_for(inv.key),
        source="ledes",
        source_id=f"{inv.law_firm_id}/{inv.client_id}/{inv.number}",
        number=inv.number,
        kind=InvoiceKind.invoice,
        state=InvoiceState.awaiting_payment,
        client_id=client_id_for(inv.client_id),
        client_name=client_name or inv.client_id,
        client_email=client_email,
        matter_id=inv.fields["LAW_FIRM_MATTER_ID"] or None,
        matter_number=inv.fields["LAW_FIRM_MATTER_ID"] or None,
        subject=inv.fields["INVOICE_DESCRIPTION"] or None,
        issued_at=inv.date_of("INVOICE_DATE"),
        due_at=due_at,
        currency="USD",
        total_minor=total,
        balance_minor=total,
        line_items=[
            LineItem(
                kind=item.kind,  # type: ignore[arg-type]
                date=item.date,
                description=item.description,
                quantity=item.units,
                rate_minor=item.unit_cost_minor,
                total_minor=item.total_minor,
            )
            for item in inv.items
        ],
    )
    return with_payments(snap, paid_minor)


def reimport_refusal(stored: InvoiceSnapshot | None, paid_minor: int, new_total: int) -> str | None:
    """Why a re-imported invoice is left as it is, or None to update it.

    An invoice paid in full here stays paid: the file is a copy of the firm's billing system,
    which does not know of the payment, so its balance there is no reason to ask the client
    again. One partly paid here is updated, its balance the new total less what was paid,
    unless that total is less than what was paid (a refund is the firm's to make)."""
    if stored is None:
        return None
    if paid_minor > 0 and paid_minor >= stored.total_minor:
        return "already paid here; a re-import does not reopen a paid invoice"
    if paid_minor > new_total:
        return "its new total is less than what was already paid here"
    return None


def with_payments(snap: InvoiceSnapshot, paid_minor: int) -> InvoiceSnapshot:
    balance = max(snap.total_minor - paid_minor, 0)
    state = InvoiceState.paid if balance <= 0 and paid_minor > 0 else InvoiceState.awaiting_payment
    return snap.model_copy(
        update={"paid_minor": paid_minor, "balance_minor": balance, "state": state}
    )


# --- the import -----------------------------------------------------------------------------


class LedesImporter:
    def __init__(self, service: Service) -> None:
        self.service = service
        # One import or email change per firm at a time: two uploads of one file must not
        # both insert the same invoice.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def import_file(self, firm_id: str, data: bytes, options: ImportOptions) -> ImportResult:
        parsed = ledes.parse(data)
        async with self._locks[firm_id]:
            async with self.service.sessionmaker() as s, s.begin():
                return await self._import(s, firm_id, parsed, options)

    async def _import(
        self, s: AsyncSession, firm_id: str, parsed: ledes.Parsed, options: ImportOptions
    ) -> ImportResult:
        now = datetime.now(UTC)
        record = LedesImport(
            firm_id=firm_id,
            filename=options.filename[:300],
            uploaded_at=now,
            imported=0,
            skipped=0,
            report="{}",
        )
        s.add(record)
        await s.flush()
        result = ImportResult(import_id=record.id, filename=record.filename, uploaded_at=now)
        result.problems = [LineProblem(line=e.line, reason=e.reason) for e in parsed.errors]
        for inv in parsed.bad:
            result.skipped.append(_skipped(inv, [(e.line, e.reason) for e in inv.errors]))
        clients = await self._clients(s, firm_id, {i.client_id for i in parsed.good}, now)
        existing = await self._existing(s, firm_id, [invoice_id_for(i.key) for i in parsed.good])
        events: list[InvoiceUpdated] = []
        for inv in parsed.good:
            client = clients[inv.client_id]
            row = existing.get(invoice_id_for(inv.key))
            stored = InvoiceSnapshot.model_validate_json(row.snapshot) if row else None
            paid = row.paid_minor if row else 0
            refusal = reimport_refusal(stored, paid, inv.total_minor)
            if refusal:
                result.skipped.append(_skipped(inv, [(inv.first_line, refusal)]))
                continue
            snap = build_snapshot(
                inv,
                client_name=client.name,
                client_email=client.email,
                due_at=due_date(inv.date_of("INVOICE_DATE"), options),
                paid_minor=paid,
            )
            outcome = "new" if row is None else "updated"
            if row is None:
                row = LedesInvoice(
                    firm_id=firm_id,
                    invoice_id=snap.invoice_id,
                    law_firm_id=inv.law_firm_id,
                    client_ref=inv.client_id,
                    number=inv.number,
                    paid_minor=0,
                )
                s.add(row)
            elif stored == snap and (row.published_at or not client.email):
                outcome = "unchanged"
            row.import_id = record.id
            if outcome != "unchanged":
                row.snapshot = snap.model_dump_json()
                row.updated_at = now
                if client.email:
                    row.published_at = now
                    events.append(InvoiceUpdated(firm_id=firm_id, invoice=snap))
            result.imported.append(
                ImportedInvoice(
                    invoice_id=snap.invoice_id,
                    number=inv.number,
                    client_ref=inv.client_id,
                    client_name=snap.client_name,
                    total_minor=snap.total_minor,
                    outcome=outcome,
                    published=row.published_at is not None,
                )
            )
        await add_events(s, self.service.outbox, [(ev, None) for ev in events])
        result.clients_needing_email = await needing_email(s, firm_id, result)
        record.imported = len(result.imported)
        record.skipped = len(result.skipped)
        record.report = result.model_dump_json()
        return result

    async def _clients(
        self, s: AsyncSession, firm_id: str, refs: set[str], now: datetime
    ) -> dict[str, LedesClient]:
        found = {
            c.client_ref: c
            for c in await s.scalars(
                select(LedesClient).where(
                    LedesClient.firm_id == firm_id, LedesClient.client_ref.in_(refs)
                )
            )
        }
        for ref in sorted(refs - set(found)):
            found[ref] = LedesClient(firm_id=firm_id, client_ref=ref, name=ref, updated_at=now)
            s.add(found[ref])
        await s.flush()
        return found

    async def _existing(
        self, s: AsyncSession, firm_id: str, invoice_ids: list[str]
    ) -> dict[str, LedesInvoice]:
        """The file's invoices imported before, locked until the import commits (a payment
        arriving meanwhile waits, so the balance written counts it)."""
        found: dict[str, LedesInvoice] = {}
        for start in range(0, len(invoice_ids), CHUNK):
            rows = await s.scalars(
                select(LedesInvoice)
                .where(LedesInvoice.firm_id == firm_id)
                .where(LedesInvoice.invoice_id.in_(invoice_ids[start : start + CHUNK]))
                .with_for_update()
            )
            found.update((r.invoice_id, r) for r in rows)
        return found

    # --- the client's email -------------------------------------------------------------

    async def set_client(self, firm_id: str, body: ClientEmail) -> ClientEmailResult:
        """Give a client its email (and name): every invoice of it is (re)published."""
        email = body.email.strip()
        if not EMAIL_RE.match(email):
            raise BadEmail(f"{email!r} is not an email address")
        name = (body.name or "").strip()
        async with self._locks[firm_id]:
            async with self.service.sessionmaker() as s, s.begin():
                client = await s.scalar(
                    select(LedesClient).where(
                        LedesClient.firm_id == firm_id, LedesClient.client_ref == body.client_ref
                    )
                )
                if client is None:
                    raise UnknownClient(body.client_ref)
                now = datetime.now(UTC)
                client.email = email
                client.name = name or client.name
                client.updated_at = now
                rows = await s.scalars(
                    select(LedesInvoice)
                    .where(LedesInvoice.firm_id == firm_id)
                    .where(LedesInvoice.client_ref == body.client_ref)
                    .order_by(LedesInvoice.id)
                    .with_for_update()
                )
                events: list[InvoiceUpdated] = []
                for row in rows:
                    snap = InvoiceSnapshot.model_validate_json(row.snapshot).model_copy(
                        update={"client_email": email, "client_name": client.name}
                    )
                    row.snapshot = snap.model_dump_json()
                    row.updated_at = row.published_at = now
                    events.append(InvoiceUpdated(firm_id=firm_id, invoice=snap))
                await add_events(s, self.service.outbox, [(ev, None) for ev in events])
        return ClientEmailResult(client_ref=body.client_ref, published=len(events))

    # --- payments made here ---------------------------------------------------------------

    async def on_payment(self, s: AsyncSession, ev: PaymentEvent) -> None:
        """What was paid online on LEDES invoices: they have no other source of payments."""
        if isinstance(ev, PaymentSucceeded):
            sign = 1
        elif isinstance(ev, PaymentRefunded) or (isinstance(ev, PaymentFailed) and ev.returned):
            sign = -1
        else:
            return  # a failed ACH debit never counted as paid
        for alloc in ev.allocations:
            if not alloc.invoice_id.startswith(PREFIX):
                continue
            row = await s.scalar(
                select(LedesInvoice)
                .where(LedesInvoice.firm_id == ev.firm_id)
                .where(LedesInvoice.invoice_id == alloc.invoice_id)
                .with_for_update()
            )
            if row is None:
                continue
            row.paid_minor = max(row.paid_minor + sign * alloc.amount_minor, 0)
            snap = with_payments(InvoiceSnapshot.model_validate_json(row.snapshot), row.paid_minor)
            row.paid_at = ev.occurred_at if snap.state == InvoiceState.paid else None
            row.snapshot = snap.model_dump_json()
            row.updated_at = datetime.now(UTC)
            if row.published_at is not None:
                await self.service.publish(s, InvoiceUpdated(firm_id=ev.firm_id, invoice=snap))

    # --- reading back ---------------------------------------------------------------------

    async def result(self, firm_id: str, import_id: int) -> ImportResult | None:
        async with self.service.sessionmaker() as s:
            record = await s.get(LedesImport, import_id)
            if record is None or record.firm_id != firm_id:
                return None
            result = ImportResult.model_validate_json(record.report)
            # Names and emails given since: the invoices show as they are now.
            refs = {i.client_ref for i in result.imported}
            clients = {
                c.client_ref: c
                for c in await s.scalars(
                    select(LedesClient).where(
                        LedesClient.firm_id == firm_id, LedesClient.client_ref.in_(refs)
                    )
                )
            }
            for inv in result.imported:
                client = clients.get(inv.client_ref)
                if client is not None:
                    inv.client_name = client.name
                    inv.published = inv.published or client.email is not None
            result.clients_needing_email = await needing_email(s, firm_id, result)
            return result

    async def imports(self, firm_id: str, limit: int = 20) -> list[LedesImport]:
        async with self.service.sessionmaker() as s:
            rows = await s.scalars(
                select(LedesImport)
                .where(LedesImport.firm_id == firm_id)
                .order_by(LedesImport.id.desc())
                .limit(limit)
            )
            return list(rows)


async def needing_email(
    s: AsyncSession, firm_id: str, result: ImportResult
) -> list[ClientNeedingEmail]:
    """The clients of this import's invoices that still have no email, as of now."""
    counts: dict[str, int] = defaultdict(int)
    for inv in result.imported:
        counts[inv.client_ref] += 1
    if not counts:
        return []
    rows = await s.scalars(
        select(LedesClient)
        .where(LedesClient.firm_id == firm_id, LedesClient.client_ref.in_(list(counts)))
        .where(LedesClient.email.is_(None))
        .order_by(LedesClient.client_ref)
    )
    return [
        ClientNeedingEmail(client_ref=c.client_ref, name=c.name, invoices=counts[c.client_ref])
        for c in rows
    ]


def _skipped(inv: ledes.Invoice, problems: list[tuple[int, str]]) -> SkippedInvoice:
    return SkippedInvoice(
        number=inv.number,
        client_ref=inv.client_id,
        law_firm_id=inv.law_firm_id,
        first_line=inv.first_line,
        problems=[LineProblem(line=n, reason=r) for n, r in sorted(problems)],
    )
