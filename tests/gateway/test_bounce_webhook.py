"""A provider's bounce webhook through the gateway to the real mailer app: the raw DSN and its
signature reach the mailer unchanged; a forged one is refused and changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway import webhooks
from services.mailer import bounce_intake
from services.mailer.app import MIGRATIONS as MAILER_MIGRATIONS
from services.mailer.app import create_app as mailer_app
from services.mailer.models import EmailRecipient, OutgoingEmail
from services.mailer.settings import MailerSettings
from shared.migrations import upgrade_async
from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.timeout(60)

SECRET = "provider-secret-for-the-gateway-test"
EMAIL_ID = "7c0f3d2ab19e4c55a0d1e2f3a4b5c6d7"
RAW = (Path(__file__).parent.parent / "mailer" / "dsn" / "postfix.eml").read_bytes()
NOW = datetime(2026, 12, 7, 20, 0, tzinfo=UTC)


@pytest.fixture
async def mailer(tmp_path: Path, gateway: Gateway) -> AsyncIterator[Any]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'mailer.db'}"
    await upgrade_async(MAILER_MIGRATIONS, url)
    app = mailer_app(
        MailerSettings(
            database_url=url,
            environment="test",
            bounce_intake="webhook",
            bounce_webhook_secret=SECRET,
        )
    )
    service = app.state.service
    async with service.sessionmaker() as s, s.begin():
        s.add(
            OutgoingEmail(
                email_id=EMAIL_ID,
                firm_id="firm-1",
                to=json.dumps(["nobody@example.org"]),
                subject="x",
                content_url="http://x",
                status="sent",
                created_at=NOW,
            )
        )
        s.add(
            EmailRecipient(email_id=EMAIL_ID, n=0, firm_id="firm-1", address="nobody@example.org")
        )
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://mailer",
        headers={"X-Internal-Token": "dev-internal-token"},
    )
    assert gateway.app is not None
    gateway.app.dependency_overrides[webhooks.mailer_http] = lambda: http
    yield app
    await http.aclose()
    await app.state.postman.http.aclose()
    await service.engine.dispose()


async def bounce_kind(app: Any) -> str | None:
    async with app.state.service.sessionmaker() as s:
        row = await s.get(EmailRecipient, (EMAIL_ID, 0))
        return row.bounce_kind  # type: ignore[no-any-return]


async def test_a_signed_report_is_recorded(gateway: Gateway, mailer: Any) -> None:
    resp = await gateway.client.http.post(
        "/webhooks/bounces",
        content=RAW,
        headers={
            "X-Bounce-Signature": bounce_intake.sign(SECRET, RAW),
            "Content-Type": "message/rfc822",
        },
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["recorded"] == ["email.bounced"]
    assert await bounce_kind(mailer) == "hard"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Bounce-Signature": "t=1,v1=00"},
        {"X-Bounce-Signature": bounce_intake.sign("a-guess", RAW)},
        {"X-Bounce-Signature": bounce_intake.sign(SECRET, RAW + b" ")},
    ],
)
async def test_a_forged_report_changes_nothing(
    gateway: Gateway, mailer: Any, headers: dict[str, str]
) -> None:
    resp = await gateway.client.http.post("/webhooks/bounces", content=RAW, headers=headers)
    assert resp.status_code == 400
    assert await bounce_kind(mailer) is None


async def test_an_oversized_report_is_refused_unread(gateway: Gateway, mailer: Any) -> None:
    big = b"x" * (webhooks.MAX_BOUNCE_BYTES + 1)
    resp = await gateway.client.http.post(
        "/webhooks/bounces",
        content=big,
        headers={"X-Bounce-Signature": bounce_intake.sign(SECRET, big)},
    )
    assert resp.status_code == 413


async def test_the_mailer_down_makes_the_provider_retry(gateway: Gateway) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(down), base_url="http://mailer")
    assert gateway.app is not None
    gateway.app.dependency_overrides[webhooks.mailer_http] = lambda: http
    resp = await gateway.client.http.post(
        "/webhooks/bounces",
        content=RAW,
        headers={"X-Bounce-Signature": bounce_intake.sign(SECRET, RAW)},
    )
    assert resp.status_code == 503
