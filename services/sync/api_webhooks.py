"""sync's internal API for Clio's webhooks, which the gateway's public route forwards to:
the raw body and the X-Hook-Secret / X-Hook-Signature headers in, the answer for Clio out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from services.sync.syncer import Syncer
from services.sync.webhooks import BadDelivery, BadSignature, Gone, UnknownKey, Webhooks
from shared.api.sync import WebhookState
from shared.runtime import Service


async def _read(request: Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def router(service: Service, webhooks: Webhooks) -> APIRouter:
    r = APIRouter(prefix="/internal", dependencies=[Depends(service.require_internal())])

    @r.post("/clio/webhooks/{key}", response_model=None)
    async def delivery(key: str, request: Request) -> Response:
        body = await _read(request, webhooks.settings.clio_webhook_max_bytes)
        if body is None:
            return _refuse(413, "payload too large")
        secret = request.headers.get("x-hook-secret")
        try:
            if secret is not None:
                if not secret or len(secret) > 500:
                    return _refuse(400, "bad X-Hook-Secret")
                if not await webhooks.handshake(key, secret):
                    return _refuse(409, "no webhook is waiting for its handshake")
                return JSONResponse({"ok": True}, headers={"X-Hook-Secret": secret})
            got = await webhooks.receive(key, body, request.headers.get("x-hook-signature"))
        except UnknownKey:
            return _refuse(404, "unknown webhook")
        except BadSignature as exc:
            return _refuse(401, str(exc))
        except BadDelivery as exc:
            return _refuse(400, str(exc))
        except Gone:
            return _refuse(410, "Clio is no longer connected for this firm")
        return JSONResponse({"queued": True, "model": got.model, "event": got.event})

    @r.get("/firms/{firm_id}/clio/webhooks")
    async def state(firm_id: str) -> WebhookState:
        return await webhooks.webhook_state(firm_id)

    return r


def install(app: FastAPI, service: Service, syncer: Syncer) -> Webhooks:
    """Webhooks for this sync service: the internal routes and the registration task."""
    webhooks = Webhooks(service, syncer.settings, syncer)
    service.background(webhooks.run_forever)
    app.include_router(router(service, webhooks))
    app.state.webhooks = webhooks
    return webhooks
