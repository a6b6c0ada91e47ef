"""Checkout Sessions and what happens when the customer pays on the hosted page.

The sequences follow Stripe's: a card payment sends payment_intent.succeeded and
checkout.session.completed (payment_status "paid"); an ACH debit sends
payment_intent.processing and checkout.session.completed ("unpaid"), then, once it settles,
payment_intent.succeeded and checkout.session.async_payment_succeeded, or
payment_intent.payment_failed and checkout.session.async_payment_failed; a declined card
sends payment_intent.payment_failed and leaves the session open for another try.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sandbox.stripe import forms, objects
from sandbox.stripe.errors import StripeError, invalid_param, missing_param, no_such
from sandbox.stripe.forms import Params
from sandbox.stripe.objects import Obj
from sandbox.stripe.state import SandboxState

SUPPORTED_METHODS = ("card", "us_bank_account")
SESSION_PARAMS = (
    "mode",
    "payment_method_types",
    "line_items",
    "client_reference_id",
    "metadata",
    "payment_intent_data",
    "customer_email",
    "success_url",
    "cancel_url",
    "expires_at",
    "expand",
    "locale",
    "submit_type",
    "billing_address_collection",
    "payment_method_options",
)
INTENT_DATA_PARAMS = ("metadata", "transfer_group", "description", "receipt_email")
LINE_ITEM_PARAMS = ("price_data", "quantity")
PRICE_DATA_PARAMS = ("currency", "unit_amount", "product_data")
PRODUCT_DATA_PARAMS = ("name", "description", "metadata")
MIN_EXPIRY_SECONDS = 30 * 60
MAX_EXPIRY_SECONDS = 24 * 60 * 60
# Stripe's minimum charge per currency (USD: $0.50).
MINIMUM_AMOUNT = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50}
TEST_ROUTING_NUMBER = "110000000"

# Stripe's documented test cards.
SUCCESS_CARDS = frozenset(
    {
        "4242424242424242",
        "4000056655665556",
        "5555555555554444",
        "2223003122003222",
        "5200828282828210",
        "5105105105105100",
        "378282246310005",
        "371449635398431",
        "6011111111111117",
        "6011000990139424",
        "3056930009020004",
        "36227206271667",
        "3566002020360505",
    }
)
# number: (code, decline_code, message)
DECLINED_CARDS = {
    "4000000000000002": ("card_declined", "generic_decline", "Your card was declined."),
    "4000000000009995": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "4000000000009987": ("card_declined", "lost_card", "Your card was declined."),
    "4000000000009979": ("card_declined", "stolen_card", "Your card was declined."),
    "4000000000000069": ("expired_card", "expired_card", "Your card has expired."),
    "4000000000000127": (
        "incorrect_cvc",
        "incorrect_cvc",
        "Your card's security code is incorrect.",
    ),
    "4000000000000119": (
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
}
LIVE_CARD_DECLINE = (
    "card_declined",
    "test_mode_live_card",
    "Your card was declined. Your request was in test mode, but used a non test (live) card. "
    "For a list of valid test cards, visit: https://stripe.com/docs/testing.",
)
# Stripe's test bank accounts (routing 110000000) that fail once the debit is submitted.
FAILING_BANK_ACCOUNTS = {
    "000222222227": "insufficient_funds",
    "000111111113": "account_closed",
    "000111111116": "no_account",
    "000333333335": "debit_not_authorized",
}
ACH_FAILURE_MESSAGES = {
    "insufficient_funds": "The customer's account has insufficient funds to cover this payment.",
    "account_closed": "The customer's bank account has been closed.",
    "no_account": "The customer's bank account could not be located.",
    "debit_not_authorized": "The customer has notified their bank that this payment was "
    "unauthorized.",
}


@dataclass(frozen=True)
class PaymentDetails:
    """What the customer typed on the hosted page."""

    method: str
    name: str | None = None
    email: str | None = None
    card_number: str = ""
    exp_month: int = 12
    exp_year: int = 2099
    cvc: str = "123"
    routing_number: str = TEST_ROUTING_NUMBER
    account_number: str = ""


# Sessions


def create_session(state: SandboxState, params: Params, base_url: str) -> Obj:
    forms.reject_unknown(params, SESSION_PARAMS)
    mode = forms.text(params, "mode", required=True)
    if mode != "payment":
        raise invalid_param("mode", f"Invalid mode: the sandbox supports only payment, not {mode}")
    success_url = forms.text(params, "success_url", required=True)
    methods = _payment_method_types(params)
    items = _line_items(params)
    currency = items[0]["currency"]
    amount = sum(item["amount_total"] for item in items)
    _check_amount(currency, amount)
    if "us_bank_account" in methods and currency != "usd":
        raise invalid_param(
            "payment_method_types",
            f"The payment method type `us_bank_account` does not support currency `{currency}`.",
        )
    now = state.now()
    session_id = objects.new_id("cs_test_", 58)
    session = objects.checkout_session(
        session_id=session_id,
        created=now,
        currency=currency,
        amount_total=amount,
        payment_method_types=methods,
        expires_at=_expires_at(params, now),
        url=f"{base_url}/pay/{session_id}",
        fields={
            "success_url": success_url,
            "cancel_url": forms.text(params, "cancel_url"),
            "client_reference_id": _client_reference_id(params),
            "customer_email": _email(params, "customer_email"),
            "metadata": forms.metadata(params),
            "locale": forms.text(params, "locale"),
            "submit_type": forms.text(params, "submit_type"),
            "billing_address_collection": forms.text(params, "billing_address_collection"),
            "payment_method_options": forms.hash_param(params, "payment_method_options"),
        },
    )
    state.add(session)
    state.line_items[session_id] = items
    state.intent_data[session_id] = _intent_data(params)
    return session


def _payment_method_types(params: Params) -> list[str]:
    methods = [str(m) for m in forms.list_param(params, "payment_method_types")] or ["card"]
    for index, method in enumerate(methods):
        if method not in SUPPORTED_METHODS:
            raise invalid_param(
                f"payment_method_types[{index}]",
                f"Invalid payment_method_types[{index}]: must be one of "
                + ", ".join(SUPPORTED_METHODS),
            )
    return list(dict.fromkeys(methods))


def _line_items(params: Params) -> list[Obj]:
    raw = forms.list_param(params, "line_items")
    if not raw:
        raise missing_param("line_items")
    items = [_line_item(entry, index) for index, entry in enumerate(raw)]
    if len({item["currency"] for item in items}) > 1:
        raise invalid_param("line_items", "All line_items must use the same currency.")
    return items


def _line_item(entry: object, index: int) -> Obj:
    name = f"line_items[{index}]"
    if not isinstance(entry, dict):
        raise invalid_param(name, f"Invalid object: {name} must be a hash")
    forms.reject_unknown(entry, LINE_ITEM_PARAMS, name)
    price = forms.hash_param(entry, "price_data")
    if not price:
        raise missing_param(f"{name}[price_data]")
    forms.reject_unknown(price, PRICE_DATA_PARAMS, f"{name}[price_data]")
    product = forms.hash_param(price, "product_data")
    if not product:
        raise missing_param(f"{name}[price_data][product_data]")
    forms.reject_unknown(product, PRODUCT_DATA_PARAMS, f"{name}[price_data][product_data]")
    product_name = forms.text(product, "name")
    if product_name is None:
        raise missing_param(f"{name}[price_data][product_data][name]")
    currency = forms.text(price, "currency")
    if currency is None:
        raise missing_param(f"{name}[price_data][currency]")
    unit_amount = forms.integer(
        price, "unit_amount", minimum=0, label=f"{name}[price_data][unit_amount]"
    )
    if unit_amount is None:
        raise missing_param(f"{name}[price_data][unit_amount]")
    quantity = forms.integer(entry, "quantity", minimum=1, label=f"{name}[quantity]")
    if quantity is None:
        raise missing_param(f"{name}[quantity]")
    return objects.line_item(
        currency=currency.lower(), unit_amount=unit_amount, quantity=quantity, name=product_name
    )


def _check_amount(currency: str, amount: int) -> None:
    minimum = MINIMUM_AMOUNT.get(currency, 50)
    if amount < minimum:
        raise invalid_param(
            "line_items",
            f"The Checkout Session's total amount due must add up to at least "
            f"{minimum} {currency} (in the currency's smallest unit).",
        )


def _expires_at(params: Params, now: int) -> int:
    expires_at = forms.integer(params, "expires_at")
    if expires_at is None:
        return now + MAX_EXPIRY_SECONDS
    if expires_at > now + MAX_EXPIRY_SECONDS:
        raise invalid_param(
            "expires_at",
            "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
        )
    if expires_at < now + MIN_EXPIRY_SECONDS:
        raise invalid_param(
            "expires_at",
            "The `expires_at` timestamp must be at least 30 minutes from Checkout Session "
            "creation.",
        )
    return expires_at


def _client_reference_id(params: Params) -> str | None:
    value = forms.text(params, "client_reference_id")
    if value is not None and len(value) > 200:
        raise invalid_param(
            "client_reference_id", "client_reference_id can have up to 200 characters."
        )
    return value


def _email(params: Params, name: str) -> str | None:
    value = forms.text(params, name)
    if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise invalid_param(name, f"Invalid email address: {value}", "email_invalid")
    return value


def _intent_data(params: Params) -> Obj:
    data = forms.hash_param(params, "payment_intent_data")
    forms.reject_unknown(data, INTENT_DATA_PARAMS, "payment_intent_data")
    return {
        "metadata": forms.metadata(data),
        "transfer_group": forms.text(data, "transfer_group"),
        "description": forms.text(data, "description"),
        "receipt_email": forms.text(data, "receipt_email"),
    }


def get_session(state: SandboxState, session_id: str) -> Obj:
    session = state.get("checkout.session", session_id)
    if session is None:
        raise no_such("checkout.session", session_id, param="session")
    expire_if_due(state, session)
    return session


def expire_if_due(state: SandboxState, session: Obj) -> None:
    if session["status"] == "open" and state.now() >= session["expires_at"]:
        _expire(state, session)


def sweep_expired(state: SandboxState) -> None:
    for session in state.all("checkout.session"):
        expire_if_due(state, session)


def expire_session(state: SandboxState, session_id: str) -> Obj:
    session = get_session(state, session_id)
    if session["status"] != "open":
        raise StripeError(400, 'Only Checkout Sessions with a status in ["open"] can be expired.')
    _expire(state, session)
    return session


def _expire(state: SandboxState, session: Obj) -> None:
    session.update(status="expired", url=None)
    intent = state.get("payment_intent", session["payment_intent"] or "")
    if intent is not None and intent["status"] == "requires_payment_method":
        intent.update(status="canceled", canceled_at=state.now(), cancellation_reason="abandoned")
        state.emit("payment_intent.canceled", intent)
    state.emit("checkout.session.expired", session)


# Paying


def pay(state: SandboxState, session_id: str, details: PaymentDetails) -> Obj:
    """The customer submits the hosted page. Returns the PaymentIntent; raises a 402
    card_error (after the failure's events) when the card is declined."""
    session = get_session(state, session_id)
    if session["status"] != "open":
        raise StripeError(
            400,
            f"This Checkout Session is no longer active (status: {session['status']}).",
            code="checkout_session_inactive",
        )
    if details.method not in session["payment_method_types"]:
        raise invalid_param(
            "payment_method", f"This Checkout Session does not accept {details.method}."
        )
    method = _payment_method(state, details)
    intent = _intent_for(state, session)
    charge = state.add(objects.charge(intent=intent, method=method, created=state.now()))
    intent.update(payment_method=method["id"], latest_charge=charge["id"])
    if details.method == "card":
        _charge_card(state, session, intent, charge, method, details.card_number)
    else:
        _start_debit(state, session, intent, charge, details.account_number)
    return intent


def _payment_method(state: SandboxState, details: PaymentDetails) -> Obj:
    billing = objects.billing_details(details.name, details.email)
    if details.method == "card":
        number = _valid_card(details, state.now())
        info = objects.card_details(number, details.exp_month, details.exp_year)
    else:
        account_number = _valid_bank_account(details)
        info = objects.bank_details(details.routing_number, account_number)
    method = objects.payment_method(
        created=state.now(), method=details.method, details=info, billing=billing
    )
    return state.add(method)


def _valid_card(details: PaymentDetails, now: int) -> str:
    number = re.sub(r"[\s-]", "", details.card_number)
    if not number.isdigit() or not 12 <= len(number) <= 19 or not luhn_ok(number):
        raise _card_input_error("incorrect_number", "Your card number is incorrect.", "number")
    if not 1 <= details.exp_month <= 12:
        raise _card_input_error(
            "invalid_expiry_month", "Your card's expiration month is invalid.", "exp_month"
        )
    today = datetime.fromtimestamp(now, UTC)
    if (details.exp_year, details.exp_month) < (today.year, today.month):
        raise _card_input_error(
            "invalid_expiry_year", "Your card's expiration date is in the past.", "exp_year"
        )
    if not re.fullmatch(r"\d{3,4}", details.cvc):
        raise _card_input_error("invalid_cvc", "Your card's security code is invalid.", "cvc")
    return number


def _card_input_error(code: str, message: str, param: str) -> StripeError:
    return StripeError(402, message, type_="card_error", code=code, param=param)


def luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _valid_bank_account(details: PaymentDetails) -> str:
    if details.routing_number != TEST_ROUTING_NUMBER:
        raise invalid_param(
            "us_bank_account[routing_number]",
            f"Invalid routing number. In test mode use {TEST_ROUTING_NUMBER}.",
            "routing_number_invalid",
        )
    account_number = re.sub(r"\s", "", details.account_number)
    if not re.fullmatch(r"\d{4,17}", account_number):
        raise invalid_param(
            "us_bank_account[account_number]",
            "Invalid account number.",
            "account_number_invalid",
        )
    return account_number


def _intent_for(state: SandboxState, session: Obj) -> Obj:
    """The session's PaymentIntent, made on the first attempt and reused by later ones."""
    existing = state.get("payment_intent", session["payment_intent"] or "")
    if existing is not None:
        return existing
    intent = objects.payment_intent(
        session=session, created=state.now(), intent_data=state.intent_data[session["id"]]
    )
    state.add(intent)
    state.session_of_intent[intent["id"]] = session["id"]
    session["payment_intent"] = intent["id"]
    state.emit("payment_intent.created", intent)
    return intent


def _charge_card(
    state: SandboxState, session: Obj, intent: Obj, charge: Obj, method: Obj, number: str
) -> None:
    digits = re.sub(r"[\s-]", "", number)
    decline = DECLINED_CARDS.get(digits) or (None if digits in SUCCESS_CARDS else LIVE_CARD_DECLINE)
    if decline is not None:
        raise _decline_card(state, intent, charge, method, decline)
    _charge_succeeded(state, charge, "card")
    intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None)
    _complete(state, session, paid=True)
    state.emit("payment_intent.succeeded", intent)
    state.emit("checkout.session.completed", session)


def _decline_card(
    state: SandboxState, intent: Obj, charge: Obj, method: Obj, decline: tuple[str, str, str]
) -> StripeError:
    """Record the decline and its events; the caller raises the returned 402."""
    code, decline_code, message = decline
    charge.update(
        status="failed",
        failure_code=code,
        failure_message=message,
        outcome={
            "network_status": "declined_by_network",
            "reason": decline_code,
            "risk_level": "normal",
            "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined",
        },
    )
    error = {
        "charge": charge["id"],
        "code": code,
        "decline_code": decline_code,
        "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
        "message": message,
        "payment_method": method,
        "type": "card_error",
    }
    intent.update(status="requires_payment_method", last_payment_error=error)
    state.emit("charge.failed", charge)
    state.emit("payment_intent.payment_failed", intent)
    return StripeError(
        402,
        message,
        type_="card_error",
        code=code,
        extra={"decline_code": decline_code, "charge": charge["id"], "payment_intent": intent},
    )


def _charge_succeeded(state: SandboxState, charge: Obj, method: str) -> None:
    txn = objects.balance_transaction(
        created=state.now(),
        amount=charge["amount"],
        currency=charge["currency"],
        fee=objects.stripe_fee(charge["amount"], method),
        source=charge["id"],
        type_="charge" if method == "card" else "payment",
        category="charge",
    )
    state.add(txn)
    charge.update(
        status="succeeded",
        paid=True,
        captured=True,
        amount_captured=charge["amount"],
        balance_transaction=txn["id"],
        outcome={
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
    )
    state.emit("charge.succeeded", charge)


def _complete(state: SandboxState, session: Obj, *, paid: bool) -> None:
    method = state.get("payment_method", _intent_method_id(state, session))
    billing = method["billing_details"] if method else objects.billing_details(None, None)
    session.update(
        status="complete",
        url=None,
        payment_status="paid" if paid else "unpaid",
        customer_details={
            "address": billing["address"],
            "email": billing["email"] or session["customer_email"],
            "name": billing["name"],
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
    )


def _intent_method_id(state: SandboxState, session: Obj) -> str:
    intent = state.get("payment_intent", session["payment_intent"] or "")
    return (intent or {}).get("payment_method") or ""


def _start_debit(
    state: SandboxState, session: Obj, intent: Obj, charge: Obj, account_number: str
) -> None:
    state.ach_outcomes[intent["id"]] = FAILING_BANK_ACCOUNTS.get(account_number)
    charge.update(status="pending")
    intent.update(status="processing", last_payment_error=None)
    _complete(state, session, paid=False)
    state.emit("charge.pending", charge)
    state.emit("payment_intent.processing", intent)
    state.emit("checkout.session.completed", session)
    intent_id = intent["id"]
    state.schedule(state.settings.ach_seconds, lambda: settle_if_processing(state, intent_id))


# ACH settlement


def settle(state: SandboxState, intent_id: str) -> Obj:
    """The bank answers an ACH debit: it succeeds, or fails with the test account's code."""
    intent = state.get("payment_intent", intent_id)
    if intent is None:
        raise no_such("payment_intent", intent_id, param="intent")
    if intent["status"] != "processing":
        raise StripeError(
            400,
            f"PaymentIntent {intent_id} is {intent['status']}, not processing: "
            "there is nothing to settle.",
            code="payment_intent_unexpected_state",
        )
    failure = state.ach_outcomes.pop(intent_id, None)
    charge = state.get("charge", intent["latest_charge"])
    session = state.get("checkout.session", state.session_of_intent[intent_id])
    assert charge is not None and session is not None
    if failure is None:
        _settle_succeeded(state, session, intent, charge)
    else:
        _settle_failed(state, intent, charge, failure)
        state.emit("checkout.session.async_payment_failed", session)
    return intent


def settle_if_processing(state: SandboxState, intent_id: str) -> None:
    """The timer's version: the hook or a reset may have got there first."""
    intent = state.get("payment_intent", intent_id)
    if intent is not None and intent["status"] == "processing":
        settle(state, intent_id)


def _settle_succeeded(state: SandboxState, session: Obj, intent: Obj, charge: Obj) -> None:
    _charge_succeeded(state, charge, "us_bank_account")
    intent.update(status="succeeded", amount_received=intent["amount"])
    session["payment_status"] = "paid"
    state.emit("payment_intent.succeeded", intent)
    state.emit("checkout.session.async_payment_succeeded", session)


def _settle_failed(state: SandboxState, intent: Obj, charge: Obj, failure: str) -> None:
    message = ACH_FAILURE_MESSAGES[failure]
    charge.update(status="failed", failure_code=failure, failure_message=message)
    method = state.get("payment_method", intent["payment_method"])
    intent.update(
        status="requires_payment_method",
        last_payment_error={
            "charge": charge["id"],
            "code": failure,
            "message": message,
            "payment_method": method,
            "type": "invalid_request_error",
        },
    )
    state.emit("charge.failed", charge)
    state.emit("payment_intent.payment_failed", intent)
