"""LEDES 1998B, read and checked: pure functions over the file's bytes, no database.

A file is `LEDES1998B[]`, then the 24 field names, then one line per line item, every line
ending in `[]`; a file may hold several invoices. Every line that cannot be read is reported
by its number (1-based, as an editor shows it) with the reason; an invoice with any bad line,
or whose INVOICE_TOTAL is not the sum of its LINE_ITEM_TOTALs, is rejected whole, and the
file's good invoices still come through."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

from shared.money import to_minor

FIELDS = (
    "INVOICE_DATE",
    "INVOICE_NUMBER",
    "CLIENT_ID",
    "LAW_FIRM_MATTER_ID",
    "INVOICE_TOTAL",
    "BILLING_START_DATE",
    "BILLING_END_DATE",
    "INVOICE_DESCRIPTION",
    "LINE_ITEM_NUMBER",
    "EXP/FEE/INV_ADJ_TYPE",
    "LINE_ITEM_NUMBER_OF_UNITS",
    "LINE_ITEM_ADJUSTMENT_AMOUNT",
    "LINE_ITEM_TOTAL",
    "LINE_ITEM_DATE",
    "LINE_ITEM_TASK_CODE",
    "LINE_ITEM_EXPENSE_CODE",
    "LINE_ITEM_ACTIVITY_CODE",
    "TIMEKEEPER_ID",
    "LINE_ITEM_DESCRIPTION",
    "LAW_FIRM_ID",
    "LINE_ITEM_UNIT_COST",
    "TIMEKEEPER_NAME",
    "TIMEKEEPER_CLASSIFICATION",
    "CLIENT_MATTER_ID",
)
IDX = {name: i for i, name in enumerate(FIELDS)}
FIRST_LINE = "LEDES1998B"
TYPES = {"F": "fee", "E": "expense", "IF": "fee", "IE": "expense"}
# Invoice-level fields every line of one invoice must repeat identically.
INVOICE_FIELDS = (
    "INVOICE_DATE",
    "LAW_FIRM_MATTER_ID",
    "INVOICE_TOTAL",
    "BILLING_START_DATE",
    "BILLING_END_DATE",
    "INVOICE_DESCRIPTION",
    "CLIENT_MATTER_ID",
)
MAX_ID = 100  # characters in an id (invoice number, client, firm, matter)
MAX_TEXT = 2000  # characters in a description
MAX_AMOUNT = Decimal("1000000000")  # a billion: anything beyond is a typo, not a bill
_AMOUNT_RE = re.compile(r"^-?\d{1,12}(\.\d{1,4})?$")
_UNITS_RE = re.compile(r"^-?\d{1,9}(\.\d{1,4})?$")


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based; 0 for the file as a whole
    reason: str


@dataclass(frozen=True)
class Item:
    line: int
    number: str
    kind: str  # fee, expense
    adjustment: bool
    units: str
    unit_cost_minor: int
    adjustment_minor: int
    total_minor: int
    date: date | None
    description: str
    timekeeper: str


@dataclass
class Invoice:
    key: tuple[str, str, str]  # (LAW_FIRM_ID, CLIENT_ID, INVOICE_NUMBER)
    first_line: int
    fields: dict[str, str]
    items: list[Item] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)

    @property
    def law_firm_id(self) -> str:
        return self.key[0]

    @property
    def client_id(self) -> str:
        return self.key[1]

    @property
    def number(self) -> str:
        return self.key[2]

    @property
    def total_minor(self) -> int:
        return to_minor(self.fields["INVOICE_TOTAL"])

    @property
    def ok(self) -> bool:
        return not self.errors

    def date_of(self, name: str) -> date | None:
        return _date(self.fields.get(name, ""))


@dataclass
class Parsed:
    invoices: list[Invoice]
    errors: list[LineError]  # lines that belong to no invoice, or the file as a whole

    @property
    def good(self) -> list[Invoice]:
        return [i for i in self.invoices if i.ok]

    @property
    def bad(self) -> list[Invoice]:
        return [i for i in self.invoices if not i.ok]

    def all_errors(self) -> list[LineError]:
        found = list(self.errors)
        for inv in self.invoices:
            found.extend(inv.errors)
        return sorted(set(found), key=lambda e: (e.line, e.reason))


def _date(text: str) -> date | None:
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _amount(text: str) -> Decimal | None:
    if not _AMOUNT_RE.match(text):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if abs(value) <= MAX_AMOUNT else None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def split_lines(data: bytes | str) -> list[str | LineError]:
    """The file's lines, each decoded on its own: a line that is not text (bytes that are not
    UTF-8, of which ASCII is part, or control characters) is an error on that line alone."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    out: list[str | LineError] = []
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            text = chunk.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError:
            out.append(LineError(number, "not text (bytes that are not ASCII or UTF-8)"))
            continue
        if _CONTROL.search(text):
            out.append(LineError(number, "not text (control characters)"))
            continue
        out.append(text)
    while out and isinstance(out[-1], str) and out[-1].strip() == "":
        out.pop()  # trailing newlines, as editors leave them
    return out


def _strip_end(raw: str) -> str | None:
    text = raw.rstrip("\r\n").rstrip()
    return text[:-2] if text.endswith("[]") else None


def parse(data: bytes | str) -> Parsed:
    """Read a LEDES 1998B file. Never raises on any input: what cannot be read is an error."""
    lines = split_lines(data)
    errors: list[LineError] = []
    if not lines:
        return Parsed([], [LineError(0, "the file is empty")])
    first = lines[0]
    if isinstance(first, LineError) or _strip_end(first) != FIRST_LINE:
        errors.append(LineError(1, "the first line must be LEDES1998B[]"))
    if len(lines) < 2:
        errors.append(LineError(0, "the file has no field names line (line 2)"))
        return Parsed([], errors)
    second = lines[1]
    header = _strip_end(second) if isinstance(second, str) else None
    names = [n.strip().upper() for n in header.split("|")] if header is not None else []
    if tuple(names) != FIELDS:
        errors.append(LineError(2, "line 2 must be the 24 LEDES 1998B field names, in order"))
    if errors:
        # Without a recognisable header no line can be trusted to mean what it says.
        return Parsed([], errors)
    invoices: OrderedDict[tuple[str, str, str], Invoice] = OrderedDict()
    for number, raw in enumerate(lines[2:], start=3):
        if isinstance(raw, LineError):
            errors.append(raw)
            continue
        if raw.strip() == "":
            errors.append(LineError(number, "an empty line"))
            continue
        body = _strip_end(raw)
        if body is None:
            errors.append(LineError(number, "the line does not end with []"))
            continue
        values = [v.strip() for v in body.split("|")]
        if len(values) != len(FIELDS):
            errors.append(
                LineError(number, f"{len(values)} fields where LEDES 1998B has {len(FIELDS)}")
            )
            continue
        row = dict(zip(FIELDS, values, strict=True))
        key = (row["LAW_FIRM_ID"], row["CLIENT_ID"], row["INVOICE_NUMBER"])
        if not all(key) or any(len(k) > MAX_ID for k in key):
            errors.append(
                LineError(
                    number,
                    f"LAW_FIRM_ID, CLIENT_ID and INVOICE_NUMBER are required "
                    f"(at most {MAX_ID} characters)",
                )
            )
            continue
        inv = invoices.get(key)
        if inv is None:
            inv = invoices[key] = Invoice(key=key, first_line=number, fields=row)
        _check_line(inv, number, row)
    errors = _attribute(errors, lines, invoices)
    for inv in invoices.values():
        _check_invoice(inv)
    return Parsed(list(invoices.values()), errors)


def _attribute(
    errors: list[LineError],
    lines: list[str | LineError],
    invoices: OrderedDict[tuple[str, str, str], Invoice],
) -> list[LineError]:
    """A line too broken to read whole (a missing field, no []) still names its invoice in
    its first fields, usually: that invoice is then not imported without it. The errors that
    name no invoice are returned."""
    by_number: dict[tuple[str, str], list[Invoice]] = {}
    for inv in invoices.values():
        by_number.setdefault((inv.number, inv.client_id), []).append(inv)
    loose: list[LineError] = []
    for error in errors:
        text = lines[error.line - 1] if 0 < error.line <= len(lines) else None
        fields = text.removesuffix("[]").split("|") if isinstance(text, str) else []
        owners = by_number.get((fields[1].strip(), fields[2].strip())) if len(fields) > 2 else None
        if not owners:
            loose.append(error)
        for inv in owners or ():
            inv.errors.append(error)
    return loose


def _check_line(inv: Invoice, n: int, row: dict[str, str]) -> None:
    problems: list[str] = []
    if inv.first_line == n:
        problems.extend(_invoice_problems(row))
    else:
        for name in INVOICE_FIELDS:
            if row[name] != inv.fields[name]:
                problems.append(f"{name} differs from the invoice's first line ({inv.first_line})")
    kind = TYPES.get(row["EXP/FEE/INV_ADJ_TYPE"].upper())
    if kind is None:
        problems.append("EXP/FEE/INV_ADJ_TYPE must be F, E, IF or IE")
    total = _amount(row["LINE_ITEM_TOTAL"])
    if total is None:
        problems.append("LINE_ITEM_TOTAL is not an amount")
    adjustment = _amount(row["LINE_ITEM_ADJUSTMENT_AMOUNT"] or "0")
    if adjustment is None:
        problems.append("LINE_ITEM_ADJUSTMENT_AMOUNT is not an amount")
    cost = _amount(row["LINE_ITEM_UNIT_COST"] or "0")
    if cost is None:
        problems.append("LINE_ITEM_UNIT_COST is not an amount")
    units = row["LINE_ITEM_NUMBER_OF_UNITS"] or "1"
    if not _UNITS_RE.match(units):
        problems.append("LINE_ITEM_NUMBER_OF_UNITS is not a number")
    when = _date(row["LINE_ITEM_DATE"]) if row["LINE_ITEM_DATE"] else None
    if row["LINE_ITEM_DATE"] and when is None:
        problems.append("LINE_ITEM_DATE is not a date (YYYYMMDD)")
    if not row["LINE_ITEM_NUMBER"] or len(row["LINE_ITEM_NUMBER"]) > MAX_ID:
        problems.append("LINE_ITEM_NUMBER is required")
    elif any(i.number == row["LINE_ITEM_NUMBER"] for i in inv.items):
        problems.append(f"LINE_ITEM_NUMBER {row['LINE_ITEM_NUMBER']} appears twice")
    if len(row["LINE_ITEM_DESCRIPTION"]) > MAX_TEXT:
        problems.append(f"LINE_ITEM_DESCRIPTION is longer than {MAX_TEXT} characters")
    if problems:
        inv.errors.extend(LineError(n, p) for p in problems)
        return
    assert kind is not None and total is not None and adjustment is not None and cost is not None
    inv.items.append(
        Item(
            line=n,
            number=row["LINE_ITEM_NUMBER"],
            kind=kind,
            adjustment=row["EXP/FEE/INV_ADJ_TYPE"].upper().startswith("I"),
            units=units,
            unit_cost_minor=to_minor(cost),
            adjustment_minor=to_minor(adjustment),
            total_minor=to_minor(total),
            date=when,
            description=row["LINE_ITEM_DESCRIPTION"],
            timekeeper=row["TIMEKEEPER_NAME"],
        )
    )


def _invoice_problems(row: dict[str, str]) -> list[str]:
    problems = []
    if _date(row["INVOICE_DATE"]) is None:
        problems.append("INVOICE_DATE is not a date (YYYYMMDD)")
    for name in ("BILLING_START_DATE", "BILLING_END_DATE"):
        if row[name] and _date(row[name]) is None:
            problems.append(f"{name} is not a date (YYYYMMDD)")
    if _amount(row["INVOICE_TOTAL"]) is None:
        problems.append("INVOICE_TOTAL is not an amount")
    if len(row["INVOICE_DESCRIPTION"]) > MAX_TEXT:
        problems.append(f"INVOICE_DESCRIPTION is longer than {MAX_TEXT} characters")
    for name in ("LAW_FIRM_MATTER_ID", "CLIENT_MATTER_ID"):
        if len(row[name]) > MAX_ID:
            problems.append(f"{name} is longer than {MAX_ID} characters")
    return problems


def _check_invoice(inv: Invoice) -> None:
    if inv.errors:
        return
    total = to_minor(inv.fields["INVOICE_TOTAL"])
    summed = sum(i.total_minor for i in inv.items)
    if total != summed:
        inv.errors.append(
            LineError(
                inv.first_line,
                f"INVOICE_TOTAL {inv.fields['INVOICE_TOTAL']} is not the sum of its "
                f"LINE_ITEM_TOTALs ({_plain(summed)})",
            )
        )
    elif total < 0:
        inv.errors.append(LineError(inv.first_line, "INVOICE_TOTAL is negative"))


def _plain(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100}.{abs(minor) % 100:02d}"


def render(rows: list[dict[str, str]]) -> str:
    """A LEDES 1998B file of `rows` (field name → value; missing fields empty): for tests,
    fixtures and the sample the import page offers."""
    out = [f"{FIRST_LINE}[]", "|".join(FIELDS) + "[]"]
    for row in rows:
        out.append("|".join(row.get(name, "") for name in FIELDS) + "[]")
    return "\n".join(out) + "\n"
