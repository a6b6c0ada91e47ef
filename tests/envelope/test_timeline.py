"""An envelope's timeline and each bill's email state, from what the mailer and payments
report, on both database backends: each event once however often it comes, in any order; a
hard bounce suppresses its address and refuses the next send to it; the internal API answers
only the envelope's own firm."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from services.envelope import api_timeline, mail_reports, suppressions, timeline, timeline_reads
from services.envelope.models import EmailEvent, Envelope, EnvelopeSend, Invoice
from shared.events import (
    Allocation,
    BounceKind,
    ClickTarget,
    EmailBounced,
    EmailClicked,
    EmailDelivered,
    EmailFailed,
    EmailOpened,
    EmailSent,
    EmailTracked,
    EmailViewed,
    PaymentSucceeded,
)
from tests.envelope import test_rendering as rendering
from tests.envelope.test_rendering import FIRM_ID, Harness, send_request, snapshot

harness = rendering.harness  # the envelope service's desk on a fresh database

PRIYA, AP = "priya@example.com", "ap@northgate.test"
# After the sends are queued (now), as the mailer reports them.
T0 = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)


async def sent_envelope(h: Harness, send_id: str = "send-1") -> Envelope:
    await h.firm_updated()
    for n in (3001, 3002):
        await h.invoice_updated(snapshot(n))
    (env,) = await h.desk.create_drafts(FIRM_ID, ["clio:3001", "clio:3002"], "u-1")
    async with h.service.sessionmaker() as s, s.begin():
        await h.desk.on_send_requested(
            s, send_request(env, send_id, [PRIYA, AP], delivery="link"), None
        )
    return env


def sent(env: Envelope, send_id: str = "send-1", at: datetime = T0) -> EmailSent:
    return EmailSent(
        firm_id=FIRM_ID,
        email_id=send_id,
        envelope_id=env.id,
        message_id=f"<{send_id}@test>",
        to=[PRIYA],
        refused={AP: "550 5.1.1 <ap@northgate.test>: Recipient address rejected"},
        sent_at=at,
    )


def tracked(cls: type[EmailTracked], env: Envelope, at: datetime, **extra: object) -> EmailTracked:
    return cls(
        firm_id=FIRM_ID,
        email_id=extra.pop("email_id", "send-1"),  # type: ignore[arg-type]
        envelope_id=env.id,
        recipient=extra.pop("recipient", PRIYA),  # type: ignore[arg-type]
        at=at,
        **extra,  # type: ignore[arg-type]
    )


async def apply(h: Harness, ev: object, times: int = 2) -> None:
    """As the bus may deliver it: more than once (each in its own transaction)."""
    for _ in range(times):
        async with h.service.sessionmaker() as s, s.begin():
            if isinstance(ev, EmailSent):
                await mail_reports.on_emails_sent(s, [ev])
            elif isinstance(ev, EmailFailed):
                await mail_reports.on_email_failed(s, ev)
            elif isinstance(ev, EmailBounced):
                envelope_id = await timeline.on_tracked(s, ev)
                await suppressions.on_bounced(s, ev, envelope_id)
            elif isinstance(ev, EmailTracked):
                await timeline.on_tracked(s, ev)
            else:
                await timeline.on_payment(s, ev)  # type: ignore[arg-type]


async def lines(h: Harness, env: Envelope) -> list[tuple[str, str | None, bool]]:
    async with h.service.sessionmaker() as s:
        rows = await s.scalars(
            select(EmailEvent)
            .where(EmailEvent.envelope_id == env.id)
            .order_by(EmailEvent.at, EmailEvent.id)
        )
        return [(r.kind, r.recipient, r.machine) for r in rows]


async def bill_state(
    h: Harness, invoice_id: str = "clio:3001"
) -> tuple[str | None, datetime | None]:
    async with h.service.sessionmaker() as s:
        inv = await s.scalar(
            select(Invoice).where(Invoice.firm_id == FIRM_ID, Invoice.invoice_id == invoice_id)
        )
        assert inv is not None
        return inv.email_event, inv.email_event_at


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(api_timeline.router(harness.service))
    token = {"X-Internal-Token": harness.service.settings.internal_token}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://envelope", headers=token
    ) as http:
        yield http


async def test_an_envelope_s_true_story(harness: Harness, api: httpx.AsyncClient) -> None:
    env = await sent_envelope(harness)
    await apply(harness, sent(env))
    assert await lines(harness, env) == [("sent", PRIYA, False), ("refused", AP, False)]
    assert await bill_state(harness) == ("sent", T0)

    steps = [
        (tracked(EmailDelivered, env, T0 + timedelta(seconds=1)), "delivered"),
        # Apple's privacy proxy as it arrives: a line, but not "opened".
        (tracked(EmailOpened, env, T0 + timedelta(seconds=2), machine=True), "delivered"),
        (tracked(EmailOpened, env, T0 + timedelta(hours=1)), "opened"),
        (
            tracked(
                EmailClicked,
                env,
                T0 + timedelta(hours=1, minutes=1),
                target=ClickTarget.pay_online,
                path="/pay/secret-token?invoice=clio:3001",
            ),
            "clicked",
        ),
        (
            tracked(
                EmailViewed,
                env,
                T0 + timedelta(hours=1, minutes=1, seconds=2),
                path="/pay/secret-token?invoice=clio:3001",
            ),
            "viewed",
        ),
    ]
    for ev, state in steps:
        await apply(harness, ev)  # twice: one line
        assert (await bill_state(harness))[0] == state
    assert (await bill_state(harness, "clio:3002"))[0] == "viewed"  # the same email's bills

    paid = PaymentSucceeded(
        firm_id=FIRM_ID,
        payment_id="pay_1",
        method="card",
        currency="USD",
        amount_minor=80_000 + 3001,
        allocations=[Allocation(invoice_id="clio:3001", amount_minor=80_000 + 3001)],
        payer_name="Priya Shah",
        occurred_at=T0 + timedelta(hours=2),
    )
    await apply(harness, paid)
    assert await lines(harness, env) == [
        ("sent", PRIYA, False),
        ("refused", AP, False),
        ("delivered", PRIYA, False),
        ("opened", PRIYA, True),
        ("opened", PRIYA, False),
        ("clicked", PRIYA, False),
        ("viewed", PRIYA, False),
        ("paid", None, False),
    ]

    resp = await api.get(f"/internal/firms/{FIRM_ID}/envelopes/{env.id}/timeline")
    assert resp.status_code == 200
    out = resp.json()
    assert out["state"] == "viewed"
    assert [x["kind"] for x in out["lines"]][:3] == ["queued", "sent", "refused"]
    # The subject as the client got it, not the template it was written from.
    assert (
        out["subject"]
        == out["lines"][0]["detail"]
        == "Invoices invoice INV-3001 and invoice INV-3002"
    )
    refused = out["lines"][2]
    assert refused["recipient"] == AP and "5.1.1" in refused["detail"]
    clicked = next(x for x in out["lines"] if x["kind"] == "clicked")
    assert clicked["detail"] == "pay_online|pay_online:clio:3001"
    assert "secret-token" not in resp.text  # no link token on the firm's pages
    assert out["lines"][-1]["detail"] == "INV-3001 $830.01, paid by Priya Shah by card"
    assert out["numbers"] == {"clio:3001": "INV-3001", "clio:3002": "INV-3002"}

    states = await api.post(
        f"/internal/firms/{FIRM_ID}/invoices/email-states",
        json={"invoice_ids": ["clio:3001", "clio:3002", "clio:nope"]},
    )
    assert states.status_code == 200
    assert set(states.json()) == {"clio:3001", "clio:3002"}
    assert states.json()["clio:3001"]["envelope_id"] == env.id
    assert states.json()["clio:3001"]["event"] == "viewed"


async def test_another_firm_sees_nothing(harness: Harness, api: httpx.AsyncClient) -> None:
    env = await sent_envelope(harness)
    await apply(harness, sent(env))
    assert (
        await api.get(f"/internal/firms/other-firm/envelopes/{env.id}/timeline")
    ).status_code == 404
    assert (
        await api.get(f"/internal/firms/{FIRM_ID}/envelopes/{uuid.uuid4()}/timeline")
    ).status_code == 404
    states = await api.post(
        "/internal/firms/other-firm/invoices/email-states", json={"invoice_ids": ["clio:3001"]}
    )
    assert states.json() == {}
    # Events naming another firm leave this envelope alone.
    stranger = tracked(EmailOpened, env, T0 + timedelta(hours=1)).model_copy(
        update={"firm_id": "other-firm"}
    )
    await apply(harness, stranger)
    assert [k for k, _, _ in await lines(harness, env)] == ["sent", "refused"]
    no_token = await api.get(
        f"/internal/firms/{FIRM_ID}/envelopes/{env.id}/timeline", headers={"X-Internal-Token": ""}
    )
    assert no_token.status_code == 401


async def test_lines_that_arrive_before_email_sent_count(harness: Harness) -> None:
    env = await sent_envelope(harness)
    await apply(harness, tracked(EmailOpened, env, T0 + timedelta(minutes=30)))
    await apply(harness, sent(env))
    assert await bill_state(harness) == ("opened", T0 + timedelta(minutes=30))


async def test_a_hard_bounce_shows_and_suppresses_and_a_later_open_does_not_hide_it(
    harness: Harness, api: httpx.AsyncClient
) -> None:
    env = await sent_envelope(harness)
    await apply(harness, sent(env))
    bounce = tracked(
        EmailBounced,
        env,
        T0 + timedelta(minutes=2),
        recipient="Priya@Example.com",
        kind=BounceKind.hard,
        status="5.1.1",
        reason="user unknown",
    )
    await apply(harness, bounce)
    await apply(harness, tracked(EmailOpened, env, T0 + timedelta(hours=3)))
    assert await bill_state(harness) == ("bounced", T0 + timedelta(minutes=2))
    soft = tracked(
        EmailBounced,
        env,
        T0 + timedelta(minutes=1),
        recipient=AP,
        kind=BounceKind.soft,
        status="4.2.2",
        reason="mailbox full",
    )
    await apply(harness, soft)  # delayed: no suppression

    base = f"/internal/firms/{FIRM_ID}/suppressions"
    listed = (await api.get(base)).json()
    assert [(x["address"], x["status"], x["reason"]) for x in listed] == [
        ("priya@example.com", "5.1.1", "user unknown")
    ]
    assert listed[0]["envelope_id"] == env.id
    assert "Change the recipient" in listed[0]["message"]
    assert (await api.get(f"{base}/count")).json() == {"count": 1}
    assert (await api.get("/internal/firms/other-firm/suppressions")).json() == []
    check = await api.post(f"{base}/check", json={"addresses": ["PRIYA@example.com", AP]})
    assert [x["address"] for x in check.json()] == ["priya@example.com"]

    # A new send to it is refused, saying which, why and how to clear; to another, it goes.
    async with harness.service.sessionmaker() as s, s.begin():
        await harness.desk.on_send_requested(
            s, send_request(env, "send-2", ["PRIYA@example.com"], delivery="link"), None
        )
        await harness.desk.on_send_requested(
            s, send_request(env, "send-3", ["priya.shah@example.com"], delivery="link"), None
        )
    async with harness.service.sessionmaker() as s:
        refused = await s.get(EnvelopeSend, "send-2")
        other = await s.get(EnvelopeSend, "send-3")
    assert refused is not None and refused.status == "failed"
    assert refused.error is not None
    assert "priya@example.com bounced (5.1.1 user unknown)" in refused.error
    assert "clear the address on the Invoices page" in refused.error
    assert other is not None and other.status == "queued"
    assert any(e["email_id"] == "send-3" for e in await harness.events("email.requested"))
    assert not any(e["email_id"] == "send-2" for e in await harness.events("email.requested"))

    # Another firm cannot clear it; the firm can, once; then sending to it works again.
    assert (
        await api.delete("/internal/firms/other-firm/suppressions/priya@example.com")
    ).status_code == 404
    assert (await api.delete(f"{base}/PRIYA@example.com")).status_code == 204
    assert (await api.delete(f"{base}/priya@example.com")).status_code == 404
    assert (await api.get(f"{base}/count")).json() == {"count": 0}
    async with harness.service.sessionmaker() as s, s.begin():
        await harness.desk.on_send_requested(
            s, send_request(env, "send-4", [PRIYA], delivery="link"), None
        )
    async with harness.service.sessionmaker() as s:
        again = await s.get(EnvelopeSend, "send-4")
    assert again is not None and again.status == "queued"


async def test_a_failed_email_is_failed_on_its_timeline(harness: Harness) -> None:
    env = await sent_envelope(harness)
    failed = EmailFailed(
        firm_id=FIRM_ID,
        email_id="send-1",
        envelope_id=env.id,
        reason="every recipient refused",
        refused={PRIYA: "550 5.7.1 rejected", AP: "550 5.1.1 unknown"},
    )
    await apply(harness, failed)
    assert await lines(harness, env) == [("failed", PRIYA, False), ("failed", AP, False)]
    assert (await bill_state(harness))[0] == "failed"


async def test_a_newer_email_of_the_bill_takes_over(harness: Harness) -> None:
    env = await sent_envelope(harness)
    await apply(harness, sent(env))
    await apply(harness, tracked(EmailOpened, env, T0 + timedelta(hours=1)))
    async with harness.service.sessionmaker() as s, s.begin():
        await harness.desk.on_send_requested(
            s, send_request(env, "send-9", [PRIYA], delivery="link"), None
        )
    await apply(harness, sent(env, "send-9", T0 + timedelta(days=1)))
    assert await bill_state(harness) == ("sent", T0 + timedelta(days=1))
    # A late event of the older email leaves the bill's state alone.
    await apply(harness, tracked(EmailClicked, env, T0 + timedelta(days=2), path="/pay/t"))
    assert await bill_state(harness) == ("sent", T0 + timedelta(days=1))
    async with harness.service.sessionmaker() as s:
        count = await s.scalar(select(func.count()).select_from(EmailEvent))
    assert count == 6  # sent, refused, opened, clicked (send-1); sent, refused (send-9)


async def test_a_queued_email_is_the_bills_latest_at_once(harness: Harness) -> None:
    """Queued, the bill's Email column already names this email (and leads to its
    timeline), and nothing heard of an earlier email shows for it."""
    env = await sent_envelope(harness)
    await apply(harness, sent(env))
    await apply(harness, tracked(EmailOpened, env, T0 + timedelta(hours=1)))
    assert (await bill_state(harness))[0] == "opened"
    async with harness.service.sessionmaker() as s, s.begin():
        await harness.desk.on_send_requested(
            s, send_request(env, "send-9", [PRIYA], delivery="link"), None
        )
        states = await timeline_reads.email_states(s, FIRM_ID, ["clio:3001", "clio:3002"])
    assert await bill_state(harness) == (None, None)
    assert {i: (st["envelope_id"], st["event"]) for i, st in states.items()} == {
        "clio:3001": (env.id, None),
        "clio:3002": (env.id, None),
    }


async def test_an_email_announced_in_parts_shows_each_recipient_once(harness: Harness) -> None:
    """The mailer announces the recipients the relay accepted at once, then (after a retry
    of a deferred one) the rest and the refused: each is a line of its own, once."""
    env = await sent_envelope(harness)
    first = sent(env).model_copy(update={"refused": {}})
    await apply(harness, first)
    assert await lines(harness, env) == [("sent", PRIYA, False)]
    assert (await bill_state(harness))[0] == "sent"
    later = sent(env, at=T0 + timedelta(minutes=15)).model_copy(update={"to": []})
    await apply(harness, later)
    assert await lines(harness, env) == [("sent", PRIYA, False), ("refused", AP, False)]
    assert (await bill_state(harness))[0] == "sent"
