"""StripeProcessor against the Stripe sandbox running as its own process, with webhooks
delivered to a real receiver: what the ledger gets from each card and ACH flow, signature
checks, idempotent checkout, Connect deposits, refunds with reversals, and errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import stripe

from sandbox.stripe import signature_header
from services.payments.processors import (
    CheckoutItem,
    CheckoutRequest,
    Deposit,
    DepositRequest,
    InvalidSignature,
    ProcessorError,
    ProcessorEvent,
    RefundOrder,
)
from services.payments.settings import PaymentsSettings
from services.payments.stripe_processor import StripeProcessor, checkout_params
from tests.stripe.harness import Received, WebhookReceiver, sandbox_process, types_of

API_KEY = "sk_test_envelopepay_suite"
SECRET = "whsec_envelopepay_processor_suite"
OPERATING = "acct_1DemoLawOperating"
TRUST = "acct_1DemoLawTrust0000"


class Env:
    def __init__(self, base: str, hooks: WebhookReceiver, processor: StripeProcessor) -> None:
        self.base = base
        self.hooks = hooks
        self.processor = processor
        self.http = httpx.AsyncClient(base_url=base, timeout=10)
        self.api = {"Authorization": f"Bearer {API_KEY}"}

    async def checkout(self, session_id: str, **overrides: Any) -> str:
        checkout = await self.processor.create_checkout(request(session_id, **overrides))
        return checkout.ref

    async def pay(self, session_ref: str, **details: Any) -> dict[str, Any]:
        body = {"method": "card", "card_number": "4242424242424242", "name": "Ada Client"}
        body.update(details)
        response = await self.http.post(
            f"/sandbox/checkout/sessions/{session_ref}/complete", json=body
        )
        payload: dict[str, Any] = response.json()
        if response.status_code == 402:
            intent: dict[str, Any] = payload["error"]["payment_intent"]
            return intent
        assert response.status_code == 200, response.text
        paid: dict[str, Any] = payload["payment_intent"]
        return paid

    async def settle(self, intent_id: str) -> None:
        response = await self.http.post(f"/sandbox/payment_intents/{intent_id}/settle")
        assert response.status_code == 200, response.text

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.http.get(path, params=params, headers=self.api)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def events(self, object_id: str, until: str, count: int = 1) -> list[Received]:
        def arrived(_: list[Received]) -> bool:
            return types_of(self.hooks.matching(object_id)).count(until) >= count

        self.hooks.wait_for(arrived)
        return self.hooks.matching(object_id)

    def parsed(self, deliveries: list[Received]) -> list[ProcessorEvent]:
        parsed = (self.processor.parse_webhook(d.body, d.signature) for d in deliveries)
        return [event for event in parsed if event is not None]


# One expiry for the whole module: a request built again a second later must be the same
# request, or Stripe refuses the reused idempotency key.
EXPIRES_AT = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)


def request(session_id: str, **overrides: Any) -> CheckoutRequest:
    fields: dict[str, Any] = {
        "session_id": session_id,
        "firm_id": "firm-1",
        "firm_name": "Demo Law LLP",
        "currency": "USD",
        "items": [
            CheckoutItem("inv-1", "INV-1042", "invoice", 10000),
            CheckoutItem("tr-1", "TR-17", "trust_request", 5000),
        ],
        "customer_email": "client@example.com",
        "success_url": "http://app.test/pay/done",
        "cancel_url": "http://app.test/pay",
        "expires_at": EXPIRES_AT,
    }
    fields.update(overrides)
    return CheckoutRequest(**fields)


def settings(base: str, **overrides: Any) -> PaymentsSettings:
    values: dict[str, Any] = {
        "payments_processor": "stripe",
        "stripe_api_key": API_KEY,
        "stripe_webhook_secret": SECRET,
        "stripe_api_base": base,
    }
    values.update(overrides)
    return PaymentsSettings(**values)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture(scope="module")
def sandbox_url(
    receiver: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    env = {
        "STRIPE_SANDBOX_WEBHOOK_URL": receiver.url,
        "STRIPE_SANDBOX_WEBHOOK_SECRET": SECRET,
        "STRIPE_SANDBOX_ACH_SECONDS": "-1",
        "STRIPE_SANDBOX_API_KEYS": API_KEY,
    }
    log = tmp_path_factory.mktemp("stripe-sandbox") / "sandbox.log"
    with sandbox_process(env, log) as base:
        yield base


@pytest.fixture
async def env(sandbox_url: str, receiver: WebhookReceiver) -> AsyncIterator[Env]:
    processor = StripeProcessor(settings(sandbox_url))
    harness = Env(sandbox_url, receiver, processor)
    yield harness
    await harness.http.aclose()
    await processor.close()


def kinds(events: list[ProcessorEvent]) -> list[tuple[str, str]]:
    return [(event.raw_type, event.kind) for event in events]


# Checkout


async def test_checkout_is_one_session_per_session_id(env: Env) -> None:
    first = await env.processor.create_checkout(request("sess-idem"))
    again = await env.processor.create_checkout(request("sess-idem"))
    assert first.ref == again.ref and first.ref.startswith("cs_test_")
    assert first.redirect_url == f"{env.base}/pay/{first.ref}"
    listed = await env.get("/v1/checkout/sessions", client_reference_id="sess-idem")
    assert [s["id"] for s in listed["data"]] == [first.ref]

    session = await env.get(f"/v1/checkout/sessions/{first.ref}", **{"expand[]": "line_items"})
    assert session["payment_method_types"] == ["card", "us_bank_account"]
    assert session["metadata"] == {"firm_id": "firm-1", "session_id": "sess-idem"}
    assert session["amount_total"] == 15000 and session["currency"] == "usd"
    names = [item["description"] for item in session["line_items"]["data"]]
    assert names == ["Invoice INV-1042", "Trust request TR-17"]

    changed = request("sess-idem", items=[CheckoutItem("inv-1", "INV-1042", "invoice", 9000)])
    with pytest.raises(ProcessorError) as mismatch:
        await env.processor.create_checkout(changed)
    assert mismatch.value.retryable is False


def test_checkout_parameters_depend_only_on_the_request() -> None:
    """The idempotency key replays only identical parameters, so nothing may vary with
    the clock or the call."""
    req = request("sess-pure")
    assert checkout_params(req) == checkout_params(req)
    euro = checkout_params(request("sess-eur", currency="EUR"))
    assert euro["payment_method_types"] == ["card"]  # Stripe debits US accounts in USD only
    assert euro["line_items"][0]["price_data"]["currency"] == "eur"


# Card


async def test_a_card_payment_reaches_the_ledger_as_succeeded(env: Env) -> None:
    ref = await env.checkout("sess-card")
    intent = await env.pay(ref, email="ada@example.com")
    deliveries = env.events(intent["id"], "checkout.session.completed")
    events = env.parsed(deliveries)
    assert kinds(events) == [
        ("payment_intent.succeeded", "payment.succeeded"),
        ("checkout.session.completed", "payment.succeeded"),
    ]
    from_intent, from_session = events
    assert from_intent.session_id == from_session.session_id == "sess-card"
    assert from_intent.payment_ref == from_session.payment_ref == intent["id"]
    assert from_intent.charge_ref == intent["latest_charge"]
    assert from_intent.amount_minor == from_session.amount_minor == 15000
    assert from_session.method == "card"
    assert from_session.payer_email == "ada@example.com"
    assert from_session.payer_name == "Ada Client"
    assert len({e.event_id for e in events}) == 2
    assert all(e.event_id.startswith("evt_") for e in events)
    assert abs(from_intent.occurred_at.timestamp() - time.time()) < 60
    # payment_intent.created and charge.succeeded are not the ledger's business.
    assert len(deliveries) == 4


async def test_a_declined_card_is_a_failed_payment(env: Env) -> None:
    ref = await env.checkout("sess-declined")
    intent = await env.pay(ref, card_number="4000000000000002")
    events = env.parsed(env.events(intent["id"], "payment_intent.payment_failed"))
    assert kinds(events) == [("payment_intent.payment_failed", "payment.failed")]
    failed = events[0]
    assert failed.session_id == "sess-declined" and failed.payment_ref == intent["id"]
    assert failed.method == "card" and failed.last4 == "0002"
    assert failed.failure_code == "card_declined"
    assert failed.failure_reason == "Your card was declined."


# ACH


async def test_an_ach_payment_is_processing_until_it_settles(env: Env) -> None:
    ref = await env.checkout("sess-ach")
    intent = await env.pay(ref, method="us_bank_account", account_number="000123456789")
    first = env.parsed(env.events(intent["id"], "checkout.session.completed"))
    assert kinds(first) == [
        ("payment_intent.processing", "payment.processing"),
        ("checkout.session.completed", "payment.processing"),
    ]
    assert all(e.method == "ach" and e.session_id == "sess-ach" for e in first)

    await env.settle(intent["id"])
    done = env.parsed(env.events(intent["id"], "checkout.session.async_payment_succeeded"))
    assert kinds(done)[2:] == [
        ("payment_intent.succeeded", "payment.succeeded"),
        ("checkout.session.async_payment_succeeded", "payment.succeeded"),
    ]
    assert done[-1].method == "ach" and done[-1].payment_ref == intent["id"]
    assert done[-2].charge_ref == intent["latest_charge"] and done[-2].amount_minor == 15000


async def test_an_ach_payment_from_the_r01_account_fails_with_r01(env: Env) -> None:
    ref = await env.checkout("sess-r01")
    intent = await env.pay(ref, method="us_bank_account", account_number="000222222227")
    await env.settle(intent["id"])
    events = env.parsed(env.events(intent["id"], "checkout.session.async_payment_failed"))
    assert kinds(events)[2:] == [
        ("payment_intent.payment_failed", "payment.failed"),
        ("checkout.session.async_payment_failed", "payment.failed"),
    ]
    from_intent, from_session = events[2:]
    assert from_intent.failure_code == "R01" and from_intent.method == "ach"
    assert "insufficient funds" in (from_intent.failure_reason or "")
    assert from_intent.last4 == "2227"
    assert from_session.session_id == "sess-r01" and from_session.method == "ach"


async def test_a_bank_return_after_settlement_is_a_dispute(env: Env) -> None:
    ref = await env.checkout("sess-return")
    intent = await env.pay(ref, method="us_bank_account", account_number="000123456789")
    await env.settle(intent["id"])
    await env.http.post(f"/sandbox/charges/{intent['latest_charge']}/dispute", json={})
    events = env.parsed(env.events(intent["id"], "charge.dispute.created"))
    disputed = [e for e in events if e.kind == "payment.disputed"]
    assert len(disputed) == 1
    assert disputed[0].payment_ref == intent["id"]
    assert disputed[0].charge_ref == intent["latest_charge"]
    assert disputed[0].failure_code == "R10" and disputed[0].method == "ach"
    assert disputed[0].amount_minor == 15000


# Signatures


async def test_webhooks_that_do_not_verify_raise_invalid_signature(env: Env) -> None:
    ref = await env.checkout("sess-forged")
    intent = await env.pay(ref)
    real = env.events(intent["id"], "payment_intent.succeeded")[-1]
    assert env.processor.parse_webhook(real.body, real.signature) is not None

    with pytest.raises(InvalidSignature):
        env.processor.parse_webhook(real.body.replace(b"15000", b"1"), real.signature)
    with pytest.raises(InvalidSignature):
        env.processor.parse_webhook(real.body, None)
    with pytest.raises(InvalidSignature):
        env.processor.parse_webhook(real.body, "t=1,v1=deadbeef")
    stale = signature_header(real.body, SECRET, int(time.time()) - 600)
    with pytest.raises(InvalidSignature):
        env.processor.parse_webhook(real.body, stale)
    other = StripeProcessor(settings(env.base, stripe_webhook_secret="whsec_someone_else"))
    with pytest.raises(InvalidSignature):
        other.parse_webhook(real.body, real.signature)
    await other.close()
    with pytest.raises(InvalidSignature):
        env.processor.parse_webhook(
            b"not json", signature_header(b"not json", SECRET, int(time.time()))
        )


def test_unknown_event_types_are_ignored() -> None:
    processor = StripeProcessor(settings("http://127.0.0.1:9"))
    body = (
        b'{"id": "evt_1", "object": "event", "type": "customer.created", "created": 1700000000,'
        b' "livemode": false, "data": {"object": {"id": "cus_1", "object": "customer"}}}'
    )
    assert processor.parse_webhook(body, signature_header(body, SECRET, int(time.time()))) is None


# Connect deposits and refunds


async def test_deposits_split_operating_and_trust_and_refunds_reverse_them(env: Env) -> None:
    ref = await env.checkout("sess-split")
    intent = await env.pay(ref)
    fee = (15000 * 29 + 500) // 1000 + 30
    wanted = [
        Deposit("operating", 10000, fee, destination=OPERATING),
        Deposit("trust", 5000, 0, destination=TRUST),
    ]
    deposits = await env.processor.deposit(
        DepositRequest(
            payment_id="pay-split",
            payment_ref=intent["id"],
            charge_ref=None,
            currency="USD",
            deposits=wanted,
            firm_id="firm-1",
        )
    )
    assert all(d.ref and d.ref.startswith("tr_") for d in deposits)
    again = await env.processor.deposit(
        DepositRequest(
            payment_id="pay-split",
            payment_ref=intent["id"],
            charge_ref=intent["latest_charge"],
            currency="USD",
            deposits=wanted,
            firm_id="firm-1",
        )
    )
    assert [d.ref for d in again] == [d.ref for d in deposits]
    transfers = (await env.get("/v1/transfers", transfer_group="sess-split"))["data"]
    by_destination = {t["destination"]: t for t in transfers}
    assert len(transfers) == 2
    assert by_destination[OPERATING]["amount"] == 10000 - fee
    assert by_destination[TRUST]["amount"] == 5000  # no fee is ever taken from trust
    assert {t["source_transaction"] for t in transfers} == {intent["latest_charge"]}

    trust = next(d for d in deposits if d.account == "trust")
    result = await env.processor.refund(
        RefundOrder(
            refund_id="ref-trust",
            payment_ref=intent["id"],
            amount_minor=5000,
            currency="USD",
            reversals=[Deposit("trust", 5000, 0, ref=trust.ref)],
            firm_id="firm-1",
        )
    )
    assert result.status == "succeeded" and result.ref.startswith("re_")
    assert len(result.reversals) == 1 and result.reversals[0].startswith("trr_")
    assert (await env.get(f"/v1/transfers/{trust.ref}"))["amount_reversed"] == 5000

    events = env.parsed(env.events(result.ref, "charge.refunded"))
    refunds = [e for e in events if e.kind == "refund.succeeded"]
    assert refunds and all(e.refund_ref == result.ref for e in refunds)
    assert all(e.refund_id == "ref-trust" and e.amount_minor == 5000 for e in refunds)
    assert all(e.payment_ref == intent["id"] for e in refunds)

    replay = await env.processor.refund(
        RefundOrder(
            refund_id="ref-trust",
            payment_ref=intent["id"],
            amount_minor=5000,
            currency="USD",
            reversals=[Deposit("trust", 5000, 0, ref=trust.ref)],
            firm_id="firm-1",
        )
    )
    assert replay.ref == result.ref and replay.reversals == result.reversals
    with pytest.raises(ProcessorError) as too_much:
        await env.processor.refund(
            RefundOrder(
                refund_id="ref-more",
                payment_ref=intent["id"],
                amount_minor=10001,
                currency="USD",
                reversals=[],
                firm_id="firm-1",
            )
        )
    assert too_much.value.retryable is False


async def test_an_unsettled_ach_payment_is_not_deposited_yet(env: Env) -> None:
    ref = await env.checkout("sess-early")
    intent = await env.pay(ref, method="us_bank_account", account_number="000123456789")
    with pytest.raises(ProcessorError) as early:
        await env.processor.deposit(
            DepositRequest(
                payment_id="pay-early",
                payment_ref=intent["id"],
                charge_ref=None,
                currency="USD",
                deposits=[Deposit("operating", 15000, 120, destination=OPERATING)],
                firm_id="firm-1",
            )
        )
    assert early.value.retryable is True
    assert (await env.get("/v1/transfers", transfer_group="sess-early"))["data"] == []


async def test_an_ach_refund_is_pending_then_succeeds_or_fails(env: Env) -> None:
    ref = await env.checkout("sess-achref")
    intent = await env.pay(ref, method="us_bank_account", account_number="000123456789")
    await env.settle(intent["id"])
    pending = await env.processor.refund(
        RefundOrder(
            refund_id="ref-ach",
            payment_ref=intent["id"],
            amount_minor=15000,
            currency="USD",
            reversals=[],
            firm_id="firm-1",
        )
    )
    assert pending.status == "pending"
    created = env.parsed(env.events(pending.ref, "refund.created"))
    assert created == []  # nothing to book while the bank has not answered
    await env.http.post(f"/sandbox/refunds/{pending.ref}/settle")
    settled = env.parsed(env.events(pending.ref, "refund.updated"))
    assert {e.kind for e in settled} == {"refund.succeeded"}
    assert {e.refund_id for e in settled} == {"ref-ach"}

    ref2 = await env.checkout("sess-achfail")
    intent2 = await env.pay(ref2, method="us_bank_account", account_number="000123456789")
    await env.settle(intent2["id"])
    second = await env.processor.refund(
        RefundOrder(
            refund_id="ref-fails",
            payment_ref=intent2["id"],
            amount_minor=15000,
            currency="USD",
            reversals=[],
            firm_id="firm-1",
        )
    )
    await env.http.post(f"/sandbox/refunds/{second.ref}/fail", json={})
    failed = env.parsed(env.events(second.ref, "refund.failed"))
    assert {e.kind for e in failed} == {"refund.failed"}
    assert all(e.refund_id == "ref-fails" and e.failure_reason for e in failed)


async def test_an_unreachable_stripe_is_a_retryable_error() -> None:
    processor = StripeProcessor(settings("http://127.0.0.1:9"))
    with pytest.raises(ProcessorError) as down:
        await processor.create_checkout(request("sess-down"))
    assert down.value.retryable is True
    await processor.close()


def test_stripe_needs_an_api_key() -> None:
    with pytest.raises(ValueError, match="STRIPE_API_KEY"):
        StripeProcessor(settings("http://127.0.0.1:9", stripe_api_key=None))


def test_signature_helper_matches_the_sdk() -> None:
    body = b'{"a": 1}'
    header = signature_header(body, SECRET, 1700000000)
    expected = stripe.WebhookSignature.generate_signature_header(
        body.decode(), SECRET, timestamp=1700000000
    )
    assert header == expected
