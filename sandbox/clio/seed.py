"""The demo firm, Demo Law LLP: the same clients, matters, bills and amounts on every start.

Only the dates move: they are counted back from `today`, so due dates always look current.
Every seeded timestamp lies on a day before today, so `updated_since=now` finds nothing
until a hook changes something.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from sandbox.clio.records import (
    Account,
    Address,
    BankAccount,
    Bill,
    BillKind,
    BillState,
    Contact,
    LineItem,
    Matter,
    User,
    World,
    to_cents,
)

# Clio reports times in the account's zone; a fixed offset keeps the seed free of tz data.
FIRM_TZ = timezone(timedelta(hours=-5), "EST")
FIRM_NAME = "Demo Law LLP"

ACCOUNT_ID = 1_100_001
USER_ID = 3_460_001
OPERATING_ACCOUNT_ID = 8_100_001
TRUST_ACCOUNT_ID = 8_100_002
# Distinct ranges per kind, so a client that mixes up ids gets a 404 rather than a wrong record.
FIRST_CONTACT_ID = 9_100_001
FIRST_MATTER_ID = 7_100_001
FIRST_BILL_ID = 5_100_001
FIRST_LINE_ITEM_ID = 6_100_001
FIRST_BILL_NUMBER = 1001
NET_DAYS_REVENUE = 30
NET_DAYS_TRUST = 14
RNG_SEED = 20_250_517


def firm_today(now: datetime) -> date:
    return now.astimezone(FIRM_TZ).date()


def bill_number(sequence: int) -> str:
    return f"INV-{sequence}"


@dataclass(frozen=True, slots=True)
class BillSeed:
    state: BillState
    age: int
    """Days between the issue date and today; at least 1, so every timestamp is in the past."""
    kind: BillKind = "revenue_kind"
    matter: int | None = 0
    """Index into the client's matters; None makes a ClientBill over all of them."""
    items: int = 3
    sent: bool = True
    partially_paid: bool = False


@dataclass(frozen=True, slots=True)
class ClientSeed:
    contact: dict[str, object]
    matters: tuple[str, ...]
    bills: tuple[BillSeed, ...]
    reminders_enabled: bool = True


def _unpaid(*ages: int, trust_at: tuple[int, ...] = ()) -> tuple[BillSeed, ...]:
    return tuple(
        BillSeed(
            "awaiting_payment",
            age,
            kind="trust_kind" if age in trust_at else "revenue_kind",
            items=1 if age in trust_at else 2 + age % 5,
            matter=age % 2,
        )
        for age in ages
    )


CLIENTS: tuple[ClientSeed, ...] = (
    ClientSeed(
        contact={
            "type": "Company",
            "name": "Acme Holdings Inc.",
            "primary_email_address": "ap.acme@example.com",
            "secondary_email_address": "legal.acme@example.com",
            "primary_phone_number": "(555) 010-4400",
            "ledes_client_id": "ACME-001",
            "address": Address(
                street="1200 Harbor Blvd, Suite 400",
                city="Springfield",
                province="IL",
                postal_code="62701",
            ),
        },
        matters=("Commercial lease dispute", "General corporate counsel"),
        bills=(
            *_unpaid(4, 9, 13, 18, 24, 29, 33, 41, 48, 56, 63, 77, trust_at=(13, 41, 63)),
            BillSeed("paid", 95, items=4),
            BillSeed("paid", 120, matter=1, items=6),
            BillSeed("draft", 2, items=3, sent=False),
        ),
    ),
    ClientSeed(
        contact={
            "type": "Company",
            "name": "Rivera Family Trust",
            "primary_email_address": "elena.rivera@example.com",
            "primary_phone_number": "(555) 010-2231",
            "address": Address(
                street="88 Orchard Lane", city="Fairview", province="CA", postal_code="94105"
            ),
        },
        matters=("Estate planning", "Trust administration"),
        bills=(
            *_unpaid(3, 8, 15, 21, 27, 35, 44, 52, 61, 70, 84, trust_at=(8, 35, 61)),
            BillSeed("paid", 101, matter=0, items=2),
            BillSeed("draft", 1, matter=1, items=5, sent=False),
            BillSeed("void", 88, matter=1, items=2),
        ),
    ),
    ClientSeed(
        contact={
            "type": "Person",
            "prefix": "Mr.",
            "first_name": "Daniel",
            "last_name": "Okafor",
            "primary_email_address": "daniel.okafor@example.com",
            "secondary_email_address": "dan.okafor.home@example.com",
            "primary_phone_number": "(555) 010-7712",
            "address": Address(
                street="415 Maple St, Apt 3B",
                city="Columbus",
                province="OH",
                postal_code="43004",
                name="Home",
            ),
        },
        matters=("Employment agreement review",),
        bills=(
            BillSeed("awaiting_payment", 11, items=3),
            BillSeed("awaiting_payment", 6, kind="trust_kind", items=1),
            BillSeed("paid", 58, items=2),
        ),
    ),
    ClientSeed(
        contact={
            "type": "Person",
            "prefix": "Ms.",
            "first_name": "Priya",
            "last_name": "Shah",
            "primary_email_address": "priya.shah@example.com",
            "primary_phone_number": "(555) 010-3390",
        },
        matters=("Residential real estate closing",),
        bills=(
            BillSeed("awaiting_payment", 19, items=4),
            BillSeed("awaiting_approval", 2, items=2, sent=False),
            BillSeed("draft", 1, items=1, sent=False),
        ),
    ),
    ClientSeed(
        contact={
            "type": "Company",
            "name": "Northwind Logistics LLC",
            "primary_email_address": "billing.northwind@example.com",
            "primary_phone_number": "(555) 010-9001",
            "ledes_client_id": "NWL-7730",
        },
        matters=("Regulatory compliance", "Fleet contract negotiations"),
        bills=(
            BillSeed("awaiting_payment", 26, matter=None, items=6, partially_paid=True),
            BillSeed("awaiting_payment", 5, matter=1, items=2, sent=False),
            BillSeed("paid", 66, items=3),
            BillSeed("paid", 39, matter=1, items=5),
        ),
    ),
    ClientSeed(
        contact={
            "type": "Company",
            "name": "Bluebird Bakery Co.",
            "primary_email_address": "hello.bluebird@example.com",
        },
        matters=("Trademark registration",),
        bills=(
            BillSeed("awaiting_payment", 37, items=2),
            BillSeed("paid", 73, items=1),
        ),
        reminders_enabled=False,
    ),
    ClientSeed(
        contact={
            "type": "Company",
            "name": "Chen & Park Architects LLP",
            "primary_email_address": "finance.chenpark@example.com",
        },
        matters=("Partnership agreement",),
        bills=(
            BillSeed("awaiting_payment", 16, items=5),
            BillSeed("draft", 3, items=2, sent=False),
        ),
    ),
    ClientSeed(
        contact={
            "type": "Person",
            "first_name": "Siobhán",
            "last_name": "O'Neill",
            "primary_email_address": "siobhan.oneill@example.com",
        },
        matters=("Family law - custody",),
        bills=(
            BillSeed("awaiting_payment", 22, items=3),
            BillSeed("paid", 47, items=2),
        ),
    ),
)

# A contact that is not a client, as every real firm has (here: opposing counsel).
NON_CLIENT: dict[str, object] = {
    "type": "Person",
    "first_name": "Morgan",
    "last_name": "Ellis",
    "title": "Opposing counsel",
    "primary_email_address": "m.ellis@example.com",
    "is_client": False,
}

SERVICES = (
    "Draft and revise lease amendment",
    "Telephone conference with client re: settlement options",
    "Review discovery responses; prepare deficiency letter",
    "Prepare for and attend mediation",
    "Legal research re: statute of limitations",
    "Draft correspondence to opposing counsel",
    "Review and annotate draft agreement",
    "Prepare closing documents",
    "Attend hearing on motion to compel",
    "Update estate planning documents per client instructions",
)
EXPENSES = (
    ("Court filing fee", Decimal("435.00")),
    ("Courier - documents to opposing counsel", Decimal("48.50")),
    ("Certified copies - county recorder", Decimal("36.00")),
    ("Deposition transcript", Decimal("612.75")),
    ("Process server", Decimal("95.00")),
    ("Mileage to courthouse", Decimal("62.16")),
)
HOURLY_RATES = (Decimal("275"), Decimal("325"), Decimal("375"), Decimal("425"))
TRUST_AMOUNTS = (Decimal("1500"), Decimal("2500"), Decimal("5000"), Decimal("7500"))


@dataclass(frozen=True, slots=True)
class FirmSeed:
    """One Clio account: its name, user, clients, and where its ids start (per region)."""

    name: str
    clients: tuple[ClientSeed, ...]
    non_client: dict[str, object]
    user: tuple[str, str, str]
    """First name, last name, email of the account owner the tokens act for."""
    bank: str = "First Demo Bank"
    id_offset: int = 0


DEMO_FIRM = FirmSeed(
    name=FIRM_NAME,
    clients=CLIENTS,
    non_client=NON_CLIENT,
    user=("Jordan", "Blake", "jordan.blake@example.com"),
)


def _at(today: date, days_ago: int, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(today - timedelta(days=days_ago), time(hour, minute), FIRM_TZ)


def build_world(today: date, firm: FirmSeed = DEMO_FIRM) -> World:
    """The firm (the demo firm by default) as it stands on `today` (in the firm's zone)."""
    rng = random.Random(RNG_SEED)
    epoch = _at(today, 400, 9)
    off = firm.id_offset
    account = Account(id=ACCOUNT_ID + off, name=firm.name, created_at=epoch, updated_at=epoch)
    first_name, last_name, email = firm.user
    user_id = USER_ID + off
    operating_id, trust_id = OPERATING_ACCOUNT_ID + off, TRUST_ACCOUNT_ID + off
    user = User(
        id=user_id,
        first_name=first_name,
        last_name=last_name,
        email=email,
        phone_number="(555) 010-1000",
        rate=Decimal("375"),
        roles=["Administrator", "Billing"],
        account_owner=True,
        created_at=epoch,
        updated_at=epoch,
    )
    bank_accounts = {
        operating_id: BankAccount(
            id=operating_id,
            name="Operating Account",
            type="Operating",
            institution=firm.bank,
            account_number="****4821",
            default_account=True,
            created_at=epoch,
            updated_at=epoch,
        ),
        trust_id: BankAccount(
            id=trust_id,
            name="IOLTA Trust Account",
            type="Trust",
            institution=firm.bank,
            account_number="****9034",
            default_account=False,
            created_at=epoch,
            updated_at=epoch,
        ),
    }

    contacts: dict[int, Contact] = {}
    matters: dict[int, Matter] = {}
    client_matters: dict[int, list[Matter]] = {}
    pending: list[tuple[int, BillSeed]] = []
    matter_number = 8
    everyone = (*firm.clients, ClientSeed(contact=firm.non_client, matters=(), bills=()))
    for offset, seed in enumerate(everyone):
        contact_id = FIRST_CONTACT_ID + off + offset
        created = _at(today, 380 - offset * 17, 10, offset * 7)
        contact = Contact(
            id=contact_id,
            reminders_enabled=seed.reminders_enabled,
            created_at=created,
            updated_at=created + timedelta(days=3, hours=2),
            **seed.contact,  # type: ignore[arg-type]
        )
        contacts[contact_id] = contact
        surname = (contact.last_name or contact.display_name.split()[0]).replace("'", "")
        client_matters[contact_id] = []
        for description in seed.matters:
            matter_id = FIRST_MATTER_ID + off + len(matters)
            opened = created + timedelta(days=1)
            matter = Matter(
                id=matter_id,
                number=matter_number,
                display_number=f"{matter_number:05d}-{surname}",
                description=description,
                client_id=contact_id,
                open_date=opened.date(),
                created_at=opened,
                updated_at=opened,
            )
            matters[matter_id] = matter
            client_matters[contact_id].append(matter)
            matter_number += 2
        pending.extend((contact_id, bill) for bill in seed.bills)

    # Ids and numbers rise with the issue date, as they do in a real account.
    pending.sort(key=lambda entry: (-entry[1].age, entry[0]))
    bills: dict[int, Bill] = {}
    line_items: dict[int, LineItem] = {}
    for index, (contact_id, seed) in enumerate(pending):
        bill_id = FIRST_BILL_ID + off + index
        items = _line_items(
            rng,
            today,
            seed,
            bill_id,
            FIRST_LINE_ITEM_ID + off + len(line_items),
            client_matters[contact_id],
            user_id,
        )
        bills[bill_id] = _bill(
            rng,
            today,
            seed,
            bill_id,
            bill_number(FIRST_BILL_NUMBER + index),
            contact_id,
            client_matters[contact_id],
            items,
            (user_id, operating_id, trust_id),
        )
        line_items.update((item.id, item) for item in items)

    return World(
        account=account,
        user=user,
        bank_accounts=bank_accounts,
        contacts=contacts,
        matters=matters,
        bills=bills,
        line_items=line_items,
        next_ids={
            "contact": FIRST_CONTACT_ID + off + len(contacts),
            "matter": FIRST_MATTER_ID + off + len(matters),
            "bill": FIRST_BILL_ID + off + len(bills),
            "line_item": FIRST_LINE_ITEM_ID + off + len(line_items),
            "bill_number": FIRST_BILL_NUMBER + len(bills),
        },
    )


def _line_items(
    rng: random.Random,
    today: date,
    seed: BillSeed,
    bill_id: int,
    first_id: int,
    client_matters: list[Matter],
    user_id: int = USER_ID,
) -> list[LineItem]:
    issued = today - timedelta(days=seed.age)
    created = _at(today, seed.age, 8, 30)
    billed = client_matters if seed.matter is None else [client_matters[seed.matter]]
    if seed.kind == "trust_kind":
        amount = rng.choice(TRUST_AMOUNTS)
        return [
            LineItem(
                id=first_id,
                bill_id=bill_id,
                matter_id=billed[0].id,
                type="LineItem",
                kind="Service",
                date=issued,
                description="Funds request: retainer deposit to trust",
                quantity=Decimal("1"),
                price=amount,
                total=amount,
                created_at=created,
                updated_at=created,
            )
        ]
    rate = rng.choice(HOURLY_RATES)
    items: list[LineItem] = []
    for position in range(seed.items):
        worked = issued - timedelta(days=rng.randint(1, 28))
        matter = billed[position % len(billed)]
        # One expense on bills of three or more lines, as most real invoices have.
        if seed.items >= 3 and position == seed.items - 1:
            description, price = rng.choice(EXPENSES)
            kind, quantity, worker = "Expense", Decimal("1"), None
        else:
            description = rng.choice(SERVICES)
            hours = Decimal(rng.randint(2, 60)) / 10
            kind, quantity, price, worker = "Service", hours, rate, user_id
        items.append(
            LineItem(
                id=first_id + position,
                bill_id=bill_id,
                matter_id=matter.id,
                user_id=worker,
                type="ActivityLineItem",
                kind=kind,
                date=worked,
                description=description,
                quantity=quantity,
                price=price,
                total=to_cents(quantity * price),
                group_ordering=position + 1,
                created_at=created,
                updated_at=created,
            )
        )
    return items


def _bill(
    rng: random.Random,
    today: date,
    seed: BillSeed,
    bill_id: int,
    number: str,
    client_id: int,
    client_matters: list[Matter],
    items: list[LineItem],
    owners: tuple[int, int, int] = (USER_ID, OPERATING_ACCOUNT_ID, TRUST_ACCOUNT_ID),
) -> Bill:
    user_id, operating_id, trust_id = owners
    issued = today - timedelta(days=seed.age)
    trust = seed.kind == "trust_kind"
    billed = client_matters if seed.matter is None else [client_matters[seed.matter]]
    total = sum((item.total for item in items), Decimal("0"))
    created = _at(today, seed.age, 9, rng.randint(0, 59))
    updated = created + timedelta(minutes=rng.randint(5, 90))
    last_sent_at = None
    if seed.sent and seed.state not in ("draft", "awaiting_approval"):
        last_sent_at = _at(today, seed.age, 10, 15)
        updated = last_sent_at
    paid = Decimal("0")
    paid_at = None
    if seed.state == "paid":
        paid_days_ago = max(1, seed.age - rng.randint(5, 25))
        paid, paid_at = total, _at(today, paid_days_ago, 14, rng.randint(0, 59))
        updated = paid_at
    elif seed.partially_paid:
        # paid_at stays empty: it marks a bill paid in full, which this one is not.
        paid = to_cents(total * Decimal("0.4"))
        updated = _at(today, max(1, seed.age - 9), 16)
    balance = Decimal("0") if seed.state == "void" else total - paid
    dates = [item.date for item in items]
    return Bill(
        id=bill_id,
        number=number,
        client_id=client_id,
        matter_ids=[matter.id for matter in billed],
        user_id=user_id,
        destination_account_id=trust_id if trust else operating_id,
        type="MatterBill" if seed.matter is not None else "ClientBill",
        kind=seed.kind,
        state=seed.state,
        subject="Request for funds" if trust else f"Legal services - {billed[0].description}",
        memo="Please remit to our IOLTA trust account." if trust else None,
        issued_at=issued,
        due_at=issued + timedelta(days=NET_DAYS_TRUST if trust else NET_DAYS_REVENUE),
        start_at=None if trust else min(dates),
        end_at=None if trust else max(dates),
        sub_total=total,
        total=total,
        paid=paid,
        balance=balance,
        due=balance,
        paid_at=paid_at,
        last_sent_at=last_sent_at,
        created_at=created,
        updated_at=updated,
    )
