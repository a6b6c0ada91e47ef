"""Test hooks under /sandbox/: not part of Clio, unauthenticated, for tests and demos to
change the world and see what clients asked for.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import ValidationError
from starlette.responses import Response

from sandbox.clio import render
from sandbox.clio.jsonenc import ClioJSONResponse
from sandbox.clio.mutations import (
    HookError,
    NewBill,
    NewContact,
    create_bill,
    create_contact,
    insert_raw_bill,
    patch_bill,
    patch_contact,
    patch_raw_bill,
)
from sandbox.clio.state import SandboxState

router = APIRouter(prefix="/sandbox", tags=["sandbox hooks"])


def get_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


StateDep = Annotated[SandboxState, Depends(get_state)]
JsonObject = Annotated[dict[str, Any], Body()]


def _hook_error(error: HookError | ValidationError) -> Response:
    if isinstance(error, ValidationError):
        detail: Any = error.errors(include_url=False, include_context=False)
        return ClioJSONResponse({"detail": detail}, status_code=422)
    return ClioJSONResponse({"detail": str(error)}, status_code=404 if error.missing else 422)


@router.post("/reset")
async def reset(state: StateDep) -> Response:
    state.reset()
    world = state.world
    return ClioJSONResponse(
        {"contacts": len(world.contacts), "bills": len(world.bills), "matters": len(world.matters)}
    )


@router.post("/tokens")
async def mint_token(state: StateDep) -> Response:
    """An access token for the registered app without the browser consent step."""
    return ClioJSONResponse(state.oauth.mint(state.settings.client_id).as_json())


@router.post("/bills", status_code=201)
async def new_bill(spec: NewBill, state: StateDep) -> Response:
    try:
        bill = create_bill(state.world, spec, state.clock())
    except HookError as error:
        return _hook_error(error)
    return ClioJSONResponse({"data": render.bill_full(state.world, bill)}, status_code=201)


@router.post("/bills/raw", status_code=201)
async def new_raw_bill(payload: Annotated[Any, Body()], state: StateDep) -> Response:
    raw = insert_raw_bill(state.world, payload)
    return ClioJSONResponse({"key": raw.key, "data": raw.payload}, status_code=201)


@router.patch("/bills/{bill_id}")
async def change_bill(bill_id: int, changes: JsonObject, state: StateDep) -> Response:
    world = state.world
    try:
        if bill_id in world.bills:
            bill = patch_bill(world, bill_id, changes, state.clock())
            return ClioJSONResponse({"data": render.bill_full(world, bill)})
        raw = patch_raw_bill(world, bill_id, changes, state.clock())
    except (HookError, ValidationError) as error:
        return _hook_error(error)
    return ClioJSONResponse({"key": raw.key, "data": raw.payload})


@router.post("/contacts", status_code=201)
async def new_contact(spec: NewContact, state: StateDep) -> Response:
    contact = create_contact(state.world, spec, state.clock())
    return ClioJSONResponse({"data": render.contact_full(contact)}, status_code=201)


@router.patch("/contacts/{contact_id}")
async def change_contact(contact_id: int, changes: JsonObject, state: StateDep) -> Response:
    try:
        contact = patch_contact(state.world, contact_id, changes, state.clock())
    except (HookError, ValidationError) as error:
        return _hook_error(error)
    return ClioJSONResponse({"data": render.contact_full(contact)})


@router.get("/requests")
async def logged_requests(state: StateDep) -> Response:
    return ClioJSONResponse({"data": [entry.as_json() for entry in state.requests]})


@router.delete("/requests", status_code=204)
async def forget_requests(state: StateDep) -> Response:
    state.requests.clear()
    return Response(status_code=204)
