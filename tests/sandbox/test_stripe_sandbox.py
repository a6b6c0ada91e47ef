"""The Stripe sandbox, driven by the real stripe SDK the way the payments service drives
Stripe: Checkout, card and ACH outcomes, refunds, Connect transfers, idempotency, errors,
and webhooks signed so that `stripe.Webhook.construct_event` accepts them.

The sandbox runs in a thread with a clock the tests move (for the 24-hour idempotency window
and session expiry); webhooks go to a real HTTP receiver.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from sandbox.stripe import SandboxState, StripeSandboxSettings, create_app
from sandbox.stripe.forms import metadata, parse_query
from tests.stripe.harness import Received, WebhookReceiver, threaded_server, types_of

API_KEY = "sk_test_sandboxsuite"
SECRET = "whsec_sandbox_suite_secret"
OPERATING = "acct_1DemoLawOperating"
TRUST = "acct_1DemoLawTrust0000"


class Clock:
    """Wall time plus an offset the test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Sandbox:
    def __init__(self, base: str, state: SandboxState, clock: Clock, hook: WebhookReceiver):
        self.base = base
        self.state = state
        self.clock = clock
        self.hooks = hook
        self.http = httpx.Client(base_url=base, timeout=10)
        self.client = stripe.StripeClient(
            API_KEY,
            base_addresses={"api": base},
            http_client=stripe.HTTPXClient(allow_sync_methods=True),
            max_network_retries=0,
        )

    def session(self, **overrides: Any) -> stripe.checkout.Session:
        params: dict[str, Any] = {
            "mode": "payment",
            "payment_method_types": ["card", "us_bank_account"],
            "line_items": [
                _item("Invoice INV-1042", 12500),
                _item("Trust request TR-17", 50000),
            ],
            "client_reference_id": "ours-1",
            "metadata": {"firm_id": "firm-1", "session_id": "ours-1"},
            "payment_intent_data": {
                "metadata": {"firm_id": "firm-1", "session_id": "ours-1"},
                "transfer_group": "ours-1",
            },
            "customer_email": "client@example.com",
            "success_url": "http://app.test/pay/done?cs={CHECKOUT_SESSION_ID}",
            "cancel_url": "http://app.test/pay",
        }
        params.update(overrides)
        return self.client.v1.checkout.sessions.create(params=params)

    def pay(self, session_id: str, **details: Any) -> httpx.Response:
        body = {"method": "card", "card_number": "4242424242424242", "name": "Ada Client"}
        body.update(details)
        return self.http.post(f"/sandbox/checkout/sessions/{session_id}/complete", json=body)

    def paid_intent(self, session_id: str, **details: Any) -> dict[str, Any]:
        response = self.pay(session_id, **details)
        assert response.status_code == 200, response.text
        intent: dict[str, Any] = response.json()["payment_intent"]
        return intent

    def settle(self, intent_id: str) -> httpx.Response:
        return self.http.post(f"/sandbox/payment_intents/{intent_id}/settle")

    def events_of(self, object_id: str, until: str, count: int = 1) -> list[Received]:
        """The deliveries mentioning `object_id`, once `count` of type `until` are in."""

        def arrived(_: list[Received]) -> bool:
            return types_of(self.hooks.matching(object_id)).count(until) >= count

        self.hooks.wait_for(arrived)
        return self.hooks.matching(object_id)


def last_of(deliveries: list[Received], event_type: str) -> dict[str, Any]:
    return [d.event for d in deliveries if d.event_type == event_type][-1]


def _item(name: str, amount: int) -> dict[str, Any]:
    return {
        "quantity": 1,
        "price_data": {"currency": "usd", "unit_amount": amount, "product_data": {"name": name}},
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture(scope="module")
def running(receiver: WebhookReceiver) -> Iterator[tuple[str, SandboxState, Clock]]:
    clock = Clock()
    settings = StripeSandboxSettings(
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        ach_seconds=-1,
        webhook_backoff_seconds=0.05,
        webhook_attempts=4,
    )
    state = SandboxState(settings, clock=clock)
    with threaded_server(create_app(state)) as base:
        yield base, state, clock


@pytest.fixture
def sb(running: tuple[str, SandboxState, Clock], receiver: WebhookReceiver) -> Iterator[Sandbox]:
    base, state, clock = running
    state.reset()
    receiver.clear()
    clock.offset = 0.0
    sandbox = Sandbox(base, state, clock, receiver)
    yield sandbox
    sandbox.http.close()


# Requests and errors


def test_bracket_notation_becomes_nested_params() -> None:
    params = parse_query(
        "line_items[0][price_data][unit_amount]=500&line_items[0][quantity]=1"
        "&line_items[1][quantity]=2&metadata[firm_id]=f1&expand[]=a&expand[]=b"
        "&payment_method_types[0]=card&payment_method_types[1]=us_bank_account"
    )
    assert params == {
        "line_items": [{"price_data": {"unit_amount": "500"}, "quantity": "1"}, {"quantity": "2"}],
        "metadata": {"firm_id": "f1"},
        "expand": ["a", "b"],
        "payment_method_types": ["card", "us_bank_account"],
    }
    # Digit keys read as list indices are still metadata keys.
    assert metadata(parse_query("metadata[0]=a&metadata[1]=b")) == {"0": "a", "1": "b"}
    assert metadata(parse_query("metadata[k]="), current={"k": "v", "j": "w"}) == {"j": "w"}


def test_session_is_created_and_read_back_through_the_sdk(sb: Sandbox) -> None:
    session = sb.session(expand=["line_items"])
    assert session.id.startswith("cs_test_")
    assert session.object == "checkout.session" and session.livemode is False
    assert session.status == "open" and session.payment_status == "unpaid"
    assert session.amount_total == 62500 and session.currency == "usd"
    assert session.url == f"{sb.base}/pay/{session.id}"
    assert session.payment_intent is None  # made when the client pays, as Stripe does
    assert session.client_reference_id == "ours-1"
    assert session.metadata.to_dict() == {"firm_id": "firm-1", "session_id": "ours-1"}
    assert [item.description for item in session.line_items.data] == [
        "Invoice INV-1042",
        "Trust request TR-17",
    ]
    assert session.expires_at - session.created == 24 * 3600

    again = sb.client.v1.checkout.sessions.retrieve(session.id)
    assert again.id == session.id and again.amount_total == 62500
    listed = sb.client.v1.checkout.sessions.list(params={"status": "open", "limit": 5})
    assert [s.id for s in listed.data] == [session.id]


def test_requests_need_a_secret_test_key(sb: Sandbox) -> None:
    missing = sb.http.get("/v1/checkout/sessions")
    assert missing.status_code == 401
    assert set(missing.json()["error"]) >= {"type", "code", "message", "param"}
    assert "did not provide an API key" in missing.json()["error"]["message"]

    live = sb.http.get("/v1/checkout/sessions", headers={"Authorization": "Bearer sk_live_x123"})
    assert live.status_code == 401

    wrong = stripe.StripeClient(
        "pk_test_not_a_secret",
        base_addresses={"api": sb.base},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )
    with pytest.raises(stripe.AuthenticationError):
        wrong.v1.checkout.sessions.list()


def test_invalid_parameters_get_stripes_errors(sb: Sandbox) -> None:
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        sb.session(colour="blue")
    assert unknown.value.param == "colour" and unknown.value.code == "parameter_unknown"
    assert unknown.value.http_status == 400

    with pytest.raises(stripe.InvalidRequestError) as missing:
        sb.session(line_items=[])
    assert missing.value.param == "line_items"

    with pytest.raises(stripe.InvalidRequestError) as late:
        sb.session(expires_at=int(time.time()) + 25 * 3600)
    assert late.value.param == "expires_at"

    with pytest.raises(stripe.InvalidRequestError) as small:
        sb.session(line_items=[_item("Invoice 1", 49)])
    assert "at least 50 usd" in str(small.value.user_message)

    with pytest.raises(stripe.InvalidRequestError) as absent:
        sb.client.v1.payment_intents.retrieve("pi_doesnotexist")
    assert absent.value.http_status == 404 and absent.value.code == "resource_missing"

    unrecognized = sb.http.get("/v1/customers", headers={"Authorization": f"Bearer {API_KEY}"})
    assert unrecognized.status_code == 404
    assert "Unrecognized request URL" in unrecognized.json()["error"]["message"]


# Idempotency


def test_an_idempotency_key_replays_the_first_result(sb: Sandbox) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "checkout:ours-1"}
    body = "mode=payment&success_url=http%3A%2F%2Fa.test&line_items[0][quantity]=1" + (
        "&line_items[0][price_data][currency]=usd&line_items[0][price_data][unit_amount]=900"
        "&line_items[0][price_data][product_data][name]=Invoice%201"
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    first = sb.http.post("/v1/checkout/sessions", content=body, headers={**headers, **form})
    second = sb.http.post("/v1/checkout/sessions", content=body, headers={**headers, **form})
    assert first.status_code == second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Original-Request"] == first.headers["Request-Id"]
    assert len(sb.state.all("checkout.session")) == 1

    options: Any = {"idempotency_key": "key-A"}
    made = sb.client.v1.checkout.sessions.create(params=_minimal(900), options=options)
    assert (
        sb.client.v1.checkout.sessions.create(params=_minimal(900), options=options).id == made.id
    )
    with pytest.raises(stripe.IdempotencyError) as mismatch:
        sb.client.v1.checkout.sessions.create(params=_minimal(901), options=options)
    assert "same parameters" in str(mismatch.value.user_message)
    with pytest.raises(stripe.IdempotencyError):
        sb.client.v1.refunds.create(params={"charge": "ch_x"}, options=options)

    sb.clock.advance(24 * 3600 + 1)
    later = sb.client.v1.checkout.sessions.create(params=_minimal(901), options=options)
    assert later.id != made.id


def _minimal(amount: int) -> dict[str, Any]:
    return {
        "mode": "payment",
        "success_url": "http://app.test/ok",
        "line_items": [_item("Invoice 9", amount)],
    }


# Card payments and webhooks


def test_a_card_payment_sends_signed_events_in_stripes_order(sb: Sandbox) -> None:
    session = sb.session()
    intent = sb.paid_intent(session.id)
    assert intent["status"] == "succeeded" and intent["amount_received"] == 62500

    deliveries = sb.events_of(intent["id"], "checkout.session.completed")
    assert types_of(deliveries) == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]
    for delivery in deliveries:
        assert delivery.content_type and delivery.content_type.startswith("application/json")
        event = stripe.Webhook.construct_event(delivery.body, delivery.signature, SECRET)
        assert event.id.startswith("evt_") and event.livemode is False
        assert event.api_version == sb.state.settings.api_version
    completed = deliveries[-1].event["data"]["object"]
    assert completed["payment_status"] == "paid" and completed["status"] == "complete"
    assert completed["customer_details"]["email"] == "client@example.com"
    assert completed["payment_intent"] == intent["id"]

    tampered = deliveries[-1].body.replace(b'"paid"', b'"unpaid"')
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, deliveries[-1].signature, SECRET)

    expanded = sb.client.v1.payment_intents.retrieve(
        intent["id"], params={"expand": ["latest_charge.balance_transaction"]}
    )
    charge = expanded.latest_charge
    assert charge.id.startswith("ch_") and charge.payment_method_details.card.last4 == "4242"
    # Stripe's card pricing: 2.9% + 30c.
    assert charge.balance_transaction.fee == 1813 + 30
    assert charge.balance_transaction.net == 62500 - 1843
    assert sb.client.v1.charges.retrieve(charge.id).amount_captured == 62500


def test_a_declined_card_leaves_the_session_open_for_another_try(sb: Sandbox) -> None:
    session = sb.session()
    declined = sb.pay(session.id, card_number="4000 0000 0000 0002")
    assert declined.status_code == 402
    error = declined.json()["error"]
    assert error["type"] == "card_error" and error["code"] == "card_declined"
    assert error["decline_code"] == "generic_decline"
    assert error["message"] == "Your card was declined."
    intent_id = error["payment_intent"]["id"]
    failed = sb.events_of(intent_id, "payment_intent.payment_failed")
    assert "checkout.session.completed" not in types_of(failed)
    assert sb.client.v1.checkout.sessions.retrieve(session.id).status == "open"

    retry = sb.paid_intent(session.id)
    assert retry["id"] == intent_id and retry["status"] == "succeeded"
    assert sb.client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


def test_webhooks_are_retried_until_the_endpoint_answers(sb: Sandbox) -> None:
    sb.hooks.fail_next(2)
    session = sb.session(payment_method_types=["card"])
    intent = sb.paid_intent(session.id)
    sb.events_of(intent["id"], "checkout.session.completed")
    sb.events_of(intent["id"], "payment_intent.created")
    sb.events_of(intent["id"], "charge.succeeded")
    assert sb.hooks.refused == 2

    # Each event is retried on its own; the ones after it do not wait.
    log = sb.http.get("/sandbox/events").json()["data"]
    attempts = {entry["event"]["type"]: entry["deliveries"][0]["attempts"] for entry in log}
    assert [a["status"] for a in attempts["payment_intent.created"]] == [500, 200]
    assert [a["status"] for a in attempts["charge.succeeded"]] == [500, 200]
    assert [a["status"] for a in attempts["checkout.session.completed"]] == [200]
    assert all(entry["deliveries"][0]["status"] == "succeeded" for entry in log)

    event_id = log[0]["event"]["id"]
    sb.http.post(f"/sandbox/events/{event_id}/resend")
    copies = sb.hooks.wait_for(lambda got: [r.event["id"] for r in got].count(event_id) == 2)
    bodies = [r.body for r in copies if r.event["id"] == event_id]
    assert bodies[0] == bodies[1]
    assert sb.client.v1.events.retrieve(event_id).type == "payment_intent.created"


# ACH


def test_an_ach_debit_processes_then_settles(sb: Sandbox) -> None:
    session = sb.session()
    intent = sb.paid_intent(session.id, method="us_bank_account", account_number="000123456789")
    assert intent["status"] == "processing"
    first = sb.events_of(intent["id"], "checkout.session.completed")
    assert types_of(first)[1:] == [
        "charge.pending",
        "payment_intent.processing",
        "checkout.session.completed",
    ]
    assert first[-1].event["data"]["object"]["payment_status"] == "unpaid"
    with pytest.raises(stripe.InvalidRequestError) as early:
        sb.client.v1.refunds.create(params={"payment_intent": intent["id"]})
    assert early.value.code == "charge_not_refundable"

    assert sb.settle(intent["id"]).status_code == 200
    done = sb.events_of(intent["id"], "checkout.session.async_payment_succeeded")
    assert types_of(done)[4:] == [
        "charge.succeeded",
        "payment_intent.succeeded",
        "checkout.session.async_payment_succeeded",
    ]
    charge = sb.client.v1.charges.retrieve(
        intent["latest_charge"], params={"expand": ["balance_transaction"]}
    )
    assert charge.status == "succeeded" and charge.id.startswith("py_")
    assert charge.balance_transaction.fee == 500  # 0.8% capped at $5
    assert sb.settle(intent["id"]).status_code == 400  # nothing left to settle


def test_an_ach_debit_from_the_r01_account_fails(sb: Sandbox) -> None:
    session = sb.session()
    intent = sb.paid_intent(session.id, method="us_bank_account", account_number="000222222227")
    sb.settle(intent["id"])
    events = sb.events_of(intent["id"], "checkout.session.async_payment_failed")
    assert types_of(events)[-3:] == [
        "charge.failed",
        "payment_intent.payment_failed",
        "checkout.session.async_payment_failed",
    ]
    failed = events[-2].event["data"]["object"]
    assert failed["last_payment_error"]["code"] == "insufficient_funds"
    assert failed["last_payment_error"]["payment_method"]["type"] == "us_bank_account"
    assert sb.client.v1.payment_intents.retrieve(intent["id"]).status == "requires_payment_method"


def test_ach_settles_by_itself_after_the_configured_delay(receiver: WebhookReceiver) -> None:
    settings = StripeSandboxSettings(
        webhook_url=receiver.url, webhook_secret=SECRET, ach_seconds=0.2
    )
    state = SandboxState(settings)
    with threaded_server(create_app(state)) as base:
        sandbox = Sandbox(base, state, Clock(), receiver)
        session = sandbox.session()
        intent = sandbox.paid_intent(
            session.id, method="us_bank_account", account_number="000123456789"
        )
        sandbox.events_of(intent["id"], "payment_intent.succeeded")
        assert sandbox.client.v1.payment_intents.retrieve(intent["id"]).status == "succeeded"


# Refunds and disputes


def test_refunds_stay_within_the_charge(sb: Sandbox) -> None:
    intent = sb.paid_intent(sb.session().id)
    with pytest.raises(stripe.InvalidRequestError) as too_large:
        sb.client.v1.refunds.create(params={"payment_intent": intent["id"], "amount": 62501})
    assert too_large.value.code == "amount_too_large" and too_large.value.param == "amount"

    partial = sb.client.v1.refunds.create(
        params={"payment_intent": intent["id"], "amount": 12500, "metadata": {"refund_id": "r1"}}
    )
    assert partial.id.startswith("re_") and partial.status == "succeeded"
    refunded = last_of(sb.events_of(intent["id"], "charge.refunded"), "charge.refunded")
    refunded = refunded["data"]["object"]
    assert refunded["amount_refunded"] == 12500 and refunded["refunded"] is False
    assert refunded["refunds"]["data"][0]["metadata"] == {"refund_id": "r1"}

    with pytest.raises(stripe.InvalidRequestError):
        sb.client.v1.refunds.create(params={"charge": intent["latest_charge"], "amount": 50001})
    rest = sb.client.v1.refunds.create(params={"charge": intent["latest_charge"]})
    assert rest.amount == 50000
    with pytest.raises(stripe.InvalidRequestError) as again:
        sb.client.v1.refunds.create(params={"charge": intent["latest_charge"]})
    assert again.value.code == "charge_already_refunded"
    listed = sb.client.v1.refunds.list(params={"payment_intent": intent["id"]})
    assert [r.id for r in listed.data] == [rest.id, partial.id]


def test_an_ach_refund_is_pending_until_it_settles_or_fails(sb: Sandbox) -> None:
    intent = sb.paid_intent(
        sb.session().id, method="us_bank_account", account_number="000123456789"
    )
    sb.settle(intent["id"])
    # Stripe allows partial ACH refunds; the product's rule against them is not Stripe's.
    first = sb.client.v1.refunds.create(params={"payment_intent": intent["id"], "amount": 100})
    assert first.status == "pending"
    settled = sb.http.post(f"/sandbox/refunds/{first.id}/settle").json()
    assert settled["status"] == "succeeded"
    update = last_of(sb.events_of(first.id, "refund.updated"), "refund.updated")
    assert update["data"]["previous_attributes"] == {"status": "pending"}

    second = sb.client.v1.refunds.create(params={"payment_intent": intent["id"]})
    failed = sb.http.post(f"/sandbox/refunds/{second.id}/fail", json={}).json()
    assert failed["status"] == "failed" and failed["failure_reason"] == "declined"
    assert "refund.failed" in types_of(sb.events_of(second.id, "refund.failed"))
    charge = sb.client.v1.charges.retrieve(intent["latest_charge"])
    assert charge.amount_refunded == 100 and charge.refunded is False


def test_a_bank_return_is_a_dispute(sb: Sandbox) -> None:
    intent = sb.paid_intent(
        sb.session().id, method="us_bank_account", account_number="000123456789"
    )
    sb.settle(intent["id"])
    response = sb.http.post(f"/sandbox/charges/{intent['latest_charge']}/dispute", json={})
    dispute = response.json()
    assert dispute["id"].startswith("dp_") and dispute["reason"] == "debit_not_authorized"
    created = last_of(
        sb.events_of(dispute["id"], "charge.dispute.created"), "charge.dispute.created"
    )
    assert created["data"]["object"]["payment_intent"] == intent["id"]
    assert created["data"]["object"]["status"] == "lost"
    with pytest.raises(stripe.InvalidRequestError) as refund:
        sb.client.v1.refunds.create(params={"payment_intent": intent["id"]})
    assert refund.value.code == "charge_disputed"


# Connect


def test_transfers_and_reversals_move_money_between_accounts(sb: Sandbox) -> None:
    intent = sb.paid_intent(sb.session().id)
    charge_id = intent["latest_charge"]
    operating = sb.client.v1.transfers.create(
        params={
            "amount": 12500 - 1843,
            "currency": "usd",
            "destination": OPERATING,
            "source_transaction": charge_id,
            "transfer_group": "ours-1",
        }
    )
    trust = sb.client.v1.transfers.create(
        params={
            "amount": 50000,
            "currency": "usd",
            "destination": TRUST,
            "source_transaction": charge_id,
            "transfer_group": "ours-1",
        }
    )
    assert operating.id.startswith("tr_") and trust.destination == TRUST
    with pytest.raises(stripe.InvalidRequestError) as beyond:
        sb.client.v1.transfers.create(
            params={
                "amount": 1844,
                "currency": "usd",
                "destination": TRUST,
                "source_transaction": charge_id,
            }
        )
    assert beyond.value.code == "balance_insufficient"
    with pytest.raises(stripe.InvalidRequestError) as nowhere:
        sb.client.v1.transfers.create(
            params={"amount": 100, "currency": "usd", "destination": "acct_unknown"}
        )
    assert nowhere.value.code == "resource_missing" and nowhere.value.param == "destination"

    with pytest.raises(stripe.InvalidRequestError) as too_much:
        sb.client.v1.transfers.reversals.create(trust.id, params={"amount": 50001})
    assert too_much.value.code == "amount_too_large"
    reversal = sb.client.v1.transfers.reversals.create(trust.id, params={"amount": 20000})
    assert reversal.id.startswith("trr_") and reversal.transfer == trust.id
    assert sb.client.v1.transfers.retrieve(trust.id).amount_reversed == 20000

    balances = {
        entry["account"]["id"]: entry["balance"]
        for entry in sb.http.get("/sandbox/accounts").json()["data"]
    }
    assert balances == {OPERATING: 12500 - 1843, TRUST: 30000}
    listed = sb.client.v1.transfers.list(params={"transfer_group": "ours-1"})
    assert {t.id for t in listed.data} == {operating.id, trust.id}
    assert sb.client.v1.accounts.retrieve(TRUST).charges_enabled is True


# The hosted page and expiry


def test_the_hosted_page_takes_a_card_and_returns_to_success_url(sb: Sandbox) -> None:
    session = sb.session()
    page = sb.http.get(f"/pay/{session.id}")
    assert page.status_code == 200
    assert "$625.00" in page.text and "Invoice INV-1042" in page.text
    assert "Card number" in page.text and "Routing number" in page.text

    declined = sb.http.post(
        f"/pay/{session.id}",
        data={"method": "card", "card_number": "4000000000000002", "exp": "12 / 34", "cvc": "123"},
    )
    assert declined.status_code == 402 and "Your card was declined." in declined.text

    paid = sb.http.post(
        f"/pay/{session.id}",
        data={
            "method": "card",
            "card_number": "4242 4242 4242 4242",
            "exp": "12 / 34",
            "cvc": "123",
            "name": "Ada Client",
            "email": "ada@example.com",
        },
    )
    assert paid.status_code == 303
    assert paid.headers["location"] == f"http://app.test/pay/done?cs={session.id}"
    completed = sb.client.v1.checkout.sessions.retrieve(session.id)
    assert completed.status == "complete" and completed.customer_details.name == "Ada Client"
    assert completed.url is None
    assert "Payment received" in sb.http.get(f"/pay/{session.id}").text


def test_sessions_expire(sb: Sandbox) -> None:
    session = sb.session(expires_at=int(sb.clock()) + 3600)
    sb.clock.advance(3601)
    expired = sb.client.v1.checkout.sessions.retrieve(session.id)
    assert expired.status == "expired" and expired.url is None
    assert sb.pay(session.id).status_code == 400
    assert sb.http.get(f"/pay/{session.id}").status_code == 410
    assert "checkout.session.expired" in types_of(
        sb.events_of(session.id, "checkout.session.expired")
    )

    other = sb.session()
    assert sb.client.v1.checkout.sessions.expire(other.id).status == "expired"
    with pytest.raises(stripe.InvalidRequestError):
        sb.client.v1.checkout.sessions.expire(other.id)


def test_event_payloads_are_json_stripe_can_parse(sb: Sandbox) -> None:
    intent = sb.paid_intent(sb.session().id)
    deliveries = sb.events_of(intent["id"], "payment_intent.succeeded")
    delivery = next(d for d in deliveries if d.event_type == "payment_intent.succeeded")
    assert json.loads(delivery.body)["data"]["object"]["id"] == intent["id"]
    # Pretty-printed like Stripe's, so only the raw bytes verify.
    assert b"\n  " in delivery.body
    compact = json.dumps(json.loads(delivery.body)).encode()
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(compact, delivery.signature, SECRET)
