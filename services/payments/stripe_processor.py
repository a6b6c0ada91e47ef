"""The Stripe processor: Checkout for card and ACH, Connect separate charges and transfers
for the firm's operating and trust accounts, refunds with transfer reversals, and webhooks
verified on the raw body (then normalised into `ProcessorEvent`s by `stripe_events.py`).

Every POST carries a deterministic idempotency key, so a retry after a timeout (ours or the
ledger's) replays Stripe's first answer instead of charging, transferring or refunding twice.
All calls use the SDK's async methods: the event loop never waits on Stripe.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, TypeVar

import stripe

from services.payments.processors import (
    CheckoutItem,
    CheckoutRequest,
    Deposit,
    DepositRequest,
    InvalidSignature,
    ProcessorCheckout,
    ProcessorError,
    ProcessorEvent,
    RefundOrder,
    RefundResult,
)
from services.payments.settings import PaymentsSettings
from services.payments.stripe_events import (
    REFUND_STATUSES,
    normalise_event,
    ref_of,
    refund_failure,
)
from shared.events import RefundStatus

log = logging.getLogger(__name__)
T = TypeVar("T")

# A client waits on the pay page while Checkout is created: fail well before a proxy would.
HTTP_TIMEOUT_SECONDS = 30


class StripeProcessor:
    """`Processor` on Stripe. `close()` releases the HTTP connections."""

    name = "stripe"

    def __init__(
        self, settings: PaymentsSettings, *, http_client: stripe.HTTPClient | None = None
    ) -> None:
        if not settings.stripe_api_key:
            raise ValueError("STRIPE_API_KEY is required when PAYMENTS_PROCESSOR=stripe")
        self._settings = settings
        self._http = http_client or stripe.HTTPXClient(timeout=HTTP_TIMEOUT_SECONDS)
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self._client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses=base,
            http_client=self._http,
            max_network_retries=2,
        )

    async def close(self) -> None:
        await self._http.close_async()

    # Checkout

    async def create_checkout(self, req: CheckoutRequest) -> ProcessorCheckout:
        session = await self._call(
            self._client.v1.checkout.sessions.create_async(
                params=checkout_params(req),
                options={"idempotency_key": f"checkout:{req.session_id}"},
            )
        )
        return ProcessorCheckout(ref=session.id, redirect_url=session.url)

    # Connect: one transfer per account

    async def deposit(self, req: DepositRequest) -> list[Deposit]:
        """Transfer each account's net (amount less the fees it bears) from the charge.
        The fee stays with the platform out of the operating part; trust deposits carry no
        fee. A deposit that already has a ref, or nothing to move, is returned as it is."""
        intent = await self._settled_intent(req.payment_ref)
        source = req.charge_ref or ref_of(intent.get("latest_charge"))
        done: list[Deposit] = []
        for deposit in req.deposits:
            net = deposit.amount_minor - deposit.fee_minor
            if deposit.account == "trust" and deposit.fee_minor:
                raise ProcessorError("processing fees are never taken from the trust account")
            if deposit.ref or net <= 0:
                done.append(deposit)
                continue
            if not deposit.destination:
                raise ProcessorError(
                    f"the firm has no Stripe account for its {deposit.account} account"
                )
            params = {
                "amount": net,
                "currency": req.currency.lower(),
                "destination": deposit.destination,
                "source_transaction": source,
                "transfer_group": intent.get("transfer_group"),
                "metadata": {
                    "payment_id": req.payment_id,
                    "firm_id": req.firm_id,
                    "account": deposit.account,
                },
            }
            transfer = await self._call(
                self._client.v1.transfers.create_async(
                    params=params,
                    options={"idempotency_key": f"transfer:{req.payment_id}:{deposit.account}"},
                )
            )
            done.append(replace(deposit, ref=transfer.id))
        return done

    async def _settled_intent(self, payment_ref: str) -> dict[str, Any]:
        intent = await self._call(self._client.v1.payment_intents.retrieve_async(payment_ref))
        data = intent.to_dict()
        if data.get("status") != "succeeded":
            # An ACH debit not yet settled: its money may still come back.
            raise ProcessorError(
                f"payment {payment_ref} is {data.get('status')}, not succeeded", retryable=True
            )
        return data

    # Refunds, with the transfers' reversals

    async def refund(self, req: RefundOrder) -> RefundResult:
        """Refund on the platform, then take the money back from the firm's accounts: each
        reversal takes `amount_minor - fee_minor` back from transfer `ref` (the part of the
        refund that account had received)."""
        refund = await self._call(
            self._client.v1.refunds.create_async(
                params={
                    "payment_intent": req.payment_ref,
                    "amount": req.amount_minor,
                    "reason": "requested_by_customer",
                    "metadata": {"refund_id": req.refund_id, "firm_id": req.firm_id},
                },
                options={"idempotency_key": f"refund:{req.refund_id}"},
            )
        )
        status = REFUND_STATUSES.get(refund.status or "", RefundStatus.pending)
        reversed_ids: list[str] = []
        if status != RefundStatus.failed:
            for deposit in req.reversals:
                reversal = await self._reverse(req.refund_id, deposit)
                if reversal is not None:
                    reversed_ids.append(reversal)
        return RefundResult(
            ref=refund.id,
            status=status,
            failure_reason=refund_failure(refund.to_dict()),
            reversals=reversed_ids,
        )

    async def _reverse(self, refund_id: str, deposit: Deposit) -> str | None:
        amount = deposit.amount_minor - deposit.fee_minor
        if not deposit.ref or amount <= 0:
            return None
        try:
            reversal = await self._client.v1.transfers.reversals.create_async(
                deposit.ref,
                params={"amount": amount, "metadata": {"refund_id": refund_id}},
                options={"idempotency_key": f"reversal:{refund_id}:{deposit.account}"},
            )
        except stripe.StripeError as exc:
            error = _processor_error(exc)
            if error.retryable:
                raise error from exc
            # The client has their money back either way; the platform bears what it
            # could not take back from the firm's account.
            log.warning("reversal of %s for refund %s refused: %s", deposit.ref, refund_id, exc)
            return None
        return str(reversal.id)

    # Webhooks

    def parse_webhook(self, payload: bytes, signature: str | None) -> ProcessorEvent | None:
        secret = self._settings.stripe_webhook_secret
        if not secret:
            raise InvalidSignature("no webhook secret is configured (STRIPE_WEBHOOK_SECRET)")
        try:
            event = stripe.Webhook.construct_event(
                payload,
                signature,
                secret,
                tolerance=self._settings.stripe_webhook_tolerance_seconds,
                api_key=self._settings.stripe_api_key,
            )
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise InvalidSignature(str(exc)) from exc
        return normalise_event(event.to_dict())

    async def _call(self, request: Awaitable[T]) -> T:
        try:
            return await request
        except stripe.StripeError as exc:
            raise _processor_error(exc) from exc


def checkout_params(req: CheckoutRequest) -> dict[str, Any]:
    """The Checkout Session for one request: a pure function of it, as the idempotency key
    requires (the same session_id must always send the same parameters)."""
    currency = req.currency.lower()
    ours = {"firm_id": req.firm_id, "session_id": req.session_id}
    params: dict[str, Any] = {
        "mode": "payment",
        # Stripe takes ACH debits only in US dollars.
        "payment_method_types": ["card", "us_bank_account"] if currency == "usd" else ["card"],
        "line_items": [_line_item(item, currency) for item in req.items],
        "client_reference_id": req.session_id,
        "metadata": ours,
        "payment_intent_data": {
            "metadata": ours,
            "transfer_group": req.session_id,
            "description": _description(req),
        },
        "success_url": req.success_url,
        "cancel_url": req.cancel_url,
        "expires_at": int(req.expires_at.timestamp()),
    }
    if req.customer_email:
        params["customer_email"] = req.customer_email
    return params


def _line_item(item: CheckoutItem, currency: str) -> dict[str, Any]:
    label = "Invoice" if item.kind == "invoice" else "Trust request"
    return {
        "quantity": 1,
        "price_data": {
            "currency": currency,
            "unit_amount": item.amount_minor,
            "product_data": {
                "name": f"{label} {item.number}",
                "metadata": {"invoice_id": item.invoice_id, "kind": item.kind},
            },
        },
    }


def _description(req: CheckoutRequest) -> str:
    numbers = ", ".join(item.number for item in req.items)
    return f"{req.firm_name}: {numbers}"[:1000]


def _processor_error(exc: stripe.StripeError) -> ProcessorError:
    status = exc.http_status or 0
    retryable = (
        isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError)
        or status >= 500
        or status == 409  # a concurrent request with the same idempotency key
    )
    message = exc.user_message or str(exc) or type(exc).__name__
    return ProcessorError(f"Stripe: {message}", retryable=retryable)
