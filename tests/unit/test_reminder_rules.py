"""Automated reminders' rules (services/envelope/reminder_rules.py) alone: no broker, database
or HTTP. Dates are the firm's local dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.envelope import reminder_rules as rr
from shared.events import BillPayment, InvoiceState, ReminderSettings

DEFAULT = ReminderSettings(enabled=True)


def bill(n: int, issued: date, *, due: date | None = None, **changes: object) -> rr.Bill:
    values: dict[str, object] = {
        "invoice_id": f"clio:{n}",
        "number": f"INV-{n}",
        "client_id": "c1",
        "state": InvoiceState.awaiting_payment,
        "issued_at": issued,
        "due_at": due,
        "currency": "USD",
        "balance_minor": 10_000,
    }
    values.update(changes)
    return rr.Bill(**values)  # type: ignore[arg-type]


def state(*bills: rr.Bill, **changes: object) -> rr.ClientState:
    values: dict[str, object] = {"client_id": "c1", "bills": list(bills), "to": ["ap@client.test"]}
    values.update(changes)
    return rr.ClientState(**values)  # type: ignore[arg-type]


# --- slots -----------------------------------------------------------------------------------


def test_the_default_is_15_days_after_the_oldest_issue_then_every_15() -> None:
    items = [bill(2, date(2026, 11, 20)), bill(1, date(2026, 11, 1))]
    slots = rr.slots_between(items, DEFAULT, date(2026, 11, 1), date(2026, 12, 31))
    assert [s.on for s in slots] == [
        date(2026, 11, 16),
        date(2026, 12, 1),
        date(2026, 12, 16),
        date(2026, 12, 31),
    ]
    assert [s.key for s in slots][:2] == ["c:2026-11-16", "c:2026-12-01"]
    assert slots[0].reason == "15 days after issue" and slots[1].reason == "every 15 days"
    # Counted within a window, the same dates and keys (a slot's key never moves).
    later = rr.slots_between(items, DEFAULT, date(2026, 12, 2), date(2026, 12, 20))
    assert [s.key for s in later] == ["c:2026-12-16"]


@pytest.mark.parametrize("every", [0, 1, 6, 366])
def test_every_is_7_to_365_days(every: int) -> None:
    with pytest.raises(ValidationError):
        ReminderSettings(every_days=every)


def test_every_at_its_limits() -> None:
    items = [bill(1, date(2026, 1, 1))]
    weekly = ReminderSettings(first_after_days=1, every_days=7)
    assert [
        s.on.day for s in rr.slots_between(items, weekly, date(2026, 1, 1), date(2026, 1, 16))
    ] == [
        2,
        9,
        16,
    ]
    yearly = ReminderSettings(first_after_days=1, every_days=365)
    assert len(rr.slots_between(items, yearly, date(2026, 1, 1), date(2027, 12, 31))) == 2


def test_before_due_adds_a_slot_per_unpaid_bill_before_its_due_date() -> None:
    s = ReminderSettings(enabled=True, before_due_days=3)
    items = [
        bill(1, date(2026, 12, 1), due=date(2026, 12, 31)),
        bill(2, date(2026, 12, 5), due=date(2027, 1, 4)),
        bill(3, date(2026, 12, 5), due=date(2026, 12, 7)),  # due 2 days after issue: none
    ]
    slots = rr.slots_between(items, s, date(2026, 12, 1), date(2027, 1, 10))
    before = [x for x in slots if x.kind == rr.SlotKind.before_due]
    assert [(x.key, x.on) for x in before] == [
        ("d:clio:1:2026-12-28", date(2026, 12, 28)),
        ("d:clio:2:2027-01-01", date(2027, 1, 1)),
    ]
    assert before[0].reason == "3 days before INV-1 is due"
    assert [x.on for x in slots] == sorted(x.on for x in slots)


# --- what is owed ---------------------------------------------------------------------------


def test_paid_processing_and_opted_out_bills_are_never_listed() -> None:
    d = date(2026, 11, 1)
    bills = [
        bill(1, d),
        bill(2, d, state=InvoiceState.paid),
        bill(3, d, payment_status=BillPayment.paid_online, paid_online_minor=10_000),
        bill(4, d, payment_status=BillPayment.processing, processing_minor=10_000),
        bill(5, d, processing_minor=2_000),  # part of it on its way: not asked for now
        bill(6, d, balance_minor=0),
        bill(7, d, state=InvoiceState.draft),
        bill(8, d),
    ]
    assert [b.invoice_id for b in rr.unpaid(bills, {"clio:8"})] == ["clio:1"]


def test_unpaid_items_are_oldest_first_in_one_currency_and_at_most_ten() -> None:
    bills = [bill(n, date(2026, 1, 1) + timedelta(days=30 - n)) for n in range(1, 16)]
    bills.append(bill(99, date(2025, 1, 1), currency="CAD"))
    items = rr.unpaid(bills)
    assert items[0].invoice_id == "clio:99"
    env = rr.envelope_items(rr.unpaid(bills[:15]))
    assert len(env) == 10 and env[0].invoice_id == "clio:15"
    assert all(b.currency == "CAD" for b in rr.envelope_items(items))
    assert rr.amount(rr.unpaid(bills[:15])) == ("USD", 150_000)


# --- one client in one pass ------------------------------------------------------------------


def test_the_slot_due_goes_once_and_nothing_before_it() -> None:
    st = state(bill(1, date(2026, 11, 1)))
    assert rr.decide(st, DEFAULT, date(2026, 11, 15)).slot is None
    d = rr.decide(st, DEFAULT, date(2026, 11, 16))
    assert d.sends and d.slot is not None and d.slot.key == "c:2026-11-16"
    assert d.to == ["ap@client.test"] and [b.invoice_id for b in d.items] == ["clio:1"]
    claimed = state(
        bill(1, date(2026, 11, 1)),
        claimed=frozenset({"c:2026-11-16"}),
        last_claimed=date(2026, 11, 16),
    )
    assert rr.decide(claimed, DEFAULT, date(2026, 11, 16)).slot is None
    assert rr.decide(claimed, DEFAULT, date(2026, 11, 30)).slot is None
    assert rr.decide(claimed, DEFAULT, date(2026, 12, 1)).slot.key == "c:2026-12-01"  # type: ignore[union-attr]


def test_after_downtime_one_reminder_the_newest_slot_and_the_rest_caught_up() -> None:
    s = ReminderSettings(enabled=True, first_after_days=15, every_days=7)
    st = state(
        bill(1, date(2026, 11, 1)),
        claimed=frozenset({"c:2026-11-16"}),
        last_claimed=date(2026, 11, 16),
    )
    # Down from the 17th to the 3rd: the 23rd and the 30th were missed.
    d = rr.decide(st, s, date(2026, 12, 3))
    assert d.sends and d.slot is not None and d.slot.key == "c:2026-11-30"
    assert [(x.key, note) for x, note in d.skipped] == [("c:2026-11-23", rr.Note.caught_up)]


def test_two_slots_on_one_day_make_one_reminder() -> None:
    s = ReminderSettings(enabled=True, before_due_days=1)
    st = state(bill(1, date(2026, 11, 1), due=date(2026, 11, 17)))
    d = rr.decide(st, s, date(2026, 11, 16))
    assert d.sends and len(d.skipped) == 1 and d.skipped[0][1] == rr.Note.same_day


def test_a_client_is_reminded_at_most_once_a_local_day() -> None:
    st = state(bill(1, date(2026, 11, 1)), reminded_on=frozenset({date(2026, 11, 16)}))
    d = rr.decide(st, DEFAULT, date(2026, 11, 16))
    assert not d.sends and d.note == rr.Note.reminded_today


def test_nothing_for_a_client_whose_items_are_all_paid_or_out() -> None:
    d = date(2026, 11, 1)
    assert (
        rr.decide(state(bill(1, d, state=InvoiceState.paid)), DEFAULT, date(2026, 12, 1)).slot
        is None
    )
    st = state(bill(1, d), paused_invoices=frozenset({"clio:1"}))
    assert rr.decide(st, DEFAULT, date(2026, 12, 1)).slot is None
    assert rr.upcoming(st, DEFAULT, date(2026, 12, 1), 60) is None


def test_a_paused_client_records_the_slot_without_sending() -> None:
    st = state(bill(1, date(2026, 11, 1)), paused=True)
    d = rr.decide(st, DEFAULT, date(2026, 11, 16))
    assert not d.sends and d.note == rr.Note.client_off


@pytest.mark.parametrize(("sent_on", "quiet"), [(13, False), (14, True), (16, True)])
def test_none_within_3_days_of_a_manual_send_of_the_same_items(sent_on: int, quiet: bool) -> None:
    manual = rr.ManualSend(date(2026, 11, sent_on), frozenset({"clio:1"}))
    st = state(bill(1, date(2026, 11, 1)), manual_sends=[manual])
    d = rr.decide(st, DEFAULT, date(2026, 11, 16))
    if quiet:
        assert not d.sends and d.note is not None and "by hand" in d.note
    else:
        assert d.sends
    # A manual send of another client's (or other) bills does not count.
    other = state(
        bill(1, date(2026, 11, 1)),
        manual_sends=[rr.ManualSend(date(2026, 11, 16), frozenset({"clio:9"}))],
    )
    assert rr.decide(other, DEFAULT, date(2026, 11, 16)).sends


def test_suppressed_addresses_are_dropped_and_none_left_is_a_skip() -> None:
    st = state(
        bill(1, date(2026, 11, 1)),
        to=["Bounce@Client.test", "ap@client.test"],
        suppressed=frozenset({"bounce@client.test"}),
    )
    assert rr.decide(st, DEFAULT, date(2026, 11, 16)).to == ["ap@client.test"]
    only = state(
        bill(1, date(2026, 11, 1)),
        to=["bounce@client.test"],
        suppressed=frozenset({"bounce@client.test"}),
    )
    d = rr.decide(only, DEFAULT, date(2026, 11, 16))
    assert not d.sends and d.note is not None and "suppressed" in d.note
    none = state(bill(1, date(2026, 11, 1)), to=[])
    assert rr.decide(none, DEFAULT, date(2026, 11, 16)).note == rr.Note.no_email


def test_send_now_ignores_the_cadence_but_not_the_rest() -> None:
    st = state(bill(1, date(2026, 11, 10)))
    d = rr.send_now(st, DEFAULT, date(2026, 11, 11))
    assert d.sends and d.slot is not None and d.slot.key == "n:2026-11-11"
    again = state(bill(1, date(2026, 11, 10)), claimed=frozenset({"n:2026-11-11"}))
    assert not rr.send_now(again, DEFAULT, date(2026, 11, 11)).sends
    off = ReminderSettings(enabled=False)
    assert rr.send_now(st, off, date(2026, 11, 11)).note == rr.Note.firm_off
    paid = state(
        bill(1, date(2026, 11, 10), payment_status=BillPayment.processing, processing_minor=1)
    )
    assert rr.send_now(paid, DEFAULT, date(2026, 11, 11)).note == rr.Note.no_items


def test_upcoming_is_the_next_slot_not_recorded_with_why_it_would_not_go() -> None:
    st = state(
        bill(1, date(2026, 11, 1)),
        claimed=frozenset({"c:2026-11-16"}),
        last_claimed=date(2026, 11, 16),
    )
    found = rr.upcoming(st, DEFAULT, date(2026, 11, 16), 60)
    assert found is not None and found[0].key == "c:2026-12-01" and found[1] is None
    assert rr.upcoming(st, DEFAULT, date(2026, 11, 16), 10) is None
    paused = state(bill(1, date(2026, 11, 1)), paused=True)
    assert rr.upcoming(paused, DEFAULT, date(2026, 11, 2), 30) == (
        rr.slots_between(paused.bills, DEFAULT, date(2026, 11, 16), date(2026, 11, 16))[0],
        rr.Note.client_off,
    )


# --- the firm's day and hours ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "zone", "day", "open_"),
    [
        # Auckland is UTC+13 in December: its 16th starts while UTC is still on the 15th.
        (datetime(2026, 12, 15, 21, 0, tzinfo=UTC), "Pacific/Auckland", date(2026, 12, 16), True),
        (datetime(2026, 12, 15, 19, 0, tzinfo=UTC), "Pacific/Auckland", date(2026, 12, 16), False),
        # Los Angeles is UTC-8: UTC's 16th at 03:00 is still the 15th there, in the evening.
        (
            datetime(2026, 12, 16, 3, 0, tzinfo=UTC),
            "America/Los_Angeles",
            date(2026, 12, 15),
            False,
        ),
        (
            datetime(2026, 12, 16, 16, 59, tzinfo=UTC),
            "America/Los_Angeles",
            date(2026, 12, 16),
            False,
        ),
        (
            datetime(2026, 12, 16, 17, 0, tzinfo=UTC),
            "America/Los_Angeles",
            date(2026, 12, 16),
            True,
        ),
        (
            datetime(2026, 12, 17, 0, 59, tzinfo=UTC),
            "America/Los_Angeles",
            date(2026, 12, 16),
            True,
        ),
        (
            datetime(2026, 12, 17, 1, 0, tzinfo=UTC),
            "America/Los_Angeles",
            date(2026, 12, 16),
            False,
        ),
        (datetime(2026, 12, 16, 9, 0, tzinfo=UTC), "No/Such_Zone", date(2026, 12, 16), True),
    ],
)
def test_the_firms_day_and_business_hours(utc: datetime, zone: str, day: date, open_: bool) -> None:
    assert rr.firm_today(utc, zone) == day
    assert rr.in_business_hours(utc, zone, DEFAULT) is open_


def test_a_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        rr.firm_today(datetime(2026, 12, 16, 9), "UTC")


def test_next_opening_is_the_local_start_of_business_hours() -> None:
    at = rr.next_opening(date(2026, 12, 16), DEFAULT, "Pacific/Auckland")
    assert at.astimezone(UTC) == datetime(2026, 12, 15, 20, 0, tzinfo=UTC)


def test_a_client_never_reminded_gets_its_newest_slot_and_no_row_per_older_one() -> None:
    # Bills from months ago, reminders just turned on (or the client is new to the
    # scheduler): one reminder, the newest slot; the slots before one period back are not
    # "missed", they predate the scheduler's knowledge of the client.
    st = state(bill(1, date(2026, 6, 1)), bill(2, date(2026, 7, 1)))
    d = rr.decide(st, DEFAULT, date(2026, 11, 20))
    assert d.sends and d.slot is not None and d.slot.key == "c:2026-11-13"
    assert d.skipped == []
    assert rr.lookback_start(DEFAULT, date(2026, 11, 20), None) == date(2026, 11, 6)
    assert rr.lookback_start(DEFAULT, date(2026, 11, 20), date(2026, 11, 10)) == date(2026, 11, 10)
    # However long ago, at most MAX_CATCH_UP_RECORDED rows for the skipped ones.
    weekly = ReminderSettings(enabled=True, first_after_days=1, every_days=7, before_due_days=1)
    many = state(
        *[
            bill(n, date(2026, 1, 1) + timedelta(days=n), due=date(2026, 6, 1) + timedelta(days=n))
            for n in range(30)
        ],
        claimed=frozenset({"c:2026-01-02"}),
        last_claimed=date(2026, 1, 2),
    )
    d = rr.decide(many, weekly, date(2026, 12, 1))
    assert d.sends and len(d.skipped) == rr.MAX_CATCH_UP_RECORDED
