"""The envelope service's work: keep invoices, draft envelopes, turn send requests into
emails and client links, and keep PDFs rendered."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import template_store
from services.envelope.compose import (
    EmailItem,
    TemplateInvalid,
    compose_email,
)
from services.envelope.grouping import group_into_envelopes
from services.envelope.models import Email, Envelope, EnvelopeSend, Firm, Invoice, Link, Pdf
from services.envelope.rendering import Renderer, issue_link
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

    async def _send_inputs(
        self, s: AsyncSession, ev: EnvelopeSendRequested
    ) -> tuple[Envelope, FirmProfile, list[Invoice]] | None:
        """What a send is made of: the envelope with its firm's profile (one query) and
        its bills; None when the envelope does not exist (for this firm)."""
        found = (
            await s.execute(
                select(Envelope, Firm.profile)
                .outerjoin(Firm, Firm.firm_id == Envelope.firm_id)
                .where(Envelope.id == ev.envelope_id)
            )
        ).first()
        if found is None or found[0].firm_id != ev.firm_id:
            return None
        env, profile = found
        firm = _firm_profile(profile)
        invoices = await self._invoices(
            s, ev.firm_id, ev.invoice_ids or json.loads(env.invoice_ids)
        )
        return env, firm, invoices

    async def prepare_send(self, ev: EnvelopeSendRequested) -> PreparedSend | None:
        """Before the send's transaction: what it is made of and its PDFs, when it carries
        them (normally rendered ahead of time; rendered now when not). One session of reads,
        closed before any rendering: nothing here holds a transaction open. The email is
        composed from these same reads, so its text and its PDFs agree."""
        if ev.delivery != "attachment":
            return None
        async with self.service.sessionmaker() as s:
            inputs = await self._send_inputs(s, ev)
            if inputs is None:
                return None
            env, firm, invoices = inputs
            attachments = (
                await self._attachments(s, ev.firm_id, env.client_name, invoices, firm)
                if invoices
                else []
            )
        return PreparedSend(env, firm, invoices, attachments)

    async def on_send_requested(
        self, s: AsyncSession, ev: EnvelopeSendRequested, prepared: PreparedSend | None
    ) -> None:
        """The send's transaction: its record, the email, the client link and the events,
        written with single statements (no ORM flush: this runs once per email)."""
        sends, envelopes = EnvelopeSend.__table__, Envelope.__table__
        if prepared is not None:
            env, firm, invoices = prepared.envelope, prepared.firm, prepared.invoices
            attachments = prepared.attachments
        else:
            inputs = await self._send_inputs(s, ev)
            if inputs is None:
                log.error(
                    "envelope %s of firm %s does not exist; send %s dropped",
                    ev.envelope_id,
                    ev.firm_id,
                    ev.send_id,
                )
                return
            env, firm, invoices = inputs
            attachments = []
        now = datetime.now(UTC)
        token = self.send_token(ev.send_id)
        items = [self._item(i, token) for i in invoices]
        failure = None
        composed = None
        if not items:
            failure = "none of the envelope's bills can be sent"
        elif not ev.to:
            failure = "the envelope has no recipient"
        else:
            try:
                composed = compose_email(
                    firm,
                    env.client_name,
                    items,
                    subject_template=ev.subject,
                    body_template=ev.body,
                    pay_all_url=self.pay_url(token),
                    view_all_url=(
                        self.statement_url(token) if len(items) > 1 else items[0].view_url
                    ),
                )
            except TemplateInvalid as exc:
                failure = f"template error: {exc}"
        # Writes from here on.
        failed = failure is not None or composed is None
        recorded = await s.execute(
            insert_unless_present(s.get_bind(), sends).values(
                send_id=ev.send_id,
                firm_id=ev.firm_id,
                envelope_id=env.id,
                requested_by=ev.requested_by,
                requested_at=ev.occurred_at,
                to=_dump(ev.to),
                subject=ev.subject,
                status="failed" if failed else "queued",
                error=failure,
            )
        )
        if recorded.rowcount != 1:
            return  # this send was already turned into an email
        status = envelopes.c.status
        await s.execute(
            update(envelopes)
            .where(envelopes.c.id == env.id)
            .values(
                to=_dump(ev.to),
                cc=_dump(ev.cc),
                subject=ev.subject,
                body=ev.body,
                delivery=ev.delivery,
                status=(
                    case((status == "draft", "failed"), else_=status)
                    if failed
                    else case((status.in_(("draft", "failed")), "queued"), else_=status)
                ),
            )
        )
        if failed or composed is None:
            log.warning("envelope %s send %s failed: %s", env.id, ev.send_id, failure)
            return
        await s.execute(
            insert(Email.__table__).values(
                email_id=ev.send_id,
                firm_id=ev.firm_id,
                envelope_id=env.id,
                to=_dump(ev.to),
                cc=_dump(ev.cc),
                from_name=firm.name,
                reply_to=firm.email,
                subject=composed.subject,
                html=composed.html,
                text=composed.text,
                attachments=_dump(attachments),
                created_at=now,
            )
        )
        invoice_table = Invoice.__table__
        await s.execute(
            update(invoice_table)
            .where(
                invoice_table.c.firm_id == ev.firm_id,
                invoice_table.c.invoice_id.in_([i.invoice_id for i in invoices]),
            )
            .values(email_status="queued")
        )
        await issue_link(
            self.service,
            s,
            token=token,
            link_id=ev.send_id,
            invoices=invoices,
            client_name=env.client_name,
            client_email=ev.to[0],
            expires=now + timedelta(days=self.settings.link_ttl_days),
            envelope_id=env.id,
            send_id=ev.send_id,
            pay_all_outstanding=ev.pay_all_outstanding,
        )
        await self.service.publish(
            s,
            EmailRequested(
                firm_id=ev.firm_id,
                email_id=ev.send_id,
                envelope_id=env.id,
                to=ev.to + ev.cc,
                subject=composed.subject,
                content_url=f"{self.settings.internal_base_url}/internal/emails/{ev.send_id}",
            ),
        )

    async def on_email_sent(self, s: AsyncSession, ev: EmailSent) -> None:
        """Three statements, each returning what the next needs: once per email sent."""
        sends, envelopes, invoices = (
            EnvelopeSend.__table__,
            Envelope.__table__,
            Invoice.__table__,
        )
        send = (
            await s.execute(
                update(sends)
                .where(sends.c.send_id == ev.email_id, sends.c.firm_id == ev.firm_id)
                .values(status="sent", sent_at=ev.sent_at, message_id=ev.message_id)
                .returning(sends.c.envelope_id)
            )
        ).first()
        if send is None:
            return
        sent_at = literal(ev.sent_at, UTCDateTime())
        last = envelopes.c.last_sent_at
        env = (
            await s.execute(
                update(envelopes)
                .where(envelopes.c.id == send.envelope_id)
                .values(
                    status="sent",
                    last_sent_at=case((or_(last.is_(None), last < sent_at), sent_at), else_=last),
                )
                .returning(envelopes.c.invoice_ids)
            )
        ).first()
        if env is None:
            return
        await s.execute(
            update(invoices)
            .where(
                invoices.c.firm_id == ev.firm_id,
                invoices.c.invoice_id.in_(json.loads(env.invoice_ids)),
                or_(invoices.c.last_sent_at.is_(None), invoices.c.last_sent_at <= sent_at),
            )
            .values(last_sent_at=sent_at, email_status="sent")
        )

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

    async def seal_email_contents(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The outbox relay's completion of `email.requested`: each email's content, PDFs
        included, sealed into the event as it is published (`shared.email_content`), so
        the mailer needs no fetch. Read from the committed email, never written twice."""
        found = await self.email_contents([p["email_id"] for p in payloads])
        out = []
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
            out.append({**payload, "sealed_content": sealed})
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

    async def _attachments(
        self,
        s: AsyncSession,
        firm_id: str,
        client_name: str,
        invoices: list[Invoice],
        firm: FirmProfile,
    ) -> list[dict[str, str]]:
        """An email's PDFs: each bill's own and, when there are several, first the statement
        of them all with its Pay All link; all normally rendered ahead of time, found with
        two reads in `s` (which is left closed)."""
        today = datetime.now(UTC).date()
        keys, statement = await self.renderer.ensure_for_email(
            s,
            firm_id,
            invoices,
            firm,
            statement_of=client_name if len(invoices) > 1 else None,
            statement_date=today,
        )
        out = [
            {
                "filename": f"{i.kind.replace('_', '-')}-{i.number}.pdf",
                "pdf_key": keys[i.invoice_id],
            }
            for i in invoices
            if i.invoice_id in keys
        ]
        if statement is not None:
            out.insert(0, {"filename": f"statement-{today.isoformat()}.pdf", "pdf_key": statement})
        return out
