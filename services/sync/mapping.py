"""How a Clio bill becomes an invoice snapshot. Plain functions, no I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.events import InvoiceSnapshot, LineItem
from shared.money import to_minor_fast as to_minor

CLIO_STATES = {"draft", "awaiting_approval", "awaiting_payment", "paid", "void", "deleted"}

# Every field sync reads, in Clio's `fields=` syntax (one level of nesting).
BILL_FIELDS = (
    "id,etag,number,issued_at,due_at,updated_at,balance,total,paid,state,kind,type,subject,"
    "currency{code},client{id,name},matters{id,display_number,description}"
)
CONTACT_FIELDS = "id,etag,name,primary_email_address,updated_at"
# A bill's lines (`GET line_items.json?bill_id=`): every field here is in Clio's LineItem schema.
LINE_ITEM_FIELDS = "id,type,kind,date,description,quantity,price,total,group_ordering"
# The bulk listing across bills (`GET line_items.json?updated_since=`): each line says whose it
# is, and its updated_at moves the line-item cursor.
LINE_ITEM_BULK_FIELDS = f"{LINE_ITEM_FIELDS},updated_at,bill{{id}}"
# States in which a bill leaves every list: it is removed (invoice.removed), not updated.
REMOVED_STATES = frozenset({"void", "deleted"})
# States in which nothing will be emailed, so a client without an email is no problem.
_NO_MAIL_STATES = frozenset({"paid", "void", "deleted"})

# ISO 4217 codes in use (funds, metals and test codes left out).
ISO_4217 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES
    KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR
    MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB
    RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
    TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL""".split()
)


class MalformedBill(ValueError):
    """The bill cannot be shown or paid as it is; it is quarantined with this reason."""


def invoice_id_for(source_id: object) -> str:
    return f"clio:{source_id}"


def _date(value: Any, field: str) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError as exc:
        raise MalformedBill(f"{field} is not a date: {value!r}") from exc


def _datetime(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_ts(value: Any) -> datetime | None:
    """A Clio timestamp, in UTC when it carries no offset; None when it does not parse."""
    ts = _datetime(value)
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _amount(bill: dict[str, Any], field: str, currency: str, *, required: bool = True) -> int:
    value = bill.get(field)
    if value is None:
        if required:
            raise MalformedBill(f"{field} is missing")
        return 0
    try:
        minor = to_minor(value, currency)
    except ValueError as exc:
        raise MalformedBill(f"{field} is not an amount: {value!r}") from exc
    if minor < 0:
        raise MalformedBill(f"{field} is negative: {value!r}")
    return minor


def bill_to_snapshot(
    bill: dict[str, Any],
    contacts: dict[str, dict[str, Any]],
    *,
    line_items: list[LineItem] | None = None,
) -> InvoiceSnapshot:
    """Map one Clio bill (as fetched with BILL_FIELDS) to an InvoiceSnapshot, with
    `line_items` (its mapped lines) when given.

    `contacts` maps a Clio contact id (as text) to the contact, for the client's email.
    Raises MalformedBill with a reason a firm user can act on.
    """
    if not isinstance(bill, dict):
        raise MalformedBill("the bill is not a JSON object")
    source_id = bill.get("id")
    if source_id is None or str(source_id).strip() == "":
        raise MalformedBill("id is missing")
    number = bill.get("number")
    if number in (None, ""):
        raise MalformedBill("number is missing")
    state = bill.get("state")
    if state not in CLIO_STATES:
        raise MalformedBill(f"unknown state {state!r}")
    client = bill.get("client")
    if not isinstance(client, dict) or client.get("id") is None:
        raise MalformedBill("the bill has no client")
    client_name = str(client.get("name") or "").strip()
    if not client_name:
        raise MalformedBill("the client has no name")
    currency_obj = bill.get("currency") or {}
    currency = (
        str(currency_obj.get("code") or "USD").upper() if isinstance(currency_obj, dict) else ""
    )
    if currency not in ISO_4217:
        raise MalformedBill(f"unknown currency {currency_obj!r}")

    total = _amount(bill, "total", currency)
    balance = _amount(bill, "balance", currency)
    paid = _amount(bill, "paid", currency, required=False)
    if balance > total:
        raise MalformedBill(f"balance {bill.get('balance')} exceeds total {bill.get('total')}")

    issued_at = _date(bill.get("issued_at"), "issued_at")
    due_at = _date(bill.get("due_at"), "due_at")
    if issued_at and due_at and due_at < issued_at:
        raise MalformedBill(f"due date {due_at} is before issue date {issued_at}")

    matters = bill.get("matters") or []
    matter = (
        matters[0] if isinstance(matters, list) and matters and isinstance(matters[0], dict) else {}
    )
    contact = contacts.get(str(client["id"]), {})
    email = contact.get("primary_email_address") or None

    return InvoiceSnapshot(
        invoice_id=invoice_id_for(source_id),
        source="clio",
        source_id=str(source_id),
        etag=bill.get("etag"),
        number=str(number),
        kind="trust_request" if bill.get("kind") == "trust_kind" else "invoice",
        state=state,
        client_id=str(client["id"]),
        client_name=client_name,
        client_email=email,
        matter_id=str(matter["id"]) if matter.get("id") is not None else None,
        matter_number=matter.get("display_number"),
        matter_description=matter.get("description"),
        subject=bill.get("subject"),
        issued_at=issued_at,
        due_at=due_at,
        currency=currency,
        total_minor=total,
        balance_minor=balance,
        paid_minor=paid,
        source_updated_at=_datetime(bill.get("updated_at")),
        **({"line_items": line_items} if line_items is not None else {}),
    )


def check_deliverable(snap: InvoiceSnapshot) -> None:
    """Refuse a mapped bill that could not reach its client: one still to be paid whose client
    has no email address (fixed in Clio by adding one to the contact)."""
    if snap.client_email is None and snap.state not in _NO_MAIL_STATES:
        raise MalformedBill(f"the client {snap.client_name} has no email address")


def bill_client_id(bill: Any) -> str | None:
    """The Clio contact id of a bill's client, as text, when the bill names one."""
    client = bill.get("client") if isinstance(bill, dict) else None
    if isinstance(client, dict) and client.get("id") is not None:
        return str(client["id"])
    return None


def bill_currency(bill: Any) -> str:
    """The currency code a bill's amounts are in (USD when it names none), unchecked."""
    cur = bill.get("currency") if isinstance(bill, dict) else None
    return str(cur.get("code") or "USD").upper() if isinstance(cur, dict) else "USD"


def line_bill_id(row: Any) -> str | None:
    """Whose line a bulk-listed line item is (its `bill{id}`), as text."""
    bill = row.get("bill") if isinstance(row, dict) else None
    if isinstance(bill, dict) and bill.get("id") is not None:
        return str(bill["id"])
    return None


# Clio's line item types: time and expense entries (ActivityLineItem, whose `kind` is Service or
# Expense), free-form lines and trust request lines (LineItem), lines shown at no charge
# (NoChargeLineItem) and lines a bill theme summarises (SummaryLineItem).
_QUANTITY_PLACES = Decimal("0.000001")


_QUANTITIES: dict[tuple[type, Any], str | None] = {}  # a few hundred values in practice


def _quantity(value: Any) -> str | None:
    """Hours or units as decimal text (Clio sends a JSON number): `1.5`, `0.25`, `3`."""
    kind = type(value)
    if kind is float or kind is int or kind is str:
        key = (kind, repr(value) if kind is float else value)  # -0.0 is not 0.0 here
        if key in _QUANTITIES:
            return _QUANTITIES[key]
        text = _quantity_text(value)
        if len(_QUANTITIES) < 4096:
            _QUANTITIES[key] = text
        return text
    return _quantity_text(value)


def _quantity_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite():
        return None
    # A float may carry noise (0.30000000000000004); no timekeeper records a millionth of an hour.
    number = number.quantize(_QUANTITY_PLACES).normalize()
    return f"{number:f}"


_LINE_DATES: dict[str, date | None] = {}  # a bill's lines share a few dates


def _line_date(value: Any) -> date | None:
    if type(value) is str and value in _LINE_DATES:
        return _LINE_DATES[value]
    try:
        when = _date(value, "date")
    except MalformedBill:
        when = None
    if type(value) is str and len(_LINE_DATES) < 4096:
        _LINE_DATES[value] = when
    return when


def line_items_from_clio(rows: list[Any], currency: str) -> list[LineItem]:
    """Map a bill's Clio line items (as fetched with LINE_ITEM_FIELDS) to LineItems, in the
    order the bill shows them (Clio's group_ordering, then by date).

    Line items are only what the PDF shows: the bill's total and balance stand on their own.
    So a line that cannot be read (no amount, not an object) is left out rather than holding
    back the whole bill, and the PDF shows the difference to the total as an adjustment.
    """
    keyed: list[tuple[tuple[int, date, int], LineItem]] = []
    for position, row in enumerate(rows):
        if not isinstance(row, dict):
            continue
        try:
            total = to_minor(row.get("total"), currency)
        except ValueError:
            continue
        try:
            rate = to_minor(row.get("price"), currency)
        except ValueError:
            rate = 0
        quantity = _quantity(row.get("quantity")) or "1"
        clio_type = row.get("type")
        clio_kind = row.get("kind")
        if clio_type == "LineItem":
            kind = "other"  # a trust request's line, or a free-form charge
        elif clio_kind == "Service":
            kind = "fee"
        elif clio_kind == "Expense":
            kind = "expense"
        else:
            kind = "other"
        if clio_type == "NoChargeLineItem":
            total = 0
        when = _line_date(row.get("date"))
        ordering = row.get("group_ordering")
        sort_key = (
            # Lines without a place on the bill go after those with one.
            ordering if isinstance(ordering, int) and not isinstance(ordering, bool) else 2**31,
            when or date.min,
            position,
        )
        # From a dict: pydantic-core validates it without the keyword call's overhead.
        item = LineItem.model_validate(
            {
                "kind": kind,
                "date": when,
                "description": str(row.get("description") or "").strip(),
                "quantity": quantity,
                "rate_minor": rate,
                "total_minor": total,
            }
        )
        keyed.append((sort_key, item))
    keyed.sort(key=lambda pair: pair[0])
    return [item for _, item in keyed]
