"""Stripe's objects as the API returns them: id prefixes, `object`, `livemode`, `created`,
and the fields of the documented shapes that Checkout, PaymentIntents, Charges, Refunds,
Connect transfers and disputes carry. Builders only: the flows decide what changes.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

Obj = dict[str, Any]
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def stripe_fee(amount: int, method: str) -> int:
    """Stripe's US pricing: cards 2.9% + 30c; ACH Direct Debit 0.8% capped at $5."""
    if method == "us_bank_account":
        return min((amount * 8 + 500) // 1000, 500)
    return (amount * 29 + 500) // 1000 + 30


def list_object(url: str, data: list[Obj], has_more: bool = False) -> Obj:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def account(account_id: str, created: int, name: str | None = None) -> Obj:
    return {
        "id": account_id,
        "object": "account",
        "business_profile": {"name": name, "url": None, "mcc": "8111"},
        "business_type": "company",
        "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True,
        "country": "US",
        "created": created,
        "default_currency": "usd",
        "details_submitted": True,
        "email": None,
        "metadata": {},
        "payouts_enabled": True,
        "type": "custom",
    }


def checkout_session(
    *,
    session_id: str,
    created: int,
    currency: str,
    amount_total: int,
    payment_method_types: list[str],
    expires_at: int,
    url: str,
    fields: Obj,
) -> Obj:
    return {
        "id": session_id,
        "object": "checkout.session",
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": fields.get("billing_address_collection"),
        "cancel_url": fields.get("cancel_url"),
        "client_reference_id": fields.get("client_reference_id"),
        "client_secret": None,
        "consent": None,
        "created": created,
        "currency": currency,
        "customer": None,
        "customer_creation": "if_required",
        "customer_details": None,
        "customer_email": fields.get("customer_email"),
        "expires_at": expires_at,
        "invoice": None,
        "livemode": False,
        "locale": fields.get("locale"),
        "metadata": fields.get("metadata", {}),
        "mode": "payment",
        # Created when the customer confirms (API versions since 2022-08-01).
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_options": fields.get("payment_method_options", {}),
        "payment_method_types": payment_method_types,
        "payment_status": "unpaid",
        "recovered_from": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "status": "open",
        "submit_type": fields.get("submit_type"),
        "subscription": None,
        "success_url": fields.get("success_url"),
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": url,
    }


def line_item(*, currency: str, unit_amount: int, quantity: int, name: str) -> Obj:
    price_id = new_id("price_")
    return {
        "id": new_id("li_"),
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": unit_amount * quantity,
        "amount_tax": 0,
        "amount_total": unit_amount * quantity,
        "currency": currency,
        "description": name,
        "price": {
            "id": price_id,
            "object": "price",
            "active": False,
            "currency": currency,
            "livemode": False,
            "metadata": {},
            "product": new_id("prod_", 14),
            "type": "one_time",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        },
        "quantity": quantity,
    }


def payment_intent(*, session: Obj, created: int, intent_data: Obj) -> Obj:
    pi_id = new_id("pi_")
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": session["amount_total"],
        "amount_capturable": 0,
        "amount_received": 0,
        "application": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{pi_id}_secret_{new_id('', 25)}",
        "confirmation_method": "automatic",
        "created": created,
        "currency": session["currency"],
        "customer": None,
        "description": intent_data.get("description"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": intent_data.get("metadata", {}),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_options": {},
        "payment_method_types": list(session["payment_method_types"]),
        "processing": None,
        "receipt_email": intent_data.get("receipt_email") or session.get("customer_email"),
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": intent_data.get("transfer_group"),
    }


def billing_details(name: str | None, email: str | None) -> Obj:
    return {
        "address": {
            "city": None,
            "country": None,
            "line1": None,
            "line2": None,
            "postal_code": None,
            "state": None,
        },
        "email": email,
        "name": name,
        "phone": None,
    }


def card_details(number: str, exp_month: int, exp_year: int) -> Obj:
    brand = {"4": "visa", "5": "mastercard", "3": "amex", "6": "discover"}.get(number[0], "unknown")
    return {
        "brand": brand,
        "checks": {
            "address_line1_check": None,
            "address_postal_code_check": None,
            "cvc_check": "pass",
        },
        "country": "US",
        "exp_month": exp_month,
        "exp_year": exp_year,
        "fingerprint": new_id("", 16),
        "funding": "credit",
        "last4": number[-4:],
        "network": brand,
    }


def bank_details(routing_number: str, account_number: str) -> Obj:
    return {
        "account_holder_type": "individual",
        "account_type": "checking",
        "bank_name": "STRIPE TEST BANK",
        "financial_connections_account": None,
        "fingerprint": new_id("", 16),
        "last4": account_number[-4:],
        "networks": {"preferred": "ach", "supported": ["ach"]},
        "routing_number": routing_number,
        "status_details": None,
    }


def payment_method(*, created: int, method: str, details: Obj, billing: Obj) -> Obj:
    return {
        "id": new_id("pm_"),
        "object": "payment_method",
        "billing_details": billing,
        method: details,
        "created": created,
        "customer": None,
        "livemode": False,
        "metadata": {},
        "type": method,
    }


def charge(*, intent: Obj, method: Obj, created: int) -> Obj:
    charge_id = new_id("ch_" if method["type"] == "card" else "py_")
    kind = method["type"]
    return {
        "id": charge_id,
        "object": "charge",
        "amount": intent["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": method["billing_details"],
        "calculated_statement_descriptor": "ENVELOPEPAY",
        "captured": False,
        "created": created,
        "currency": intent["currency"],
        "customer": None,
        "description": intent.get("description"),
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": None,
        "paid": False,
        "payment_intent": intent["id"],
        "payment_method": method["id"],
        "payment_method_details": {"type": kind, kind: method[kind]},
        "receipt_email": intent.get("receipt_email"),
        "refunded": False,
        "refunds": list_object(f"/v1/charges/{charge_id}/refunds", []),
        "source_transfer": None,
        "status": "pending",
        "transfer_data": None,
        "transfer_group": intent.get("transfer_group"),
    }


def balance_transaction(
    *,
    created: int,
    amount: int,
    currency: str,
    fee: int,
    source: str,
    type_: str,
    category: str,
    description: str | None = None,
) -> Obj:
    fee_details = (
        [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Stripe processing fees",
                "type": "stripe_fee",
            }
        ]
        if fee
        else []
    )
    return {
        "id": new_id("txn_"),
        "object": "balance_transaction",
        "amount": amount,
        # Stripe makes card funds available two business days later in the US.
        "available_on": created + 2 * 86400,
        "created": created,
        "currency": currency,
        "description": description,
        "exchange_rate": None,
        "fee": fee,
        "fee_details": fee_details,
        "net": amount - fee,
        "reporting_category": category,
        "source": source,
        "status": "pending",
        "type": type_,
    }


def refund(*, charge_obj: Obj, amount: int, created: int, fields: Obj) -> Obj:
    return {
        "id": new_id("re_"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": charge_obj["id"],
        "created": created,
        "currency": charge_obj["currency"],
        "destination_details": {"type": charge_obj["payment_method_details"]["type"]},
        "failure_balance_transaction": None,
        "failure_reason": None,
        "metadata": fields.get("metadata", {}),
        "payment_intent": charge_obj["payment_intent"],
        "reason": fields.get("reason"),
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "pending",
        "transfer_reversal": None,
    }


def transfer(*, amount: int, currency: str, destination: str, created: int, fields: Obj) -> Obj:
    transfer_id = new_id("tr_")
    return {
        "id": transfer_id,
        "object": "transfer",
        "amount": amount,
        "amount_reversed": 0,
        "balance_transaction": None,
        "created": created,
        "currency": currency,
        "description": fields.get("description"),
        "destination": destination,
        "destination_payment": new_id("py_"),
        "livemode": False,
        "metadata": fields.get("metadata", {}),
        "reversals": list_object(f"/v1/transfers/{transfer_id}/reversals", []),
        "reversed": False,
        "source_transaction": fields.get("source_transaction"),
        "source_type": "card",
        "transfer_group": fields.get("transfer_group"),
    }


def transfer_reversal(*, transfer_obj: Obj, amount: int, created: int, fields: Obj) -> Obj:
    return {
        "id": new_id("trr_"),
        "object": "transfer_reversal",
        "amount": amount,
        "balance_transaction": None,
        "created": created,
        "currency": transfer_obj["currency"],
        "destination_payment_refund": new_id("pyr_"),
        "metadata": fields.get("metadata", {}),
        "source_refund": None,
        "transfer": transfer_obj["id"],
    }


def dispute(*, charge_obj: Obj, amount: int, reason: str, created: int) -> Obj:
    ach = charge_obj["payment_method_details"]["type"] == "us_bank_account"
    return {
        "id": new_id("dp_"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge_obj["id"],
        "created": created,
        "currency": charge_obj["currency"],
        "evidence_details": {
            "due_by": None if ach else created + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        # ACH debits cannot be contested: the bank has already returned the money.
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge_obj["payment_intent"],
        "payment_method_details": {
            "type": charge_obj["payment_method_details"]["type"],
        },
        "reason": reason,
        "status": "lost" if ach else "needs_response",
    }
