"""Changes the test hooks make to the world, with the bookkeeping Clio would do alongside:
a new version (so a new etag), a fresh updated_at, balances that follow payments.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, model_validator

from sandbox.clio.records import (
    Address,
    Bill,
    BillKind,
    BillState,
    BillType,
    Contact,
    ContactType,
    Day,
    LineItem,
    LineItemKind,
    LineItemType,
    Matter,
    Money,
    RawBill,
    World,
    to_cents,
)
from sandbox.clio.seed import (
    FIRM_TZ,
    NET_DAYS_REVENUE,
    NET_DAYS_TRUST,
    bill_number,
)

ZERO = Decimal("0.00")
_FIXED = {"id", "version"}


class HookError(ValueError):
    """A hook request that cannot be applied; answered with 422 (404 when `missing`)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class NewLineItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str
    price: Money
    quantity: Decimal = Decimal("1")
    kind: LineItemKind = "Service"
    type: LineItemType = "ActivityLineItem"
    date: Day | None = None


class NewBill(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: int
    total: Money | None = None
    state: BillState = "awaiting_payment"
    kind: BillKind = "revenue_kind"
    type: BillType | None = None
    matter_id: int | None = None
    number: str | None = None
    subject: str | None = None
    memo: str | None = None
    issued_at: date | None = None
    due_at: date | None = None
    paid: Money | None = None
    last_sent_at: datetime | None = None
    line_items: list[NewLineItem] | None = None

    @model_validator(mode="after")
    def _total_or_lines(self) -> Self:
        if self.total is None and not self.line_items:
            raise ValueError("give total, line_items, or both")
        if self.total is not None and self.line_items:
            lines = sum((to_cents(i.quantity * i.price) for i in self.line_items), ZERO)
            if lines != self.total:
                raise ValueError(f"line items sum to {lines}, not the total {self.total}")
        return self


class NewContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ContactType = "Company"
    name: str | None = None
    prefix: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    primary_email_address: str | None = None
    secondary_email_address: str | None = None
    primary_phone_number: str | None = None
    ledes_client_id: str | None = None
    is_client: bool = True
    reminders_enabled: bool = True
    address: Address | None = None

    @model_validator(mode="after")
    def _named(self) -> Self:
        if not (self.name or self.first_name or self.last_name):
            raise ValueError("a contact needs a name, or a first or last name")
        return self


def create_bill(world: World, spec: NewBill, now: datetime) -> Bill:
    client = world.contacts.get(spec.client_id)
    if client is None:
        raise HookError(f"no contact with id {spec.client_id}")
    client_matters = sorted(
        (m for m in world.matters.values() if m.client_id == client.id), key=lambda m: m.id
    )
    if spec.matter_id is not None:
        matter = world.matters.get(spec.matter_id)
        if matter is None or matter.client_id != client.id:
            raise HookError(f"matter {spec.matter_id} is not one of the client's matters")
        billed = [matter]
    else:
        billed = client_matters[:1]
    bill_type = spec.type or ("MatterBill" if len(billed) == 1 else "ClientBill")
    if bill_type == "ClientBill" and spec.matter_id is None:
        billed = client_matters
    trust = spec.kind == "trust_kind"
    local_now = now.astimezone(FIRM_TZ)
    issued = spec.issued_at or local_now.date()
    bill_id = world.allocate_id("bill")
    lines = spec.line_items or [
        NewLineItem(
            description="Funds request: retainer deposit to trust" if trust else "Legal services",
            price=spec.total or ZERO,
            type="LineItem" if trust else "ActivityLineItem",
        )
    ]
    items = [
        LineItem(
            id=world.allocate_id("line_item"),
            bill_id=bill_id,
            matter_id=billed[position % len(billed)].id if billed else None,
            type=line.type,
            kind=line.kind,
            date=line.date or issued,
            description=line.description,
            quantity=line.quantity,
            price=line.price,
            total=to_cents(line.quantity * line.price),
            group_ordering=position + 1,
            created_at=local_now,
            updated_at=local_now,
        )
        for position, line in enumerate(lines)
    ]
    total = sum((item.total for item in items), ZERO)
    paid = spec.paid if spec.paid is not None else (total if spec.state == "paid" else ZERO)
    balance = ZERO if spec.state == "void" else max(total - paid, ZERO)
    sent = spec.last_sent_at
    if sent is None and spec.state in ("awaiting_payment", "paid"):
        sent = local_now
    bill = Bill(
        id=bill_id,
        number=spec.number or bill_number(world.allocate_id("bill_number")),
        client_id=client.id,
        matter_ids=[matter.id for matter in billed],
        user_id=world.user.id,
        destination_account_id=world.account_of_type("Trust" if trust else "Operating"),
        type=bill_type,
        kind=spec.kind,
        state=spec.state,
        subject=spec.subject,
        memo=spec.memo,
        issued_at=issued,
        due_at=spec.due_at
        or issued + timedelta(days=NET_DAYS_TRUST if trust else NET_DAYS_REVENUE),
        start_at=None if trust else min(item.date for item in items),
        end_at=None if trust else max(item.date for item in items),
        sub_total=total,
        total=total,
        paid=paid,
        balance=balance,
        due=balance,
        paid_at=local_now if spec.state == "paid" else None,
        last_sent_at=sent,
        created_at=local_now,
        updated_at=local_now,
    )
    world.bills[bill.id] = bill
    world.line_items.update((item.id, item) for item in items)
    return bill


def patch_bill(world: World, bill_id: int, changes: dict[str, Any], now: datetime) -> Bill:
    bill = world.bills.get(bill_id)
    if bill is None:
        raise HookError(f"no bill with id {bill_id}", missing=True)
    if fixed := _FIXED & changes.keys():
        raise HookError(f"cannot change {', '.join(sorted(fixed))}")
    candidate = Bill.model_validate({**bill.model_dump(), **changes})
    derived: dict[str, Any] = {}
    local_now = now.astimezone(FIRM_TZ)
    if changes.get("state") == "paid":
        # What "Record Payment" for the full amount does in Clio.
        if "paid" not in changes:
            derived["paid"] = candidate.total
        if "paid_at" not in changes:
            derived["paid_at"] = local_now
    paid = derived.get("paid", candidate.paid)
    if candidate.state == "void":
        balance = ZERO
    else:
        balance = max(candidate.total - paid - candidate.credits_issued, ZERO)
    if "balance" not in changes:
        derived["balance"] = balance
    if "due" not in changes:
        derived["due"] = derived.get("balance", candidate.balance)
    updated = candidate.model_dump()
    updated.update(derived)
    updated["version"] = bill.version + 1
    updated["updated_at"] = candidate.updated_at if "updated_at" in changes else local_now
    world.bills[bill_id] = Bill.model_validate(updated)
    return world.bills[bill_id]


def insert_raw_bill(world: World, payload: Any) -> RawBill:
    own_id = payload.get("id") if isinstance(payload, dict) else None
    valid_own_id = isinstance(own_id, int) and not isinstance(own_id, bool)
    key = own_id if valid_own_id else world.allocate_id("bill")
    raw = RawBill(key=key, payload=payload)
    world.raw_bills[key] = raw
    return raw


def patch_raw_bill(world: World, key: int, changes: dict[str, Any], now: datetime) -> RawBill:
    raw = world.raw_bills.get(key)
    if raw is None:
        raise HookError(f"no bill with id {key}", missing=True)
    if not isinstance(raw.payload, dict):
        raise HookError("this raw bill is not a JSON object; replace it instead")
    payload = {**raw.payload, **changes}
    if "etag" not in changes:
        payload["etag"] = f'"{secrets.token_hex(16)}"'
    if "updated_at" not in changes:
        payload["updated_at"] = now.astimezone(FIRM_TZ).isoformat()
    world.raw_bills[key] = RawBill(key=key, payload=payload)
    return world.raw_bills[key]


def create_contact(world: World, spec: NewContact, now: datetime) -> Contact:
    local_now = now.astimezone(FIRM_TZ)
    contact = Contact(
        id=world.allocate_id("contact"),
        created_at=local_now,
        updated_at=local_now,
        **spec.model_dump(exclude={"address"}),
        address=spec.address,
    )
    world.contacts[contact.id] = contact
    return contact


def patch_contact(world: World, contact_id: int, changes: dict[str, Any], now: datetime) -> Contact:
    contact = world.contacts.get(contact_id)
    if contact is None:
        raise HookError(f"no contact with id {contact_id}", missing=True)
    if fixed := _FIXED & changes.keys():
        raise HookError(f"cannot change {', '.join(sorted(fixed))}")
    updated = {**contact.model_dump(), **changes, "version": contact.version + 1}
    if "updated_at" not in changes:
        updated["updated_at"] = now.astimezone(FIRM_TZ)
    world.contacts[contact_id] = Contact.model_validate(updated)
    return world.contacts[contact_id]


def delete_bill(world: World, bill_id: int, now: datetime) -> Bill:
    """Clio's DELETE: draft or pending approval becomes deleted, unpaid without payments void."""
    bill = world.bills.get(bill_id)
    if bill is None:
        raise HookError(f"no bill with id {bill_id}", missing=True)
    if bill.paid > ZERO or bill.pending > ZERO:
        raise HookError("Bill has payments applied; it cannot be deleted or voided")
    if bill.state in ("draft", "awaiting_approval"):
        return patch_bill(world, bill_id, {"state": "deleted"}, now)
    if bill.state == "awaiting_payment":
        return patch_bill(world, bill_id, {"state": "void"}, now)
    raise HookError(f"A bill in state {bill.state} cannot be deleted")


class NewPayment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Money
    date: Day | None = None

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if self.amount <= ZERO:
            raise ValueError("amount must be positive")
        return self


def record_payment(world: World, bill_id: int, payment: NewPayment, now: datetime) -> Bill:
    """What a firm user's Record Payment does: paid grows, the balance shrinks, paid in full
    at zero."""
    bill = world.bills.get(bill_id)
    if bill is None:
        raise HookError(f"no bill with id {bill_id}", missing=True)
    if bill.state != "awaiting_payment":
        raise HookError(f"a bill in state {bill.state} takes no payments")
    if payment.amount > bill.balance:
        raise HookError(f"amount {payment.amount} exceeds the balance {bill.balance}")
    changes: dict[str, Any] = {"paid": bill.paid + payment.amount}
    if payment.amount == bill.balance:
        when = now.astimezone(FIRM_TZ)
        if payment.date is not None:
            when = datetime.combine(payment.date, when.timetz())
        changes.update(state="paid", paid_at=when)
    return patch_bill(world, bill_id, changes, now)


def patch_matter(world: World, matter_id: int, changes: dict[str, Any], now: datetime) -> Matter:
    matter = world.matters.get(matter_id)
    if matter is None:
        raise HookError(f"no matter with id {matter_id}", missing=True)
    if "id" in changes:
        raise HookError("cannot change id")
    updated = {**matter.model_dump(), **changes}
    if "updated_at" not in changes:
        updated["updated_at"] = now.astimezone(FIRM_TZ)
    world.matters[matter_id] = Matter.model_validate(updated)
    return world.matters[matter_id]
