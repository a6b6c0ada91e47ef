"""The pure rules of Clio webhooks (services/sync/webhooks.py): the delivery signature, reading
a delivery, and what each registration needs. No I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.sync.changes import EVENTS
from services.sync.models import ClioWebhook

# A webhook still waiting for its handshake this long is created again.
HANDSHAKE_GRACE = timedelta(minutes=2)


class UnknownKey(LookupError):
    """No firm's webhooks post to this key (404)."""


class BadSignature(ValueError):
    """X-Hook-Signature is missing or does not match (401): nothing is done."""


class Gone(LookupError):
    """The firm disconnected Clio: 410 tells Clio to stop posting to this webhook."""


class BadDelivery(ValueError):
    """A signed body that is not a delivery Clio sends (400)."""


# --- pure rules -----------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str | None, body: bytes, given: str | None) -> bool:
    if not secret or not given:
        return False
    expected = sign(secret, body).encode()
    return hmac.compare_digest(expected, given.strip().lower().encode("utf-8", "replace"))


def plan(
    row: ClioWebhook | None,
    connected_at: datetime | None,
    now: datetime,
    margin: timedelta,
) -> str:
    """What one webhook needs: "create", "renew" (extend it, which also proves Clio still
    knows it), or "ok"."""
    if row is None or row.webhook_id is None or row.status == "failed":
        return "create" if row is None or row.status != "registering" else _stale(row, now)
    if row.status in ("registering", "pending"):
        return _stale(row, now)
    if connected_at is not None and (row.checked_at is None or row.checked_at < connected_at):
        return "renew"  # connected again: the webhook may be gone with the old grant
    if row.expires_at is None or row.expires_at - now < margin:
        return "renew"
    return "ok"


def _stale(row: ClioWebhook, now: datetime) -> str:
    return "create" if row.created_at < now - HANDSHAKE_GRACE else "ok"


@dataclass(frozen=True)
class Delivery:
    firm_id: str
    model: str
    event: str
    record_id: str


def parse_delivery(body: bytes) -> tuple[str, str]:
    """(event, record id) of a verified delivery body."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise BadDelivery("the body is not JSON") from exc
    data = doc.get("data") if isinstance(doc, dict) else None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not isinstance(meta, dict):
        raise BadDelivery("data and meta are required")
    record_id, event = data.get("id"), meta.get("event")
    if isinstance(record_id, bool) or not isinstance(record_id, int | str) or not str(record_id):
        raise BadDelivery("data.id is missing")
    if event not in EVENTS:
        raise BadDelivery(f"unknown event {event!r}")
    return str(event), str(record_id)
