"""What every API route shares: the state, the secret key check, Stripe's idempotency for
POSTs, and JSON answers with `expand[]` applied."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import Response

from sandbox.stripe.errors import StripeError
from sandbox.stripe.forms import Params, parse_query
from sandbox.stripe.listing import render
from sandbox.stripe.objects import Obj
from sandbox.stripe.state import IdempotentResult, RequestContext, SandboxState

Operation = Callable[[Params], Obj]
IDEMPOTENCY_KEY_MAX = 255
JSON = "application/json"


def get_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


StateDep = Annotated[SandboxState, Depends(get_state)]


def require_api_key(request: Request, state: StateDep) -> str:
    """Bearer auth with a secret test key (HTTP Basic with the key as user name works too,
    as with Stripe)."""
    key = _presented_key(request.headers.get("authorization", ""))
    if not key:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
        )
    allowed = state.settings.api_keys
    if not key.startswith("sk_test_") or len(key) <= 8 or (allowed and key not in allowed):
        raise StripeError(401, f"Invalid API Key provided: {_masked(key)}")
    return key


def _presented_key(header: str) -> str:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip()).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[0]
    return ""


def _masked(key: str) -> str:
    return key[:8] + "*" * max(len(key) - 12, 0) + key[-4:] if len(key) > 12 else key


ApiKeyDep = Annotated[str, Depends(require_api_key)]


def json_response(
    payload: Obj, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(json.dumps(payload).encode("utf-8"), status, headers, media_type=JSON)


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


async def respond_get(request: Request, state: StateDep, operation: Operation) -> Response:
    params = parse_query(request.url.query)
    return json_response(render(state, operation(params), params))


async def respond_post(
    request: Request, state: SandboxState, api_key: str, operation: Operation
) -> Response:
    """Run a POST once per Idempotency-Key: the first result is replayed for 24 hours, and
    the key with other parameters (or another endpoint) is an idempotency_error."""
    params = parse_query(await request.body())
    key = request.headers.get("idempotency-key")
    fingerprint = json.dumps(params, sort_keys=True)
    if key is not None:
        replay = _replay(state, api_key, key, request, fingerprint)
        if replay is not None:
            return replay
    status, payload = _execute(state, operation, params, request_id(request), key)
    body = json.dumps(payload).encode("utf-8")
    # Stripe saves a result once the endpoint started executing; a request refused by
    # validation can be retried with the same key.
    if key is not None and (status < 400 or status == 402 or status >= 500):
        state.remember(
            api_key,
            key,
            IdempotentResult(
                request.method,
                request.url.path,
                fingerprint,
                status,
                body,
                request_id(request),
                state.clock(),
            ),
        )
    headers = {"Idempotency-Key": key} if key is not None else None
    return Response(body, status, headers, media_type=JSON)


def _execute(
    state: SandboxState, operation: Operation, params: Params, req_id: str, key: str | None
) -> tuple[int, Obj]:
    # No await between setting and clearing the context: events made by this operation,
    # and only those, name this request.
    state.request = RequestContext(req_id or None, key)
    try:
        return 200, render(state, operation(params), params)
    except StripeError as error:
        return error.status, error.body()
    finally:
        state.request = RequestContext()


def _replay(
    state: SandboxState, api_key: str, key: str, request: Request, fingerprint: str
) -> Response | None:
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise StripeError(
            400,
            f"Idempotency keys must be 1 to {IDEMPOTENCY_KEY_MAX} characters long.",
            type_="idempotency_error",
        )
    prior = state.idempotent_result(api_key, key)
    if prior is None:
        return None
    path = request.url.path
    if (prior.method, prior.path) != (request.method, path):
        raise StripeError(
            400,
            "Keys for idempotent requests can only be used for the same endpoint they were "
            f"first used for ('{prior.path}' vs '{path}'). Try using a key other than "
            f"'{key}' if you meant to execute a different request.",
            type_="idempotency_error",
        )
    if prior.fingerprint != fingerprint:
        raise StripeError(
            400,
            "Keys for idempotent requests can only be used with the same parameters they "
            f"were first used with. Try using a key other than '{key}' if you meant to "
            "execute a different request.",
            type_="idempotency_error",
        )
    headers = {
        "Idempotency-Key": key,
        "Idempotent-Replayed": "true",
        "Original-Request": prior.request_id,
    }
    return Response(prior.body, prior.status, headers, media_type=JSON)
