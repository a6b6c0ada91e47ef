"""A big firm made quickly for benchmarks: the same records for the same request, every time.

Records are built without validation (`model_construct`); every value is computed here with
the right type, so they are what validation would have produced.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.clio.records import Bill, Contact, LineItem, Matter, World, to_cents
from sandbox.clio.seed import (
    EXPENSES,
    FIRM_TZ,
    HOURLY_RATES,
    NET_DAYS_REVENUE,
    NET_DAYS_TRUST,
    SERVICES,
    TRUST_AMOUNTS,
    bill_number,
)

MAX_BILLS = 100_000
MAX_LINES = 50


class BulkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bills: int = Field(ge=0, le=MAX_BILLS)
    lines_per_bill: int = Field(default=5, ge=1, le=MAX_LINES)
    clients: int = Field(default=100, ge=1, le=MAX_BILLS)
    trust_every: int | None = Field(default=None, ge=1)
    """Every n-th bill is a trust request (one line); none when absent."""


def add_bulk(world: World, spec: BulkSpec, today: date) -> dict[str, int]:
    """Add `spec.clients` clients (one matter each) and `spec.bills` bills to the world."""
    user_id = world.user.id
    operating, trust_account = world.account_of_type("Operating"), world.account_of_type("Trust")
    clients: list[tuple[Contact, Matter]] = []
    for index in range(spec.clients):
        created = _at(today, 400 - index % 300, 9, index % 60)
        contact = Contact.model_construct(
            id=world.allocate_id("contact"),
            version=1,
            type="Company",
            name=f"Bulk Client {index + 1:05d} LLC",
            primary_email_address=f"ap.bulk{index + 1:05d}@example.com",
            is_client=True,
            reminders_enabled=True,
            created_at=created,
            updated_at=created,
            **dict.fromkeys(_CONTACT_NONES),
        )
        matter_id = world.allocate_id("matter")
        matter = Matter.model_construct(
            id=matter_id,
            number=matter_id % 100_000,
            display_number=f"{matter_id % 100_000:05d}-Bulk{index + 1:05d}",
            description="General matters",
            client_id=contact.id,
            status="Open",
            billing_method="hourly",
            open_date=created.date(),
            created_at=created,
            updated_at=created,
        )
        world.contacts[contact.id] = contact
        world.matters[matter.id] = matter
        clients.append((contact, matter))

    lines = 0
    for index in range(spec.bills):
        contact, matter = clients[index % len(clients)]
        trust = spec.trust_every is not None and (index + 1) % spec.trust_every == 0
        age = 1 + index % 120
        issued = today - timedelta(days=age)
        created = _at(today, age, 8, 0) + timedelta(seconds=index % 3600)
        bill_id = world.allocate_id("bill")
        items = _items(world, bill_id, matter.id, user_id, index, trust, spec, issued, created)
        total = sum((item.total for item in items), Decimal("0.00"))
        paid_in_full = not trust and index % 10 == 9
        paid = total if paid_in_full else Decimal("0.00")
        balance = total - paid
        world.bills[bill_id] = Bill.model_construct(
            id=bill_id,
            version=1,
            number=bill_number(world.allocate_id("bill_number")),
            client_id=contact.id,
            matter_ids=[matter.id],
            user_id=user_id,
            destination_account_id=trust_account if trust else operating,
            type="MatterBill",
            kind="trust_kind" if trust else "revenue_kind",
            state="paid" if paid_in_full else "awaiting_payment",
            subject="Request for funds" if trust else "Legal services",
            memo=None,
            purchase_order=None,
            issued_at=issued,
            due_at=issued + timedelta(days=NET_DAYS_TRUST if trust else NET_DAYS_REVENUE),
            start_at=None if trust else min(item.date for item in items),
            end_at=None if trust else max(item.date for item in items),
            sub_total=total,
            total=total,
            paid=paid,
            pending=Decimal("0.00"),
            credits_issued=Decimal("0.00"),
            balance=balance,
            due=balance,
            paid_at=created + timedelta(hours=5) if paid_in_full else None,
            last_sent_at=created + timedelta(hours=1),
            shared=False,
            created_at=created,
            updated_at=created + timedelta(hours=5 if paid_in_full else 1),
        )
        world.line_items.update((item.id, item) for item in items)
        lines += len(items)
    return {
        "clients": spec.clients,
        "bills": spec.bills,
        "line_items": lines,
        "total_bills": len(world.bills),
        "total_line_items": len(world.line_items),
    }


def _items(
    world: World,
    bill_id: int,
    matter_id: int,
    user_id: int,
    index: int,
    trust: bool,
    spec: BulkSpec,
    issued: date,
    created: datetime,
) -> list[LineItem]:
    if trust:
        amount = TRUST_AMOUNTS[index % len(TRUST_AMOUNTS)]
        specs = [("LineItem", "Service", "Funds request: retainer deposit to trust", 1, amount)]
    else:
        rate = HOURLY_RATES[index % len(HOURLY_RATES)]
        specs = []
        for position in range(spec.lines_per_bill):
            if spec.lines_per_bill >= 3 and position == spec.lines_per_bill - 1:
                description, price = EXPENSES[(index + position) % len(EXPENSES)]
                specs.append(("ActivityLineItem", "Expense", description, 1, price))
            else:
                description = SERVICES[(index + position) % len(SERVICES)]
                hours = Decimal(2 + (index * 7 + position * 13) % 58) / 10
                specs.append(("ActivityLineItem", "Service", description, hours, rate))
    items = []
    for position, (kind_type, kind, description, quantity, price) in enumerate(specs):
        quantity = Decimal(quantity)
        items.append(
            LineItem.model_construct(
                id=world.allocate_id("line_item"),
                version=1,
                bill_id=bill_id,
                matter_id=matter_id,
                user_id=user_id if kind == "Service" and not trust else None,
                type=kind_type,
                kind=kind,
                date=issued - timedelta(days=1 + (index + position) % 20),
                description=description,
                note=None,
                quantity=quantity,
                price=to_cents(price),
                total=to_cents(quantity * price),
                group_ordering=position + 1,
                created_at=created,
                updated_at=created,
            )
        )
    return items


def _at(today: date, days_ago: int, hour: int, minute: int) -> datetime:
    return datetime.combine(today - timedelta(days=days_ago), time(hour, minute), FIRM_TZ)


_CONTACT_NONES = (
    "prefix",
    "first_name",
    "middle_name",
    "last_name",
    "title",
    "secondary_email_address",
    "primary_phone_number",
    "secondary_phone_number",
    "ledes_client_id",
    "address",
)
