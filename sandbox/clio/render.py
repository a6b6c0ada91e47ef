"""How Clio shows the stored records: field names from Clio's OpenAPI schemas, nested objects,
derived totals and etags.

Each `*_FIELDS` tuple is the set of names the sandbox offers for a schema; the render
functions index their values by those tuples, so a catalog and its rendering cannot drift.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from sandbox.clio.fields import Catalog, Nested
from sandbox.clio.records import (
    Account,
    BankAccount,
    Bill,
    Contact,
    LineItem,
    Matter,
    User,
    World,
)

ZERO = Decimal("0.00")
USD: dict[str, Any] = {
    "id": 1,
    "etag": '"usd-1"',
    "code": "USD",
    "sign": "$",
    "created_at": "2015-01-01T00:00:00-05:00",
    "updated_at": "2015-01-01T00:00:00-05:00",
}
CURRENCY_FIELDS = tuple(USD)

# Which states a bill may move to next, as Clio lists them in `available_state_transitions`.
STATE_TRANSITIONS: dict[str, list[str]] = {
    "draft": ["awaiting_approval", "awaiting_payment", "deleted"],
    "awaiting_approval": ["awaiting_payment", "deleted"],
    "awaiting_payment": ["paid", "void"],
    "paid": [],
    "void": [],
    "deleted": [],
}

BILL_BASE_FIELDS = (
    "id",
    "etag",
    "number",
    "issued_at",
    "created_at",
    "due_at",
    "tax_rate",
    "secondary_tax_rate",
    "updated_at",
    "subject",
    "purchase_order",
    "type",
    "memo",
    "start_at",
    "end_at",
    "balance",
    "state",
    "kind",
    "total",
    "paid",
    "paid_at",
    "pending",
    "due",
    "can_update",
    "credits_issued",
    "shared",
    "last_sent_at",
    "services_secondary_tax",
    "services_sub_total",
    "services_tax",
    "services_taxable_sub_total",
    "services_secondary_taxable_sub_total",
    "taxable_sub_total",
    "secondary_taxable_sub_total",
    "sub_total",
    "tax_sum",
    "secondary_tax_sum",
    "total_tax",
    "available_state_transitions",
)
CONTACT_BASE_FIELDS = (
    "id",
    "etag",
    "name",
    "first_name",
    "middle_name",
    "last_name",
    "type",
    "created_at",
    "updated_at",
    "prefix",
    "title",
    "initials",
    "primary_email_address",
    "secondary_email_address",
    "primary_phone_number",
    "secondary_phone_number",
    "ledes_client_id",
    "is_client",
    "is_co_counsel",
    "is_bill_recipient",
    "currency",
)
MATTER_BASE_FIELDS = (
    "id",
    "etag",
    "number",
    "display_number",
    "description",
    "status",
    "client_id",
    "billable",
    "billing_method",
    "open_date",
    "close_date",
    "created_at",
    "updated_at",
)
BANK_ACCOUNT_BASE_FIELDS = (
    "id",
    "etag",
    "name",
    "type",
    "institution",
    "account_number",
    "currency",
    "currency_symbol",
    "default_account",
    "created_at",
    "updated_at",
)
BALANCE_BASE_FIELDS = ("id", "amount", "type", "interest_amount", "due")
USER_BASE_FIELDS = (
    "id",
    "etag",
    "name",
    "first_name",
    "last_name",
    "initials",
    "email",
    "phone_number",
    "enabled",
    "account_owner",
    "clio_connect",
    "subscription_type",
    "time_zone",
    "roles",
    "rate",
    "created_at",
    "updated_at",
)
ACCOUNT_BASE_FIELDS = ("id", "etag", "name", "created_at", "updated_at")
EMAIL_ADDRESS_BASE_FIELDS = ("id", "etag", "address", "name", "primary", "created_at", "updated_at")
PHONE_NUMBER_BASE_FIELDS = ("id", "etag", "number", "name", "primary", "created_at", "updated_at")
ADDRESS_BASE_FIELDS = (
    "id",
    "etag",
    "street",
    "city",
    "province",
    "postal_code",
    "country",
    "name",
    "primary",
    "created_at",
    "updated_at",
)
LINE_ITEM_BASE_FIELDS = (
    "id",
    "etag",
    "type",
    "kind",
    "description",
    "note",
    "date",
    "price",
    "quantity",
    "total",
    "sub_total",
    "tax",
    "secondary_tax",
    "taxable",
    "secondary_taxable",
    "group_ordering",
    "created_at",
    "updated_at",
)
OUTSTANDING_BALANCE_BASE_FIELDS = (
    "id",
    "etag",
    "associated_matter_ids",
    "last_payment_date",
    "last_shared_date",
    "newest_issued_bill_due_date",
    "pending_payments_total",
    "reminders_enabled",
    "total_outstanding_balance",
    "total_outstanding_balance_by_currency",
    "created_at",
    "updated_at",
)


def _scalars(names: tuple[str, ...]) -> dict[str, Nested | None]:
    return dict.fromkeys(names)


BILL_CATALOG: Catalog = {
    **_scalars(BILL_BASE_FIELDS),
    "user": Nested(USER_BASE_FIELDS),
    "client": Nested(CONTACT_BASE_FIELDS),
    "matters": Nested(MATTER_BASE_FIELDS),
    "currency": Nested(CURRENCY_FIELDS),
    "destination_account": Nested(BANK_ACCOUNT_BASE_FIELDS),
    "balances": Nested(BALANCE_BASE_FIELDS, defaults=("id",)),
}
CONTACT_CATALOG: Catalog = {
    **_scalars(CONTACT_BASE_FIELDS),
    "email_addresses": Nested(EMAIL_ADDRESS_BASE_FIELDS),
    "phone_numbers": Nested(PHONE_NUMBER_BASE_FIELDS),
    "addresses": Nested(ADDRESS_BASE_FIELDS),
    "primary_address": Nested(ADDRESS_BASE_FIELDS),
}
LINE_ITEM_CATALOG: Catalog = {
    **_scalars(LINE_ITEM_BASE_FIELDS),
    "bill": Nested(BILL_BASE_FIELDS),
    "matter": Nested(MATTER_BASE_FIELDS),
    "user": Nested(USER_BASE_FIELDS),
}
USER_CATALOG: Catalog = {
    **_scalars(USER_BASE_FIELDS),
    "account": Nested(ACCOUNT_BASE_FIELDS),
}
OUTSTANDING_BALANCE_CATALOG: Catalog = {
    **_scalars(OUTSTANDING_BALANCE_BASE_FIELDS),
    "outstanding_bills": Nested(BILL_BASE_FIELDS),
    "contact": Nested(CONTACT_BASE_FIELDS),
    "currency": Nested(CURRENCY_FIELDS),
}

MATTER_CATALOG: Catalog = {
    **_scalars(MATTER_BASE_FIELDS),
    "client": Nested(CONTACT_BASE_FIELDS),
}
WEBHOOK_BASE_FIELDS = (
    "id",
    "etag",
    "url",
    "fields",
    "shared_secret",
    "model",
    "status",
    "events",
    "expires_at",
    "created_at",
    "updated_at",
)
WEBHOOK_CATALOG: Catalog = {
    **_scalars(WEBHOOK_BASE_FIELDS),
    "user": Nested(USER_BASE_FIELDS),
}

# The schema each catalog follows, for checking the sandbox against Clio's OpenAPI document.
SCHEMA_OF_CATALOG: dict[str, Catalog] = {
    "Bill": BILL_CATALOG,
    "Contact": CONTACT_CATALOG,
    "LineItem": LINE_ITEM_CATALOG,
    "User": USER_CATALOG,
    "OutstandingClientBalance": OUTSTANDING_BALANCE_CATALOG,
}


def etag(record: BaseModel) -> str:
    # A digest of the whole record, so any stored change (and every version bump) shows.
    digest = hashlib.md5(
        f"{type(record).__name__}:{record.model_dump_json()}".encode(), usedforsecurity=False
    )
    return f'"{digest.hexdigest()}"'


def _pick(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: values[name] for name in names}


def _initials(*words: str | None) -> str:
    return "".join(word[0].upper() for word in words if word)


def iso(value: date | datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def contact_base(contact: Contact) -> dict[str, Any]:
    person = contact.type == "Person"
    name = contact.display_name
    values = {
        **contact.model_dump(
            include={
                "id",
                "first_name",
                "middle_name",
                "last_name",
                "type",
                "prefix",
                "title",
                "primary_email_address",
                "secondary_email_address",
                "primary_phone_number",
                "secondary_phone_number",
                "ledes_client_id",
                "is_client",
            }
        ),
        "etag": etag(contact),
        "name": name,
        "initials": _initials(contact.first_name, contact.last_name)
        if person
        else _initials(*name.split()[:3]),
        "is_co_counsel": False,
        "is_bill_recipient": contact.is_client,
        "currency": {"id": USD["id"], "code": USD["code"], "sign": USD["sign"]},
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
    }
    return _pick(values, CONTACT_BASE_FIELDS)


def contact_full(contact: Contact) -> dict[str, Any]:
    stamps = {"created_at": iso(contact.created_at), "updated_at": iso(contact.updated_at)}
    emails = [
        {
            "id": contact.id * 10 + position,
            "etag": f'"{contact.id}-email-{position}-{contact.version}"',
            "address": address,
            "name": "Work" if position == 1 else "Other",
            "primary": position == 1,
            **stamps,
        }
        for position, address in enumerate(
            (contact.primary_email_address, contact.secondary_email_address), start=1
        )
        if address
    ]
    phones = [
        {
            "id": contact.id * 10 + position,
            "etag": f'"{contact.id}-phone-{position}-{contact.version}"',
            "number": number,
            "name": "Work",
            "primary": position == 1,
            **stamps,
        }
        for position, number in enumerate(
            (contact.primary_phone_number, contact.secondary_phone_number), start=1
        )
        if number
    ]
    addresses = []
    if contact.address is not None:
        addresses.append(
            {
                "id": contact.id * 10 + 1,
                "etag": f'"{contact.id}-address-{contact.version}"',
                **contact.address.model_dump(),
                "primary": True,
                **stamps,
            }
        )
    return {
        **contact_base(contact),
        "email_addresses": emails,
        "phone_numbers": phones,
        "addresses": [_pick(address, ADDRESS_BASE_FIELDS) for address in addresses],
        "primary_address": _pick(addresses[0], ADDRESS_BASE_FIELDS) if addresses else None,
    }


def matter_base(matter: Matter) -> dict[str, Any]:
    values = {
        **matter.model_dump(
            include={
                "id",
                "number",
                "display_number",
                "description",
                "status",
                "client_id",
                "billing_method",
            }
        ),
        "etag": etag(matter),
        "billable": True,
        "open_date": iso(matter.open_date),
        "close_date": None,
        "created_at": iso(matter.created_at),
        "updated_at": iso(matter.updated_at),
    }
    return _pick(values, MATTER_BASE_FIELDS)


def matter_full(world: World, matter: Matter) -> dict[str, Any]:
    client = world.contacts.get(matter.client_id)
    return {**matter_base(matter), "client": None if client is None else contact_base(client)}


def bank_account_base(account: BankAccount) -> dict[str, Any]:
    values = {
        **account.model_dump(
            include={"id", "name", "type", "institution", "account_number", "default_account"}
        ),
        "etag": etag(account),
        "currency": USD["code"],
        "currency_symbol": USD["sign"],
        "created_at": iso(account.created_at),
        "updated_at": iso(account.updated_at),
    }
    return _pick(values, BANK_ACCOUNT_BASE_FIELDS)


def user_base(user: User) -> dict[str, Any]:
    values = {
        **user.model_dump(
            include={
                "id",
                "first_name",
                "last_name",
                "email",
                "phone_number",
                "account_owner",
                "subscription_type",
                "time_zone",
                "roles",
            }
        ),
        "etag": etag(user),
        "name": f"{user.first_name} {user.last_name}",
        "initials": _initials(user.first_name, user.last_name),
        "enabled": True,
        "clio_connect": False,
        "rate": user.rate,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
    }
    return _pick(values, USER_BASE_FIELDS)


def account_base(account: Account) -> dict[str, Any]:
    values = {
        "id": account.id,
        "etag": etag(account),
        "name": account.name,
        "created_at": iso(account.created_at),
        "updated_at": iso(account.updated_at),
    }
    return _pick(values, ACCOUNT_BASE_FIELDS)


def user_full(world: World) -> dict[str, Any]:
    return {**user_base(world.user), "account": account_base(world.account)}


def bill_line_items(world: World, bill_id: int) -> list[LineItem]:
    return world.items_of(bill_id)


def bill_base(world: World, bill: Bill) -> dict[str, Any]:
    services = sum(
        (item.total for item in bill_line_items(world, bill.id) if item.kind == "Service"), ZERO
    )
    values = {
        **bill.model_dump(
            include={
                "id",
                "number",
                "subject",
                "purchase_order",
                "type",
                "memo",
                "balance",
                "state",
                "kind",
                "total",
                "paid",
                "pending",
                "due",
                "credits_issued",
                "shared",
                "sub_total",
            }
        ),
        "etag": etag(bill),
        "issued_at": iso(bill.issued_at),
        "due_at": iso(bill.due_at),
        "start_at": iso(bill.start_at),
        "end_at": iso(bill.end_at),
        "created_at": iso(bill.created_at),
        "updated_at": iso(bill.updated_at),
        "paid_at": iso(bill.paid_at),
        "last_sent_at": iso(bill.last_sent_at),
        # The demo firm charges no tax; Clio still reports the tax fields, as zeros.
        "tax_rate": 0.0,
        "secondary_tax_rate": 0.0,
        "services_secondary_tax": ZERO,
        "services_sub_total": services,
        "services_tax": ZERO,
        "services_taxable_sub_total": 0,
        "services_secondary_taxable_sub_total": 0,
        "taxable_sub_total": 0,
        "secondary_taxable_sub_total": 0,
        "tax_sum": ZERO,
        "secondary_tax_sum": ZERO,
        "total_tax": ZERO,
        "can_update": bill.state in ("draft", "awaiting_approval", "awaiting_payment"),
        "available_state_transitions": list(STATE_TRANSITIONS[bill.state]),
    }
    return _pick(values, BILL_BASE_FIELDS)


def bill_full(world: World, bill: Bill) -> dict[str, Any]:
    return bill_row(world, bill)


def bill_row(world: World, bill: Bill, parts: Collection[str] | None = None) -> dict[str, Any]:
    """The bill with every field, or (for a listing page) only the nested `parts` asked for."""
    row = bill_base(world, bill)
    if parts is None or "user" in parts:
        row["user"] = user_base(world.user)
    if parts is None or "client" in parts:
        client = world.contacts.get(bill.client_id)
        row["client"] = None if client is None else contact_base(client)
    matters = [world.matters[mid] for mid in bill.matter_ids if mid in world.matters]
    if parts is None or "matters" in parts:
        row["matters"] = [matter_base(matter) for matter in matters]
    if parts is None or "currency" in parts:
        row["currency"] = dict(USD)
    if parts is None or "destination_account" in parts:
        account = world.bank_accounts.get(bill.destination_account_id)
        row["destination_account"] = None if account is None else bank_account_base(account)
    if parts is None or "balances" in parts:
        if bill.type == "MatterBill" and len(matters) == 1:
            balances = [{"id": matters[0].id, "type": "Matter"}]
        else:
            balances = [{"id": bill.client_id, "type": "Client"}]
        row["balances"] = [
            {**entry, "amount": bill.balance, "interest_amount": ZERO, "due": bill.due}
            for entry in balances
        ]
    return row


def line_item_base(item: LineItem) -> dict[str, Any]:
    values = {
        **item.model_dump(
            include={
                "id",
                "type",
                "kind",
                "description",
                "note",
                "price",
                "total",
                "group_ordering",
            }
        ),
        "etag": etag(item),
        "date": iso(item.date),
        # Hours and units are not money: they keep their own precision.
        "quantity": float(item.quantity),
        "sub_total": item.total,
        "tax": ZERO,
        "secondary_tax": ZERO,
        "taxable": False,
        "secondary_taxable": False,
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
    }
    return _pick(values, LINE_ITEM_BASE_FIELDS)


def line_item_full(world: World, item: LineItem) -> dict[str, Any]:
    return line_item_row(world, item)


def line_item_row(
    world: World,
    item: LineItem,
    parts: Collection[str] | None = None,
    bills: dict[int, dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """The line item with every field, or only the nested `parts` asked for.

    `bills` memoizes the nested bill across one page, whose lines mostly share bills.
    """
    row = line_item_base(item)
    if parts is None or "bill" in parts:
        memo = {} if bills is None else bills
        if item.bill_id not in memo:
            bill = world.bills.get(item.bill_id)
            memo[item.bill_id] = None if bill is None else bill_base(world, bill)
        row["bill"] = memo[item.bill_id]
    if parts is None or "matter" in parts:
        matter = world.matters.get(item.matter_id) if item.matter_id is not None else None
        row["matter"] = None if matter is None else matter_base(matter)
    if parts is None or "user" in parts:
        row["user"] = user_base(world.user) if item.user_id == world.user.id else None
    return row


def outstanding_balances(world: World) -> list[dict[str, Any]]:
    """One entry per client owing money, as Clio's Outstanding Balances page lists them."""
    entries = []
    for contact in sorted(world.contacts.values(), key=lambda c: c.id):
        client_bills = [bill for bill in world.bills.values() if bill.client_id == contact.id]
        unpaid = sorted(
            (b for b in client_bills if b.state == "awaiting_payment" and b.balance > 0),
            key=lambda b: b.id,
        )
        if not unpaid:
            continue
        total = sum((bill.balance for bill in unpaid), ZERO)
        payments = [bill.paid_at for bill in client_bills if bill.paid_at is not None]
        newest = max(unpaid, key=lambda b: (b.issued_at, b.id))
        digest = etag(contact)[1:-1] + "".join(etag(bill)[1:9] for bill in unpaid)
        values = {
            "id": contact.id,
            "etag": '"' + hashlib.md5(digest.encode(), usedforsecurity=False).hexdigest() + '"',
            "associated_matter_ids": sorted({mid for bill in unpaid for mid in bill.matter_ids}),
            "last_payment_date": iso(max(payments).date()) if payments else None,
            "last_shared_date": None,
            "newest_issued_bill_due_date": iso(newest.due_at),
            "pending_payments_total": sum((bill.pending for bill in unpaid), ZERO),
            "reminders_enabled": contact.reminders_enabled,
            "total_outstanding_balance": total,
            "total_outstanding_balance_by_currency": {USD["code"]: total},
            "created_at": iso(min(bill.created_at for bill in unpaid)),
            "updated_at": iso(max(bill.updated_at for bill in unpaid)),
        }
        entries.append(
            {
                **_pick(values, OUTSTANDING_BALANCE_BASE_FIELDS),
                "outstanding_bills": [bill_base(world, bill) for bill in unpaid],
                "contact": contact_base(contact),
                "currency": dict(USD),
            }
        )
    return entries
