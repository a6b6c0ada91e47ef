"""Automated bill reminders with a controlled clock, on SQLite and PostgreSQL: the schedule
(15/15 default, 7-day minimum, before-due), catch-up after downtime, stopping on payment, the
quiet period after a manual send, suppressed addresses, the firm's days and business hours,
and each reminder going through the ordinary sending path."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from services.envelope.models import Email, EnvelopeSend, Reminder
from shared.events import FirmProfile, InvoiceState, ReminderSettings
from tests.envelope.reminders_world import FIRM_ID, World, at, bill, firm, world

__all__ = ["world"]

NOV = date(2026, 11, 1)


def day(n: int) -> date:
    """The n-th of November 2026 (past 30: into December)."""
    return NOV + timedelta(days=n - 1)


async def test_the_default_15_then_every_15_days_through_the_sending_path(world: World) -> None:
    await world.firm(firm())
    await world.bills(bill(1, day(1)), bill(2, day(10)))

    assert (await world.run(at(day(15)))).queued == 0
    first = await world.run(at(day(16)))
    assert first.queued == 1
    # Every minute that day: nothing more.
    for minute in range(1, 6):
        assert (await world.run(at(day(16), 10, minute))).queued == 0
    assert (await world.run(at(day(30), 16))).queued == 0
    assert (await world.run(at(day(31)))).queued == 1  # December 1st: 15 days later

    requests = await world.reminder_requests()
    assert len(requests) == 2
    req = requests[0]
    assert req["invoice_ids"] == ["clio:1", "clio:2"]  # oldest first
    assert req["to"] == ["ap@client77.test"] and req["pay_all_outstanding"] is True
    assert req["delivery"] == "link" and "Reminder from" in req["subject"]

    # The ordinary sending path composes it: a secure-link email, no attachments, and a
    # client link whose Pay All covers the whole balance.
    await world.deliver()
    async with world.service.sessionmaker() as s:
        emails = list(await s.scalars(select(Email).order_by(Email.created_at)))
        sends = list(await s.scalars(select(EnvelopeSend)))
    assert len(emails) == 2 and all(json.loads(e.attachments) == [] for e in emails)
    assert emails[0].subject.startswith("Reminder from Hartwell & Moreno LLP: invoice INV-1")
    assert "$1,600.03" in emails[0].text  # 800.01 + 800.02, the current balances
    assert {s.requested_by for s in sends} == {"reminders"}
    issued = await world.outbox("paylink.issued")
    assert len(issued) == 2 and all(e["pay_all_outstanding"] for e in issued)
    assert len(await world.outbox("email.requested")) == 2

    # The history shows each with its envelope, queued until the mailer says sent.
    out = await world.reminders.overview(FIRM_ID, 60)
    assert [h.status for h in out.history] == ["queued", "queued"]
    await world.mailed(requests[0]["send_id"], at(day(16), 10, 1))
    out = await world.reminders.overview(FIRM_ID, 60)
    assert sorted(h.status for h in out.history) == ["queued", "sent"]
    assert all(h.envelope_id for h in out.history)
    # Upcoming: the next slot, December 16th, with the amount and the address.
    [nxt] = out.upcoming
    assert (nxt.due_on, nxt.slot, nxt.reason) == (day(46), "c:2026-12-16", "every 15 days")
    assert nxt.amount_minor == 160_003 and nxt.to == ["ap@client77.test"]
    assert nxt.numbers == ["INV-1", "INV-2"] and not nxt.paused and nxt.blocked is None


async def test_every_is_at_least_7_days(world: World) -> None:
    with pytest.raises(ValidationError):
        ReminderSettings(enabled=True, every_days=6)
    with pytest.raises(ValidationError):
        FirmProfile.model_validate({"name": "x", "reminders": {"enabled": True, "every_days": 3}})
    await world.firm(firm(first_after_days=7, every_days=7))
    await world.bills(bill(1, day(1)))
    sent = [d for d in range(1, 31) if (await world.run(at(day(d)))).queued]
    assert sent == [8, 15, 22, 29]


async def test_before_due_date(world: World) -> None:
    await world.firm(firm(before_due_days=3))
    await world.bills(bill(1, day(1), due=day(12)), bill(2, day(2), due=day(25)))
    sent = [d for d in range(1, 31) if (await world.run(at(day(d)))).queued]
    # 3 days before each due date (9th, 22nd), and the cadence (16th).
    assert sent == [9, 16, 22]
    rows = await world.rows()
    assert [(r.slot, r.status) for r in rows] == [
        ("d:clio:1:2026-11-09", "queued"),
        ("c:2026-11-16", "queued"),
        ("d:clio:2:2026-11-22", "queued"),
    ]


async def test_catch_up_after_10_days_down_is_one_per_client_per_day(world: World) -> None:
    await world.firm(firm(every_days=7, before_due_days=3))
    await world.bills(
        bill(1, day(1), client="A", due=day(25)),  # A: 16th, 23rd, 30th; before due: 22nd
        bill(2, day(5), client="B", due=day(60)),  # B: 20th, 27th
        bill(3, day(6), client="C", due=day(60)),  # C: 21st, 28th
    )
    assert (await world.run(at(day(16)))).queued == 1  # A
    # Down from the 17th to the 26th; back on the 27th, every minute of the day.
    back = await world.run(at(day(27), 9))
    assert back.queued == 3
    for minute in range(1, 30):
        assert (await world.run(at(day(27), 9, minute))).queued == 0
    assert (await world.run(at(day(28)))).queued == 1  # C's 28th, on time
    assert (await world.run(at(day(29)))).queued == 0

    rows = await world.rows()
    queued = [(r.client_id, r.slot, r.sent_on) for r in rows if r.status == "queued"]
    assert queued == [
        ("A", "c:2026-11-16", day(16)),
        ("C", "c:2026-11-21", day(27)),
        ("A", "c:2026-11-23", day(27)),
        ("B", "c:2026-11-27", day(27)),
        ("C", "c:2026-11-28", day(28)),
    ]
    # One per client per day, and the older missed slots recorded as caught up.
    days = [(c, d) for c, _, d in queued]
    assert len(days) == len(set(days))
    skipped = {(r.client_id, r.slot): r.note for r in rows if r.status == "skipped"}
    # (B had never been reminded: its slot of the 20th, a whole period before its newest,
    # predates anything the scheduler knew of it and is not recorded.)
    assert skipped == {("A", "d:clio:1:2026-11-22"): "caught up: a later reminder covers it"}
    # Oldest due first: the order their sends were staged in.
    order = [r["client_id"] for r in await world.reminder_requests()]
    assert order == ["A", "C", "A", "B", "C"]


async def test_stops_on_payment_and_while_a_payment_is_processing(world: World) -> None:
    await world.firm(firm())
    await world.bills(
        bill(1, day(1), client="paid-here"),
        bill(2, day(1), client="ach"),
        bill(3, day(1), client="paid-in-clio"),
        bill(4, day(1), client="part"),
        bill(5, day(3), client="part"),
    )
    await world.pay("clio:1", 80_001)
    await world.pay("clio:2", 80_002, ach=True)
    await world.bills(
        bill(3, day(1), client="paid-in-clio", state=InvoiceState.paid, balance_minor=0)
    )
    await world.pay("clio:4", 80_004)  # one of two paid: the other is still reminded
    assert (await world.run(at(day(16)))).queued == 0
    # Counted from the oldest bill still unpaid, issued the 3rd.
    assert (await world.run(at(day(18)))).queued == 1
    [req] = await world.reminder_requests()
    assert req["client_id"] == "part" and req["invoice_ids"] == ["clio:5"]
    out = await world.reminders.overview(FIRM_ID, 60)
    assert [u.client_id for u in out.upcoming] == ["part"]


async def test_a_bill_paid_after_a_reminder_stops_the_next(world: World) -> None:
    await world.firm(firm())
    await world.bills(bill(1, day(1)))
    assert (await world.run(at(day(16)))).queued == 1
    await world.pay("clio:1", 80_001)
    assert (await world.run(at(day(31)))).queued == 0
    assert len(await world.rows()) == 1


@pytest.mark.parametrize(("sent_day", "reminded"), [(13, True), (14, False), (16, False)])
async def test_none_within_3_days_of_a_manual_send(
    world: World, sent_day: int, reminded: bool
) -> None:
    await world.firm(firm())
    await world.bills(bill(1, day(1)), bill(2, day(2)))
    moment = at(day(sent_day), 8)
    await world.manual_send("77", ["clio:2"], moment)
    result = await world.run(at(day(16), 11))
    assert (result.queued == 1) is reminded
    if not reminded:
        [row] = await world.rows()
        assert row.status == "skipped" and "by hand" in (row.note or "")
    # A reminder's own send never opens a quiet period: the next slot goes.
    assert (await world.run(at(day(31)))).queued == 1


async def test_a_failed_manual_send_is_not_a_send(world: World) -> None:
    await world.firm(firm())
    await world.bills(bill(1, day(1)))
    await world.manual_send("77", ["clio:1"], at(day(15)), to=[])  # refused: no recipient
    assert (await world.run(at(day(16)))).queued == 1


async def test_reminders_go_to_the_latest_manual_sends_addresses(world: World) -> None:
    await world.firm(firm())
    await world.bills(bill(1, day(1)))
    await world.manual_send("77", ["clio:1"], at(day(2)), to=["old@client.test"])
    await world.manual_send("77", ["clio:1"], at(day(3)), to=["ar@client.test", "cfo@client.test"])
    assert (await world.run(at(day(16)))).queued == 1
    [req] = await world.reminder_requests()
    assert req["to"] == ["ar@client.test", "cfo@client.test"]


async def test_never_to_a_suppressed_address(world: World) -> None:
    await world.firm(firm())
    await world.bills(bill(1, day(1), client="X"), bill(2, day(1), client="Y"))
    await world.manual_send("Y", ["clio:2"], at(day(2)), to=["bounce@y.test", "ok@y.test"])
    await world.suppress("ap@clientX.test")
    await world.suppress("Bounce@Y.test")
    assert (await world.run(at(day(16)))).queued == 1
    [req] = await world.reminder_requests()
    assert req["client_id"] == "Y" and req["to"] == ["ok@y.test"]
    [x] = [r for r in await world.rows() if r.client_id == "X"]
    assert x.status == "skipped" and "suppressed" in (x.note or "") and x.sent_on is None
    out = await world.reminders.overview(FIRM_ID, 60)
    [hx] = [h for h in out.history if h.client_id == "X"]
    assert hx.status == "skipped" and "suppressed" in (hx.note or "")
    [ux] = [u for u in out.upcoming if u.client_id == "X"]
    assert ux.blocked is not None and "suppressed" in ux.blocked


async def test_switched_off_for_a_client_or_a_bill(world: World) -> None:
    await world.firm(firm())
    await world.bills(
        bill(1, day(1), client="off"),
        bill(2, day(1), client="one-bill-off"),
        bill(3, day(8), client="one-bill-off"),
        bill(4, day(1), client="all-bills-off"),
    )
    assert await world.reminders.switch_client(FIRM_ID, "off", False)
    assert await world.reminders.switch_invoice(FIRM_ID, "clio:2", False)
    assert await world.reminders.switch_invoice(FIRM_ID, "clio:4", False)
    assert not await world.reminders.switch_client(FIRM_ID, "nobody", False)
    assert not await world.reminders.switch_invoice("other-firm", "clio:1", False)
    out = await world.reminders.overview(FIRM_ID, 60)
    assert out.paused_clients == ["off"] and out.paused_invoices == ["clio:2", "clio:4"]
    by_client = {u.client_id: u for u in out.upcoming}
    assert set(by_client) == {"off", "one-bill-off"} and by_client["off"].paused
    # The opted-out bill is left out: the cadence counts from the 8th.
    assert by_client["one-bill-off"].due_on == day(23)
    assert by_client["one-bill-off"].invoice_ids == ["clio:3"]

    assert (await world.run(at(day(16)))).queued == 0
    assert (await world.run(at(day(23)))).queued == 1
    [req] = await world.reminder_requests()
    assert req["invoice_ids"] == ["clio:3"]
    # Back on: the client's next slot goes (the missed one was recorded as skipped).
    assert await world.reminders.switch_client(FIRM_ID, "off", True)
    assert (await world.run(at(day(24)))).queued == 0
    assert (await world.run(at(day(31)))).queued == 1


async def test_reminders_off_for_the_firm(world: World) -> None:
    await world.firm(FirmProfile(name="Quiet LLP", reminders=ReminderSettings(enabled=False)))
    await world.bills(bill(1, day(1)))
    assert (await world.run(at(day(16)))).queued == 0
    assert await world.rows() == []
    out = await world.reminders.overview(FIRM_ID, 60)
    assert not out.enabled
    # What would go, shown before turning them on.
    assert [(u.due_on, u.blocked) for u in out.upcoming] == [
        (day(16), "reminders are off for the firm")
    ]


@pytest.mark.parametrize("zone", ["Pacific/Auckland", "America/Los_Angeles"])
async def test_the_firms_day_and_business_hours_never_a_day_early(world: World, zone: str) -> None:
    await world.firm(firm(zone))
    await world.bills(bill(1, day(1)))  # the firm's 1st: its slot is its 16th
    # Every hour of the two days around it, in UTC.
    sent_at = []
    for hour in range(48):
        moment = at(day(15), 0, tz="UTC") + timedelta(hours=hour)
        if (await world.run(moment)).queued:
            sent_at.append(moment)
    [moment] = sent_at
    assert moment == at(day(16), 9, tz=zone)  # the start of the firm's business hours
    [row] = await world.rows()
    assert row.sent_on == day(16) and row.due_on == day(16)
    if zone == "Pacific/Auckland":
        assert moment.date() == day(15)  # still the 15th in UTC, the 16th in Auckland


async def test_only_in_business_hours(world: World) -> None:
    await world.firm(firm(business_hours_start=13, business_hours_end=15))
    await world.bills(bill(1, day(1)))
    assert (await world.run(at(day(16), 12, 59))).queued == 0
    assert (await world.run(at(day(16), 15))).queued == 0
    assert (await world.run(at(day(16), 14, 59))).queued == 1


async def test_send_now(world: World) -> None:
    await world.firm(firm())
    await world.bills(bill(1, day(1)), bill(2, day(1), client="88"))
    world.clock.set(at(day(5), 20))  # outside business hours: a person asked
    sent = await world.reminders.send_now(FIRM_ID, "77")
    assert sent.queued and sent.envelope_id
    again = await world.reminders.send_now(FIRM_ID, "77")
    assert not again.queued and again.reason == "a reminder already went to this client today"
    await world.pay("clio:2", 80_002, ach=True)
    paid = await world.reminders.send_now(FIRM_ID, "88")
    assert not paid.queued and paid.reason == "nothing is owed"
    await world.manual_send("77", ["clio:1"], at(day(6)))
    world.clock.set(at(day(7), 11))
    quiet = await world.reminders.send_now(FIRM_ID, "77")
    assert not quiet.queued and "by hand" in (quiet.reason or "")
    async with world.service.sessionmaker() as s:
        rows = list(await s.scalars(select(Reminder).where(Reminder.status == "queued")))
    assert [r.slot for r in rows] == ["n:2026-11-05"]


async def test_send_now_and_the_slot_of_the_same_day_make_one_reminder(world: World) -> None:
    await world.firm(firm())
    await world.bills(bill(1, day(1)))
    world.clock.set(at(day(16), 8))  # before business hours, a person sends it now
    assert (await world.reminders.send_now(FIRM_ID, "77")).queued
    result = await world.run(at(day(16), 10))
    assert result.queued == 0 and result.skipped == 1
    rows = await world.rows()
    assert [(r.slot, r.status, r.note) for r in rows] == [
        ("n:2026-11-16", "queued", None),
        ("c:2026-11-16", "skipped", "a reminder already went to this client today"),
    ]
    assert len(await world.reminder_requests()) == 1


async def test_the_firms_reminder_template_and_a_broken_one(world: World) -> None:
    await world.firm(firm(subject="Still open: {{ invoice_numbers }}", body="Hi {{ client_name }}"))
    await world.bills(bill(1, day(1)), bill(2, day(1), client="88"))
    assert (await world.run(at(day(16)))).queued == 2
    await world.deliver()
    async with world.service.sessionmaker() as s:
        subjects = sorted(e.subject for e in await s.scalars(select(Email)))
    assert subjects == ["Still open: invoice INV-1", "Still open: invoice INV-2"]

    await world.firm(firm(subject="{{ no_such_field }}"))
    assert (await world.run(at(day(31)))).queued == 2
    await world.deliver()
    out = await world.reminders.overview(FIRM_ID, 60)
    failed = [h for h in out.history if h.status == "failed"]
    assert len(failed) == 2 and all("no_such_field" in (h.note or "") for h in failed)
