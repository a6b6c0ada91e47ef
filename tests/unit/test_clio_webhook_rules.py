"""The pure rules of Clio webhooks: the signature check, reading a delivery, and what each
registration needs (create, renew before expiry, or nothing)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.sync.models import ClioWebhook
from services.sync.webhook_rules import BadDelivery, parse_delivery, plan, sign, signature_ok

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
BODY = b'{"data":{"id":7,"etag":"\\"e1\\""},"meta":{"event":"updated","webhook_id":3}}'


def hook(**kw: object) -> ClioWebhook:
    values: dict[str, object] = {
        "firm_id": "f",
        "model": "bill",
        "hook_key": "k",
        "webhook_id": "3",
        "shared_secret": "s3cret",
        "status": "enabled",
        "expires_at": NOW + 20 * DAY,
        "created_at": NOW - 10 * DAY,
        "checked_at": NOW - 10 * DAY,
    }
    values.update(kw)
    return ClioWebhook(**values)


def test_the_signature_is_the_hex_hmac_of_the_exact_body() -> None:
    good = sign("s3cret", BODY)
    assert len(good) == 64
    assert signature_ok("s3cret", BODY, good)
    assert signature_ok("s3cret", BODY, good.upper())
    assert not signature_ok("s3cret", BODY + b" ", good)
    assert not signature_ok("other", BODY, good)
    assert not signature_ok("s3cret", BODY, None)
    assert not signature_ok("s3cret", BODY, "")
    assert not signature_ok(None, BODY, good)
    assert not signature_ok("s3cret", BODY, "é" * 64)


def test_a_delivery_names_its_event_and_record() -> None:
    assert parse_delivery(BODY) == ("updated", "7")
    deleted = {"data": {"id": "12"}, "meta": {"event": "deleted"}}
    assert parse_delivery(json.dumps(deleted).encode()) == ("deleted", "12")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"not json",
        b'{"data": {"id": 1}}',
        b'{"data": {"id": 1}, "meta": {"event": "exploded"}}',
        b'{"data": {"id": true}, "meta": {"event": "updated"}}',
        b'{"data": {"id": ""}, "meta": {"event": "updated"}}',
        b'{"data": {}, "meta": {"event": "updated"}}',
    ],
)
def test_anything_else_is_a_bad_delivery(body: bytes) -> None:
    with pytest.raises(BadDelivery):
        parse_delivery(body)


def test_what_a_registration_needs() -> None:
    connected = NOW - 30 * DAY
    assert plan(None, connected, NOW, DAY) == "create"
    assert plan(hook(), connected, NOW, DAY) == "ok"
    # Less than the margin left: extend it.
    assert plan(hook(expires_at=NOW + timedelta(hours=23)), connected, NOW, DAY) == "renew"
    assert plan(hook(expires_at=NOW - DAY), connected, NOW, DAY) == "renew"
    # Connected again since it was last checked: make sure Clio still knows it.
    assert plan(hook(), NOW - timedelta(minutes=1), NOW, DAY) == "renew"
    # Waiting for the handshake: leave it a while, then create it again.
    waiting = hook(status="pending", created_at=NOW - timedelta(seconds=30))
    assert plan(waiting, connected, NOW, DAY) == "ok"
    assert plan(hook(status="pending", created_at=NOW - DAY), connected, NOW, DAY) == "create"
    registering = hook(status="registering", webhook_id=None, created_at=NOW)
    assert plan(registering, connected, NOW, DAY) == "ok"
    assert plan(hook(status="failed"), connected, NOW, DAY) == "create"
