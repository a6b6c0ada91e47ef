"""A bounce, end to end: an envelope sent to bounce@example.com is accepted by the dev mail
sink, which answers the copy's return path with a DSN through the mailer's SMTP bounce intake;
the mailer records the hard bounce on the copy and publishes email.bounced once."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from sqlalchemy import select

from devtools.stack import login
from services.mailer.models import EmailRecipient, outbox
from shared.db import make_engine
from tests.e2e.conftest import RunningSystem
from tests.e2e.test_sending import mails, textarea
from tests.e2e.test_thin_slice import eventually, field, rows

BOUNCE = "bounce@example.com"


async def _mailer_state(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            table = EmailRecipient.__table__
            copies = (
                (await conn.execute(select(table).where(table.c.address == BOUNCE)))
                .mappings()
                .all()
            )
            events = (
                await conn.execute(
                    select(outbox.c.payload).where(outbox.c.routing_key == "email.bounced")
                )
            ).scalars()
            return [dict(c) for c in copies], [json.loads(p) for p in events]
    finally:
        await engine.dispose()


def mailer_state(system: RunningSystem) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return asyncio.run(_mailer_state(system.cfg.database_url("mailer")))


def test_an_envelope_to_the_bounce_address_comes_back_as_a_hard_bounce(
    system: RunningSystem,
) -> None:
    c = system.client()
    csrf = login(c)
    row = rows(c.get("/invoices", params={"q": "Priya Shah", "state": "unpaid"}).text)[0]
    invoice_id = re.search(r'data-invoice="([^"]+)"', row).group(1)  # type: ignore[union-attr]
    review_url = c.post(
        "/envelopes/review", data={"csrf_token": csrf, "invoice_ids": [invoice_id]}
    ).headers["location"]
    window = c.get(review_url).text
    form = {
        "csrf_token": csrf,
        "to": BOUNCE,
        "subject": field(window, "subject"),
        "body": textarea(window),
    }
    confirm = c.post(f"{review_url}/continue", data=form).text
    sent = c.post(
        f"{review_url}/send",
        data={**form, "send_id": field(confirm, "send_id"), "seq": field(confirm, "seq")},
    )
    assert sent.status_code in (200, 303)

    # The sink accepts it and shows it, like any other message...
    [message] = eventually(lambda: mails(system, BOUNCE), what="the email in the mail sink")
    # ...then its DSN reaches the mailer's intake: the copy bounced hard, one event.
    copies, events = eventually(
        lambda: (s := mailer_state(system))[1] and s, timeout=60, what="email.bounced"
    )
    [copy] = [c for c in copies if c["bounce_kind"]]
    assert (copy["bounce_kind"], copy["bounce_status"]) == ("hard", "5.1.1")
    assert "User unknown" in copy["bounce_reason"]
    assert message["message_id"] == f"<{copy['email_id']}@envelopepay.test>"
    [ev] = [e for e in events if e["email_id"] == copy["email_id"]]
    assert (ev["kind"], ev["status"], ev["recipient"]) == ("hard", "5.1.1", BOUNCE)
    assert ev["envelope_id"]
