"""The sandbox's stored world: records as the firm's Clio account holds them.

Records keep what Clio stores; how Clio *shows* them (nested objects, derived totals,
etags) lives in `render.py`, so a hook that edits one field changes every view of it.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from itertools import islice
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr

CENT = Decimal("0.01")
# `LineItem.date` would shadow the type inside the class body.
Day = date


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


Money = Annotated[Decimal, AfterValidator(to_cents)]

BillState = Literal["draft", "awaiting_approval", "awaiting_payment", "paid", "void", "deleted"]
BillKind = Literal[
    "revenue_kind",
    "summary_kind",
    "trust_kind",
    "aggregate_all",
    "aggregate_split",
    "aggregate_services",
    "aggregate_expenses",
]
BillType = Literal["MatterBill", "ClientBill"]
ContactType = Literal["Person", "Company"]
LineItemType = Literal["ActivityLineItem", "LineItem", "NoChargeLineItem", "SummaryLineItem"]
LineItemKind = Literal["Service", "Expense"]


class Record(BaseModel):
    # Hooks rebuild records from merged dicts; forbidding extras turns a typo into a 422.
    model_config = ConfigDict(extra="forbid")


class Address(Record):
    street: str
    city: str
    province: str
    postal_code: str
    country: str = "United States"
    name: Literal["Work", "Home", "Billing", "Other"] = "Billing"


class Contact(Record):
    id: int
    version: int = 1
    type: ContactType
    # Companies carry `name`; a person's name is derived from first and last unless set.
    name: str | None = None
    prefix: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    primary_email_address: str | None = None
    secondary_email_address: str | None = None
    primary_phone_number: str | None = None
    secondary_phone_number: str | None = None
    ledes_client_id: str | None = None
    is_client: bool = True
    address: Address | None = None
    # Clio keeps this per client on the Outstanding Balances page, not on the contact.
    reminders_enabled: bool = True
    created_at: datetime
    updated_at: datetime

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return " ".join(part for part in (self.first_name, self.last_name) if part)


class Matter(Record):
    id: int
    number: int
    display_number: str
    description: str
    client_id: int
    status: Literal["Pending", "Open", "Closed"] = "Open"
    billing_method: Literal["flat", "contingency", "hourly"] = "hourly"
    open_date: date
    created_at: datetime
    updated_at: datetime


class BankAccount(Record):
    id: int
    name: str
    type: Literal["Operating", "Trust"]
    institution: str
    account_number: str
    default_account: bool
    created_at: datetime
    updated_at: datetime


class Account(Record):
    id: int
    name: str
    created_at: datetime
    updated_at: datetime


class User(Record):
    id: int
    first_name: str
    last_name: str
    email: str
    phone_number: str | None = None
    rate: Money = Decimal("0")
    roles: list[str] = Field(default_factory=list)
    account_owner: bool = False
    subscription_type: Literal["Attorney", "NonAttorney"] = "Attorney"
    time_zone: str = "Eastern Time (US & Canada)"
    created_at: datetime
    updated_at: datetime


class LineItem(Record):
    id: int
    version: int = 1
    bill_id: int
    matter_id: int | None = None
    user_id: int | None = None
    type: LineItemType = "ActivityLineItem"
    kind: LineItemKind = "Service"
    date: Day
    description: str
    note: str | None = None
    quantity: Decimal
    price: Money
    total: Money
    group_ordering: int = 1
    created_at: datetime
    updated_at: datetime


class Bill(Record):
    id: int
    version: int = 1
    number: str
    client_id: int
    matter_ids: list[int] = Field(default_factory=list)
    user_id: int
    destination_account_id: int
    type: BillType = "MatterBill"
    kind: BillKind = "revenue_kind"
    state: BillState = "awaiting_payment"
    subject: str | None = None
    memo: str | None = None
    purchase_order: str | None = None
    issued_at: date
    due_at: date
    start_at: date | None = None
    end_at: date | None = None
    sub_total: Money
    total: Money
    paid: Money = Decimal("0")
    pending: Money = Decimal("0")
    credits_issued: Money = Decimal("0")
    balance: Money
    due: Money
    paid_at: datetime | None = None
    last_sent_at: datetime | None = None
    shared: bool = False
    created_at: datetime
    updated_at: datetime


class RawBill(BaseModel):
    """A bill stored exactly as a test supplied it, so a client's quarantine can be exercised.

    `key` orders it among real bills: the payload's own integer id when it has one.
    """

    key: int
    payload: Any


class World(BaseModel):
    """Everything the demo firm's Clio account holds."""

    account: Account
    user: User
    bank_accounts: dict[int, BankAccount]
    contacts: dict[int, Contact]
    matters: dict[int, Matter]
    bills: dict[int, Bill]
    line_items: dict[int, LineItem]
    raw_bills: dict[int, RawBill] = Field(default_factory=dict)
    next_ids: dict[str, int] = Field(default_factory=dict)
    # Line item ids by bill. The sandbox only ever adds line items (a change replaces the
    # record under the same key), so the index catches up on the keys added since.
    _items_by_bill: dict[int, list[int]] = PrivateAttr(default_factory=dict)
    _indexed: int = PrivateAttr(default=0)

    def items_of(self, bill_id: int) -> list[LineItem]:
        """The bill's line items in id order, without scanning the others."""
        # Straight to the private dict: pydantic's attribute lookup costs more than the rest.
        private = self.__pydantic_private__
        assert private is not None
        items = self.line_items
        index: dict[int, list[int]] = private["_items_by_bill"]
        indexed: int = private["_indexed"]
        if indexed != len(items):
            if indexed > len(items):
                index, indexed = {}, 0
                private["_items_by_bill"] = index
            for item in islice(items.values(), indexed, None):
                ids = index.setdefault(item.bill_id, [])
                ids.append(item.id)
                if len(ids) > 1 and ids[-2] > item.id:
                    ids.sort()
            private["_indexed"] = len(items)
        return [items[i] for i in index.get(bill_id, ())]

    def account_of_type(self, kind: Literal["Operating", "Trust"]) -> int:
        return next(acc.id for acc in self.bank_accounts.values() if acc.type == kind)

    def allocate_id(self, kind: str) -> int:
        value = self.next_ids[kind]
        self.next_ids[kind] = value + 1
        return value
