"""The Clio Manage API v4 read endpoints the sync service uses.

Listing works on rendered records (dicts), so raw test bills, which may be malformed,
go through the same filters, ordering and paging as real ones: a raw bill is left out
only when one of its own values contradicts a filter.
"""

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

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from sandbox.clio import render
from sandbox.clio.errors import ClioError, bad_request, not_found
from sandbox.clio.fields import Catalog, FieldsError, Selection, parse_fields, project
from sandbox.clio.jsonenc import ClioJSONResponse
from sandbox.clio.mutations import HookError, delete_bill
from sandbox.clio.records import Bill, Contact, LineItem, World
from sandbox.clio.regions import region_of
from sandbox.clio.seed import firm_today
from sandbox.clio.state import SandboxState

API_PREFIX = "/api/v4"
MAX_LIMIT = 200

BILL_STATES = ("draft", "awaiting_approval", "awaiting_payment", "paid", "void", "deleted")
BILL_ORDERS = (
    "id",
    "due_at",
    "issued_at",
    "paid_at",
    "last_sent_at",
    "client_name",
    "matter_display_number",
    "balance",
    "number",
)
CONTACT_ORDERS = ("id", "name")

Row = dict[str, Any] | Any
"""A rendered record; raw test bills may be any JSON value."""
Predicate = Callable[[dict[str, Any]], bool]


def get_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


StateDep = Annotated[SandboxState, Depends(get_state)]
# Clio answers with and without the `.json` suffix. Decorators register bottom-up, and the
# suffixed route must come first or `{id}` would swallow "123.json".
router = APIRouter(prefix=API_PREFIX)


# --- query parameters -------------------------------------------------------------------


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


def _datetime(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{name} must be an ISO 8601 timestamp") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{name} must be an ISO 8601 date") from None


def _bool(value: str, name: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise bad_request(f"{name} must be true or false")


def _choice(value: str, name: str, choices: Iterable[str]) -> str:
    if value not in choices:
        raise bad_request(f"{name} must be one of {', '.join(choices)}")
    return value


def _ids(request: Request, name: str) -> set[int] | None:
    values = request.query_params.getlist(name)
    return {_int(value, name) for value in values} if values else None


def _selection(request: Request, catalog: Catalog) -> Selection:
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


def _paging(request: Request, orders: tuple[str, ...]) -> Paging:
    params = request.query_params
    limit = _int(params.get("limit", str(MAX_LIMIT)), "limit")
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


def _page(
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


def _cursor_page(
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


def _passing(records: dict[int, Any], tests: list[Callable[[Any], bool]]) -> list[int]:
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


def _matches(row: Row, predicates: list[Predicate], *, lenient: bool = False) -> bool:
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


def _show(row: Row, selection: Selection, catalog: Catalog, request: Request) -> Response:
    tag = row.get("etag") if isinstance(row, dict) else None
    if isinstance(tag, str) and tag in _if_none_match(request):
        return Response(status_code=304, headers={"ETag": tag})
    headers = {"ETag": tag} if isinstance(tag, str) else None
    return ClioJSONResponse({"data": project(row, selection, catalog)}, headers=headers)


def _if_none_match(request: Request) -> set[str]:
    header = request.headers.get("if-none-match", "")
    return {part.strip() for part in header.split(",") if part.strip()}


def _stamp(row: dict[str, Any], name: str) -> datetime:
    return _datetime(str(row[name]), name)


# --- bills --------------------------------------------------------------------------------


def _bill_rows(world: World) -> list[Keyed]:
    rows = [Keyed(bill.id, render.bill_full(world, bill)) for bill in world.bills.values()]
    rows.extend(Keyed(raw.key, raw.payload, raw=True) for raw in world.raw_bills.values())
    return rows


def _bill_predicates(request: Request, state: SandboxState) -> list[Predicate]:
    params = request.query_params
    predicates: list[Predicate] = []
    if "client_id" in params:
        client_id = _int(params["client_id"], "client_id")
        predicates.append(lambda row: row["client"]["id"] == client_id)
    if "matter_id" in params:
        matter_id = _int(params["matter_id"], "matter_id")
        predicates.append(lambda row: any(m["id"] == matter_id for m in row["matters"]))
    if "state" in params:
        wanted_state = _choice(params["state"], "state", BILL_STATES)
        predicates.append(lambda row: row["state"] == wanted_state)
    if "type" in params:
        trust = _choice(params["type"], "type", ("revenue", "trust")) == "trust"
        predicates.append(lambda row: (row["kind"] == "trust_kind") == trust)
    if (ids := _ids(request, "ids[]")) is not None:
        predicates.append(lambda row: row["id"] in ids)
    if "query" in params:
        needle = params["query"].strip().lower()
        predicates.append(lambda row: needle in str(row["number"]).lower())
    for name, field in (("updated_since", "updated_at"), ("created_since", "created_at")):
        if name in params:
            since = _datetime(params[name], name)
            predicates.append(lambda row, f=field, s=since: _stamp(row, f) >= s)
    for name, field, after in (
        ("issued_after", "issued_at", True),
        ("issued_before", "issued_at", False),
        ("due_after", "due_at", True),
        ("due_before", "due_at", False),
    ):
        if name in params:
            bound = _date(params[name], name)
            predicates.append(
                lambda row, f=field, b=bound, a=after: (
                    date.fromisoformat(row[f]) >= b if a else date.fromisoformat(row[f]) <= b
                )
            )
    overdue = False
    if "status" in params:
        overdue = _choice(params["status"], "status", ("all", "overdue")) == "overdue"
    if "overdue_only" in params:
        overdue = overdue or _bool(params["overdue_only"], "overdue_only")
    if overdue:
        today = firm_today(state.clock())
        predicates.append(
            lambda row: (
                row["state"] == "awaiting_payment" and date.fromisoformat(row["due_at"]) < today
            )
        )
    return predicates


BillTest = Callable[[Bill], bool]


def _bill_record_tests(request: Request, state: SandboxState) -> list[BillTest]:
    """The same filters as `_bill_predicates`, on stored bills: no rendering per candidate."""
    params = request.query_params
    tests: list[BillTest] = []
    if "client_id" in params:
        client_id = _int(params["client_id"], "client_id")
        tests.append(lambda bill: bill.client_id == client_id)
    if "matter_id" in params:
        matter_id = _int(params["matter_id"], "matter_id")
        tests.append(lambda bill: matter_id in bill.matter_ids)
    if "state" in params:
        wanted_state = _choice(params["state"], "state", BILL_STATES)
        tests.append(lambda bill: bill.state == wanted_state)
    if "type" in params:
        trust = _choice(params["type"], "type", ("revenue", "trust")) == "trust"
        tests.append(lambda bill: (bill.kind == "trust_kind") == trust)
    if (ids := _ids(request, "ids[]")) is not None:
        tests.append(lambda bill: bill.id in ids)
    if "query" in params:
        needle = params["query"].strip().lower()
        tests.append(lambda bill: needle in bill.number.lower())
    for name, field in (("updated_since", "updated_at"), ("created_since", "created_at")):
        if name in params:
            since = _datetime(params[name], name)
            tests.append(lambda bill, f=field, s=since: getattr(bill, f) >= s)
    for name, field, after in (
        ("issued_after", "issued_at", True),
        ("issued_before", "issued_at", False),
        ("due_after", "due_at", True),
        ("due_before", "due_at", False),
    ):
        if name in params:
            bound = _date(params[name], name)
            tests.append(
                lambda bill, f=field, b=bound, a=after: (
                    getattr(bill, f) >= b if a else getattr(bill, f) <= b
                )
            )
    overdue = False
    if "status" in params:
        overdue = _choice(params["status"], "status", ("all", "overdue")) == "overdue"
    if "overdue_only" in params:
        overdue = overdue or _bool(params["overdue_only"], "overdue_only")
    if overdue:
        today = firm_today(state.clock())
        tests.append(lambda bill: bill.state == "awaiting_payment" and bill.due_at < today)
    return tests


def _bill_sort_value(field: str) -> Callable[[Row], Any]:
    def value(row: Row) -> Any:
        if not isinstance(row, dict):
            return None
        if field == "client_name":
            client = row.get("client")
            return client.get("name") if isinstance(client, dict) else None
        if field == "matter_display_number":
            matters = row.get("matters")
            first = matters[0] if isinstance(matters, list) and matters else None
            return first.get("display_number") if isinstance(first, dict) else None
        return row.get(field)

    return value


@router.get("/bills")
@router.get("/bills.json")
async def list_bills(request: Request, state: StateDep) -> Response:
    selection = _selection(request, render.BILL_CATALOG)
    paging = _paging(request, BILL_ORDERS)
    predicates = _bill_predicates(request, state)
    world = state.world_of(request)
    if paging.field == "id":
        tests = _bill_record_tests(request, state)
        keys = _passing(world.bills, tests) + [
            key
            for key, raw in world.raw_bills.items()
            if _matches(raw.payload, predicates, lenient=True)
        ]

        def bill_row(key: int) -> Row:
            bill = world.bills.get(key)
            if bill is None:
                return world.raw_bills[key].payload
            return render.bill_row(world, bill, selection.keys())

        return _cursor_page(request, state, keys, paging, bill_row, selection, render.BILL_CATALOG)
    rows = [
        keyed for keyed in _bill_rows(world) if _matches(keyed.row, predicates, lenient=keyed.raw)
    ]
    return _page(
        request,
        state,
        rows,
        paging,
        _bill_sort_value(paging.field),
        selection,
        render.BILL_CATALOG,
    )


@router.get("/bills/{bill_id}")
@router.get("/bills/{bill_id}.json")
async def show_bill(bill_id: str, request: Request, state: StateDep) -> Response:
    selection = _selection(request, render.BILL_CATALOG)
    key = _record_id(bill_id, "Bill")
    world = state.world_of(request)
    bill = world.bills.get(key)
    if bill is not None:
        return _show(render.bill_full(world, bill), selection, render.BILL_CATALOG, request)
    raw = world.raw_bills.get(key)
    if raw is None:
        raise not_found("Bill", bill_id)
    return _show(raw.payload, selection, render.BILL_CATALOG, request)


@router.delete("/bills/{bill_id}")
@router.delete("/bills/{bill_id}.json")
async def destroy_bill(bill_id: str, request: Request, state: StateDep) -> Response:
    """Clio's delete: a draft or pending-approval bill becomes deleted, an unpaid one without
    payments void; a bill with payments (or already void or deleted) is refused."""
    world = state.world_of(request)
    key = _record_id(bill_id, "Bill")
    if key not in world.bills:
        raise not_found("Bill", bill_id)
    region = region_of(request)
    before = state.webhooks.before(region, "bill", key)
    try:
        bill = delete_bill(world, key, state.clock())
    except HookError as error:
        raise ClioError(422, "UnprocessableEntity", str(error)) from None
    event = "deleted" if bill.state == "deleted" else "updated"
    state.webhooks.changed(region, "bill", event, key, before)
    return Response(status_code=204)


def _record_id(value: str, resource: str) -> int:
    # Clio routes only numeric ids, so anything else is simply not found.
    if not value.isdigit():
        raise not_found(resource, value)
    return int(value)


# --- contacts -----------------------------------------------------------------------------


def _contact_predicates(request: Request) -> list[Predicate]:
    params = request.query_params
    predicates: list[Predicate] = []
    if (ids := _ids(request, "ids[]")) is not None:
        predicates.append(lambda row: row["id"] in ids)
    if (excluded := _ids(request, "exclude_ids[]")) is not None:
        predicates.append(lambda row: row["id"] not in excluded)
    if "type" in params:
        kind = _choice(params["type"], "type", ("Company", "Person"))
        predicates.append(lambda row: row["type"] == kind)
    if "client_only" in params and _bool(params["client_only"], "client_only"):
        predicates.append(lambda row: row["is_client"])
    if "email_only" in params and _bool(params["email_only"], "email_only"):
        predicates.append(lambda row: bool(row["email_addresses"]))
    if "query" in params:
        needle = params["query"].strip().lower()
        predicates.append(
            lambda row: (
                needle in row["name"].lower()
                or any(needle in e["address"].lower() for e in row["email_addresses"])
            )
        )
    for name, field in (("updated_since", "updated_at"), ("created_since", "created_at")):
        if name in params:
            since = _datetime(params[name], name)
            predicates.append(lambda row, f=field, s=since: _stamp(row, f) >= s)
    return predicates


ContactTest = Callable[[Contact], bool]


def _contact_record_tests(request: Request) -> list[ContactTest]:
    """The same filters as `_contact_predicates`, on stored contacts."""
    params = request.query_params
    tests: list[ContactTest] = []
    if (ids := _ids(request, "ids[]")) is not None:
        tests.append(lambda contact: contact.id in ids)
    if (excluded := _ids(request, "exclude_ids[]")) is not None:
        tests.append(lambda contact: contact.id not in excluded)
    if "type" in params:
        kind = _choice(params["type"], "type", ("Company", "Person"))
        tests.append(lambda contact: contact.type == kind)
    if "client_only" in params and _bool(params["client_only"], "client_only"):
        tests.append(lambda contact: contact.is_client)
    if "email_only" in params and _bool(params["email_only"], "email_only"):
        tests.append(
            lambda contact: bool(contact.primary_email_address or contact.secondary_email_address)
        )
    if "query" in params:
        needle = params["query"].strip().lower()
        tests.append(
            lambda contact: (
                needle in contact.display_name.lower()
                or any(
                    needle in address.lower()
                    for address in (contact.primary_email_address, contact.secondary_email_address)
                    if address
                )
            )
        )
    for name, field in (("updated_since", "updated_at"), ("created_since", "created_at")):
        if name in params:
            since = _datetime(params[name], name)
            tests.append(lambda contact, f=field, s=since: getattr(contact, f) >= s)
    return tests


@router.get("/contacts")
@router.get("/contacts.json")
async def list_contacts(request: Request, state: StateDep) -> Response:
    selection = _selection(request, render.CONTACT_CATALOG)
    paging = _paging(request, CONTACT_ORDERS)
    contacts = state.world_of(request).contacts
    if paging.field == "id":
        tests = _contact_record_tests(request)
        keys = _passing(contacts, tests)
        return _cursor_page(
            request,
            state,
            keys,
            paging,
            lambda key: render.contact_full(contacts[key]),
            selection,
            render.CONTACT_CATALOG,
        )
    predicates = _contact_predicates(request)
    rows = [
        Keyed(contact.id, row)
        for contact in contacts.values()
        if _matches(row := render.contact_full(contact), predicates)
    ]
    return _page(
        request,
        state,
        rows,
        paging,
        lambda row: row.get(paging.field),
        selection,
        render.CONTACT_CATALOG,
    )


@router.get("/contacts/{contact_id}")
@router.get("/contacts/{contact_id}.json")
async def show_contact(contact_id: str, request: Request, state: StateDep) -> Response:
    selection = _selection(request, render.CONTACT_CATALOG)
    contact = state.world_of(request).contacts.get(_record_id(contact_id, "Contact"))
    if contact is None:
        raise not_found("Contact", contact_id)
    return _show(render.contact_full(contact), selection, render.CONTACT_CATALOG, request)


# --- users, line items, outstanding balances ----------------------------------------------


@router.get("/users/who_am_i")
@router.get("/users/who_am_i.json")
async def who_am_i(request: Request, state: StateDep) -> Response:
    selection = _selection(request, render.USER_CATALOG)
    return _show(render.user_full(state.world_of(request)), selection, render.USER_CATALOG, request)


@router.get("/line_items")
@router.get("/line_items.json")
async def list_line_items(request: Request, state: StateDep) -> Response:
    selection = _selection(request, render.LINE_ITEM_CATALOG)
    paging = _paging(request, ("id",))
    params = request.query_params
    world = state.world_of(request)
    tests: list[Callable[[LineItem], bool]] = []
    candidates: Iterable[LineItem] = world.line_items.values()
    if "bill_id" in params:
        # The index narrows a per-bill listing to that bill's lines without a scan.
        candidates = world.items_of(_int(params["bill_id"], "bill_id"))
    if "matter_id" in params:
        matter_id = _int(params["matter_id"], "matter_id")
        tests.append(lambda item: item.matter_id == matter_id)
    if "kind" in params:
        kind = _choice(params["kind"], "kind", ("Service", "Expense"))
        tests.append(lambda item: item.kind == kind)
    if (ids := _ids(request, "ids[]")) is not None:
        tests.append(lambda item: item.id in ids)
    for name, field in (("updated_since", "updated_at"), ("created_since", "created_at")):
        if name in params:
            since = _datetime(params[name], name)
            tests.append(lambda item, f=field, s=since: getattr(item, f) >= s)
    if "bill_id" in params:
        keys = [item.id for item in candidates if all(test(item) for test in tests)]
    else:
        keys = _passing(world.line_items, tests)
    return _cursor_page(
        request,
        state,
        keys,
        paging,
        lambda key: render.line_item_row(world, world.line_items[key], selection.keys()),
        selection,
        render.LINE_ITEM_CATALOG,
    )


@router.get("/outstanding_client_balances")
@router.get("/outstanding_client_balances.json")
async def list_outstanding_client_balances(request: Request, state: StateDep) -> Response:
    selection = _selection(request, render.OUTSTANDING_BALANCE_CATALOG)
    paging = _paging(request, ("id",))
    predicates: list[Predicate] = []
    if "contact_id" in request.query_params:
        contact_id = _int(request.query_params["contact_id"], "contact_id")
        predicates.append(lambda row: row["contact"]["id"] == contact_id)
    rows = [
        Keyed(row["id"], row)
        for row in render.outstanding_balances(state.world_of(request))
        if _matches(row, predicates)
    ]
    return _page(
        request,
        state,
        rows,
        paging,
        lambda row: row["id"],
        selection,
        render.OUTSTANDING_BALANCE_CATALOG,
    )
