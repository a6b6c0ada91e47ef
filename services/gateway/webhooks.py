"""Providers' webhooks, passed through untouched: Stripe's to payments, bounces to the mailer.

Stripe signs the exact bytes it sends (`Stripe-Signature: t=...,v1=...` over `<t>.<body>`), so
the gateway must not parse, re-encode or reorder anything: payments verifies the signature on
the raw body and answers; the gateway answers Stripe with payments' status (400 for a bad
signature, so nothing changes; 2xx otherwise; 5xx makes Stripe retry later).
"""

from __future__ import annotations

import logging
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from services.gateway.clients.base import ServiceUnavailable, Upstream
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


# --- bounces --------------------------------------------------------------------------------
# A mail provider (or a forwarding rule) posts a raw delivery status notification, signed
# with the mailer's BOUNCE_WEBHOOK_SECRET (`X-Bounce-Signature: t=..,v1=..`, see
# services/mailer/bounce_intake.py). The mailer verifies and records it; the gateway only
# passes the bytes and the signature on, and the mailer's answer back (400 when forged).

BOUNCE_SIGNATURE = "x-bounce-signature"
MAX_BOUNCE_BYTES = 2 * 1024 * 1024


def mailer_http(request: Request) -> httpx.AsyncClient:
    """The mailer's internal API (swap it with app.dependency_overrides in a test)."""
    return request.app.state.mailer_http  # type: ignore[no-any-return]


@router.post("/webhooks/bounces", response_model=None)
async def bounce_webhook(
    request: Request, mailer: Annotated[httpx.AsyncClient, Depends(mailer_http)]
) -> Response:
    body = await read_body(request, MAX_BOUNCE_BYTES)
    if body is None:
        return JSONResponse({"detail": "payload too large"}, status_code=413)
    signature = request.headers.get(BOUNCE_SIGNATURE)
    if not signature:
        return JSONResponse({"detail": "bad signature"}, status_code=400)
    headers = {
        "Content-Type": request.headers.get("content-type", "message/rfc822"),
        "X-Bounce-Signature": signature,
    }
    try:
        resp = await Upstream.call(
            mailer, "POST", "/internal/bounces", content=body, headers=headers
        )
    except ServiceUnavailable as exc:
        log.error("gateway: bounce webhook not forwarded: %s", exc)
        return JSONResponse({"detail": "temporarily unavailable"}, status_code=503)
    if resp.status_code >= 500:
        log.error("gateway: the mailer answered %s to a bounce webhook", resp.status_code)
    return Response(
        resp.content,
        status_code=resp.status_code,
        media_type=resp.headers.get("content-type", "application/json"),
    )
