"""Test hooks under /sandbox/: not Stripe, unauthenticated. They do what a customer, a bank
or the Stripe dashboard would: pay a session without the HTML page, settle or fail ACH
debits and refunds, open a dispute, and show or resend the webhooks sent."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from starlette.responses import Response

from sandbox.stripe import checkout, objects, refunds
from sandbox.stripe.checkout import PaymentDetails
from sandbox.stripe.deps import StateDep, json_response
from sandbox.stripe.errors import StripeError, error_response, invalid_param, no_such
from sandbox.stripe.listing import render
from sandbox.stripe.objects import Obj

router = APIRouter(prefix="/sandbox", tags=["sandbox hooks"])
JsonBody = Annotated[dict[str, Any] | None, Body()]
COMPLETE_FIELDS = (
    "method",
    "card_number",
    "exp_month",
    "exp_year",
    "cvc",
    "routing_number",
    "account_number",
    "name",
    "email",
)


def _resend(request: Request, event: Obj) -> None:
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.enqueue(event)


def _details(body: dict[str, Any]) -> PaymentDetails:
    unknown = set(body) - set(COMPLETE_FIELDS)
    if unknown:
        raise invalid_param(sorted(unknown)[0], f"Unknown field: {sorted(unknown)[0]}")
    method = body.get("method", "card")
    if method not in checkout.SUPPORTED_METHODS:
        raise invalid_param("method", "method must be card or us_bank_account")
    fields = {key: body[key] for key in COMPLETE_FIELDS if key in body and key != "method"}
    for name in ("exp_month", "exp_year"):
        if name in fields:
            try:
                fields[name] = int(fields[name])
            except (TypeError, ValueError):
                raise invalid_param(name, f"Invalid integer: {fields[name]}") from None
    return PaymentDetails(method=method, **fields)


@router.post("/checkout/sessions/{session_id}/complete")
async def complete_session(session_id: str, state: StateDep, body: JsonBody = None) -> Response:
    """What the hosted page's Pay button does: {method: card|us_bank_account, card_number |
    account_number, name, email}. A declined card answers 402 in Stripe's card_error shape."""
    try:
        intent = checkout.pay(state, session_id, _details(body or {}))
    except StripeError as error:
        return error_response(error)
    session = state.get("checkout.session", session_id)
    return json_response({"checkout_session": session or {}, "payment_intent": intent})


@router.post("/payment_intents/{intent_id}/settle")
async def settle_payment(intent_id: str, state: StateDep) -> Response:
    """The bank answers an ACH debit now instead of after STRIPE_SANDBOX_ACH_SECONDS."""
    try:
        intent = checkout.settle(state, intent_id)
    except StripeError as error:
        return error_response(error)
    return json_response(render(state, intent, {"expand": ["latest_charge"]}))


@router.post("/refunds/{refund_id}/settle")
async def settle_refund(refund_id: str, state: StateDep) -> Response:
    try:
        return json_response(refunds.settle_refund(state, refund_id))
    except StripeError as error:
        return error_response(error)


@router.post("/refunds/{refund_id}/fail")
async def fail_refund(refund_id: str, state: StateDep, body: JsonBody = None) -> Response:
    reason = str((body or {}).get("failure_reason", "declined"))
    try:
        return json_response(refunds.fail_refund(state, refund_id, reason))
    except StripeError as error:
        return error_response(error)


@router.post("/charges/{charge_id}/dispute")
async def dispute_charge(charge_id: str, state: StateDep, body: JsonBody = None) -> Response:
    """A chargeback, or an ACH return after settlement: {reason?, amount?}."""
    body = body or {}
    amount = body.get("amount")
    try:
        dispute = refunds.dispute_charge(
            state, charge_id, body.get("reason"), int(amount) if amount is not None else None
        )
    except StripeError as error:
        return error_response(error)
    return json_response(dispute)


@router.post("/webhook_endpoints")
async def add_webhook_endpoint(state: StateDep, body: JsonBody = None) -> Response:
    """{url, secret?}: events from now on go there too; the secret is made up if absent."""
    body = body or {}
    if not body.get("url"):
        return error_response(invalid_param("url", "url is required"))
    endpoint = state.add_endpoint(str(body["url"]), body.get("secret") or None)
    return json_response(endpoint.as_json())


@router.get("/webhook_endpoints")
async def webhook_endpoints(state: StateDep) -> Response:
    return json_response({"data": [e.as_json() for e in state.endpoints.values()]})


@router.delete("/webhook_endpoints/{endpoint_id}")
async def remove_webhook_endpoint(endpoint_id: str, state: StateDep) -> Response:
    if state.endpoints.pop(endpoint_id, None) is None:
        return error_response(no_such("webhook_endpoint", endpoint_id))
    return json_response({"id": endpoint_id, "deleted": True})


@router.get("/events")
async def sent_events(request: Request, state: StateDep) -> Response:
    """Every event in the order it happened, with each endpoint's delivery attempts."""
    wanted = request.query_params.get("type")
    data = [
        {
            "event": event,
            "deliveries": [d.as_json() for d in state.deliveries.get(event["id"], [])],
        }
        for event in state.events
        if wanted is None or event["type"] == wanted
    ]
    return json_response({"data": data})


@router.post("/events/{event_id}/resend")
async def resend_event(event_id: str, request: Request, state: StateDep) -> Response:
    """Deliver the same event (same id, same body) again, as the dashboard's Resend does."""
    event = state.get("event", event_id)
    if event is None:
        return error_response(no_such("event", event_id))
    _resend(request, event)
    return json_response({"id": event_id, "resent": len(state.endpoints)})


@router.post("/accounts")
async def add_account(state: StateDep, body: JsonBody = None) -> Response:
    """A connected account a firm can receive transfers in: {id?, name?}."""
    body = body or {}
    account_id = str(body.get("id") or objects.new_id("acct_1", 16))
    if not account_id.startswith("acct_"):
        return error_response(invalid_param("id", "account ids start with acct_"))
    existing = state.get("account", account_id)
    account = existing or state.add(objects.account(account_id, state.now(), body.get("name")))
    return json_response(account)


@router.get("/accounts")
async def accounts(state: StateDep) -> Response:
    """Each connected account with what it has received (transfers less reversals)."""
    data = [
        {"account": account, "balance": state.balances.get(account["id"], 0)}
        for account in reversed(state.all("account"))
    ]
    return json_response({"data": data})


@router.post("/reset")
async def reset(state: StateDep) -> Response:
    state.reset()
    return json_response({"reset": True, "endpoints": len(state.endpoints)})
