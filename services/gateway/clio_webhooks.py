"""Clio's webhooks, passed through untouched to sync.

Clio posts to /webhooks/clio/<key>, the key being the firm's unguessable part of the URL that
sync registered. Clio signs the exact bytes it sends (X-Hook-Signature, an HMAC of the raw
body), so the gateway forwards the body and the X-Hook-Secret / X-Hook-Signature headers as
they came, without parsing anything, and answers Clio with sync's answer: X-Hook-Secret
echoed on the handshake, 401 for a bad signature (nothing changes), 404 for an unknown key,
413 past the size limit, 2xx once the change is queued. Like the other webhooks, this route
needs no session and no CSRF token: the signature is its authentication.
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.gateway.clients.base import ServiceUnavailable, Upstream
from services.gateway.webhooks import read_body

log = logging.getLogger(__name__)

# A delivery is a few hundred bytes ({"data": {"id", "etag"}, "meta": {...}}).
MAX_CLIO_BYTES = 64 * 1024
KEY = re.compile(r"[A-Za-z0-9_-]{20,100}")
FORWARDED = ("X-Hook-Secret", "X-Hook-Signature")

router = APIRouter()


@router.post("/webhooks/clio/{key}", response_model=None)
async def clio_webhook(key: str, request: Request) -> Response:
    if not KEY.fullmatch(key):
        return JSONResponse({"detail": "unknown webhook"}, status_code=404)
    body = await read_body(request, MAX_CLIO_BYTES)
    if body is None:
        return JSONResponse({"detail": "payload too large"}, status_code=413)
    headers = {"Content-Type": request.headers.get("content-type", "application/json")}
    for name in FORWARDED:
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    http = request.app.state.clients.sync.http
    try:
        resp = await Upstream.call(
            http, "POST", f"/internal/clio/webhooks/{key}", content=body, headers=headers
        )
    except ServiceUnavailable as exc:
        log.error("gateway: Clio webhook not forwarded: %s", exc)
        return JSONResponse({"detail": "temporarily unavailable"}, status_code=503)
    if resp.status_code >= 500:
        log.error("gateway: sync answered %s to a Clio webhook", resp.status_code)
    out = Response(
        resp.content,
        status_code=resp.status_code,
        media_type=resp.headers.get("content-type", "application/json"),
    )
    if resp.status_code == 200 and "x-hook-secret" in resp.headers:
        out.headers["X-Hook-Secret"] = resp.headers["x-hook-secret"]
    return out
