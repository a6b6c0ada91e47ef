"""Clio webhooks: registering them, keeping them alive, the handshake, and each delivery.

With a public URL set (CLIO_WEBHOOK_URL), each connected firm gets three webhooks (bills,
contacts, matters: created, updated, deleted) posting to <url>/webhooks/clio/<key>, where the
key is the firm's own unguessable part of the path. Right after creation Clio posts once with
an X-Hook-Secret header, echoed back to enable the webhook. Each delivery is signed
(X-Hook-Signature: hex HMAC-SHA256 of the raw body, keyed by the webhook's shared secret) and
checked before anything is parsed; then the change is queued (changes.py) and the answer goes
back at once. A periodic check registers what is missing, extends each webhook a margin before
it expires, and creates it again when Clio no longer knows it. Without a public URL (a laptop)
nothing is registered and the poll alone brings changes in.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from services.sync.changes import EVENTS, MODELS, Changes
from services.sync.clio import ClioAuthError, ClioClient, ClioError
from services.sync.mapping import BILL_FIELDS, CONTACT_FIELDS
from services.sync.models import ClioConnection, ClioWebhook
from services.sync.ratelimit import Priority
from services.sync.settings import SyncSettings
from services.sync.syncer import Syncer
from services.sync.webhook_rules import (
    BadDelivery,
    BadSignature,
    Delivery,
    Gone,
    UnknownKey,
    parse_delivery,
    plan,
    sign,
    signature_ok,
)
from shared.api.sync import WebhookState
from shared.runtime import Service

log = logging.getLogger(__name__)

# The fields each webhook carries: `updated` fires when one of them changes, so these are the
# fields the syncer reads (a matter's number and description show on its bills).
HOOK_FIELDS = {
    "bill": BILL_FIELDS,
    "contact": CONTACT_FIELDS,
    "matter": "id,etag,display_number,description,updated_at",
}
CREATE_FIELDS = "id,shared_secret,expires_at,status"
# After Clio refused or failed, a firm is tried again this much later (or when it reconnects).
RETRY_AFTER = timedelta(minutes=5)


# --- Clio's webhook endpoints ---------------------------------------------------------------


async def _send(
    client: ClioClient, method: str, path: str, body: dict[str, Any] | None = None, **params: Any
) -> httpx.Response:
    """One write to Clio's API with the firm's token (refreshed once on a 401), through the
    firm's request budget like every read. ClioClient reads only; these are its only writes."""
    if not client.tokens:
        raise ClioAuthError("Clio is not connected")
    if client.tokens.expires_at and client.tokens.expires_at < datetime.now(UTC) + timedelta(
        minutes=1
    ):
        await client.refresh()
    url = f"{client.base_url}/api/v4/{path}"
    refreshed = False
    for _ in range(4):
        assert client.tokens is not None
        headers = {"Authorization": f"Bearer {client.tokens.access_token}"}
        await client.budget.acquire(Priority.BULK)
        client.requests += 1
        try:
            resp = await client._http.request(
                method, url, json=body, params=params or None, headers=headers
            )
        except BaseException as exc:
            client.budget.release()
            if isinstance(exc, httpx.TransportError):
                raise ClioError(f"Clio unreachable: {exc}") from exc
            raise
        if resp.status_code == 429:
            client.budget.throttled(resp.headers)  # the firm's requests wait it out
            continue
        if resp.status_code == 401:
            client.budget.release()
            if not refreshed:
                refreshed = True
                await client.refresh()
                continue
            raise ClioAuthError("Clio refused the access token: connect Clio again")
        client.budget.observe(resp.headers)
        return resp
    raise ClioError(f"Clio kept answering 429 to {method} {path}")


def _ts(value: Any) -> datetime | None:
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class Webhooks:
    def __init__(self, service: Service, settings: SyncSettings, syncer: Syncer) -> None:
        self.service = service
        self.settings = settings
        self.syncer = syncer
        self.changes = Changes(syncer)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._retry_at: dict[str, tuple[datetime, datetime | None]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.settings.clio_webhook_url)

    def url_for(self, key: str) -> str:
        return f"{self.settings.clio_webhook_url.rstrip('/')}/webhooks/clio/{key}"

    # --- registration and renewal -----------------------------------------------------------

    async def run_forever(self) -> None:
        if not self.enabled:
            log.info("webhooks: no CLIO_WEBHOOK_URL; changes come by polling alone")
            return
        while True:
            try:
                await self.ensure_all()
            except Exception:
                log.exception("webhooks: a registration round failed")
            await asyncio.sleep(self.settings.clio_webhook_check_seconds)

    async def ensure_all(self) -> None:
        now = datetime.now(UTC)
        margin = timedelta(hours=self.settings.clio_webhook_renew_hours)
        async with self.service.sessionmaker() as s:
            conns = {c.firm_id: c.connected_at for c in await s.scalars(select(ClioConnection))}
            rows = list(await s.scalars(select(ClioWebhook)))
        by_firm: defaultdict[str, dict[str, ClioWebhook]] = defaultdict(dict)
        for row in rows:
            by_firm[row.firm_id][row.model] = row
        for firm_id, connected_at in conns.items():
            retry = self._retry_at.get(firm_id)
            if retry is not None and retry[0] > now and retry[1] == connected_at:
                continue
            hooks = by_firm.get(firm_id, {})
            if any(plan(hooks.get(m), connected_at, now, margin) != "ok" for m in MODELS):
                await self.ensure_firm(firm_id)

    async def ensure_firm(self, firm_id: str) -> None:
        """Register what is missing and renew what is due, for one firm (on connect too)."""
        if not self.enabled:
            return
        async with self._locks[firm_id]:
            async with self.service.sessionmaker() as s:
                conn = await s.get(ClioConnection, firm_id)
                hooks = {
                    r.model: r
                    for r in await s.scalars(
                        select(ClioWebhook).where(ClioWebhook.firm_id == firm_id)
                    )
                }
            if conn is None:
                return
            key = next(iter(hooks.values())).hook_key if hooks else secrets.token_urlsafe(32)
            now = datetime.now(UTC)
            margin = timedelta(hours=self.settings.clio_webhook_renew_hours)
            client = self.syncer.client(conn)
            try:
                for model in MODELS:
                    row = hooks.get(model)
                    action = plan(row, conn.connected_at, now, margin)
                    if action == "renew" and row is not None:
                        if await self._renew(client, row):
                            continue
                        row = None  # gone from Clio: nothing to delete there
                    if action != "ok":
                        await self._create(client, firm_id, model, key, row)
                self._retry_at.pop(firm_id, None)
            except ClioError as exc:
                log.warning("webhooks: firm %s: %s", firm_id, exc)
                self._retry_at[firm_id] = (datetime.now(UTC) + RETRY_AFTER, conn.connected_at)
            finally:
                await client.aclose()

    def _expiry(self) -> str:
        return (datetime.now(UTC) + timedelta(days=self.settings.clio_webhook_days)).isoformat()

    async def _renew(self, client: ClioClient, row: ClioWebhook) -> bool:
        """Extend the webhook; False when Clio no longer knows it (create it again)."""
        resp = await _send(
            client,
            "PATCH",
            f"webhooks/{row.webhook_id}.json",
            {"data": {"expires_at": self._expiry()}},
            fields="id,expires_at,status",
        )
        if resp.status_code in (404, 410):
            log.info("webhooks: firm %s %s webhook is gone; creating it", row.firm_id, row.model)
            return False
        if resp.status_code >= 400:
            await self._failed(row.id, f"renewal refused: {resp.status_code}")
            raise ClioError(f"Clio answered {resp.status_code} renewing a webhook")
        data = (resp.json() or {}).get("data") or {}
        async with self.service.sessionmaker() as s, s.begin():
            saved = await s.get(ClioWebhook, row.id)
            if saved is not None:
                saved.expires_at = _ts(data.get("expires_at")) or saved.expires_at
                if data.get("status") == "suspended":
                    saved.status = "failed"
                    saved.last_error = "Clio suspended the webhook"
                saved.checked_at = datetime.now(UTC)
        return data.get("status") != "suspended"

    async def _create(
        self, client: ClioClient, firm_id: str, model: str, key: str, old: ClioWebhook | None
    ) -> None:
        if old is not None and old.webhook_id:
            # Best effort: a webhook left behind would post with a secret no longer kept.
            try:
                await _send(client, "DELETE", f"webhooks/{old.webhook_id}.json")
            except ClioAuthError:
                raise
            except ClioError:
                pass
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.scalar(
                select(ClioWebhook).where(
                    ClioWebhook.firm_id == firm_id, ClioWebhook.model == model
                )
            )
            if row is None:
                row = ClioWebhook(firm_id=firm_id, model=model)
                s.add(row)
            row.hook_key = key
            row.webhook_id = row.shared_secret = row.expires_at = row.last_error = None
            row.status = "registering"
            row.created_at = datetime.now(UTC)
            await s.flush()
            row_id = row.id
        body = {
            "data": {
                "url": self.url_for(key),
                "model": model,
                "fields": HOOK_FIELDS[model],
                "events": list(EVENTS),
                "expires_at": self._expiry(),
            }
        }
        # The handshake may arrive while this request is still open (handshake() below).
        resp = await _send(client, "POST", "webhooks.json", body, fields=CREATE_FIELDS)
        if resp.status_code >= 400:
            await self._failed(row_id, f"Clio refused the webhook ({resp.status_code})")
            raise ClioError(f"Clio answered {resp.status_code} creating a {model} webhook")
        data = (resp.json() or {}).get("data") or {}
        this = ClioWebhook.id == row_id
        async with self.service.sessionmaker() as s, s.begin():
            await s.execute(
                update(ClioWebhook)
                .where(this)
                .values(
                    webhook_id=str(data.get("id")),
                    shared_secret=data.get("shared_secret"),
                    expires_at=_ts(data.get("expires_at")),
                    checked_at=datetime.now(UTC),
                )
            )
            # The handshake may be committing at this moment: only a row it has not enabled
            # yet becomes pending (one statement, so neither change is lost).
            status = "enabled" if data.get("status") == "enabled" else "pending"
            await s.execute(
                update(ClioWebhook)
                .where(this, ClioWebhook.status == "registering")
                .values(status=status)
            )
        log.info("webhooks: firm %s %s webhook %s registered", firm_id, model, data.get("id"))

    async def _failed(self, row_id: int, reason: str) -> None:
        async with self.service.sessionmaker() as s, s.begin():
            row = await s.get(ClioWebhook, row_id)
            if row is not None:
                row.status = "failed"
                row.last_error = reason
                row.checked_at = datetime.now(UTC)

    async def forget_firm(self, firm_id: str) -> None:
        """Before a firm disconnects (while its token still works): delete its webhooks at
        Clio, best effort, and here. One left behind is answered 410, which stops it."""
        async with self._locks[firm_id]:
            async with self.service.sessionmaker() as s:
                conn = await s.get(ClioConnection, firm_id)
                rows = list(
                    await s.scalars(select(ClioWebhook).where(ClioWebhook.firm_id == firm_id))
                )
            if conn is not None and self.enabled:
                client = self.syncer.client(conn)
                try:
                    for row in rows:
                        if row.webhook_id:
                            await _send(client, "DELETE", f"webhooks/{row.webhook_id}.json")
                except ClioError as exc:
                    log.warning("webhooks: firm %s: not deleted at Clio: %s", firm_id, exc)
                finally:
                    await client.aclose()
            async with self.service.sessionmaker() as s, s.begin():
                for row in rows:
                    saved = await s.get(ClioWebhook, row.id)
                    if saved is not None:
                        await s.delete(saved)

    # --- the handshake and deliveries -------------------------------------------------------

    async def handshake(self, key: str, secret: str) -> bool:
        """Clio's first post to a new webhook: True (echo the secret) when one of this key's
        webhooks is waiting for it. Raises UnknownKey."""
        async with self.service.sessionmaker() as s, s.begin():
            rows = list(await s.scalars(select(ClioWebhook).where(ClioWebhook.hook_key == key)))
            if not rows:
                raise UnknownKey(key)
            waiting = [r for r in rows if r.status in ("registering", "pending")]
            known = [
                r
                for r in rows
                if r.shared_secret
                and hmac.compare_digest(r.shared_secret.encode(), secret.encode("utf-8", "replace"))
            ]
            target = next((r for r in known if r in waiting), None)
            if target is None and waiting:
                # Registrations run one at a time per firm: the newest waiting one is it.
                target = max(waiting, key=lambda r: r.created_at)
            if target is None:
                return bool(known)
            await s.execute(
                update(ClioWebhook).where(ClioWebhook.id == target.id).values(status="enabled")
            )
            log.info("webhooks: firm %s %s webhook confirmed", target.firm_id, target.model)
            return True

    async def verify(self, key: str, body: bytes, signature: str | None) -> Delivery:
        """The delivery, once its signature matches one of the key's webhooks' secrets."""
        async with self.service.sessionmaker() as s:
            rows = list(await s.scalars(select(ClioWebhook).where(ClioWebhook.hook_key == key)))
        if not rows:
            raise UnknownKey(key)
        match = next((r for r in rows if signature_ok(r.shared_secret, body, signature)), None)
        if match is None:
            raise BadSignature("X-Hook-Signature does not match")
        event, record_id = parse_delivery(body)
        async with self.service.sessionmaker() as s:
            if await s.get(ClioConnection, match.firm_id) is None:
                raise Gone(match.firm_id)
        return Delivery(match.firm_id, match.model, event, record_id)

    async def receive(self, key: str, body: bytes, signature: str | None) -> Delivery:
        delivery = await self.verify(key, body, signature)
        self.changes.submit(delivery.firm_id, delivery.model, delivery.event, delivery.record_id)
        return delivery

    # --- state for Settings -----------------------------------------------------------------

    async def status_fields(self, firm_id: str) -> dict[str, Any]:
        """ClioStatus's `webhooks`, as api_connection.router's `extras` take it."""
        return {"webhooks": await self.webhook_state(firm_id)}

    async def webhook_state(self, firm_id: str) -> WebhookState:
        poll = self.settings.sync_interval_seconds
        if not self.enabled:
            reason = "No public URL is set (CLIO_WEBHOOK_URL), so Clio cannot post changes here."
            return WebhookState(mode="polling", reason=reason, poll_seconds=poll)
        now = datetime.now(UTC)
        async with self.service.sessionmaker() as s:
            conn = await s.get(ClioConnection, firm_id)
            rows = list(await s.scalars(select(ClioWebhook).where(ClioWebhook.firm_id == firm_id)))
        if conn is None:
            return WebhookState(mode="polling", reason="Clio is not connected.", poll_seconds=poll)
        # Enabled, not expired, and known to Clio since the firm last connected.
        live = [
            r
            for r in rows
            if r.status == "enabled"
            and r.expires_at
            and r.expires_at > now
            and r.checked_at
            and r.checked_at >= conn.connected_at
        ]
        expires = min((r.expires_at for r in live if r.expires_at), default=None)
        if len(live) == len(MODELS):
            return WebhookState(
                mode="webhooks", active=len(live), expires_at=expires, poll_seconds=poll
            )
        errors = [f"{r.model}: {r.last_error}" for r in rows if r.last_error]
        reason = "; ".join(errors) if errors else "Registering webhooks with Clio."
        return WebhookState(
            mode="polling", reason=reason, active=len(live), expires_at=expires, poll_seconds=poll
        )


__all__ = [
    "BadDelivery",
    "BadSignature",
    "Gone",
    "UnknownKey",
    "Webhooks",
    "parse_delivery",
    "plan",
    "sign",
]
