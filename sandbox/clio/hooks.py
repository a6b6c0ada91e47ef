"""Test hooks under /sandbox/: not part of Clio, unauthenticated, for tests and demos to
change the world and see what clients asked for.

Each region has them under its prefix (`/eu/sandbox/bills` changes the EU firm). Changes to
bills, contacts and matters fire the region's webhooks as Clio's own changes would.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from sandbox.clio import render
from sandbox.clio.bulk import BulkSpec, add_bulk
from sandbox.clio.firms import firm_for
from sandbox.clio.jsonenc import ClioJSONResponse
from sandbox.clio.mutations import (
    HookError,
    NewBill,
    NewContact,
    NewPayment,
    create_bill,
    create_contact,
    insert_raw_bill,
    patch_bill,
    patch_contact,
    patch_matter,
    patch_raw_bill,
    record_payment,
)
from sandbox.clio.regions import region_of
from sandbox.clio.seed import build_world, firm_today
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
    """Reseed every region and forget requests and webhooks."""
    state.reset()
    world = state.world
    return ClioJSONResponse(
        {"contacts": len(world.contacts), "bills": len(world.bills), "matters": len(world.matters)}
    )


@router.post("/tokens")
async def mint_token(request: Request, state: StateDep) -> Response:
    """An access token for the registered app without the browser consent step."""
    pair = state.oauth.mint(state.settings.client_id, region_of(request))
    return ClioJSONResponse(pair.as_json())


@router.post("/bulk", status_code=201)
async def bulk(spec: BulkSpec, request: Request, state: StateDep) -> Response:
    """Replace the region's firm with its seed plus a big, deterministic set of bills."""
    region = region_of(request)
    today = firm_today(state.clock())
    world = build_world(today, firm_for(region))
    counts = add_bulk(world, spec, today)
    state.worlds[region] = world
    return ClioJSONResponse(counts, status_code=201)


@router.post("/bills", status_code=201)
async def new_bill(spec: NewBill, request: Request, state: StateDep) -> Response:
    world = state.world_of(request)
    try:
        bill = create_bill(world, spec, state.clock())
    except HookError as error:
        return _hook_error(error)
    state.webhooks.changed(region_of(request), "bill", "created", bill.id)
    return ClioJSONResponse({"data": render.bill_full(world, bill)}, status_code=201)


@router.post("/bills/raw", status_code=201)
async def new_raw_bill(
    payload: Annotated[Any, Body()], request: Request, state: StateDep
) -> Response:
    raw = insert_raw_bill(state.world_of(request), payload)
    return ClioJSONResponse({"key": raw.key, "data": raw.payload}, status_code=201)


@router.patch("/bills/{bill_id}")
async def change_bill(
    bill_id: int, changes: JsonObject, request: Request, state: StateDep
) -> Response:
    """Change any stored field; `state: paid` records full payment, `void` zeroes the balance,
    `deleted` fires the `deleted` event."""
    world = state.world_of(request)
    region = region_of(request)
    try:
        if bill_id in world.bills:
            before = state.webhooks.before(region, "bill", bill_id)
            bill = patch_bill(world, bill_id, changes, state.clock())
            event = "deleted" if changes.get("state") == "deleted" else "updated"
            state.webhooks.changed(region, "bill", event, bill_id, before)
            return ClioJSONResponse({"data": render.bill_full(world, bill)})
        raw = patch_raw_bill(world, bill_id, changes, state.clock())
    except (HookError, ValidationError) as error:
        return _hook_error(error)
    return ClioJSONResponse({"key": raw.key, "data": raw.payload})


@router.post("/bills/{bill_id}/payments", status_code=201)
async def new_payment(
    bill_id: int, payment: NewPayment, request: Request, state: StateDep
) -> Response:
    """A firm user's Record Payment in Clio."""
    world = state.world_of(request)
    region = region_of(request)
    before = state.webhooks.before(region, "bill", bill_id)
    try:
        bill = record_payment(world, bill_id, payment, state.clock())
    except HookError as error:
        return _hook_error(error)
    state.webhooks.changed(region, "bill", "updated", bill_id, before)
    return ClioJSONResponse({"data": render.bill_full(world, bill)}, status_code=201)


@router.post("/contacts", status_code=201)
async def new_contact(spec: NewContact, request: Request, state: StateDep) -> Response:
    contact = create_contact(state.world_of(request), spec, state.clock())
    state.webhooks.changed(region_of(request), "contact", "created", contact.id)
    return ClioJSONResponse({"data": render.contact_full(contact)}, status_code=201)


@router.patch("/contacts/{contact_id}")
async def change_contact(
    contact_id: int, changes: JsonObject, request: Request, state: StateDep
) -> Response:
    region = region_of(request)
    before = state.webhooks.before(region, "contact", contact_id)
    try:
        contact = patch_contact(state.world_of(request), contact_id, changes, state.clock())
    except (HookError, ValidationError) as error:
        return _hook_error(error)
    state.webhooks.changed(region, "contact", "updated", contact_id, before)
    return ClioJSONResponse({"data": render.contact_full(contact)})


@router.patch("/matters/{matter_id}")
async def change_matter(
    matter_id: int, changes: JsonObject, request: Request, state: StateDep
) -> Response:
    world = state.world_of(request)
    region = region_of(request)
    before = state.webhooks.before(region, "matter", matter_id)
    try:
        matter = patch_matter(world, matter_id, changes, state.clock())
    except (HookError, ValidationError) as error:
        return _hook_error(error)
    state.webhooks.changed(region, "matter", "updated", matter_id, before)
    return ClioJSONResponse({"data": render.matter_full(world, matter)})


@router.get("/webhooks")
async def all_webhooks(state: StateDep) -> Response:
    """Every region's webhooks with their secrets and status."""
    hooks = [
        {
            "id": hook.id,
            "region": hook.region,
            "url": hook.url,
            "model": hook.model,
            "fields": hook.fields,
            "events": hook.events,
            "status": hook.status,
            "shared_secret": hook.shared_secret,
            "expires_at": hook.expires_at.isoformat(),
        }
        for hook in state.webhooks.webhooks.values()
    ]
    return ClioJSONResponse({"data": hooks})


@router.get("/webhooks/deliveries")
async def webhook_deliveries(state: StateDep) -> Response:
    """Handshakes and deliveries, oldest first: webhook, url, event, status code, attempts."""
    return ClioJSONResponse({"data": [d.as_json() for d in state.webhooks.deliveries]})


@router.delete("/webhooks/deliveries", status_code=204)
async def forget_deliveries(state: StateDep) -> Response:
    state.webhooks.deliveries.clear()
    return Response(status_code=204)


class ClockMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advance_seconds: float = Field(ge=0)


@router.get("/clock")
async def read_clock(state: StateDep) -> Response:
    return ClioJSONResponse(_clock_json(state))


@router.post("/clock")
async def move_clock(move: ClockMove, state: StateDep) -> Response:
    """Move the sandbox's clock forward (token and webhook expiry, rate windows)."""
    state.clock_offset += timedelta(seconds=move.advance_seconds)
    return ClioJSONResponse(_clock_json(state))


def _clock_json(state: SandboxState) -> dict[str, Any]:
    return {
        "now": state.clock().isoformat(),
        "offset_seconds": state.clock_offset.total_seconds(),
    }


@router.get("/requests")
async def logged_requests(state: StateDep) -> Response:
    return ClioJSONResponse({"data": [entry.as_json() for entry in state.requests]})


@router.delete("/requests", status_code=204)
async def forget_requests(state: StateDep) -> Response:
    state.requests.clear()
    return Response(status_code=204)
