"""What every listing shares: query parameters, `fields=`, cursor and offset paging,
`meta.paging.next` URLs (which keep the region prefix), etags on show."""

from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from starlette.responses import Response

from sandbox.clio.errors import bad_request, not_found
from sandbox.clio.fields import Catalog, FieldsError, Selection, parse_fields, project
from sandbox.clio.jsonenc import ClioJSONResponse
from sandbox.clio.state import SandboxState

API_PREFIX = "/api/v4"
MAX_LIMIT = 200

Row = dict[str, Any] | Any
"""A rendered record; raw test bills may be any JSON value."""
Predicate = Callable[[dict[str, Any]], bool]


def get_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


StateDep = Annotated[SandboxState, Depends(get_state)]
# Clio answers with and without the `.json` suffix. Decorators register bottom-up, and the
# --- query parameters -------------------------------------------------------------------


def int_param(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


def datetime_param(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{name} must be an ISO 8601 timestamp") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def date_param(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{name} must be an ISO 8601 date") from None


def bool_param(value: str, name: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise bad_request(f"{name} must be true or false")


def choice_param(value: str, name: str, choices: Iterable[str]) -> str:
    if value not in choices:
        raise bad_request(f"{name} must be one of {', '.join(choices)}")
    return value


def ids_param(request: Request, name: str) -> set[int] | None:
    values = request.query_params.getlist(name)
    return {int_param(value, name) for value in values} if values else None


def selection_of(request: Request, catalog: Catalog) -> Selection:
    try:
        return parse_fields(request.query_params.get("fields"), catalog)
    except FieldsError as error:
        raise bad_request(str(error)) from None


@dataclass(frozen=True, slots=True)
class Paging:
    limit: int
    field: str
    descending: bool
    token: dict[str, Any] | None

    @property
    def order(self) -> str:
        return f"{self.field}({'desc' if self.descending else 'asc'})"


def paging_of(request: Request, orders: tuple[str, ...]) -> Paging:
    params = request.query_params
    limit = int_param(params.get("limit", str(MAX_LIMIT)), "limit")
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit must be between 1 and {MAX_LIMIT}")
    order = params.get("order", "id(asc)")
    field, _, direction = order.partition("(")
    if field not in orders or direction not in ("asc)", "desc)"):
        raise bad_request(f"order must be one of {', '.join(f'{o}(asc|desc)' for o in orders)}")
    token = None
    if "page_token" in params:
        token = _decode_token(params["page_token"])
        if token.get("order") != order:
            raise bad_request("page_token was issued for another order")
    return Paging(limit, field, direction == "desc)", token)


def _encode_token(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise bad_request("Invalid page_token") from None
    if not isinstance(payload, dict):
        raise bad_request("Invalid page_token")
    return payload


# --- listing ------------------------------------------------------------------------------


def _sortable(value: Any) -> tuple[Any, ...]:
    # Raw bills may hold anything; ranking by kind keeps sorting total instead of crashing.
    if value is None:
        return (2,)
    if isinstance(value, bool):
        return (1, 2, str(value))
    if isinstance(value, int | float | Decimal):
        return (0, 0, Decimal(str(value)), "")
    if isinstance(value, str):
        return (0, 1, Decimal(0), value)
    return (1, 3, json.dumps(value, sort_keys=True, default=str))


@dataclass(frozen=True, slots=True)
class Keyed:
    key: int
    row: Row
    raw: bool = False


def offset_page(
    request: Request,
    state: SandboxState,
    rows: list[Keyed],
    paging: Paging,
    sort_value: Callable[[Row], Any],
    selection: Selection,
    catalog: Catalog,
) -> Response:
    if paging.field == "id":
        # Cursor paging, Clio's default: stable while records change between pages.
        ordered = sorted(rows, key=lambda keyed: keyed.key, reverse=paging.descending)
        if paging.token is not None:
            after = paging.token.get("after")
            if not isinstance(after, int):
                raise bad_request("Invalid page_token")
            ordered = [
                keyed
                for keyed in ordered
                if (keyed.key < after if paging.descending else keyed.key > after)
            ]
        chunk = ordered[: paging.limit]
        more = len(ordered) > paging.limit
        next_token = {"order": paging.order, "after": chunk[-1].key} if more else None
    else:
        ordered = sorted(
            rows,
            key=lambda keyed: (_sortable(sort_value(keyed.row)), keyed.key),
            reverse=paging.descending,
        )
        offset = 0
        if paging.token is not None:
            offset = paging.token.get("offset", -1)
            if not isinstance(offset, int) or offset < 0:
                raise bad_request("Invalid page_token")
        chunk = ordered[offset : offset + paging.limit]
        more = offset + paging.limit < len(ordered)
        next_token = {"order": paging.order, "offset": offset + paging.limit} if more else None

    meta: dict[str, Any] = {"paging": {}, "records": len(rows)}
    if next_token is not None:
        meta["paging"]["next"] = _next_url(request, state, _encode_token(next_token))
    return ClioJSONResponse(
        {"data": [project(keyed.row, selection, catalog) for keyed in chunk], "meta": meta}
    )


def cursor_page(
    request: Request,
    state: SandboxState,
    keys: list[int],
    paging: Paging,
    row_of: Callable[[int], Row],
    selection: Selection,
    catalog: Catalog,
) -> Response:
    """Cursor paging over the matching keys: a bisect to the cursor, then only the page's
    records are rendered."""
    keys.sort()
    after = None
    if paging.token is not None:
        after = paging.token.get("after")
        if not isinstance(after, int) or isinstance(after, bool):
            raise bad_request("Invalid page_token")
    if paging.descending:
        end = len(keys) if after is None else bisect_left(keys, after)
        chunk = keys[max(end - paging.limit, 0) : end][::-1]
        more = end > paging.limit
    else:
        start = 0 if after is None else bisect_right(keys, after)
        chunk = keys[start : start + paging.limit]
        more = start + paging.limit < len(keys)
    meta: dict[str, Any] = {"paging": {}, "records": len(keys)}
    if more and chunk:
        token = _encode_token({"order": paging.order, "after": chunk[-1]})
        meta["paging"]["next"] = _next_url(request, state, token)
    data = [project(row_of(key), selection, catalog) for key in chunk]
    return ClioJSONResponse({"data": data, "meta": meta})


def passing(records: dict[int, Any], tests: list[Callable[[Any], bool]]) -> list[int]:
    """The keys of the records every test passes: one pass, and none without tests."""
    if not tests:
        return list(records)
    if len(tests) == 1:
        test = tests[0]
        return [key for key, record in records.items() if test(record)]
    return [key for key, record in records.items() if all(test(record) for test in tests)]


def _next_url(request: Request, state: SandboxState, token: str) -> str:
    base = state.settings.public_url or f"{request.url.scheme}://{request.url.netloc}"
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k != "page_token"]
    pairs.append(("page_token", token))
    return f"{base.rstrip('/')}{request.url.path}?{urlencode(pairs)}"


def matches(row: Row, predicates: list[Predicate], *, lenient: bool = False) -> bool:
    """Whether the row passes every filter; `lenient` lets a value that cannot be read pass."""
    if not isinstance(row, dict):
        return lenient
    for predicate in predicates:
        try:
            if not predicate(row):
                return False
        except (KeyError, TypeError, ValueError, AttributeError):
            if not lenient:
                return False
    return True


def show(row: Row, selection: Selection, catalog: Catalog, request: Request) -> Response:
    tag = row.get("etag") if isinstance(row, dict) else None
    if isinstance(tag, str) and tag in _if_none_match(request):
        return Response(status_code=304, headers={"ETag": tag})
    headers = {"ETag": tag} if isinstance(tag, str) else None
    return ClioJSONResponse({"data": project(row, selection, catalog)}, headers=headers)


def _if_none_match(request: Request) -> set[str]:
    header = request.headers.get("if-none-match", "")
    return {part.strip() for part in header.split(",") if part.strip()}


def stamp(row: dict[str, Any], name: str) -> datetime:
    return datetime_param(str(row[name]), name)


def record_id(value: str, resource: str) -> int:
    # Clio routes only numeric ids, so anything else is simply not found.
    if not value.isdigit():
        raise not_found(resource, value)
    return int(value)
