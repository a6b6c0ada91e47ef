"""Clio's webhook endpoints: create, list, show, extend or change, delete, activate.

A webhook belongs to the region whose token made it and sees only that region's records.
Clio accepts only `https` URLs; the sandbox also takes `http`, for local receivers.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.responses import Response

from sandbox.clio import render
from sandbox.clio.errors import ClioError, bad_request, not_found
from sandbox.clio.fields import FieldsError, parse_fields, project
from sandbox.clio.jsonenc import ClioJSONResponse
from sandbox.clio.listing import (
    API_PREFIX,
    StateDep,
    cursor_page,
    paging_of,
    record_id,
    selection_of,
)
from sandbox.clio.regions import region_of
from sandbox.clio.state import SandboxState
from sandbox.clio.webhooks import DEFAULT_TTL, EVENTS, MAX_TTL, MODEL_CATALOGS, Webhook

router = APIRouter(prefix=API_PREFIX)


def _invalid(message: str) -> ClioError:
    return ClioError(422, "UnprocessableEntity", message)


async def _data(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise bad_request("The request body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise bad_request("The request body must be an object with a data object")
    data: dict[str, Any] = body["data"]
    return data


def _url(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise _invalid("url must be an absolute https URL")
    return str(value)


def _watched(value: Any, model: str) -> tuple[str, Any]:
    if not isinstance(value, str) or not value.strip():
        raise _invalid("fields is required")
    try:
        return value, parse_fields(value, MODEL_CATALOGS[model])
    except FieldsError as error:
        raise _invalid(f"fields: {error}") from None


def _events(value: Any) -> list[str]:
    if value is None:
        return list(EVENTS)
    if not isinstance(value, list) or not value or any(e not in EVENTS for e in value):
        raise _invalid(f"events must be a non-empty list of {', '.join(EVENTS)}")
    return [event for event in EVENTS if event in value]


def _expires_at(value: Any, now: datetime) -> datetime:
    if value is None:
        return now + DEFAULT_TTL
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise _invalid("expires_at must be an ISO 8601 timestamp with an offset")
    if parsed <= now:
        raise _invalid("expires_at must be in the future")
    if parsed > now + MAX_TTL:
        raise _invalid("expires_at must be at most 31 days from now")
    return parsed


def webhook_row(state: SandboxState, hook: Webhook) -> dict[str, Any]:
    world = state.worlds[hook.region]
    values = {
        "id": hook.id,
        "etag": f'"webhook-{hook.id}-{hook.version}"',
        "url": hook.url,
        "fields": hook.fields,
        "shared_secret": hook.shared_secret,
        "model": hook.model,
        "status": hook.status,
        "events": list(hook.events),
        "expires_at": render.iso(hook.expires_at),
        "created_at": render.iso(hook.created_at),
        "updated_at": render.iso(hook.updated_at),
        "user": render.user_base(world.user),
    }
    return values


def _owned(state: SandboxState, request: Request, webhook_id: str) -> Webhook:
    hook = state.webhooks.webhooks.get(record_id(webhook_id, "Webhook"))
    if hook is None or hook.region != region_of(request):
        raise not_found("Webhook", webhook_id)
    return hook


def _one(request: Request, state: SandboxState, hook: Webhook, status: int = 200) -> Response:
    selection = selection_of(request, render.WEBHOOK_CATALOG)
    row = project(webhook_row(state, hook), selection, render.WEBHOOK_CATALOG)
    return ClioJSONResponse({"data": row}, status_code=status)


@router.post("/webhooks", status_code=201)
@router.post("/webhooks.json", status_code=201)
async def create_webhook(request: Request, state: StateDep) -> Response:
    selection_of(request, render.WEBHOOK_CATALOG)
    data = await _data(request)
    model = data.get("model")
    if model not in MODEL_CATALOGS:
        raise _invalid(f"model must be one of {', '.join(MODEL_CATALOGS)}")
    url = _url(data.get("url"))
    fields, watched = _watched(data.get("fields"), model)
    events = _events(data.get("events"))
    expires_at = _expires_at(data.get("expires_at"), state.clock())
    hook = state.webhooks.add(region_of(request), url, model, fields, watched, events, expires_at)
    return _one(request, state, hook, status=201)


@router.get("/webhooks")
@router.get("/webhooks.json")
async def list_webhooks(request: Request, state: StateDep) -> Response:
    selection = selection_of(request, render.WEBHOOK_CATALOG)
    paging = paging_of(request, ("id",))
    region = region_of(request)
    hooks = state.webhooks.webhooks
    keys = [key for key, hook in hooks.items() if hook.region == region]
    return cursor_page(
        request,
        state,
        keys,
        paging,
        lambda key: webhook_row(state, hooks[key]),
        selection,
        render.WEBHOOK_CATALOG,
    )


@router.get("/webhooks/{webhook_id}")
@router.get("/webhooks/{webhook_id}.json")
async def show_webhook(webhook_id: str, request: Request, state: StateDep) -> Response:
    return _one(request, state, _owned(state, request, webhook_id))


@router.patch("/webhooks/{webhook_id}")
@router.patch("/webhooks/{webhook_id}.json")
async def update_webhook(webhook_id: str, request: Request, state: StateDep) -> Response:
    """Extend `expires_at` (at most 31 days ahead), or change fields, events or url (a new
    url needs a new handshake)."""
    selection_of(request, render.WEBHOOK_CATALOG)
    hook = _owned(state, request, webhook_id)
    data = await _data(request)
    now = state.clock()
    changes: dict[str, Any] = {}
    if "expires_at" in data:
        changes["expires_at"] = _expires_at(data["expires_at"], now)
    if "fields" in data:
        changes["fields"], changes["watched"] = _watched(data["fields"], hook.model)
    if "events" in data:
        changes["events"] = _events(data["events"])
    new_url = _url(data["url"]) if "url" in data else None
    if "model" in data and data["model"] != hook.model:
        raise _invalid("model cannot be changed")
    for name, value in changes.items():
        setattr(hook, name, value)
    state.webhooks.touch(hook)
    if new_url is not None and new_url != hook.url:
        hook.url = new_url
        state.webhooks.handshake(hook)
    return _one(request, state, hook)


@router.put("/webhooks/{webhook_id}/activate")
@router.put("/webhooks/{webhook_id}/activate.json")
async def activate_webhook(webhook_id: str, request: Request, state: StateDep) -> Response:
    """Enable a webhook whose handshake was not answered (or that a 410 suspended)."""
    hook = _owned(state, request, webhook_id)
    if state.clock() >= hook.expires_at:
        raise _invalid("The webhook has expired; create a new one")
    hook.status = "enabled"
    state.webhooks.touch(hook)
    return _one(request, state, hook)


@router.delete("/webhooks/{webhook_id}")
@router.delete("/webhooks/{webhook_id}.json")
async def delete_webhook(webhook_id: str, request: Request, state: StateDep) -> Response:
    hook = _owned(state, request, webhook_id)
    del state.webhooks.webhooks[hook.id]
    return Response(status_code=204)
