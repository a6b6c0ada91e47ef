"""Stripe's webhooks, passed through to payments untouched.

Stripe signs the exact bytes it sends (`Stripe-Signature: t=...,v1=...` over `<t>.<body>`), so
the gateway must not parse, re-encode or reorder anything: payments verifies the signature on
the raw body and answers; the gateway answers Stripe with payments' status (400 for a bad
signature, so nothing changes; 2xx otherwise; 5xx makes Stripe retry later).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.gateway.clients.base import ServiceUnavailable
from services.gateway.deps import PaymentsClientDep

log = logging.getLogger(__name__)

# Stripe's events are a few kilobytes; anything this large is not one of them.
MAX_BODY_BYTES = 1024 * 1024


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The raw body, or None once it grows past `limit` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


router = APIRouter()


@router.post("/webhooks/stripe", response_model=None)
async def stripe_webhook(request: Request, payments: PaymentsClientDep) -> Response:
    body = await read_body(request)
    if body is None:
        return JSONResponse({"detail": "payload too large"}, status_code=413)
    headers = {"Content-Type": request.headers.get("content-type", "application/json")}
    signature = request.headers.get("stripe-signature")
    if signature is not None:
        headers["Stripe-Signature"] = signature
    try:
        resp = await payments.stripe_webhook(body, headers)
    except ServiceUnavailable as exc:
        log.error("gateway: webhook not forwarded: %s", exc)
        return JSONResponse({"detail": "temporarily unavailable"}, status_code=503)
    if resp.status_code >= 500:
        log.error("gateway: payments answered %s to a Stripe webhook", resp.status_code)
    return Response(
        resp.content,
        status_code=resp.status_code,
        media_type=resp.headers.get("content-type", "application/json"),
    )
