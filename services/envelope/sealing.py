"""Stored emails read back: for the mailer's fetch, and sealed into email.requested as the
outbox relay publishes it (`shared.email_content`), so the mailer needs no fetch."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from services.envelope.models import Email, Pdf
from services.envelope.settings import EnvelopeSettings
from shared.email_content import seal_content
from shared.events import EmailRequested
from shared.runtime import Service

Attachments = list[tuple[str, bytes]]  # (filename, PDF bytes)


class Sealing:
    def __init__(self, service: Service, settings: EnvelopeSettings) -> None:
        self.service = service
        self.settings = settings

    async def seal_email_contents(
        self, payloads: list[dict[str, Any]]
    ) -> list[dict[str, Any] | bytes]:
        """The outbox relay's completion of `email.requested`: each email's content, PDFs
        included, sealed into the event as it is published, so the mailer needs no fetch.
        Read from the committed email, never written twice."""
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

    async def email_content(self, email_id: str) -> tuple[Email, Attachments] | None:
        return (await self.email_contents([email_id])).get(email_id)

    async def email_contents(self, email_ids: list[str]) -> dict[str, tuple[Email, Attachments]]:
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
