"""Stripe's webhooks go through the gateway to payments byte for byte: the signature covers
the exact body, so anything re-encoded on the way would fail verification."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import Gateway

pytestmark = pytest.mark.timeout(60)

# Spacing, key order and non-ASCII exactly as Stripe sent them; json.loads + dumps would not
# give these bytes back.
BODY = (
    b'{\n  "id": "evt_1",  "object": "event",\n  "type": "charge.refunded",'
    b' "data": {"object": {"description": "Caf\xc3\xa9 \\u00e9"}}, "created": 1747494245.0}\n'
)
SIGNATURE = "t=1747494245,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"


async def test_body_and_signature_reach_payments_unchanged(gateway: Gateway) -> None:
    gateway.payments.on("POST", "/webhooks/stripe", body={"received": True})
    resp = await gateway.client.http.post(
        "/webhooks/stripe",
        content=BODY,
        headers={"Stripe-Signature": SIGNATURE, "Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status_code == 200 and resp.json() == {"received": True}
    (sent,) = gateway.payments.sent("POST", "/webhooks/stripe")
    assert sent.content == BODY
    assert sent.headers["stripe-signature"] == SIGNATURE
    assert sent.headers["content-type"] == "application/json; charset=utf-8"


async def test_a_bad_signature_is_answered_400(gateway: Gateway) -> None:
    gateway.payments.on(
        "POST", "/webhooks/stripe", status=400, body={"detail": "invalid signature"}
    )
    resp = await gateway.client.http.post(
        "/webhooks/stripe", content=BODY, headers={"Stripe-Signature": "t=1,v1=bad"}
    )
    assert resp.status_code == 400 and resp.json() == {"detail": "invalid signature"}
    (sent,) = gateway.payments.sent("POST", "/webhooks/stripe")
    assert sent.headers["stripe-signature"] == "t=1,v1=bad"


async def test_no_signature_is_passed_on_as_none(gateway: Gateway) -> None:
    gateway.payments.on("POST", "/webhooks/stripe", status=400, body={"detail": "no signature"})
    resp = await gateway.client.http.post("/webhooks/stripe", content=BODY)
    assert resp.status_code == 400
    (sent,) = gateway.payments.sent("POST", "/webhooks/stripe")
    assert "stripe-signature" not in sent.headers


async def test_payments_down_makes_stripe_retry(gateway: Gateway) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    gateway.payments.handle("POST", "/webhooks/stripe", down)
    resp = await gateway.client.http.post(
        "/webhooks/stripe", content=BODY, headers={"Stripe-Signature": SIGNATURE}
    )
    assert resp.status_code == 503, "a 5xx, so Stripe delivers the event again later"


async def test_an_oversized_body_is_refused_unread(gateway: Gateway) -> None:
    resp = await gateway.client.http.post(
        "/webhooks/stripe", content=b"x" * (1024 * 1024 + 1), headers={"Stripe-Signature": "t=1"}
    )
    assert resp.status_code == 413
    assert not gateway.payments.sent("POST", "/webhooks/stripe")
