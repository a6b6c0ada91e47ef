"""Turning send requests into emails and client links: read what each send is made of,
decide its email or why it has none (rules.py, contents.py), write it all in the sends'
transaction (send_writes.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope import send_writes
from services.envelope.contents import compose_send
from services.envelope.links import Links
from services.envelope.rendering import Renderer
from services.envelope.send_inputs import PreparedSend, SendOutcome, read_sends
from services.envelope.settings import EnvelopeSettings
from shared.events import EnvelopeSendRequested
from shared.runtime import Service

log = logging.getLogger(__name__)


class Sending:
    def __init__(
        self, service: Service, settings: EnvelopeSettings, links: Links, renderer: Renderer
    ) -> None:
        self.service = service
        self.settings = settings
        self.links = links
        self.renderer = renderer

    async def prepare_sends(self, evs: list[EnvelopeSendRequested]) -> dict[str, PreparedSend]:
        """Before the sends' transaction: what they are made of and, for PDF delivery,
        their PDFs (normally rendered ahead of time; rendered now when not). One session of
        reads, closed before any rendering: nothing here holds a transaction open. Each
        email is composed from these same reads, so its text and its PDFs agree."""
        async with self.service.sessionmaker() as s:
            return await read_sends(s, evs, self.renderer, with_pdfs=True)

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
        events."""
        if prepared is None:
            prepared = await read_sends(s, evs, self.renderer, with_pdfs=False)
        outcomes = self._decide(evs, prepared)
        if not outcomes:
            return
        recorded = await send_writes.record_sends(s, outcomes)
        # A send already turned into an email (a redelivery, a double click) stops here.
        outcomes = [o for o in outcomes if o.ev.send_id in recorded]
        await send_writes.update_envelopes(s, outcomes)
        for o in outcomes:
            if o.refusal is not None:
                log.warning(
                    "envelope %s send %s failed: %s", o.inputs.envelope.id, o.ev.send_id, o.error
                )
        sent = [o for o in outcomes if o.composed is not None]
        if sent:
            now = datetime.now(UTC)
            await send_writes.queue_emails(s, self.service, self.settings, self.links, sent, now)

    def _decide(
        self, evs: list[EnvelopeSendRequested], prepared: dict[str, PreparedSend]
    ) -> list[SendOutcome]:
        """Each send requested (once, however often it came) whose envelope exists: its
        email, or why it has none."""
        firsts: dict[str, EnvelopeSendRequested] = {}
        for ev in evs:
            firsts.setdefault(ev.send_id, ev)
        outcomes = []
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
            composed, refused, error = compose_send(
                self.links,
                inputs.firm,
                inputs.envelope.client_name,
                inputs.invoices,
                self.links.send_token(ev.send_id),
                to=ev.to,
                subject_template=ev.subject,
                body_template=ev.body,
                suppressed=inputs.suppressed,
            )
            outcomes.append(SendOutcome(ev, inputs, composed, refused, error))
        return outcomes
