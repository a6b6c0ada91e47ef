"""The Stripe processor: Checkout for card and ACH, Connect separate charges and transfers
for the firm's operating and trust accounts, refunds with transfer reversals, and webhooks
verified on the raw body and normalised into `ProcessorEvent`s.

Every POST carries a deterministic idempotency key, so a retry after a timeout (ours or the
ledger's) replays Stripe's first answer instead of charging, transferring or refunding twice.
All calls use the SDK's async methods: the event loop never waits on Stripe.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import stripe

from services.payments.processors import (
    CheckoutItem,
    CheckoutRequest,
    Deposit,
    EventKind,
    InvalidSignature,
    Method,
    ProcessorCheckout,
    ProcessorError,
    ProcessorEvent,
    RefundResult,
)
from services.payments.settings import PaymentsSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

Obj = Mapping[str, Any]
# Stripe's failure codes for ACH debits, as the NACHA return codes the firm's bank uses.
ACH_RETURN_CODES = {
    "insufficient_funds": "R01",
    "account_closed": "R02",
    "no_account": "R03",
    "invalid_account_number": "R04",
    "debit_not_authorized": "R10",
    "bank_account_restricted": "R16",
}
RefundStatus = Literal["pending", "succeeded", "failed"]
REFUND_STATUSES: dict[str, RefundStatus] = {
    "succeeded": "succeeded",
    "pending": "pending",
    "requires_action": "pending",
    "failed": "failed",
    "canceled": "failed",
}
REFUND_FAILURES = {
    "lost_or_stolen_card": "The card was reported lost or stolen.",
    "expired_or_canceled_card": "The card has expired or was canceled.",
    "insufficient_funds": "The refund could not be paid out: insufficient funds.",
    "declined": "The customer's bank declined the refund.",
    "charge_for_pending_refund_disputed": "The customer disputed the charge.",
    "merchant_request": "The refund was canceled.",
    "unknown": "The refund failed.",
}
ACH_FAILED_REASON = "The bank payment failed."
METHODS: dict[str, Method] = {"card": "card", "us_bank_account": "ach"}
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

    async def deposit(
        self,
        *,
        payment_id: str,
        payment_ref: str,
        charge_ref: str | None,
        currency: str,
        deposits: list[Deposit],
        firm_id: str,
    ) -> list[Deposit]:
        """Transfer each account's net (amount less the fees it bears) from the charge.
        The fee stays with the platform out of the operating part; trust deposits carry no
        fee. A deposit that already has a ref, or nothing to move, is returned as it is."""
        intent = await self._settled_intent(payment_ref)
        source = charge_ref or _ref(intent.get("latest_charge"))
        done: list[Deposit] = []
        for deposit in deposits:
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
                "currency": currency.lower(),
                "destination": deposit.destination,
                "source_transaction": source,
                "transfer_group": intent.get("transfer_group"),
                "metadata": {
                    "payment_id": payment_id,
                    "firm_id": firm_id,
                    "account": deposit.account,
                },
            }
            transfer = await self._call(
                self._client.v1.transfers.create_async(
                    params=params,
                    options={"idempotency_key": f"transfer:{payment_id}:{deposit.account}"},
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

    async def refund(
        self,
        *,
        refund_id: str,
        payment_ref: str,
        amount_minor: int,
        currency: str,
        reversals: list[Deposit],
        firm_id: str,
    ) -> RefundResult:
        """Refund on the platform, then take the money back from the firm's accounts: each
        reversal takes `amount_minor - fee_minor` back from transfer `ref` (the part of the
        refund that account had received)."""
        refund = await self._call(
            self._client.v1.refunds.create_async(
                params={
                    "payment_intent": payment_ref,
                    "amount": amount_minor,
                    "reason": "requested_by_customer",
                    "metadata": {"refund_id": refund_id, "firm_id": firm_id},
                },
                options={"idempotency_key": f"refund:{refund_id}"},
            )
        )
        status = REFUND_STATUSES.get(refund.status or "", "pending")
        reversed_ids: list[str] = []
        if status != "failed":
            for deposit in reversals:
                reversal = await self._reverse(refund_id, deposit)
                if reversal is not None:
                    reversed_ids.append(reversal)
        return RefundResult(
            ref=refund.id,
            status=status,
            failure_reason=_refund_failure(refund.to_dict()),
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


# Normalising events


def normalise_event(event: Obj) -> ProcessorEvent | None:
    """A Stripe event as the ledger's `ProcessorEvent`, or None for types it does not use."""
    handler = EVENT_HANDLERS.get(str(event.get("type")))
    if handler is None:
        return None
    obj = event.get("data", {}).get("object") or {}
    base = {
        "event_id": str(event["id"]),
        "occurred_at": datetime.fromtimestamp(int(event["created"]), UTC),
        "raw_type": str(event["type"]),
    }
    return handler(obj, base)


Handler = Callable[[Obj, dict[str, Any]], ProcessorEvent | None]


def _session_completed(session: Obj, base: dict[str, Any]) -> ProcessorEvent | None:
    status = session.get("payment_status")
    if status == "paid":
        return _from_session(session, base, "payment.succeeded", "card")
    if status == "unpaid":
        # Only a delayed method (ACH) completes unpaid: the debit is on its way.
        return _from_session(session, base, "payment.processing", "ach")
    return None


def _session_async_succeeded(session: Obj, base: dict[str, Any]) -> ProcessorEvent:
    return _from_session(session, base, "payment.succeeded", "ach")


def _session_async_failed(session: Obj, base: dict[str, Any]) -> ProcessorEvent:
    event = _from_session(session, base, "payment.failed", "ach")
    return replace(event, failure_reason=ACH_FAILED_REASON)


def _from_session(
    session: Obj, base: dict[str, Any], kind: EventKind, method: Method
) -> ProcessorEvent:
    details = session.get("customer_details") or {}
    metadata = session.get("metadata") or {}
    return ProcessorEvent(
        **base,
        kind=kind,
        session_id=session.get("client_reference_id") or metadata.get("session_id"),
        payment_ref=_ref(session.get("payment_intent")),
        method=method,
        amount_minor=session.get("amount_total"),
        payer_name=details.get("name"),
        payer_email=details.get("email") or session.get("customer_email"),
    )


def _intent_event(kind: EventKind) -> Handler:
    def handle(intent: Obj, base: dict[str, Any]) -> ProcessorEvent:
        error = intent.get("last_payment_error") or {}
        method_obj = error.get("payment_method") or {}
        method = _method_of(intent, method_obj, kind)
        amount = intent.get("amount_received") if kind == "payment.succeeded" else None
        return ProcessorEvent(
            **base,
            kind=kind,
            session_id=(intent.get("metadata") or {}).get("session_id"),
            payment_ref=intent.get("id"),
            charge_ref=_ref(intent.get("latest_charge")),
            method=method,
            amount_minor=amount or intent.get("amount"),
            failure_code=_failure_code(error, method) if kind == "payment.failed" else None,
            failure_reason=error.get("message") if kind == "payment.failed" else None,
            payer_name=(method_obj.get("billing_details") or {}).get("name"),
            payer_email=(method_obj.get("billing_details") or {}).get("email"),
            last4=_last4(method_obj),
        )

    return handle


def _method_of(intent: Obj, method_obj: Obj, kind: EventKind) -> Method | None:
    """Card or ACH, from what the event carries: the failed payment method, or the intent's
    only method type; a processing intent here can only be a bank debit."""
    kind_of_method = method_obj.get("type")
    types = intent.get("payment_method_types") or []
    if kind_of_method is None and len(types) == 1:
        kind_of_method = types[0]
    if kind_of_method is None and kind == "payment.processing" and "us_bank_account" in types:
        kind_of_method = "us_bank_account"
    return METHODS.get(str(kind_of_method))


def _failure_code(error: Obj, method: Method | None) -> str | None:
    code = error.get("code")
    if method == "ach" and code in ACH_RETURN_CODES:
        return ACH_RETURN_CODES[code]
    return code


def _last4(method_obj: Obj) -> str | None:
    for key in ("card", "us_bank_account"):
        details = method_obj.get(key)
        if details:
            return details.get("last4")
    return None


def _charge_refunded(charge: Obj, base: dict[str, Any]) -> ProcessorEvent | None:
    """The newest refund in the charge's snapshot is the one this event is about (Stripe
    lists newest first). API versions that leave `refunds` out send refund.* events too."""
    refunds = (charge.get("refunds") or {}).get("data") or []
    if not refunds:
        return None
    return _refund_event(refunds[0], base)


def _refund_event(refund: Obj, base: dict[str, Any]) -> ProcessorEvent | None:
    status = REFUND_STATUSES.get(str(refund.get("status")))
    if status == "pending" or status is None:
        return None  # not settled yet: a later refund.updated says how it ended
    kind: EventKind = "refund.succeeded" if status == "succeeded" else "refund.failed"
    return ProcessorEvent(
        **base,
        kind=kind,
        payment_ref=_ref(refund.get("payment_intent")),
        charge_ref=_ref(refund.get("charge")),
        amount_minor=refund.get("amount"),
        refund_ref=refund.get("id"),
        refund_id=(refund.get("metadata") or {}).get("refund_id"),
        failure_code=refund.get("failure_reason") if kind == "refund.failed" else None,
        failure_reason=_refund_failure(refund),
    )


def _refund_failure(refund: Obj) -> str | None:
    reason = refund.get("failure_reason")
    if refund.get("status") not in ("failed", "canceled"):
        return None
    return REFUND_FAILURES.get(str(reason), REFUND_FAILURES["unknown"])


def _dispute_created(dispute: Obj, base: dict[str, Any]) -> ProcessorEvent:
    """A chargeback, or for ACH a bank return after settlement: the money went back."""
    method_type = (dispute.get("payment_method_details") or {}).get("type")
    method = METHODS.get(str(method_type))
    reason = str(dispute.get("reason") or "")
    code = ACH_RETURN_CODES.get(reason, reason) if method == "ach" else reason
    return ProcessorEvent(
        **base,
        kind="payment.disputed",
        payment_ref=_ref(dispute.get("payment_intent")),
        charge_ref=_ref(dispute.get("charge")),
        method=method,
        amount_minor=dispute.get("amount"),
        failure_code=code or None,
        failure_reason=f"Disputed by the payer's bank: {reason.replace('_', ' ')}"
        if reason
        else "Disputed by the payer's bank.",
    )


def _ref(value: Any) -> str | None:
    """An id whether the field came as the id or as the expanded object."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value if isinstance(value, str) else None


EVENT_HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _session_completed,
    "checkout.session.async_payment_succeeded": _session_async_succeeded,
    "checkout.session.async_payment_failed": _session_async_failed,
    "payment_intent.processing": _intent_event("payment.processing"),
    "payment_intent.succeeded": _intent_event("payment.succeeded"),
    "payment_intent.payment_failed": _intent_event("payment.failed"),
    "charge.refunded": _charge_refunded,
    "charge.refund.updated": _refund_event,
    "refund.created": _refund_event,
    "refund.updated": _refund_event,
    "refund.failed": _refund_event,
    "charge.dispute.created": _dispute_created,
}
