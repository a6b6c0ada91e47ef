"""Stripe's webhook events normalised into the ledger's `ProcessorEvent`s: which event types
the ledger uses, and how each one's object becomes a payment, refund or dispute fact (card or
ACH, NACHA return codes, refund failures). Pure functions over Stripe's JSON; verifying the
signature is `StripeProcessor.parse_webhook`'s."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from services.payments.processors import EventKind, Method, ProcessorEvent
from shared.events import RefundStatus

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
# Stripe's refund statuses as ours.
REFUND_STATUSES: dict[str, RefundStatus] = {
    "succeeded": RefundStatus.succeeded,
    "pending": RefundStatus.pending,
    "requires_action": RefundStatus.pending,
    "failed": RefundStatus.failed,
    "canceled": RefundStatus.failed,
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
        payment_ref=ref_of(session.get("payment_intent")),
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
            charge_ref=ref_of(intent.get("latest_charge")),
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
        payment_ref=ref_of(refund.get("payment_intent")),
        charge_ref=ref_of(refund.get("charge")),
        amount_minor=refund.get("amount"),
        refund_ref=refund.get("id"),
        refund_id=(refund.get("metadata") or {}).get("refund_id"),
        failure_code=refund.get("failure_reason") if kind == "refund.failed" else None,
        failure_reason=refund_failure(refund),
    )


def refund_failure(refund: Obj) -> str | None:
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
        payment_ref=ref_of(dispute.get("payment_intent")),
        charge_ref=ref_of(dispute.get("charge")),
        method=method,
        amount_minor=dispute.get("amount"),
        failure_code=code or None,
        failure_reason=f"Disputed by the payer's bank: {reason.replace('_', ' ')}"
        if reason
        else "Disputed by the payer's bank.",
    )


def ref_of(value: Any) -> str | None:
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
