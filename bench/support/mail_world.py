"""`bench/mail_pipeline.py`'s world: emails as Send All makes them (the envelope service's own
templates, HTML and text, secure links; optionally a PDF per bill), their `email.requested`
events with the content sealed in them as the envelope service seals it, and the messages
the sink received, read back to be sent again by aiosmtplib alone."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx

from services.envelope.compose import DEFAULT_BODY, DEFAULT_SUBJECT, EmailItem, compose_email
from shared.email_content import seal_content
from shared.events import EmailRequested, FirmProfile

FIRM_ID = "5f0c6a53-8d2b-4c57-9b1a-2d7c3e9f4a10"
FIRM = FirmProfile(
    name="Demo Law LLP",
    email="billing@demolaw.example",
    phone="(555) 010-2030",
    address="100 Main Street, Suite 400\nSpringfield, IL 62701",
)
PUBLIC = "http://127.0.0.1:8000"


def bills_per_email(n: int, rng: random.Random) -> list[int]:
    """Send All's secure-link case combines a client's bills, at most ten an envelope: most
    envelopes hold one to three, a few up to ten (1,000 bills make about 325 envelopes)."""
    weights = [40, 20, 12, 7, 5, 4, 3, 3, 3, 3]
    return rng.choices(range(1, 11), weights=weights, k=n)


def fake_pdf(size: int, rng: random.Random) -> bytes:
    """Bytes of a PDF's size and entropy (its streams are compressed): the mailer base64s
    them and the sink stores them; nobody parses them."""
    return b"%PDF-1.7\n" + rng.randbytes(max(0, size - 9))


def email_contents(
    n: int, *, pdfs: bool, pdf_kb: int, seed: int = 3
) -> list[tuple[str, str, dict[str, Any]]]:
    """(email id, envelope id, content) for `n` emails to one recipient each."""
    rng = random.Random(seed)
    out = []
    issued = date(2026, 11, 2)
    for i, count in enumerate(bills_per_email(n, rng)):
        envelope_id = str(uuid.UUID(int=rng.getrandbits(128)))
        items = []
        for k in range(count):
            invoice_id = f"clio:{100_000 + i * 10 + k}"
            token = uuid.UUID(int=rng.getrandbits(128)).hex
            total = rng.randint(10_000, 900_000)
            items.append(
                EmailItem(
                    invoice_id=invoice_id,
                    number=f"INV-{20_000 + i * 10 + k}",
                    kind="trust_request" if rng.random() < 0.1 else "invoice",
                    matter=f"Matter {rng.randint(1, 400):04d} - Estate of Client {i}",
                    due_at=issued + timedelta(days=30),
                    currency="USD",
                    total_minor=total,
                    balance_minor=total,
                    view_url=f"{PUBLIC}/v/{token}/{invoice_id}",
                    pay_url=f"{PUBLIC}/pay/{token}?invoice={invoice_id}",
                )
            )
        link = uuid.UUID(int=rng.getrandbits(128)).hex
        composed = compose_email(
            FIRM,
            f"Client {i} Holdings LLC",
            items,
            subject_template=DEFAULT_SUBJECT,
            body_template=DEFAULT_BODY,
            pay_all_url=f"{PUBLIC}/pay/{link}",
            view_all_url=f"{PUBLIC}/v/{link}",
        )
        attachments = (
            [
                {
                    "filename": f"invoice-{item.number}.pdf",
                    "content_type": "application/pdf",
                    "data": fake_pdf(pdf_kb * 1024, rng),
                }
                for item in items
            ]
            if pdfs
            else []
        )
        content = {
            "to": [f"client{i}@clients.example"],
            "cc": [],
            "from_name": FIRM.name,
            "reply_to": FIRM.email,
            "subject": composed.subject,
            "html": composed.html,
            "text": composed.text,
            "attachments": attachments,
        }
        out.append((str(uuid.UUID(int=rng.getrandbits(128))), envelope_id, content))
    return out


def requested_events(
    contents: list[tuple[str, str, dict[str, Any]]], internal_token: str, content_base: str
) -> list[tuple[str, bytes]]:
    """(event id, body) of each email's `email.requested` as the envelope service's outbox
    relay publishes it: the content sealed in the event (`services.envelope.sealing`),
    encoded by pydantic."""
    out = []
    for email_id, envelope_id, content in contents:
        ev = EmailRequested(
            firm_id=FIRM_ID,
            email_id=email_id,
            envelope_id=envelope_id,
            to=content["to"],
            subject=content["subject"],
            content_url=f"{content_base}/internal/emails/{email_id}",
            sealed_content=seal_content(internal_token, email_id, content),
        )
        out.append((str(ev.event_id), ev.model_dump_json().encode()))
    return out


@dataclass(frozen=True)
class Received:
    """A message as the sink received it: its envelope and its bytes."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes


def received_messages(mailview_url: str) -> list[Received]:
    """Every message the sink holds, its bytes as received (oldest first)."""
    out = []
    with httpx.Client(base_url=mailview_url, timeout=30) as client:
        listed = client.get("/api/messages").json()
        for m in sorted(listed, key=lambda m: m["received_at"]):
            raw = client.get(f"/api/messages/{m['id']}/raw")
            raw.raise_for_status()
            data = raw.content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            out.append(Received(m["envelope"]["mail_from"], m["envelope"]["rcpt_tos"], data))
    return out
