"""The part of Stripe's API v1 the product uses: Checkout Sessions, PaymentIntents, Charges,
Refunds, Connect transfers and reversals, accounts, balance transactions and events."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from sandbox.stripe import checkout, refunds, transfers
from sandbox.stripe.deps import ApiKeyDep, StateDep, respond_get, respond_post
from sandbox.stripe.errors import StripeError, no_such
from sandbox.stripe.forms import Params, reject_unknown
from sandbox.stripe.listing import paginate
from sandbox.stripe.objects import Obj
from sandbox.stripe.state import SandboxState

API_PREFIX = "/v1"
router = APIRouter(prefix=API_PREFIX)
RETRIEVE_PARAMS = ("expand",)


def _retrieve(state: SandboxState, kind: str, object_id: str, params: Params) -> Obj:
    reject_unknown(params, RETRIEVE_PARAMS)
    found = state.get(kind, object_id)
    if found is None:
        raise no_such(kind, object_id)
    return found


def public_base(request: Request, state: SandboxState) -> str:
    return state.settings.public_url or str(request.base_url).rstrip("/")


# Checkout Sessions


@router.post("/checkout/sessions")
async def create_checkout_session(request: Request, state: StateDep, key: ApiKeyDep) -> Response:
    base = public_base(request, state)
    return await respond_post(
        request, state, key, lambda params: checkout.create_session(state, params, base)
    )


@router.get("/checkout/sessions")
async def list_checkout_sessions(request: Request, state: StateDep, _: ApiKeyDep) -> Response:
    def operation(params: Params) -> Obj:
        checkout.sweep_expired(state)
        return paginate(
            state,
            state.all("checkout.session"),
            params,
            "/v1/checkout/sessions",
            {
                "payment_intent": lambda s, v: s["payment_intent"] == v,
                "status": lambda s, v: s["status"] == v,
                "client_reference_id": lambda s, v: s["client_reference_id"] == v,
            },
        )

    return await respond_get(request, state, operation)


@router.get("/checkout/sessions/{session_id}")
async def retrieve_checkout_session(
    session_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    def operation(params: Params) -> Obj:
        reject_unknown(params, RETRIEVE_PARAMS)
        return checkout.get_session(state, session_id)

    return await respond_get(request, state, operation)


@router.get("/checkout/sessions/{session_id}/line_items")
async def list_line_items(
    session_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    def operation(params: Params) -> Obj:
        checkout.get_session(state, session_id)
        url = f"/v1/checkout/sessions/{session_id}/line_items"
        return paginate(state, list(state.line_items[session_id]), params, url)

    return await respond_get(request, state, operation)


@router.post("/checkout/sessions/{session_id}/expire")
async def expire_checkout_session(
    session_id: str, request: Request, state: StateDep, key: ApiKeyDep
) -> Response:
    def operation(params: Params) -> Obj:
        reject_unknown(params, RETRIEVE_PARAMS)
        return checkout.expire_session(state, session_id)

    return await respond_post(request, state, key, operation)


# PaymentIntents, Charges, balance transactions


@router.get("/payment_intents/{intent_id}")
async def retrieve_payment_intent(
    intent_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    return await respond_get(
        request, state, lambda params: _retrieve(state, "payment_intent", intent_id, params)
    )


@router.get("/charges/{charge_id}")
async def retrieve_charge(
    charge_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    return await respond_get(
        request, state, lambda params: _retrieve(state, "charge", charge_id, params)
    )


@router.get("/balance_transactions/{txn_id}")
async def retrieve_balance_transaction(
    txn_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    return await respond_get(
        request, state, lambda params: _retrieve(state, "balance_transaction", txn_id, params)
    )


# Refunds


@router.post("/refunds")
async def create_refund(request: Request, state: StateDep, key: ApiKeyDep) -> Response:
    return await respond_post(
        request, state, key, lambda params: refunds.create_refund(state, params)
    )


@router.get("/refunds")
async def list_refunds(request: Request, state: StateDep, _: ApiKeyDep) -> Response:
    def operation(params: Params) -> Obj:
        return paginate(
            state,
            state.all("refund"),
            params,
            "/v1/refunds",
            {
                "charge": lambda r, v: r["charge"] == v,
                "payment_intent": lambda r, v: r["payment_intent"] == v,
            },
        )

    return await respond_get(request, state, operation)


@router.get("/refunds/{refund_id}")
async def retrieve_refund(
    refund_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    return await respond_get(
        request, state, lambda params: _retrieve(state, "refund", refund_id, params)
    )


# Transfers


@router.post("/transfers")
async def create_transfer(request: Request, state: StateDep, key: ApiKeyDep) -> Response:
    return await respond_post(
        request, state, key, lambda params: transfers.create_transfer(state, params)
    )


@router.get("/transfers")
async def list_transfers(request: Request, state: StateDep, _: ApiKeyDep) -> Response:
    def operation(params: Params) -> Obj:
        return paginate(
            state,
            state.all("transfer"),
            params,
            "/v1/transfers",
            {
                "destination": lambda t, v: t["destination"] == v,
                "transfer_group": lambda t, v: t["transfer_group"] == v,
            },
        )

    return await respond_get(request, state, operation)


@router.get("/transfers/{transfer_id}")
async def retrieve_transfer(
    transfer_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    return await respond_get(
        request, state, lambda params: _retrieve(state, "transfer", transfer_id, params)
    )


@router.post("/transfers/{transfer_id}/reversals")
async def create_reversal(
    transfer_id: str, request: Request, state: StateDep, key: ApiKeyDep
) -> Response:
    return await respond_post(
        request,
        state,
        key,
        lambda params: transfers.reverse_transfer(state, transfer_id, params),
    )


@router.get("/transfers/{transfer_id}/reversals")
async def list_reversals(
    transfer_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    def operation(params: Params) -> Obj:
        transfer = transfers.get_transfer(state, transfer_id)
        url = f"/v1/transfers/{transfer_id}/reversals"
        return paginate(state, list(transfer["reversals"]["data"]), params, url)

    return await respond_get(request, state, operation)


# Accounts and events


@router.get("/accounts/{account_id}")
async def retrieve_account(
    account_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    return await respond_get(
        request, state, lambda params: _retrieve(state, "account", account_id, params)
    )


@router.get("/events/{event_id}")
async def retrieve_event(
    event_id: str, request: Request, state: StateDep, _: ApiKeyDep
) -> Response:
    return await respond_get(
        request, state, lambda params: _retrieve(state, "event", event_id, params)
    )


@router.get("/events")
async def list_events(request: Request, state: StateDep, _: ApiKeyDep) -> Response:
    def operation(params: Params) -> Obj:
        return paginate(
            state, state.all("event"), params, "/v1/events", {"type": lambda e, v: e["type"] == v}
        )

    return await respond_get(request, state, operation)


@router.api_route(
    "/{path:path}", methods=["GET", "POST", "DELETE", "PUT", "PATCH"], include_in_schema=False
)
async def unrecognized(path: str, request: Request, _: ApiKeyDep) -> Response:
    raise StripeError(
        404,
        f"Unrecognized request URL ({request.method}: /v1/{path}). Please see "
        "https://stripe.com/docs or we can help at https://support.stripe.com/.",
    )
