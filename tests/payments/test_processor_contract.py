"""The ledger against a processor that works like Stripe (hosted checkout, webhooks, Connect
transfers, refunds with transfer reversals), recorded by a stand-in so each call can be
checked: what the ledger asks for, with which keys, how often, and what it does when the
processor fails. The real StripeProcessor is tested against the Stripe sandbox in
tests/stripe."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from services.payments.processors import (
    CheckoutRequest,
    Deposit,
    DepositRequest,
    EventKind,
    InvalidSignature,
    ProcessorCheckout,
    ProcessorError,
    ProcessorEvent,
    RefundOrder,
    RefundResult,
)
from services.payments.refunds import submit_refund
from tests.payments.conftest import FIRM, BillSpec, Payments, running

pytestmark = pytest.mark.timeout(120)

INV = BillSpec("clio:900", "900", 100_000)
TRUST = BillSpec("clio:t900", "TR-900", 40_000, kind="trust_request")
T0 = datetime(2026, 4, 1, 10, 0, tzinfo=UTC)


class StripeLike:
    """A processor that records every call; webhooks carry a normalised event as JSON and
    are genuine when their signature is "good"."""

    name = "stripe"

    def __init__(self) -> None:
        self.checkouts: list[CheckoutRequest] = []
        self.deposits: list[dict[str, Any]] = []
        self.refunds: list[dict[str, Any]] = []
        self.checkout_error: ProcessorError | None = None
        self.deposit_error: ProcessorError | None = None
        self.refund_error: ProcessorError | None = None
        self.refund_status = "pending"

    async def create_checkout(self, req: CheckoutRequest) -> ProcessorCheckout:
        self.checkouts.append(req)
        if self.checkout_error:
            raise self.checkout_error
        return ProcessorCheckout(
            f"cs_test_{req.session_id}", f"https://stripe.test/{req.session_id}"
        )

    async def deposit(self, req: DepositRequest) -> list[Deposit]:
        kw = vars(req)
        self.deposits.append(kw)
        if self.deposit_error:
            raise self.deposit_error
        return [replace(d, ref=f"tr_{kw['payment_id']}_{d.account}") for d in kw["deposits"]]

    async def refund(self, req: RefundOrder) -> RefundResult:
        kw = vars(req)
        self.refunds.append(kw)
        if self.refund_error:
            raise self.refund_error
        return RefundResult(ref=f"re_{kw['refund_id']}", status=self.refund_status)  # type: ignore[arg-type]

    def parse_webhook(self, payload: bytes, signature: str | None) -> ProcessorEvent | None:
        if signature != "good":
            raise InvalidSignature("bad")
        data = json.loads(payload)
        if data["kind"] not in get_args(EventKind):
            return None
        data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
        return ProcessorEvent(**data)


def webhook(**fields: Any) -> bytes:
    event = ProcessorEvent(**fields)
    data = asdict(event)
    data["occurred_at"] = event.occurred_at.isoformat()
    return json.dumps(data).encode()


@pytest.fixture
async def stripe_like(database_url: str) -> Any:
    processor = StripeLike()
    async with running(database_url, processor=processor, payments_processor="stripe") as p:
        p.processor = processor  # type: ignore[attr-defined]
        yield p


async def send(payments: Payments, signature: str = "good", **fields: Any) -> int:
    resp = await payments.http.post(
        "/webhooks/stripe",
        content=webhook(**fields),
        headers={"Stripe-Signature": signature},
    )
    return resp.status_code


def intent_of(payment_id: str) -> str:
    """The payment intent `paid_by_card` reported for a payment."""
    return "pi_chk_" + payment_id.removeprefix("pay_")


async def paid_by_card(payments: Payments, *bills: BillSpec, fee: int = 3_000) -> str:
    """A hosted checkout the client completed: returns the payment id."""
    await payments.bills(*bills)
    session_id = await payments.session(await payments.link(*bills))
    status = await send(
        payments,
        event_id=f"evt_done_{session_id}",
        kind="payment.succeeded",
        occurred_at=T0,
        session_id=session_id,
        payment_ref=f"pi_{session_id}",
        charge_ref=f"ch_{session_id}",
        method="card",
        fee_minor=fee,
        last4="4242",
        payer_name="Dana Whitfield",
    )
    assert status == 200
    [payment] = (await payments.http.get(f"/internal/firms/{FIRM}/payments")).json()
    return str(payment["id"])


async def test_checkout_is_the_processors_page_opened_when_the_client_clicks_pay(
    stripe_like: Any,
) -> None:
    payments, processor = stripe_like, stripe_like.processor
    await payments.bills(INV, TRUST)
    token = await payments.link(INV, TRUST)
    assert processor.checkouts == []  # nothing at the processor until the client clicks Pay
    started = await payments.start(token)
    assert started.status_code == 200
    session_id = started.json()["session_id"]
    assert started.json()["redirect_url"] == f"https://stripe.test/{session_id}"
    [req] = processor.checkouts
    assert (req.session_id, req.firm_id, req.firm_name, req.currency) == (
        session_id,
        FIRM,
        "Hartwell & Moreno LLP",
        "USD",
    )
    assert [(i.number, i.kind, i.amount_minor) for i in req.items] == [
        ("900", "invoice", 100_000),
        ("TR-900", "trust_request", 40_000),
    ]
    assert req.customer_email == "dana@example.test"
    assert req.success_url == f"https://pay.hartwell.test/checkout/{session_id}/done"
    assert req.expires_at - datetime.now(UTC) <= timedelta(hours=24)
    # Card details go to the processor's page, never to ours.
    refused = await payments.card(session_id)
    assert refused.status_code == 409 and refused.json()["detail"]["field"] is None
    assert (await payments.ach(session_id)).status_code == 409


async def test_a_processor_outage_at_checkout_charges_nothing(stripe_like: Any) -> None:
    payments, processor = stripe_like, stripe_like.processor
    await payments.bills(INV)
    token = await payments.link(INV)
    processor.checkout_error = ProcessorError("Stripe is down", retryable=True)
    resp = await payments.start(token)
    assert resp.status_code == 502 and "Nothing was charged" in resp.json()["detail"]
    processor.checkout_error = None
    assert (await payments.start(token)).status_code == 200


async def test_a_paid_checkout_moves_the_money_once_to_each_account(stripe_like: Any) -> None:
    payments, processor = stripe_like, stripe_like.processor
    resp = await payments.http.put(
        f"/internal/firms/{FIRM}/accounts",
        json={"operating_account": "acct_operating", "trust_account": "acct_trust"},
    )
    assert resp.status_code == 200
    payment_id = await paid_by_card(payments, INV, TRUST, fee=4_090)

    [call] = processor.deposits
    assert (call["payment_id"], call["charge_ref"], call["firm_id"]) == (
        payment_id,
        call["payment_ref"].replace("pi_", "ch_"),
        FIRM,
    )
    orders = {d.account: d for d in call["deposits"]}
    assert (orders["operating"].amount_minor, orders["operating"].fee_minor) == (100_000, 4_090)
    assert (orders["trust"].amount_minor, orders["trust"].fee_minor) == (40_000, 0)
    assert orders["operating"].destination == "acct_operating"
    assert orders["trust"].destination == "acct_trust"
    detail = await payments.detail(payment_id)
    assert {d["account"]: d["ref"] for d in detail["deposits"]} == {
        "operating": f"tr_{payment_id}_operating",
        "trust": f"tr_{payment_id}_trust",
    }
    assert detail["processor"] == "stripe" and detail["fee_minor"] == 4_090

    # The same webhook again, and a second one about the same fact: no second transfer.
    session_id = call["payment_ref"].removeprefix("pi_")
    await send(
        payments,
        event_id=f"evt_done_{session_id}",
        kind="payment.succeeded",
        occurred_at=T0,
        session_id=session_id,
        payment_ref=f"pi_{session_id}",
    )
    await send(
        payments,
        event_id="evt_checkout_completed",
        kind="checkout.completed",
        occurred_at=T0,
        session_id=session_id,
        payment_ref=f"pi_{session_id}",
        method="card",
    )
    assert len(processor.deposits) == 1


async def test_a_failed_transfer_is_retried(stripe_like: Any) -> None:
    payments, processor = stripe_like, stripe_like.processor
    processor.deposit_error = ProcessorError("rate limited", retryable=True)
    payment_id = await paid_by_card(payments, INV)
    detail = await payments.detail(payment_id)
    assert [d["status"] for d in detail["deposits"]] == ["pending"]
    processor.deposit_error = None
    await payments.ledger.transfer_deposits(payment_id)  # what the retry loop does
    assert [d["status"] for d in (await payments.detail(payment_id))["deposits"]] == ["paid"]
    assert len(processor.deposits) == 2
    assert processor.deposits[0]["deposits"] == processor.deposits[1]["deposits"]


async def test_a_refund_reverses_the_transfer_of_its_items_account(stripe_like: Any) -> None:
    payments, processor = stripe_like, stripe_like.processor
    payment_id = await paid_by_card(payments, INV, TRUST)
    resp = await payments.refund(payment_id, items=[(TRUST.invoice_id, 15_000)])
    assert resp.status_code == 200 and resp.json()["status"] == "pending"
    [call] = processor.refunds
    assert (call["amount_minor"], call["payment_ref"], call["refund_id"]) == (
        15_000,
        intent_of(payment_id),
        resp.json()["id"],
    )
    [reversal] = call["reversals"]
    assert (reversal.account, reversal.amount_minor, reversal.ref) == (
        "trust",
        15_000,
        f"tr_{payment_id}_trust",
    )
    # Pending at the processor: nothing restored yet.
    assert (await payments.detail(payment_id))["refunded_minor"] == 0
    await send(
        payments,
        event_id="evt_refunded",
        kind="refund.succeeded",
        occurred_at=T0 + timedelta(hours=1),
        payment_ref=call["payment_ref"],
        refund_ref=f"re_{call['refund_id']}",
        refund_id=call["refund_id"],
        amount_minor=15_000,
    )
    detail = await payments.detail(payment_id)
    assert detail["status"] == "partially_refunded" and detail["refunded_minor"] == 15_000
    trust = next(d for d in detail["deposits"] if d["account"] == "trust")
    assert (trust["reversed_minor"], trust["status"]) == (15_000, "partially_reversed")


async def test_a_refund_the_processor_could_not_take_is_retried_with_the_same_key(
    stripe_like: Any,
) -> None:
    payments, processor = stripe_like, stripe_like.processor
    payment_id = await paid_by_card(payments, INV)
    processor.refund_error = ProcessorError("timeout", retryable=True)
    resp = await payments.refund(payment_id, full=True)
    assert resp.status_code == 200 and resp.json()["status"] == "pending"
    # A second refund cannot slip in meanwhile: the first holds the whole amount.
    assert (await payments.refund(payment_id, full=True)).status_code == 409
    processor.refund_error = None
    processor.refund_status = "succeeded"
    await submit_refund(payments.ledger, resp.json()["id"])  # what the retry loop does
    assert [c["refund_id"] for c in processor.refunds] == [resp.json()["id"]] * 2
    detail = await payments.detail(payment_id)
    assert detail["status"] == "refunded"


async def test_a_refund_the_processor_refuses_is_failed_and_restores_nothing(
    stripe_like: Any,
) -> None:
    payments, processor = stripe_like, stripe_like.processor
    payment_id = await paid_by_card(payments, INV)
    processor.refund_error = ProcessorError("charge_already_refunded")
    resp = await payments.refund(payment_id, full=True)
    assert resp.json()["status"] == "failed"
    assert resp.json()["failure_reason"] == "charge_already_refunded"
    detail = await payments.detail(payment_id)
    assert detail["status"] == "succeeded" and detail["refundable_minor"] == 100_000


async def test_a_refund_made_on_the_dashboard_is_recorded(stripe_like: Any) -> None:
    payments = stripe_like
    payment_id = await paid_by_card(payments, INV, BillSpec("clio:901", "901", 5_000))
    payment_ref = intent_of(payment_id)
    for _ in range(2):
        await send(
            payments,
            event_id="evt_dash",
            kind="refund.succeeded",
            occurred_at=T0 + timedelta(days=1),
            payment_ref=payment_ref,
            refund_ref="re_dashboard",
            amount_minor=101_000,
        )
    detail = await payments.detail(payment_id)
    [refund] = detail["refunds"]
    assert (refund["id"], refund["status"], refund["amount_minor"]) == (
        "ext_re_dashboard",
        "succeeded",
        101_000,
    )
    assert [(i["invoice_id"], i["amount_minor"]) for i in refund["items"]] == [
        (INV.invoice_id, 100_000),
        ("clio:901", 1_000),
    ]
    assert detail["status"] == "partially_refunded"


async def test_webhook_signatures_and_unknown_types(stripe_like: Any) -> None:
    payments = stripe_like
    assert (
        await send(payments, "forged", event_id="e", kind="payment.succeeded", occurred_at=T0)
        == 400
    )
    assert await send(payments, event_id="e2", kind="customer.updated", occurred_at=T0) == 200
    assert (await payments.http.get(f"/internal/firms/{FIRM}/payments")).json() == []
    # Test mode's helpers do not exist with a real processor.
    assert (await payments.http.post("/internal/testmode/settle-due")).status_code == 404


async def test_a_dashboard_refund_without_a_ref_is_still_settled(stripe_like: Any) -> None:
    payments = stripe_like
    payment_id = await paid_by_card(payments, INV)
    await send(
        payments,
        event_id="evt_dash_noref",
        kind="refund.succeeded",
        occurred_at=T0 + timedelta(days=1),
        payment_ref=intent_of(payment_id),
        amount_minor=2_500,
    )
    [refund] = (await payments.detail(payment_id))["refunds"]
    assert (refund["id"], refund["status"]) == ("ext_evt_dash_noref", "succeeded")
    assert (await payments.detail(payment_id))["refunded_minor"] == 2_500
