"""Drafting envelopes: the firm's selected bills grouped into draft envelopes (one per client,
or combined), what a draft holds and has been sent as, and its preview."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from services.envelope import reads, template_store
from services.envelope.contents import compose
from services.envelope.grouping import group_into_envelopes
from services.envelope.links import Links
from services.envelope.models import Envelope, EnvelopeSend
from services.envelope.prerender import Scheduler
from services.envelope.rules import carries_statement, may_send
from services.envelope.settings import EnvelopeSettings
from shared.events import Delivery, InvoiceSnapshot, SendStatus
from shared.runtime import Service


@dataclass(frozen=True)
class InvoiceRef:
    invoice_id: str
    client_id: str


class Drafting:
    def __init__(
        self, service: Service, settings: EnvelopeSettings, links: Links, scheduler: Scheduler
    ) -> None:
        self.service = service
        self.settings = settings
        self.links = links
        self.scheduler = scheduler

    async def create_drafts(
        self, firm_id: str, invoice_ids: list[str], created_by: str
    ) -> list[Envelope]:
        async with self.service.sessionmaker() as s, s.begin():
            firm = await reads.firm_profile(s, firm_id)
            template = await template_store.default_text(s, firm_id)
            invoices = [
                i for i in await reads.invoices(s, firm_id, invoice_ids) if may_send(i.state)
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
                    invoice_ids=json.dumps([g.invoice_id for g in group]),
                    to=json.dumps([email] if email else []),
                    cc="[]",
                    subject=template.subject,
                    body=template.body,
                    delivery=firm.default_delivery,
                    status=SendStatus.draft,
                    created_by=created_by,
                    created_at=now,
                )
                s.add(env)
                envelopes.append(env)
        if firm.default_delivery == Delivery.attachment:
            # Their statements, ahead of time, as the invoices' own PDFs already are.
            self.scheduler.schedule_statements(
                firm_id,
                [
                    (json.loads(e.invoice_ids), e.client_name)
                    for e in envelopes
                    if carries_statement(len(json.loads(e.invoice_ids)))
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
            firm = await reads.firm_profile(s, firm_id)
            invoices = await reads.invoices(s, firm_id, json.loads(env.invoice_ids))
        if not invoices:
            note = "None of this envelope's bills can be sent any more."
            return {"subject": "", "html": f"<p>{note}</p>", "text": note}
        composed = compose(
            self.links,
            firm,
            env.client_name,
            invoices,
            "preview",
            subject_template=subject if subject is not None else env.subject,
            body_template=body if body is not None else env.body,
        )
        return {"subject": composed.subject, "html": composed.html, "text": composed.text}
