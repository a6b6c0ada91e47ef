"""Refunds and disputes on charges.

A card refund succeeds at once; an ACH refund is pending until it settles (the ACH delay,
or POST /sandbox/refunds/{id}/settle). Stripe allows partial ACH refunds once the debit has
succeeded; forbidding them is the product's rule, not Stripe's, so the sandbox allows them.
"""

from __future__ import annotations

from sandbox.stripe import forms, objects
from sandbox.stripe.errors import StripeError, invalid_param, missing_param, no_such
from sandbox.stripe.forms import Params
from sandbox.stripe.objects import Obj
from sandbox.stripe.state import SandboxState

REFUND_PARAMS = (
    "amount",
    "charge",
    "payment_intent",
    "metadata",
    "reason",
    "expand",
    "instructions_email",
    "refund_application_fee",
    "reverse_transfer",
)
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
REFUND_FAILURE_REASONS = (
    "lost_or_stolen_card",
    "expired_or_canceled_card",
    "charge_for_pending_refund_disputed",
    "insufficient_funds",
    "declined",
    "merchant_request",
    "unknown",
)
# Stripe's fee for a dispute (and an ACH return), kept by Stripe whatever the outcome.
DISPUTE_FEE = 1500


def create_refund(state: SandboxState, params: Params) -> Obj:
    forms.reject_unknown(params, REFUND_PARAMS)
    charge = _refundable_charge(state, params)
    remaining = charge["amount"] - charge["amount_refunded"]
    amount = forms.integer(params, "amount", minimum=1)
    amount = remaining if amount is None else amount
    if amount > remaining:
        raise invalid_param(
            "amount",
            f"Refund amount ({_money(amount, charge)}) is greater than unrefunded amount on "
            f"charge ({_money(remaining, charge)})",
            "amount_too_large",
        )
    fields = {
        "metadata": forms.metadata(params),
        "reason": forms.choice(params, "reason", REFUND_REASONS),
    }
    refund = state.add(
        objects.refund(charge_obj=charge, amount=amount, created=state.now(), fields=fields)
    )
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount"]
    # The charge lists the refund object itself, so later status changes show through.
    charge["refunds"]["data"].insert(0, refund)
    if _is_ach(charge):
        refund_id = refund["id"]
        state.schedule(
            state.settings.ach_seconds, lambda: settle_refund_if_pending(state, refund_id)
        )
    else:
        _refund_succeeded(state, refund)
    state.emit("charge.refunded", charge)
    state.emit("refund.created", refund)
    return refund


def _refundable_charge(state: SandboxState, params: Params) -> Obj:
    charge_id = forms.text(params, "charge")
    intent_id = forms.text(params, "payment_intent")
    if charge_id is None and intent_id is None:
        raise missing_param("charge")
    if charge_id is None:
        intent = state.get("payment_intent", intent_id or "")
        if intent is None:
            raise no_such("payment_intent", intent_id or "", param="payment_intent", status=400)
        charge_id = intent["latest_charge"]
        if charge_id is None:
            raise invalid_param(
                "payment_intent",
                f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                "charge_not_refundable",
            )
    charge = state.get("charge", charge_id)
    if charge is None:
        raise no_such("charge", charge_id, param="charge", status=400)
    _check_refundable(charge)
    return charge


def _check_refundable(charge: Obj) -> None:
    if charge["status"] == "pending":
        raise invalid_param(
            "charge",
            f"Charge {charge['id']} is still pending: a bank debit can only be refunded once "
            "it has succeeded.",
            "charge_not_refundable",
        )
    if charge["status"] != "succeeded":
        raise invalid_param(
            "charge",
            f"Charge {charge['id']} has failed and cannot be refunded.",
            "charge_not_refundable",
        )
    if charge["disputed"]:
        raise invalid_param(
            "charge",
            f"Charge {charge['id']} has been charged back; cannot issue a refund.",
            "charge_disputed",
        )
    if charge["refunded"]:
        raise invalid_param(
            "charge", f"Charge {charge['id']} has already been refunded.", "charge_already_refunded"
        )


def _money(amount: int, charge: Obj) -> str:
    symbol = "$" if charge["currency"] == "usd" else charge["currency"].upper() + " "
    return f"{symbol}{amount // 100}.{amount % 100:02d}"


def _is_ach(charge: Obj) -> bool:
    return bool(charge["payment_method_details"]["type"] == "us_bank_account")


def _refund_succeeded(state: SandboxState, refund: Obj) -> None:
    txn = objects.balance_transaction(
        created=state.now(),
        amount=-refund["amount"],
        currency=refund["currency"],
        fee=0,
        source=refund["id"],
        type_="refund",
        category="refund",
        description="REFUND FOR CHARGE",
    )
    state.add(txn)
    refund.update(status="succeeded", balance_transaction=txn["id"])


def get_refund(state: SandboxState, refund_id: str) -> Obj:
    refund = state.get("refund", refund_id)
    if refund is None:
        raise no_such("refund", refund_id, param="refund")
    return refund


def settle_refund(state: SandboxState, refund_id: str) -> Obj:
    refund = get_refund(state, refund_id)
    if refund["status"] != "pending":
        raise StripeError(400, f"Refund {refund_id} is {refund['status']}, not pending.")
    _refund_succeeded(state, refund)
    _emit_refund_update(state, refund, "pending")
    return refund


def settle_refund_if_pending(state: SandboxState, refund_id: str) -> None:
    refund = state.get("refund", refund_id)
    if refund is not None and refund["status"] == "pending":
        settle_refund(state, refund_id)


def fail_refund(state: SandboxState, refund_id: str, reason: str = "declined") -> Obj:
    """The bank sends a refund back (a closed account, an expired card): Stripe marks it
    failed, takes the amount off `amount_refunded` and puts the money back in the balance."""
    refund = get_refund(state, refund_id)
    if reason not in REFUND_FAILURE_REASONS:
        raise invalid_param("failure_reason", f"Invalid failure_reason: {reason}")
    if refund["status"] not in ("pending", "succeeded"):
        raise StripeError(400, f"Refund {refund_id} is {refund['status']} and cannot fail.")
    previous = refund["status"]
    if previous == "succeeded":
        txn = objects.balance_transaction(
            created=state.now(),
            amount=refund["amount"],
            currency=refund["currency"],
            fee=0,
            source=refund["id"],
            type_="refund_failure",
            category="refund_failure",
        )
        refund["failure_balance_transaction"] = state.add(txn)["id"]
    refund.update(status="failed", failure_reason=reason)
    charge = state.get("charge", refund["charge"])
    assert charge is not None
    charge["amount_refunded"] -= refund["amount"]
    charge["refunded"] = False
    _emit_refund_update(state, refund, previous)
    state.emit("refund.failed", refund)
    return refund


def _emit_refund_update(state: SandboxState, refund: Obj, previous_status: str) -> None:
    state.emit("charge.refund.updated", refund, previous={"status": previous_status})
    state.emit("refund.updated", refund, previous={"status": previous_status})


def dispute_charge(
    state: SandboxState, charge_id: str, reason: str | None = None, amount: int | None = None
) -> Obj:
    """A chargeback, or for an ACH debit a bank return after success: the money goes back
    to the customer and Stripe takes its dispute fee."""
    charge = state.get("charge", charge_id)
    if charge is None:
        raise no_such("charge", charge_id, param="charge")
    if charge["status"] != "succeeded" or charge["disputed"]:
        raise StripeError(
            400, f"Charge {charge_id} is {charge['status']} or already disputed.", param="charge"
        )
    ach = _is_ach(charge)
    amount = charge["amount"] if amount is None else amount
    if not 0 < amount <= charge["amount"]:
        raise invalid_param("amount", f"A dispute is for 1 to {charge['amount']}, not {amount}.")
    dispute = objects.dispute(
        charge_obj=charge,
        amount=amount,
        reason=reason or ("debit_not_authorized" if ach else "fraudulent"),
        created=state.now(),
    )
    txn = objects.balance_transaction(
        created=state.now(),
        amount=-amount,
        currency=charge["currency"],
        fee=DISPUTE_FEE,
        source=dispute["id"],
        type_="adjustment",
        category="dispute",
        description=f"Chargeback withdrawal for {charge_id}",
    )
    dispute["balance_transactions"].append(state.add(txn))
    state.add(dispute)
    charge["disputed"] = True
    state.emit("charge.dispute.created", dispute)
    if ach:
        state.emit("charge.dispute.closed", dispute)
    return dispute
