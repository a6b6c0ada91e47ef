"""The Clio Manage API v4 read endpoints the sync service uses.

Listing works on rendered records (dicts), so raw test bills, which may be malformed,
go through the same filters, ordering and paging as real ones: a raw bill is left out
only when one of its own values contradicts a filter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from sandbox.clio import render
from sandbox.clio.errors import ClioError, not_found
from sandbox.clio.listing import (
    API_PREFIX,
    Keyed,
    Predicate,
    Row,
    StateDep,
    bool_param,
    choice_param,
    cursor_page,
    date_param,
    datetime_param,
    ids_param,
    int_param,
    matches,
    offset_page,
    paging_of,
    passing,
    record_id,
    selection_of,
    show,
    stamp,
)
from sandbox.clio.mutations import HookError, delete_bill
from sandbox.clio.records import Bill, Contact, LineItem, World
from sandbox.clio.regions import region_of
from sandbox.clio.seed import firm_today
from sandbox.clio.state import SandboxState

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

# Clio answers with and without the `.json` suffix. Decorators register bottom-up, and the
# suffixed route must come first or `{id}` would swallow "123.json".
router = APIRouter(prefix=API_PREFIX)


# --- bills --------------------------------------------------------------------------------


def _bill_rows(world: World) -> list[Keyed]:
    rows = [Keyed(bill.id, render.bill_full(world, bill)) for bill in world.bills.values()]
    rows.extend(Keyed(raw.key, raw.payload, raw=True) for raw in world.raw_bills.values())
    return rows


def _bill_predicates(request: Request, state: SandboxState) -> list[Predicate]:
    params = request.query_params
    predicates: list[Predicate] = []
    if "client_id" in params:
        client_id = int_param(params["client_id"], "client_id")
        predicates.append(lambda row: row["client"]["id"] == client_id)
    if "matter_id" in params:
        matter_id = int_param(params["matter_id"], "matter_id")
        predicates.append(lambda row: any(m["id"] == matter_id for m in row["matters"]))
    if "state" in params:
        wanted_state = choice_param(params["state"], "state", BILL_STATES)
        predicates.append(lambda row: row["state"] == wanted_state)
    if "type" in params:
        trust = choice_param(params["type"], "type", ("revenue", "trust")) == "trust"
        predicates.append(lambda row: (row["kind"] == "trust_kind") == trust)
    if (ids := ids_param(request, "ids[]")) is not None:
        predicates.append(lambda row: row["id"] in ids)
    if "query" in params:
        needle = params["query"].strip().lower()
        predicates.append(lambda row: needle in str(row["number"]).lower())
    for name, field in (("updated_since", "updated_at"), ("created_since", "created_at")):
        if name in params:
            since = datetime_param(params[name], name)
            predicates.append(lambda row, f=field, s=since: stamp(row, f) >= s)
    for name, field, after in (
        ("issued_after", "issued_at", True),
        ("issued_before", "issued_at", False),
        ("due_after", "due_at", True),
        ("due_before", "due_at", False),
    ):
        if name in params:
            bound = date_param(params[name], name)
            predicates.append(
                lambda row, f=field, b=bound, a=after: (
                    date.fromisoformat(row[f]) >= b if a else date.fromisoformat(row[f]) <= b
                )
            )
    overdue = False
    if "status" in params:
        overdue = choice_param(params["status"], "status", ("all", "overdue")) == "overdue"
    if "overdue_only" in params:
        overdue = overdue or bool_param(params["overdue_only"], "overdue_only")
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
        client_id = int_param(params["client_id"], "client_id")
        tests.append(lambda bill: bill.client_id == client_id)
    if "matter_id" in params:
        matter_id = int_param(params["matter_id"], "matter_id")
        tests.append(lambda bill: matter_id in bill.matter_ids)
    if "state" in params:
        wanted_state = choice_param(params["state"], "state", BILL_STATES)
        tests.append(lambda bill: bill.state == wanted_state)
    if "type" in params:
        trust = choice_param(params["type"], "type", ("revenue", "trust")) == "trust"
        tests.append(lambda bill: (bill.kind == "trust_kind") == trust)
    if (ids := ids_param(request, "ids[]")) is not None:
        tests.append(lambda bill: bill.id in ids)
    if "query" in params:
        needle = params["query"].strip().lower()
        tests.append(lambda bill: needle in bill.number.lower())
    for name, field in (("updated_since", "updated_at"), ("created_since", "created_at")):
        if name in params:
            since = datetime_param(params[name], name)
            tests.append(lambda bill, f=field, s=since: getattr(bill, f) >= s)
    for name, field, after in (
        ("issued_after", "issued_at", True),
        ("issued_before", "issued_at", False),
        ("due_after", "due_at", True),
        ("due_before", "due_at", False),
    ):
        if name in params:
            bound = date_param(params[name], name)
            tests.append(
                lambda bill, f=field, b=bound, a=after: (
                    getattr(bill, f) >= b if a else getattr(bill, f) <= b
                )
            )
    overdue = False
    if "status" in params:
        overdue = choice_param(params["status"], "status", ("all", "overdue")) == "overdue"
    if "overdue_only" in params:
        overdue = overdue or bool_param(params["overdue_only"], "overdue_only")
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
    selection = selection_of(request, render.BILL_CATALOG)
    paging = paging_of(request, BILL_ORDERS)
    predicates = _bill_predicates(request, state)
    world = state.world_of(request)
    if paging.field == "id":
        tests = _bill_record_tests(request, state)
        keys = passing(world.bills, tests) + [
            key
            for key, raw in world.raw_bills.items()
            if matches(raw.payload, predicates, lenient=True)
        ]

        def bill_row(key: int) -> Row:
            bill = world.bills.get(key)
            if bill is None:
                return world.raw_bills[key].payload
            return render.bill_row(world, bill, selection.keys())

        return cursor_page(request, state, keys, paging, bill_row, selection, render.BILL_CATALOG)
    rows = [
        keyed for keyed in _bill_rows(world) if matches(keyed.row, predicates, lenient=keyed.raw)
    ]
    return offset_page(
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
    selection = selection_of(request, render.BILL_CATALOG)
    key = record_id(bill_id, "Bill")
    world = state.world_of(request)
    bill = world.bills.get(key)
    if bill is not None:
        return show(render.bill_full(world, bill), selection, render.BILL_CATALOG, request)
    raw = world.raw_bills.get(key)
    if raw is None:
        raise not_found("Bill", bill_id)
    return show(raw.payload, selection, render.BILL_CATALOG, request)


@router.delete("/bills/{bill_id}")
@router.delete("/bills/{bill_id}.json")
async def destroy_bill(bill_id: str, request: Request, state: StateDep) -> Response:
    """Clio's delete: a draft or pending-approval bill becomes deleted, an unpaid one without
    payments void; a bill with payments (or already void or deleted) is refused."""
    world = state.world_of(request)
    key = record_id(bill_id, "Bill")
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


# --- contacts -----------------------------------------------------------------------------


def _contact_predicates(request: Request) -> list[Predicate]:
    params = request.query_params
    predicates: list[Predicate] = []
    if (ids := ids_param(request, "ids[]")) is not None:
        predicates.append(lambda row: row["id"] in ids)
    if (excluded := ids_param(request, "exclude_ids[]")) is not None:
        predicates.append(lambda row: row["id"] not in excluded)
    if "type" in params:
        kind = choice_param(params["type"], "type", ("Company", "Person"))
        predicates.append(lambda row: row["type"] == kind)
    if "client_only" in params and bool_param(params["client_only"], "client_only"):
        predicates.append(lambda row: row["is_client"])
    if "email_only" in params and bool_param(params["email_only"], "email_only"):
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
            since = datetime_param(params[name], name)
            predicates.append(lambda row, f=field, s=since: stamp(row, f) >= s)
    return predicates


ContactTest = Callable[[Contact], bool]


def _contact_record_tests(request: Request) -> list[ContactTest]:
    """The same filters as `_contact_predicates`, on stored contacts."""
    params = request.query_params
    tests: list[ContactTest] = []
    if (ids := ids_param(request, "ids[]")) is not None:
        tests.append(lambda contact: contact.id in ids)
    if (excluded := ids_param(request, "exclude_ids[]")) is not None:
        tests.append(lambda contact: contact.id not in excluded)
    if "type" in params:
        kind = choice_param(params["type"], "type", ("Company", "Person"))
        tests.append(lambda contact: contact.type == kind)
    if "client_only" in params and bool_param(params["client_only"], "client_only"):
        tests.append(lambda contact: contact.is_client)
    if "email_only" in params and bool_param(params["email_only"], "email_only"):
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
            since = datetime_param(params[name], name)
            tests.append(lambda contact, f=field, s=since: getattr(contact, f) >= s)
    return tests


@router.get("/contacts")
@router.get("/contacts.json")
async def list_contacts(request: Request, state: StateDep) -> Response:
    selection = selection_of(request, render.CONTACT_CATALOG)
    paging = paging_of(request, CONTACT_ORDERS)
    contacts = state.world_of(request).contacts
    if paging.field == "id":
        tests = _contact_record_tests(request)
        keys = passing(contacts, tests)
        return cursor_page(
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
        if matches(row := render.contact_full(contact), predicates)
    ]
    return offset_page(
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
    selection = selection_of(request, render.CONTACT_CATALOG)
    contact = state.world_of(request).contacts.get(record_id(contact_id, "Contact"))
    if contact is None:
        raise not_found("Contact", contact_id)
    return show(render.contact_full(contact), selection, render.CONTACT_CATALOG, request)


# --- users, line items, outstanding balances ----------------------------------------------


@router.get("/users/who_am_i")
@router.get("/users/who_am_i.json")
async def who_am_i(request: Request, state: StateDep) -> Response:
    selection = selection_of(request, render.USER_CATALOG)
    return show(render.user_full(state.world_of(request)), selection, render.USER_CATALOG, request)


@router.get("/line_items")
@router.get("/line_items.json")
async def list_line_items(request: Request, state: StateDep) -> Response:
    selection = selection_of(request, render.LINE_ITEM_CATALOG)
    paging = paging_of(request, ("id",))
    params = request.query_params
    world = state.world_of(request)
    tests: list[Callable[[LineItem], bool]] = []
    candidates: Iterable[LineItem] = world.line_items.values()
    if "bill_id" in params:
        # The index narrows a per-bill listing to that bill's lines without a scan.
        candidates = world.items_of(int_param(params["bill_id"], "bill_id"))
    if "matter_id" in params:
        matter_id = int_param(params["matter_id"], "matter_id")
        tests.append(lambda item: item.matter_id == matter_id)
    if "kind" in params:
        kind = choice_param(params["kind"], "kind", ("Service", "Expense"))
        tests.append(lambda item: item.kind == kind)
    if (ids := ids_param(request, "ids[]")) is not None:
        tests.append(lambda item: item.id in ids)
    for name, field in (("updated_since", "updated_at"), ("created_since", "created_at")):
        if name in params:
            since = datetime_param(params[name], name)
            tests.append(lambda item, f=field, s=since: getattr(item, f) >= s)
    if "bill_id" in params:
        keys = [item.id for item in candidates if all(test(item) for test in tests)]
    else:
        keys = passing(world.line_items, tests)
    bills: dict[int, dict[str, Any] | None] = {}
    return cursor_page(
        request,
        state,
        keys,
        paging,
        lambda key: render.line_item_row(world, world.line_items[key], selection.keys(), bills),
        selection,
        render.LINE_ITEM_CATALOG,
    )


@router.get("/outstanding_client_balances")
@router.get("/outstanding_client_balances.json")
async def list_outstanding_client_balances(request: Request, state: StateDep) -> Response:
    selection = selection_of(request, render.OUTSTANDING_BALANCE_CATALOG)
    paging = paging_of(request, ("id",))
    predicates: list[Predicate] = []
    if "contact_id" in request.query_params:
        contact_id = int_param(request.query_params["contact_id"], "contact_id")
        predicates.append(lambda row: row["contact"]["id"] == contact_id)
    rows = [
        Keyed(row["id"], row)
        for row in render.outstanding_balances(state.world_of(request))
        if matches(row, predicates)
    ]
    return offset_page(
        request,
        state,
        rows,
        paging,
        lambda row: row["id"],
        selection,
        render.OUTSTANDING_BALANCE_CATALOG,
    )
