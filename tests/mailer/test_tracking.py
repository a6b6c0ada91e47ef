"""The mailer's tracking intake, on both database backends: opens, clicks and views of one
recipient's copy recorded on its row and told to envelope through the outbox; machines
counted apart; opens at most one a minute; an unknown copy or a call without the internal
token changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from services.mailer import tracking
from services.mailer.app import MIGRATIONS
from services.mailer.models import Base, EmailRecipient, OutgoingEmail, outbox
from services.mailer.settings import MailerSettings
from shared.migrations import upgrade_async
from shared.runtime import Service

FIRM = "firm-track"
EMAIL = "e" * 32
ENVELOPE = "0b7c6d5e-4f3a-4b2c-9d1e-8f7a6b5c4d3e"
ACCEPTED = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"


@dataclass
class Intake:
    service: Service
    http: httpx.AsyncClient
    token: dict[str, str]

    async def post(self, kind: str, **body: object) -> httpx.Response:
        for key in ("at",):
            if isinstance(body.get(key), datetime):
                body[key] = body[key].isoformat()  # type: ignore[union-attr]
        return await self.http.post(f"/internal/tracking/{kind}", json=body, headers=self.token)

    async def copy(self, n: int) -> EmailRecipient:
        async with self.service.sessionmaker() as s:
            row = await s.get(EmailRecipient, (EMAIL, n))
            assert row is not None
            return row

    async def events(self, key: str) -> list[dict]:
        async with self.service.sessionmaker() as s:
            rows = await s.execute(select(outbox.c.payload).where(outbox.c.routing_key == key))
            return [json.loads(r[0]) for r in rows]


@pytest.fixture
async def intake(database_url: str, tmp_path: Path) -> AsyncIterator[Intake]:
    await upgrade_async(MIGRATIONS, database_url)
    settings = MailerSettings(database_url=database_url, environment="test", var_dir=tmp_path)
    service = Service(settings, Base.metadata, MIGRATIONS)
    async with service.sessionmaker() as s, s.begin():
        s.add(
            OutgoingEmail(
                email_id=EMAIL,
                firm_id=FIRM,
                envelope_id=ENVELOPE,
                to=json.dumps(["priya@example.com", "ap@northgate.test"]),
                subject="Invoice",
                content_url="http://envelope/internal/emails/x",
                status="sent",
                attempts=1,
                created_at=ACCEPTED,
                sent_at=ACCEPTED,
            )
        )
        for n, address in enumerate(["priya@example.com", "ap@northgate.test"]):
            s.add(
                EmailRecipient(
                    email_id=EMAIL,
                    n=n,
                    firm_id=FIRM,
                    address=address,
                    status="accepted",
                    accepted_at=ACCEPTED,
                    opens=0,
                    machine_opens=0,
                    clicks=0,
                )
            )
    app = FastAPI()
    app.include_router(tracking.router(service))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://mailer"
    ) as http:
        yield Intake(service, http, {"X-Internal-Token": settings.internal_token})
    await service.engine.dispose()


async def test_opens_by_people_and_machines(intake: Intake) -> None:
    # Apple's privacy proxy as the message arrives, then a scanner days later: machines.
    resp = await intake.post(
        "open", email_id=EMAIL, n=0, at=ACCEPTED + timedelta(seconds=2), user_agent=SAFARI
    )
    assert resp.json() == {"machine": True, "published": True}
    resp = await intake.post(
        "open", email_id=EMAIL, n=0, at=ACCEPTED + timedelta(days=2), user_agent="Mozilla/5.0"
    )
    assert resp.json()["machine"] is True
    row = await intake.copy(0)
    assert (row.opens, row.machine_opens, row.first_opened_at) == (0, 2, None)

    # The person, an hour later: the first open always goes out, even within the minute.
    person_at = ACCEPTED + timedelta(hours=1)
    resp = await intake.post("open", email_id=EMAIL, n=0, at=person_at, user_agent=SAFARI)
    assert resp.json() == {"machine": False, "published": True}
    # Reloading within the minute: counted, not told again.
    for s in (5, 20, 59):
        resp = await intake.post(
            "open", email_id=EMAIL, n=0, at=person_at + timedelta(seconds=s), user_agent=SAFARI
        )
        assert resp.json() == {"machine": False, "published": False}
    resp = await intake.post(
        "open", email_id=EMAIL, n=0, at=person_at + timedelta(seconds=61), user_agent=SAFARI
    )
    assert resp.json()["published"] is True

    row = await intake.copy(0)
    assert (row.opens, row.machine_opens) == (5, 2)
    assert row.first_opened_at == person_at
    assert (await intake.copy(1)).opens == 0  # the other recipient's copy is untouched

    opened = await intake.events("email.opened")
    assert [(e["machine"], e["recipient"]) for e in opened] == [
        (True, "priya@example.com"),
        (True, "priya@example.com"),
        (False, "priya@example.com"),  # the person's first open
        (False, "priya@example.com"),  # a minute later
    ]
    assert all(e["envelope_id"] == ENVELOPE and e["firm_id"] == FIRM for e in opened)


async def test_every_click_is_told_with_its_link(intake: Intake) -> None:
    later = ACCEPTED + timedelta(hours=2)
    for path in ["/pay/tok?invoice=clio:1", "/pay/tok", "/v/tok/clio:1"]:
        resp = await intake.post(
            "click", email_id=EMAIL, n=1, at=later, user_agent=SAFARI, path=path
        )
        assert resp.json() == {"machine": False, "published": True}
    # A link scanner as it arrives: told as a machine's, not counted.
    await intake.post(
        "click",
        email_id=EMAIL,
        n=1,
        at=ACCEPTED + timedelta(seconds=1),
        user_agent="Mimecast-URL-Protect",
        path="/pay/tok",
    )
    row = await intake.copy(1)
    assert (row.clicks, row.first_clicked_at) == (3, later)
    clicked = await intake.events("email.clicked")
    assert [(e["target"], e["machine"]) for e in clicked] == [
        ("pay_online", False),
        ("pay_all", False),
        ("view_invoice", False),
        ("pay_all", True),
    ]
    assert clicked[0]["recipient"] == "ap@northgate.test"


async def test_views_once_a_minute_per_page(intake: Intake) -> None:
    at = ACCEPTED + timedelta(hours=3)
    first = await intake.post("view", email_id=EMAIL, n=0, at=at, path="/pay/tok")
    again = await intake.post(
        "view", email_id=EMAIL, n=0, at=at + timedelta(seconds=5), path="/pay/tok"
    )
    other = await intake.post(
        "view", email_id=EMAIL, n=0, at=at + timedelta(seconds=6), path="/v/tok/clio:1"
    )
    assert [r.json()["published"] for r in (first, again, other)] == [True, False, True]
    viewed = await intake.events("email.viewed")
    assert [e["path"] for e in viewed] == ["/pay/tok", "/v/tok/clio:1"]


async def test_unknown_copies_forged_paths_and_strangers_change_nothing(intake: Intake) -> None:
    async def nothing_stored() -> None:
        async with intake.service.sessionmaker() as s:
            assert await s.scalar(select(func.count()).select_from(outbox)) == 0
        for n in (0, 1):
            row = await intake.copy(n)
            assert (row.opens, row.machine_opens, row.clicks) == (0, 0, 0)

    assert (await intake.post("open", email_id=EMAIL, n=7)).status_code == 404
    assert (await intake.post("open", email_id="f" * 32, n=0)).status_code == 404
    assert (await intake.post("click", email_id="f" * 32, n=0, path="/pay/t")).status_code == 404
    assert (await intake.post("view", email_id=EMAIL, n=9, path="/pay/t")).status_code == 404
    for path in ("https://evil.example", "//evil.example", None, "/\\evil"):
        body = {"email_id": EMAIL, "n": 0, "path": path}
        assert (await intake.post("click", **body)).status_code == 422
    assert (await intake.post("open", email_id="x" * 65, n=0)).status_code == 422
    assert (await intake.post("open", email_id=EMAIL, n=-1)).status_code == 422
    resp = await intake.http.post("/internal/tracking/open", json={"email_id": EMAIL, "n": 0})
    assert resp.status_code == 401
    resp = await intake.http.post(
        "/internal/tracking/open",
        json={"email_id": EMAIL, "n": 0},
        headers={"X-Internal-Token": "wrong"},
    )
    assert resp.status_code == 401
    await nothing_stored()
