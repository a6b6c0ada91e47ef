"""The envelope service's work: keep invoices, draft envelopes, turn send requests into
emails and client links, and keep PDFs rendered."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import template_store
from services.envelope.compose import (
    EmailItem,
    TemplateInvalid,
    compose_email,
)
from services.envelope.grouping import group_into_envelopes
from services.envelope.models import Email, Envelope, EnvelopeSend, Firm, Invoice, Link, Pdf
from services.envelope.rendering import Renderer, new_link
from services.envelope.settings import EnvelopeSettings
from shared.db import UTCDateTime, insert_unless_present
from shared.email_content import seal_content
from shared.events import (
    EmailFailed,
    EmailRequested,
    EmailSent,
    EnvelopeSendRequested,
    FirmProfile,
    FirmUpdated,
    InvoiceSnapshot,
    InvoiceUpdated,
    PaymentEvent,
    PaymentFailed,
)
from shared.runtime import Service
from shared.tokens import derive_token, hash_token

log = logging.getLogger(__name__)

SENDABLE_STATES = {"awaiting_payment", "paid"}


@dataclass(frozen=True)
class PreparedSend:
    """A send's inputs, read before its transaction, and its PDFs."""

    envelope: Envelope
    firm: FirmProfile
    invoices: list[Invoice]
    attachments: list[dict[str, str]]


@dataclass(frozen=True)
class InvoiceRef:
    invoice_id: str
    client_id: str


def _dump(value: Any) -> str:
    return json.dumps(value)


def _firm_profile(stored: str | None) -> FirmProfile:
    """A firm's profile as stored, or a placeholder before its first firm.updated."""
    if stored is None:
        return FirmProfile(name="Your law firm")
    return FirmProfile.model_validate_json(stored)


def payment_status(paid: int, processing: int, refunded: int) -> str | None:
    """What the firm sees of a bill's online payments."""
    if processing > 0:
        return "processing"
    if paid > 0:
        return "paid_online"
    if refunded > 0:
        return "refunded"
    return None


def _build_send_statements() -> tuple[Any, Any, Any, Any]:
    """The statements of a send applied per row (executemany), built once."""
    sends, envelopes, invoices = EnvelopeSend.__table__, Envelope.__table__, Invoice.__table__
    for_send = (
        update(envelopes)
        .where(envelopes.c.id == bindparam("b_id"))
        .values(
            to=bindparam("b_to"),
            cc=bindparam("b_cc"),
            subject=bindparam("b_subject"),
            body=bindparam("b_body"),
            delivery=bindparam("b_delivery"),
        )
    )
    send_sent = (
        update(sends)
        .where(sends.c.send_id == bindparam("b_send"), sends.c.firm_id == bindparam("b_firm"))
        .values(status="sent", sent_at=bindparam("b_at"), message_id=bindparam("b_message"))
    )
    at = bindparam("b_at", type_=UTCDateTime())
    last = envelopes.c.last_sent_at
    envelope_sent = (
        update(envelopes)
        .where(envelopes.c.id == bindparam("b_id"))
        .values(status="sent", last_sent_at=case((or_(last.is_(None), last < at), at), else_=last))
    )
    invoice_sent = (
        update(invoices)
        .where(
            invoices.c.firm_id == bindparam("b_firm"),
            invoices.c.invoice_id == bindparam("b_invoice"),
            or_(invoices.c.last_sent_at.is_(None), invoices.c.last_sent_at <= at),
        )
        .values(last_sent_at=at, email_status="sent")
    )
    return for_send, send_sent, envelope_sent, invoice_sent


(
    _UPDATE_ENVELOPE_FOR_SEND,
    _UPDATE_SEND_SENT,
    _UPDATE_ENVELOPE_SENT,
    _UPDATE_INVOICE_SENT,
) = _build_send_statements()


class Desk:
    def __init__(self, service: Service, settings: EnvelopeSettings) -> None:
        self.service = service
        self.settings = settings
        self.renderer = Renderer(service, settings, self)

    # --- links ---------------------------------------------------------------------------

    def send_token(self, send_id: str) -> str:
        return derive_token(self.settings.link_secret, "send", send_id)

    def invoice_token(self, firm_id: str, invoice_id: str) -> str:
        return derive_token(self.settings.link_secret, "invoice", firm_id, invoice_id)

    def statement_token(self, firm_id: str, invoice_ids: list[str]) -> str:
        # The statement of a set of bills has one Pay All link, whichever email carries it.
        return derive_token(self.settings.link_secret, "statement", firm_id, *sorted(invoice_ids))

    def view_url(self, token: str, invoice_id: str) -> str:
        return f"{self.settings.public_base_url}/v/{token}/{invoice_id}"

    def pay_url(self, token: str, invoice_id: str | None = None) -> str:
        base = f"{self.settings.public_base_url}/pay/{token}"
        return f"{base}?invoice={invoice_id}" if invoice_id else base

    def statement_url(self, token: str) -> str:
        return f"{self.settings.public_base_url}/v/{token}/statement"

    # --- firms and invoices --------------------------------------------------------------

    async def firm(self, s: AsyncSession, firm_id: str) -> FirmProfile:
        row = await s.get(Firm, firm_id)
        return _firm_profile(row.profile if row is not None else None)

    async def on_firm_updated(self, s: AsyncSession, ev: FirmUpdated) -> None:
        row = await s.get(Firm, ev.firm_id)
        if row is None:
            row = Firm(firm_id=ev.firm_id)
            s.add(row)
        elif row.updated_at and row.updated_at.replace(tzinfo=UTC) > ev.occurred_at:
            return  # an older profile arriving late
        before = row.profile
        row.profile = ev.firm.model_dump_json()
        row.updated_at = ev.occurred_at
        self.renderer.firm_changed_after_commit(s, ev.firm_id, before, row.profile)

    async def on_invoice_updated(self, s: AsyncSession, ev: InvoiceUpdated) -> None:
        snap = ev.invoice
        row = await s.scalar(
            select(Invoice).where(
                Invoice.firm_id == ev.firm_id, Invoice.invoice_id == snap.invoice_id
            )
        )
        if row is None:
            row = Invoice(firm_id=ev.firm_id, invoice_id=snap.invoice_id, paid_online_minor=0)
            s.add(row)
        elif row.event_at is not None and ev.occurred_at <= row.event_at:
            return  # a newer snapshot is already here
        row.event_at = ev.occurred_at
        row.snapshot = snap.model_dump_json()
        row.client_id = snap.client_id
        row.client_name = snap.client_name
        row.number = snap.number
        row.kind = snap.kind
        row.state = snap.state
        row.issued_at = snap.issued_at
        row.due_at = snap.due_at
        row.currency = snap.currency
        row.total_minor = snap.total_minor
        row.balance_minor = snap.balance_minor
        row.updated_at = datetime.now(UTC)
        # Its PDF is rendered ahead of time, in the background, once this is committed.
        self.renderer.schedule_after_commit(s, ev.firm_id, snap.invoice_id)

    async def list_invoices(
        self,
        firm_id: str,
        *,
        q: str = "",
        state: str = "all",
        kind: str = "all",
        page: int = 1,
        per_page: int = 25,
        ids: list[str] | None = None,
    ) -> tuple[list[Invoice], int]:
        stmt: Select[Any] = select(Invoice).where(Invoice.firm_id == firm_id)
        if ids:
            stmt = stmt.where(Invoice.invoice_id.in_(ids))
        if q.strip():
            like = f"%{q.strip().lower()}%"
            stmt = stmt.where(
                or_(
                    func.lower(Invoice.client_name).like(like),
                    func.lower(Invoice.number).like(like),
                )
            )
        if state == "unpaid":
            # Paid online (or processing) here but not yet recorded in Clio is not unpaid.
            stmt = stmt.where(
                Invoice.state == "awaiting_payment",
                Invoice.balance_minor > 0,
                or_(
                    Invoice.payment_status.is_(None),
                    Invoice.payment_status.not_in(("paid_online", "processing")),
                ),
            )
        elif state == "paid":
            stmt = stmt.where(or_(Invoice.state == "paid", Invoice.payment_status == "paid_online"))
        elif state in {"draft", "awaiting_payment", "void"}:
            stmt = stmt.where(Invoice.state == state)
        if kind in {"invoice", "trust_request"}:
            stmt = stmt.where(Invoice.kind == kind)
        async with self.service.sessionmaker() as s:
            total = await s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = await s.scalars(
                stmt.order_by(Invoice.issued_at.desc(), Invoice.number.desc())
                .offset((page - 1) * per_page)
                .limit(per_page)
            )
            return list(rows), total

    async def _invoices(self, s: AsyncSession, firm_id: str, ids: list[str]) -> list[Invoice]:
        rows = await s.scalars(
            select(Invoice).where(Invoice.firm_id == firm_id, Invoice.invoice_id.in_(ids))
        )
        by_id = {r.invoice_id: r for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    # --- drafting ------------------------------------------------------------------------

    async def create_drafts(
        self, firm_id: str, invoice_ids: list[str], created_by: str
    ) -> list[Envelope]:
        async with self.service.sessionmaker() as s, s.begin():
            firm = await self.firm(s, firm_id)
            template = await template_store.default_text(s, firm_id)
            invoices = [
                i
                for i in await self._invoices(s, firm_id, invoice_ids)
                if i.state in SENDABLE_STATES
            ]
            refs = [InvoiceRef(i.invoice_id, i.client_id) for i in invoices]
            groups = group_into_envelopes(
                refs,
                combine=firm.combine_envelopes,
                max_per_envelope=self.settings.max_items_per_envelope,
            )
            by_id = {i.invoice_id: i for i in invoices}
            now = datetime.now(UTC)
            envelopes = []
            for group in groups:
                first = by_id[group[0].invoice_id]
                email = InvoiceSnapshot.model_validate_json(first.snapshot).client_email
                env = Envelope(
                    id=str(uuid.uuid4()),
                    firm_id=firm_id,
                    client_id=first.client_id,
                    client_name=first.client_name,
                    invoice_ids=_dump([g.invoice_id for g in group]),
                    to=_dump([email] if email else []),
                    cc="[]",
                    subject=template.subject,
                    body=template.body,
                    delivery=firm.default_delivery,
                    status="draft",
                    created_by=created_by,
                    created_at=now,
                )
                s.add(env)
                envelopes.append(env)
        if firm.default_delivery == "attachment":
            # Their statements, ahead of time, as the invoices' own PDFs already are.
            self.renderer.schedule_statements(
                firm_id,
                [
                    (json.loads(e.invoice_ids), e.client_name)
                    for e in envelopes
                    if len(json.loads(e.invoice_ids)) > 1
                ],
            )
        return envelopes

    async def envelope(self, firm_id: str, envelope_id: str) -> Envelope | None:
        async with self.service.sessionmaker() as s:
            env = await s.get(Envelope, envelope_id)
            return env if env is not None and env.firm_id == firm_id else None

    async def sends(self, firm_id: str, envelope_id: str) -> list[EnvelopeSend]:
        async with self.service.sessionmaker() as s:
            rows = await s.scalars(
                select(EnvelopeSend)
                .where(EnvelopeSend.firm_id == firm_id, EnvelopeSend.envelope_id == envelope_id)
                .order_by(EnvelopeSend.requested_at)
            )
            return list(rows)

    async def preview(
        self, firm_id: str, env: Envelope, subject: str | None = None, body: str | None = None
    ) -> dict[str, str]:
        """The email as the client will see it, with links that lead nowhere yet."""
        async with self.service.sessionmaker() as s:
            firm = await self.firm(s, firm_id)
            invoices = await self._invoices(s, firm_id, json.loads(env.invoice_ids))
        if not invoices:
            note = "None of this envelope's bills can be sent any more."
            return {"subject": "", "html": f"<p>{note}</p>", "text": note}
        token = "preview"
        items = [self._item(i, token) for i in invoices]
        composed = compose_email(
            firm,
            env.client_name,
            items,
            subject_template=subject if subject is not None else env.subject,
            body_template=body if body is not None else env.body,
            pay_all_url=self.pay_url(token),
            view_all_url=(
                self.statement_url(token)
                if len(invoices) > 1
                else self.view_url(token, invoices[0].invoice_id)
            ),
        )
        return {"subject": composed.subject, "html": composed.html, "text": composed.text}

    def _item(self, inv: Invoice, token: str) -> EmailItem:
        snap = InvoiceSnapshot.model_validate_json(inv.snapshot)
        matter = " ".join(x for x in (snap.matter_number, snap.matter_description) if x) or None
        return EmailItem(
            invoice_id=inv.invoice_id,
            number=inv.number,
            kind=inv.kind,
            matter=matter,
            due_at=inv.due_at,
            currency=inv.currency,
            total_minor=inv.total_minor,
            balance_minor=max(0, inv.balance_minor - inv.paid_online_minor),
            view_url=self.view_url(token, inv.invoice_id),
            pay_url=self.pay_url(token, inv.invoice_id),
        )

    # --- sending -------------------------------------------------------------------------

    async def _read_sends(
        self, s: AsyncSession, evs: list[EnvelopeSendRequested], *, with_pdfs: bool
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
        envelopes = {env.id: (env, _firm_profile(profile)) for env, profile in found}
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
            invoices = [
                bills[(ev.firm_id, i)] for i in wanted[ev.send_id] if (ev.firm_id, i) in bills
            ]
            out[ev.send_id] = PreparedSend(env, firm, invoices, [])
        if with_pdfs:
            await self._add_attachments(s, evs, out)
        return out

    async def prepare_sends(self, evs: list[EnvelopeSendRequested]) -> dict[str, PreparedSend]:
        """Before the sends' transaction: what they are made of and, for PDF delivery,
        their PDFs (normally rendered ahead of time; rendered now when not). One session of
        reads, closed before any rendering: nothing here holds a transaction open. Each
        email is composed from these same reads, so its text and its PDFs agree."""
        async with self.service.sessionmaker() as s:
            return await self._read_sends(s, evs, with_pdfs=True)

    async def prepare_send(self, ev: EnvelopeSendRequested) -> PreparedSend | None:
        return (await self.prepare_sends([ev])).get(ev.send_id)

    async def on_send_requested(
        self, s: AsyncSession, ev: EnvelopeSendRequested, prepared: PreparedSend | None
    ) -> None:
        """One send (`on_sends_requested`); without `prepared`, read in its transaction
        and sent without PDFs."""
        await self.on_sends_requested(
            s, [ev], {ev.send_id: prepared} if prepared is not None else None
        )

    async def on_sends_requested(
        self,
        s: AsyncSession,
        evs: list[EnvelopeSendRequested],
        prepared: dict[str, PreparedSend] | None,
    ) -> None:
        """The sends' transaction: for each its record, the email, the client link and the
        events. A statement per kind of row for all the sends together (no ORM flush):
        a Send All makes hundreds of these."""
        if prepared is None:
            prepared = await self._read_sends(s, evs, with_pdfs=False)
        sends, envelopes = EnvelopeSend.__table__, Envelope.__table__
        now = datetime.now(UTC)
        firsts: dict[str, EnvelopeSendRequested] = {}
        for ev in evs:
            firsts.setdefault(ev.send_id, ev)  # a send requested twice is made once
        outcomes = []  # (event, its inputs, composed email or None, failure or None)
        for ev in firsts.values():
            inputs = prepared.get(ev.send_id)
            if inputs is None:
                log.error(
                    "envelope %s of firm %s does not exist; send %s dropped",
                    ev.envelope_id,
                    ev.firm_id,
                    ev.send_id,
                )
                continue
            composed, failure = self._compose_send(ev, inputs)
            outcomes.append((ev, inputs, composed, failure))
        if not outcomes:
            return
        recorded = set(
            (
                await s.execute(
                    insert_unless_present(sends)
                    .values(
                        [
                            {
                                "send_id": ev.send_id,
                                "firm_id": ev.firm_id,
                                "envelope_id": inputs.envelope.id,
                                "requested_by": ev.requested_by,
                                "requested_at": ev.occurred_at,
                                "to": _dump(ev.to),
                                "subject": ev.subject,
                                "status": "queued" if composed is not None else "failed",
                                "error": failure,
                            }
                            for ev, inputs, composed, failure in outcomes
                        ]
                    )
                    .returning(sends.c.send_id)
                )
            ).scalars()
        )
        # A send already turned into an email (a redelivery, a double click) stops here.
        outcomes = [o for o in outcomes if o[0].send_id in recorded]
        status = envelopes.c.status
        for ok, new_status in (
            # (No IN in these: a list parameter cannot be executed for many rows at once.)
            (True, case((or_(status == "draft", status == "failed"), "queued"), else_=status)),
            (False, case((status == "draft", "failed"), else_=status)),
        ):
            rows = [
                {
                    "b_id": inputs.envelope.id,
                    "b_to": _dump(ev.to),
                    "b_cc": _dump(ev.cc),
                    "b_subject": ev.subject,
                    "b_body": ev.body,
                    "b_delivery": ev.delivery,
                }
                for ev, inputs, composed, _ in outcomes
                if (composed is not None) == ok
            ]
            if rows:
                await s.execute(_UPDATE_ENVELOPE_FOR_SEND.values(status=new_status), rows)
        for ev, inputs, composed, failure in outcomes:
            if composed is None:
                log.warning(
                    "envelope %s send %s failed: %s", inputs.envelope.id, ev.send_id, failure
                )
        sent = [(ev, inputs, composed) for ev, inputs, composed, _ in outcomes if composed]
        if not sent:
            return
        await s.execute(
            insert(Email.__table__),
            [
                {
                    "email_id": ev.send_id,
                    "firm_id": ev.firm_id,
                    "envelope_id": inputs.envelope.id,
                    "to": _dump(ev.to),
                    "cc": _dump(ev.cc),
                    "from_name": inputs.firm.name,
                    "reply_to": inputs.firm.email,
                    "subject": composed.subject,
                    "html": composed.html,
                    "text": composed.text,
                    "attachments": _dump(inputs.attachments),
                    "created_at": now,
                }
                for ev, inputs, composed in sent
            ],
        )
        queued: dict[str, set[str]] = {}
        for ev, inputs, _ in sent:
            queued.setdefault(ev.firm_id, set()).update(i.invoice_id for i in inputs.invoices)
        invoice_table = Invoice.__table__
        for firm_id, ids in queued.items():
            await s.execute(
                update(invoice_table)
                .where(invoice_table.c.firm_id == firm_id, invoice_table.c.invoice_id.in_(ids))
                .values(email_status="queued")
            )
        links, events = [], []
        for ev, inputs, composed in sent:
            row, issued = new_link(
                token=self.send_token(ev.send_id),
                link_id=ev.send_id,
                invoices=inputs.invoices,
                client_name=inputs.envelope.client_name,
                client_email=ev.to[0],
                expires=now + timedelta(days=self.settings.link_ttl_days),
                envelope_id=inputs.envelope.id,
                send_id=ev.send_id,
                pay_all_outstanding=ev.pay_all_outstanding,
            )
            links.append(row)
            events.append((issued, ev))
            email = EmailRequested(
                firm_id=ev.firm_id,
                email_id=ev.send_id,
                envelope_id=inputs.envelope.id,
                to=ev.to + ev.cc,
                subject=composed.subject,
                content_url=f"{self.settings.internal_base_url}/internal/emails/{ev.send_id}",
            )
            events.append((email, ev))
        await s.execute(insert(Link.__table__), links)
        await self.service.publish_many(s, events)

    def _compose_send(
        self, ev: EnvelopeSendRequested, inputs: PreparedSend
    ) -> tuple[Any, str | None]:
        """The send's email, or why it cannot be sent."""
        token = self.send_token(ev.send_id)
        items = [self._item(i, token) for i in inputs.invoices]
        if not items:
            return None, "none of the envelope's bills can be sent"
        if not ev.to:
            return None, "the envelope has no recipient"
        try:
            composed = compose_email(
                inputs.firm,
                inputs.envelope.client_name,
                items,
                subject_template=ev.subject,
                body_template=ev.body,
                pay_all_url=self.pay_url(token),
                view_all_url=(self.statement_url(token) if len(items) > 1 else items[0].view_url),
            )
        except TemplateInvalid as exc:
            return None, f"template error: {exc}"
        return composed, None

    async def on_email_sent(self, s: AsyncSession, ev: EmailSent) -> None:
        await self.on_emails_sent(s, [ev])

    async def on_emails_sent(self, s: AsyncSession, evs: list[EmailSent]) -> None:
        """Stamp each send, its envelope and its bills as sent, a statement per kind of row
        for all the events together: once per email sent. Last Sent becomes the later of the
        stored and the confirmed time, in SQL, so a late confirmation never moves it back."""
        sends = EnvelopeSend.__table__
        await s.execute(
            _UPDATE_SEND_SENT,
            [
                {
                    "b_send": ev.email_id,
                    "b_firm": ev.firm_id,
                    "b_at": ev.sent_at,
                    "b_message": ev.message_id,
                }
                for ev in evs
            ],
        )
        firm_of = {ev.email_id: ev.firm_id for ev in evs}
        envelope_of = {
            send_id: envelope_id
            for send_id, firm_id, envelope_id in await s.execute(
                select(sends.c.send_id, sends.c.firm_id, sends.c.envelope_id).where(
                    sends.c.send_id.in_(list(firm_of))
                )
            )
            if firm_of[send_id] == firm_id
        }
        mine = [ev for ev in evs if ev.email_id in envelope_of]
        if not mine:
            return
        await s.execute(
            _UPDATE_ENVELOPE_SENT,
            [{"b_id": envelope_of[ev.email_id], "b_at": ev.sent_at} for ev in mine],
        )
        envelopes = Envelope.__table__
        bills_of = {
            env_id: json.loads(ids)
            for env_id, ids in await s.execute(
                select(envelopes.c.id, envelopes.c.invoice_ids).where(
                    envelopes.c.id.in_({envelope_of[ev.email_id] for ev in mine})
                )
            )
        }
        rows = [
            {"b_firm": ev.firm_id, "b_invoice": invoice_id, "b_at": ev.sent_at}
            for ev in mine
            for invoice_id in bills_of.get(envelope_of[ev.email_id], [])
        ]
        if rows:
            await s.execute(_UPDATE_INVOICE_SENT, rows)

    async def on_email_failed(self, s: AsyncSession, ev: EmailFailed) -> None:
        send = await s.get(EnvelopeSend, ev.email_id)
        if send is None or send.firm_id != ev.firm_id:
            return
        send.status, send.error = "failed", ev.reason
        env = await s.get(Envelope, send.envelope_id)
        if env is not None:
            for inv in await self._invoices(s, ev.firm_id, json.loads(env.invoice_ids)):
                inv.email_status = "failed"

    async def on_payment(self, s: AsyncSession, ev: PaymentEvent) -> None:
        """Keep each bill's online payments as sums that commute: payment events travel on
        different queues, so a refund may arrive before the success it refunds. Status is
        derived from the sums, never from the last event seen."""
        key = ev.routing_key
        returned = isinstance(ev, PaymentFailed) and ev.returned
        for alloc in ev.allocations:
            inv = await s.scalar(
                select(Invoice).where(
                    Invoice.firm_id == ev.firm_id, Invoice.invoice_id == alloc.invoice_id
                )
            )
            if inv is None:
                continue
            amount = alloc.amount_minor
            paid, processing, refunded = (
                inv.paid_online_minor or 0,
                inv.processing_minor or 0,
                inv.refunded_minor or 0,
            )
            if key == "payment.processing":
                processing += amount
            elif key == "payment.succeeded":
                paid += amount
                if ev.method == "ach":
                    processing -= amount  # its payment.processing came (or comes) first
            elif key == "payment.failed":
                if returned:
                    paid -= amount  # it had succeeded: the money went back
                elif ev.method == "ach":
                    processing -= amount
            elif key == "payment.refunded":
                paid -= amount
                refunded += amount
            inv.paid_online_minor, inv.processing_minor, inv.refunded_minor = (
                paid,
                processing,
                refunded,
            )
            inv.payment_status = payment_status(paid, processing, refunded)

    # --- PDFs ----------------------------------------------------------------------------

    async def seal_email_contents(
        self, payloads: list[dict[str, Any]]
    ) -> list[dict[str, Any] | bytes]:
        """The outbox relay's completion of `email.requested`: each email's content, PDFs
        included, sealed into the event as it is published (`shared.email_content`), so
        the mailer needs no fetch. Read from the committed email, never written twice."""
        found = await self.email_contents([p["email_id"] for p in payloads])
        out: list[dict[str, Any] | bytes] = []
        for payload in payloads:
            if payload["email_id"] not in found:  # gone: the mailer's fetch says so
                out.append(payload)
                continue
            email, files = found[payload["email_id"]]
            content = {
                "to": json.loads(email.to),
                "cc": json.loads(email.cc),
                "from_name": email.from_name,
                "reply_to": email.reply_to,
                "subject": email.subject,
                "html": email.html,
                "text": email.text,
                "attachments": [
                    {"filename": name, "content_type": "application/pdf", "data": data}
                    for name, data in files
                ],
            }
            sealed = seal_content(self.settings.internal_token, email.email_id, content)
            # Encoded by pydantic: five times quicker than json.dumps with the sealed
            # content, some hundreds of kilobytes of text, in it.
            event = EmailRequested.model_validate(payload)
            out.append(
                event.model_copy(update={"sealed_content": sealed}).model_dump_json().encode()
            )
        return out

    async def email_content(self, email_id: str) -> tuple[Email, list[tuple[str, bytes]]] | None:
        return (await self.email_contents([email_id])).get(email_id)

    async def email_contents(
        self, email_ids: list[str]
    ) -> dict[str, tuple[Email, list[tuple[str, bytes]]]]:
        """Each email that exists, with its attachments' (filename, PDF bytes); two queries
        however many emails."""
        async with self.service.sessionmaker() as s:
            emails = list(await s.scalars(select(Email).where(Email.email_id.in_(email_ids))))
            listed = {e.email_id: json.loads(e.attachments) for e in emails}
            keys = {att["pdf_key"] for atts in listed.values() for att in atts}
            stored: dict[str, bytes] = {}
            if keys:
                stored = dict(
                    (await s.execute(select(Pdf.key, Pdf.content).where(Pdf.key.in_(keys)))).all()
                )
        return {
            e.email_id: (
                e,
                [
                    (att["filename"], stored[att["pdf_key"]])
                    for att in listed[e.email_id]
                    if att["pdf_key"] in stored
                ],
            )
            for e in emails
        }

    async def _live_link(self, s: AsyncSession, token: str) -> Link | None:
        link = await s.get(Link, hash_token(token))
        if link is None or link.revoked_at is not None:
            return None
        if link.expires_at.replace(tzinfo=UTC) < datetime.now(UTC):
            return None
        return link

    async def link_issued(self, token: str) -> bool:
        """Whether a client link with this token was issued here and still works."""
        async with self.service.sessionmaker() as s:
            return await self._live_link(s, token) is not None

    async def link_invoice(self, token: str, invoice_id: str) -> Invoice | None:
        """The invoice a client link may show, or None when the link does not allow it."""
        async with self.service.sessionmaker() as s:
            link = await self._live_link(s, token)
            if link is None or invoice_id not in json.loads(link.invoice_ids):
                return None
            return await s.scalar(
                select(Invoice).where(
                    Invoice.firm_id == link.firm_id, Invoice.invoice_id == invoice_id
                )
            )

    async def link_statement(self, token: str) -> str | None:
        """The key of the statement of every bill on a client link (as of today), or None
        when the link does not exist or no longer works."""
        async with self.service.sessionmaker() as s:
            link = await self._live_link(s, token)
            if link is None:
                return None
            invoices = await self._invoices(s, link.firm_id, json.loads(link.invoice_ids))
        if not invoices:
            return None
        return await self.renderer.statement_for(
            link.firm_id,
            [i.invoice_id for i in invoices],
            invoices[0].client_name,
            datetime.now(UTC).date(),
            register_link=True,
        )

    async def _add_attachments(
        self, s: AsyncSession, evs: list[EnvelopeSendRequested], sends: dict[str, PreparedSend]
    ) -> None:
        """Each PDF-delivery send's PDFs, into `sends`: each bill's own and, when there are
        several, first the statement of them all with its Pay All link; all normally
        rendered ahead of time, found with two reads per firm in `s` (left closed)."""
        today = datetime.now(UTC).date()
        by_firm: dict[str, list[str]] = {}
        for ev in evs:
            prepared = sends.get(ev.send_id)
            if ev.delivery == "attachment" and prepared is not None and prepared.invoices:
                by_firm.setdefault(ev.firm_id, []).append(ev.send_id)
        for firm_id, send_ids in by_firm.items():
            emails = [sends[i] for i in send_ids]
            found = await self.renderer.ensure_for_emails(
                s,
                firm_id,
                emails[0].firm,
                [
                    (p.invoices, p.envelope.client_name if len(p.invoices) > 1 else None)
                    for p in emails
                ],
                statement_date=today,
            )
            for send_id, p, (keys, statement) in zip(send_ids, emails, found, strict=True):
                files = [
                    {
                        "filename": f"{i.kind.replace('_', '-')}-{i.number}.pdf",
                        "pdf_key": keys[i.invoice_id],
                    }
                    for i in p.invoices
                    if i.invoice_id in keys
                ]
                if statement is not None:
                    files.insert(
                        0, {"filename": f"statement-{today.isoformat()}.pdf", "pdf_key": statement}
                    )
                sends[send_id] = PreparedSend(p.envelope, p.firm, p.invoices, files)
