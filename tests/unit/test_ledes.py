"""LEDES 1998B: the parser's rules, the import's pure rules, and a fuzz of the parser: it never
raises on any input, and every line it refuses is named by its number."""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.sync import ledes
from services.sync.ledes_import import (
    build_snapshot,
    client_id_for,
    due_date,
    invoice_id_for,
    reimport_refusal,
    with_payments,
)
from shared.api.ledes import ImportOptions
from shared.events import InvoiceState


def line(**fields: str) -> dict[str, str]:
    base = {
        "INVOICE_DATE": "20261130",
        "INVOICE_NUMBER": "INV-1",
        "CLIENT_ID": "ACME",
        "LAW_FIRM_MATTER_ID": "M-7",
        "INVOICE_TOTAL": "1500.50",
        "BILLING_START_DATE": "20261101",
        "BILLING_END_DATE": "20261130",
        "INVOICE_DESCRIPTION": "November services",
        "LINE_ITEM_NUMBER": "1",
        "EXP/FEE/INV_ADJ_TYPE": "F",
        "LINE_ITEM_NUMBER_OF_UNITS": "2.5",
        "LINE_ITEM_ADJUSTMENT_AMOUNT": "0",
        "LINE_ITEM_TOTAL": "1000.00",
        "LINE_ITEM_DATE": "20261105",
        "LINE_ITEM_TASK_CODE": "L110",
        "LINE_ITEM_EXPENSE_CODE": "",
        "LINE_ITEM_ACTIVITY_CODE": "A101",
        "TIMEKEEPER_ID": "TK1",
        "LINE_ITEM_DESCRIPTION": "Draft motion",
        "LAW_FIRM_ID": "12-3456789",
        "LINE_ITEM_UNIT_COST": "400.00",
        "TIMEKEEPER_NAME": "Ellis, Morgan",
        "TIMEKEEPER_CLASSIFICATION": "PT",
        "CLIENT_MATTER_ID": "CM-9",
    }
    return {**base, **fields}


def two_lines(**invoice: str) -> list[dict[str, str]]:
    return [
        line(**invoice),
        line(
            LINE_ITEM_NUMBER="2",
            **{"EXP/FEE/INV_ADJ_TYPE": "E"},
            LINE_ITEM_TOTAL="500.50",
            LINE_ITEM_UNIT_COST="500.50",
            LINE_ITEM_NUMBER_OF_UNITS="1",
            LINE_ITEM_DESCRIPTION="Filing fee",
            **invoice,
        ),
    ]


def test_a_good_file_with_two_invoices() -> None:
    rows = two_lines() + [
        line(INVOICE_NUMBER="INV-2", INVOICE_TOTAL="75.00", LINE_ITEM_TOTAL="75.00")
    ]
    parsed = ledes.parse(ledes.render(rows).encode())
    assert parsed.errors == []
    assert [i.number for i in parsed.good] == ["INV-1", "INV-2"]
    first = parsed.good[0]
    assert first.total_minor == 150050
    assert [(i.line, i.kind, i.total_minor) for i in first.items] == [
        (3, "fee", 100000),
        (4, "expense", 50050),
    ]
    assert first.first_line == 3
    assert parsed.good[1].first_line == 5


def test_crlf_a_bom_and_a_trailing_blank_line_are_read() -> None:
    text = "\ufeff" + ledes.render(two_lines()).replace("\n", "\r\n") + "\r\n"
    parsed = ledes.parse(text.encode("utf-8"))
    assert parsed.errors == [] and len(parsed.good) == 1


def test_a_total_that_is_not_the_sum_rejects_the_invoice_and_keeps_the_others() -> None:
    rows = two_lines(INVOICE_TOTAL="1500.00") + [
        line(INVOICE_NUMBER="INV-2", INVOICE_TOTAL="75.00", LINE_ITEM_TOTAL="75.00")
    ]
    parsed = ledes.parse(ledes.render(rows))
    assert [i.number for i in parsed.good] == ["INV-2"]
    (bad,) = parsed.bad
    assert bad.number == "INV-1"
    assert [(e.line, e.reason) for e in bad.errors] == [
        (3, "INVOICE_TOTAL 1500.00 is not the sum of its LINE_ITEM_TOTALs (1500.50)")
    ]


def test_each_bad_line_is_reported_by_its_number() -> None:
    text = ledes.render(two_lines()).splitlines()
    text.insert(3, "only|three|fields[]")  # line 4
    text.append(text[2].removesuffix("[]"))  # line 6: no []
    text.append(
        ledes.render([line(INVOICE_NUMBER="INV-3", LINE_ITEM_DATE="20261345")]).splitlines()[2]
    )  # line 7
    parsed = ledes.parse("\n".join(text) + "\n")
    assert {(e.line, e.reason) for e in parsed.all_errors()} == {
        (4, "3 fields where LEDES 1998B has 24"),
        (6, "the line does not end with []"),
        (7, "LINE_ITEM_DATE is not a date (YYYYMMDD)"),
    }
    # Line 6 is INV-1's (its first fields say so): INV-1 is not imported without it.
    assert parsed.good == []
    assert [(i.number, [e.line for e in i.errors]) for i in parsed.bad] == [
        ("INV-1", [6]),
        ("INV-3", [7]),
    ]
    assert parsed.errors == [ledes.LineError(4, "3 fields where LEDES 1998B has 24")]


def test_a_broken_line_that_names_its_invoice_keeps_that_invoice_out() -> None:
    rows = two_lines() + [line(INVOICE_NUMBER="INV-2", INVOICE_TOTAL="0", LINE_ITEM_TOTAL="0")]
    text = ledes.render(rows).splitlines()
    # A third line of INV-1 with a zero total, cut short: INV-1 still adds up without it.
    text.insert(4, "|".join(text[2].split("|")[:10]) + "[]")
    parsed = ledes.parse("\n".join(text))
    assert [i.number for i in parsed.good] == ["INV-2"]
    assert [(e.line, e.reason) for e in parsed.bad[0].errors] == [
        (5, "10 fields where LEDES 1998B has 24")
    ]
    assert parsed.errors == []


def test_a_line_that_contradicts_its_invoice_is_an_error() -> None:
    rows = [line(), line(LINE_ITEM_NUMBER="2", INVOICE_DATE="20261201")]
    parsed = ledes.parse(ledes.render(rows))
    assert [(e.line, e.reason) for e in parsed.bad[0].errors] == [
        (4, "INVOICE_DATE differs from the invoice's first line (3)")
    ]


def test_bad_types_amounts_and_duplicates() -> None:
    rows = [
        line(INVOICE_TOTAL="1000.00"),
        line(
            INVOICE_TOTAL="1000.00",
            **{"EXP/FEE/INV_ADJ_TYPE": "X"},
            LINE_ITEM_TOTAL="1e3",
        ),
    ]
    reasons = {e.reason for e in ledes.parse(ledes.render(rows)).all_errors()}
    assert reasons == {
        "EXP/FEE/INV_ADJ_TYPE must be F, E, IF or IE",
        "LINE_ITEM_TOTAL is not an amount",
        "LINE_ITEM_NUMBER 1 appears twice",
    }


def test_the_first_two_lines_must_be_the_format_and_the_field_names() -> None:
    assert ledes.parse("LEDES98BI V2[]\n").errors[0] == ledes.LineError(
        1, "the first line must be LEDES1998B[]"
    )
    text = ledes.render([line()]).replace("CLIENT_ID|", "CUSTOMER|", 1)
    assert ledes.parse(text).errors == [
        ledes.LineError(2, "line 2 must be the 24 LEDES 1998B field names, in order")
    ]
    assert ledes.parse(b"").errors == [ledes.LineError(0, "the file is empty")]


def test_binary_junk_is_refused_as_not_text() -> None:
    parsed = ledes.parse(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert parsed.invoices == []
    assert parsed.errors[0] == ledes.LineError(1, "the first line must be LEDES1998B[]")
    text = ledes.render(two_lines()).encode()
    lines = text.splitlines()
    lines.insert(3, b"\xff\xfe|junk[]")
    lines.insert(4, b"x\x00y[]")
    parsed = ledes.parse(b"\n".join(lines))
    assert parsed.all_errors() == [
        ledes.LineError(4, "not text (bytes that are not ASCII or UTF-8)"),
        ledes.LineError(5, "not text (control characters)"),
    ]
    assert [i.number for i in parsed.good] == ["INV-1"]


def test_hostile_text_is_kept_as_data() -> None:
    rows = [line(LINE_ITEM_DESCRIPTION='=HYPERLINK("http://x")<script>', CLIENT_ID="<b>C</b>")]
    rows[0]["INVOICE_TOTAL"] = "1000.00"
    parsed = ledes.parse(ledes.render(rows))
    (inv,) = parsed.good
    assert inv.items[0].description == '=HYPERLINK("http://x")<script>'
    assert client_id_for(inv.client_id).startswith("ledes-")
    assert "<" not in client_id_for(inv.client_id)


# --- the import's rules ---------------------------------------------------------------------


def good_invoice() -> ledes.Invoice:
    return ledes.parse(ledes.render(two_lines())).good[0]


def test_a_snapshot_has_what_the_file_has_and_the_defaults_for_the_rest() -> None:
    inv = good_invoice()
    due = due_date(inv.date_of("INVOICE_DATE"), ImportOptions(due_days=30))
    snap = build_snapshot(inv, client_name="Acme Corp", client_email="ap@acme.test", due_at=due)
    assert snap.source == "ledes"
    assert snap.invoice_id == invoice_id_for(("12-3456789", "ACME", "INV-1"))
    assert snap.client_id == "ledes-ACME"
    assert (snap.total_minor, snap.balance_minor, snap.state) == (
        150050,
        150050,
        InvoiceState.awaiting_payment,
    )
    assert (snap.issued_at, snap.due_at) == (date(2026, 11, 30), date(2026, 12, 30))
    assert [li.total_minor for li in snap.line_items] == [100000, 50050]
    chosen = ImportOptions(due_date=date(2027, 1, 15))
    assert due_date(date(2026, 11, 30), chosen) == date(2027, 1, 15)


def test_ids_are_per_firm_client_and_number() -> None:
    assert invoice_id_for(("F", "C", "1")) != invoice_id_for(("F", "C2", "1"))
    assert invoice_id_for(("F", "C", "1")) == invoice_id_for(("F", "C", "1"))
    assert client_id_for("a/b") != client_id_for("a_b")
    assert "/" not in client_id_for("a/b")


def test_a_paid_invoice_is_never_reopened_by_a_reimport() -> None:
    snap = build_snapshot(good_invoice(), client_name="A", client_email=None, due_at=None)
    paid = with_payments(snap, 150050)
    assert (paid.state, paid.balance_minor) == (InvoiceState.paid, 0)
    assert reimport_refusal(paid, 150050, 150050) is not None
    assert reimport_refusal(paid, 150050, 999999) is not None
    # Partly paid: updated, unless the new total is below what was paid.
    assert reimport_refusal(snap, 50000, 150050) is None
    assert reimport_refusal(snap, 50000, 40000) is not None
    assert reimport_refusal(None, 0, 1) is None
    partly = build_snapshot(
        good_invoice(), client_name="A", client_email=None, due_at=None, paid_minor=50000
    )
    assert (partly.balance_minor, partly.state) == (100050, InvoiceState.awaiting_payment)


# --- fuzz -----------------------------------------------------------------------------------

FIELD_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="|\n"), max_size=12)
AMOUNTS = st.sampled_from(["0", "1.00", "-5", "12.345", "1e3", "", "NaN", "99999999999999"])


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # a plausible line, with a field or two spoiled
        row = line(
            INVOICE_NUMBER=draw(st.sampled_from(["A", "B", "C"])),
            INVOICE_TOTAL=draw(AMOUNTS),
            LINE_ITEM_TOTAL=draw(AMOUNTS),
            LINE_ITEM_NUMBER=draw(st.sampled_from(["1", "2", ""])),
        )
        name = draw(st.sampled_from(ledes.FIELDS))
        if draw(st.booleans()):
            row[name] = draw(FIELD_TEXT)
        return "|".join(row[n] for n in ledes.FIELDS) + draw(st.sampled_from(["[]", "", "[] "]))
    if kind == 1:  # random fields
        fields = draw(st.lists(FIELD_TEXT, max_size=30))
        return "|".join(fields) + draw(st.sampled_from(["[]", ""]))
    if kind == 2:
        return draw(st.text(alphabet=st.characters(exclude_characters="\n"), max_size=60))
    return ""


def check(parsed: ledes.Parsed, body_lines: int) -> None:
    reported = {e.line for e in parsed.all_errors()}
    assert all(0 <= n <= body_lines for n in reported)
    for inv in parsed.good:
        assert inv.total_minor == sum(i.total_minor for i in inv.items)
        assert not any(i.line in reported for i in inv.items)
    for inv in parsed.bad:
        assert inv.errors


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines(), max_size=12), st.booleans())
def test_fuzz_every_line_is_an_item_or_reported_by_number(body: list[str], as_bytes: bool) -> None:
    text = ledes.render([]) + "\n".join(body)
    parsed = ledes.parse(text.encode("utf-8", "surrogatepass") if as_bytes else text)
    check(parsed, len(body) + 2)
    # Every body line is an item of a good invoice, a reported error, or a bad invoice's line.
    accounted = {e.line for e in parsed.all_errors()}
    for inv in parsed.invoices:
        accounted |= {i.line for i in inv.items}
    last = max((n for n, raw in enumerate(body, start=3) if raw.strip()), default=2)
    for number, raw in enumerate(body[: last - 2], start=3):
        assert number in accounted, (number, raw)  # blank lines after the last are ignored


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_fuzz_bytes_never_crash(data: bytes) -> None:
    check(ledes.parse(data), data.count(b"\n") + 2)
    check(ledes.parse(b"LEDES1998B[]\n" + data), data.count(b"\n") + 3)


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_fuzz_text_never_crashes(text: str) -> None:
    check(ledes.parse(text), text.count("\n") + 2)
    header = ledes.render([])
    check(ledes.parse(header + text), text.count("\n") + 4)
