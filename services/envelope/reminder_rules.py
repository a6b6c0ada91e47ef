"""Automated bill reminders' decisions, as pure functions over plain data (no database, bus
or HTTP): which of a client's bills a reminder is about, its slots (the days it is due, each
with a key that makes it unique for the client), when a firm's reminders may go out, and
what one pass does for one client: send the most recent slot due, record the others as
skipped, or record why it will not go. services/envelope/reminders.py does the I/O;
tests/unit/test_reminder_rules.py pins these.

Days are the firm's (its IANA time zone), never UTC's nor the client's: a slot is due from
the start of the firm's business hours on its local date."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.envelope.rules import outstanding
from shared.events import ReminderSettings

# EnvelopeSend.requested_by (and Envelope.created_by) of a reminder: every other sender is a
# person, and only a person's send or re-send opens the quiet period.
REMINDER_SENDER = "reminders"
MAX_ITEMS = 10  # bills in one reminder envelope, oldest first; Pay All covers them all
# A client never seen by the scheduler before gets at most this many missed slots recorded
# (the newest is sent, the rest skipped); older ones are not worth a row each.
MAX_CATCH_UP_RECORDED = 10

DEFAULT_SUBJECT = "Reminder from {{ firm_name }}: {{ invoice_numbers }} ({{ amount_due }} due)"
DEFAULT_BODY = (
    "Dear {{ client_name }},\n\n"
    "This is a friendly reminder that {{ invoice_numbers }} for {{ amount_due }} "
    "remains unpaid (due {{ due_date }}). You can view each bill and pay online, by card or "
    "bank transfer (ACH), using the buttons below; Pay All settles your whole balance.\n\n"
    "If you have already paid, thank you, and please disregard this message.\n\n"
    "{{ firm_name }}"
)


class SlotKind(StrEnum):
    cadence = "cadence"  # first_after_days after the oldest issue date, then every_days
    before_due = "before_due"  # before_due_days before a bill's due date
    now = "now"  # a person's Send now


class Note(StrEnum):
    """Why a slot was recorded without a reminder (or why an upcoming one will not go)."""

    caught_up = "caught up: a later reminder covers it"
    same_day = "another reminder went to this client that day"
    reminded_today = "a reminder already went to this client today"
    client_off = "reminders are off for this client"
    firm_off = "reminders are off for the firm"
    quiet = "sent by hand on {day}, within {days} days"
    no_email = "the client has no email address"
    suppressed = "every address bounced and is suppressed: {addresses}"
    no_items = "nothing is owed"


class Bill(NamedTuple):
    """What the rules need of a bill (services.envelope.models.Invoice has these). A tuple:
    a pass makes one per unpaid bill of the firm, 50,000 of them for a large one."""

    invoice_id: str
    number: str
    client_id: str
    state: str
    issued_at: date | None
    due_at: date | None
    currency: str
    balance_minor: int
    paid_online_minor: int | None = 0
    payment_status: str | None = None
    processing_minor: int | None = 0


@dataclass(frozen=True, order=True)
class Slot:
    on: date  # the firm's local date it is due
    key: str  # unique for the client: "c:2026-12-22", "d:<invoice id>:2026-12-19", "n:..."
    kind: SlotKind = field(compare=False)
    reason: str = field(compare=False)
    invoice_id: str | None = field(default=None, compare=False)


def cadence_key(on: date) -> str:
    return f"c:{on.isoformat()}"


def before_due_key(invoice_id: str, on: date) -> str:
    return f"d:{invoice_id}:{on.isoformat()}"


def now_key(on: date) -> str:
    return f"n:{on.isoformat()}"


# --- what is owed --------------------------------------------------------------------------


def owed(bill: Bill) -> int:
    """What a reminder may ask for on this bill: nothing once paid, paid online, or while any
    payment of it is processing (an ACH not yet settled)."""
    if (bill.processing_minor or 0) > 0:
        return 0
    return outstanding(bill.state, bill.balance_minor, bill.paid_online_minor, bill.payment_status)


def _age(bill: Bill) -> tuple[date, date, str]:
    return (bill.issued_at or date.max, bill.due_at or date.max, bill.number)


def unpaid(
    bills: Iterable[Bill], paused_invoices: frozenset[str] | set[str] = frozenset()
) -> list[Bill]:
    """The bills a reminder is about, oldest first: owed, and not switched off one by one."""
    return sorted(
        (b for b in bills if owed(b) > 0 and b.invoice_id not in paused_invoices), key=_age
    )


def envelope_items(items: Sequence[Bill]) -> list[Bill]:
    """A reminder's bills: the oldest first, in the oldest bill's currency, at most
    MAX_ITEMS (its Pay All covers the client's whole balance)."""
    if not items:
        return []
    currency = items[0].currency
    return [b for b in items if b.currency == currency][:MAX_ITEMS]


def amount(items: Sequence[Bill]) -> tuple[str, int]:
    """The currency and the total owed of `items` in the first one's currency."""
    if not items:
        return "USD", 0
    currency = items[0].currency
    return currency, sum(owed(b) for b in items if b.currency == currency)


# --- slots ---------------------------------------------------------------------------------


def _cadence_reason(n: int, settings: ReminderSettings) -> str:
    if n == 0:
        return f"{settings.first_after_days} days after issue"
    return f"every {settings.every_days} days"


def slots_between(
    items: Sequence[Bill], settings: ReminderSettings, start: date, end: date
) -> list[Slot]:
    """Every slot of a client with these unpaid `items` on a date in [start, end], by date:
    the cadence counted from the oldest issue date, and (when set) a slot before each due
    date (none before the bill was issued, nor on its issue day)."""
    if end < start or not items:
        return []
    out: list[Slot] = []
    issued = [b.issued_at for b in items if b.issued_at is not None]
    if issued:
        first = min(issued) + timedelta(days=settings.first_after_days)
        every = settings.every_days
        n = 0 if start <= first else -(-(start - first).days // every)
        day = first + timedelta(days=n * every)
        while day <= end:
            out.append(Slot(day, cadence_key(day), SlotKind.cadence, _cadence_reason(n, settings)))
            n += 1
            day += timedelta(days=every)
    if settings.before_due_days is not None:
        for b in items:
            if b.due_at is None:
                continue
            day = b.due_at - timedelta(days=settings.before_due_days)
            if b.issued_at is not None and day <= b.issued_at:
                continue
            if start <= day <= end:
                out.append(
                    Slot(
                        day,
                        before_due_key(b.invoice_id, day),
                        SlotKind.before_due,
                        f"{settings.before_due_days} days before {b.number} is due",
                        b.invoice_id,
                    )
                )
    return sorted(out)


def lookback_start(settings: ReminderSettings, today: date, last_claimed: date | None) -> date:
    """The earliest date a slot due today may still be pending from: the client's last
    recorded slot within the last cadence period (its other slots that day may not be), or,
    with none (a client never reminded, new bills, reminders just turned on, a long
    downtime), one period back: enough for its most recent slot, without a row for each
    older one. The caller reads the slots recorded within `every_days` of today."""
    if last_claimed is not None:
        return last_claimed
    return today - timedelta(days=settings.every_days - 1)


# --- the firm's day and hours --------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The firm's time zone; an unknown name falls back to UTC rather than stopping its
    reminders."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local(now: datetime, time_zone: str) -> datetime:
    if now.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one")
    return now.astimezone(zone(time_zone))


def firm_today(now: datetime, time_zone: str) -> date:
    return local(now, time_zone).date()


def in_business_hours(now: datetime, time_zone: str, settings: ReminderSettings) -> bool:
    """Whether reminders may go out at `now`: within the firm's local business hours."""
    hour = local(now, time_zone).hour
    return settings.business_hours_start <= hour < settings.business_hours_end


def next_opening(after: date, settings: ReminderSettings, time_zone: str) -> datetime:
    """When a slot on local date `after` may first go: the start of that day's business
    hours, in the firm's zone."""
    return datetime(
        after.year, after.month, after.day, settings.business_hours_start, tzinfo=zone(time_zone)
    )


# --- one client in one pass ----------------------------------------------------------------


@dataclass(frozen=True)
class ManualSend:
    """A person's send or re-send (not a reminder) of some of the client's bills."""

    on: date  # the firm's local date it was requested
    invoice_ids: frozenset[str]


@dataclass(frozen=True)
class ClientState:
    """What a pass knows of a client: its bills (all of them: paid ones are dropped here),
    its switches, the slots already recorded, its recent manual sends and its addresses."""

    client_id: str
    bills: Sequence[Bill]
    paused: bool = False
    paused_invoices: frozenset[str] = frozenset()
    claimed: frozenset[str] = frozenset()  # slot keys recorded
    last_claimed: date | None = None  # the latest date of a recorded slot
    reminded_on: frozenset[date] = frozenset()  # local dates a reminder went (queued)
    manual_sends: Sequence[ManualSend] = ()
    to: Sequence[str] = ()  # the latest manual send's addresses, else the bill's client email
    suppressed: frozenset[str] = frozenset()  # lower-cased


@dataclass(frozen=True)
class Decision:
    """What one pass does for one client: `send` (with `items` to `to`), or record `send`'s
    slot as skipped with `note`; `skipped` are older or same-day slots recorded as skipped."""

    slot: Slot | None
    items: list[Bill] = field(default_factory=list)
    to: list[str] = field(default_factory=list)
    note: str | None = None  # set: `slot` is recorded skipped, not sent
    skipped: list[tuple[Slot, str]] = field(default_factory=list)

    @property
    def sends(self) -> bool:
        return self.slot is not None and self.note is None


def deliverable(to: Sequence[str], suppressed: frozenset[str]) -> list[str]:
    """The addresses a reminder may go to: each once, none suppressed (hard-bounced)."""
    out: list[str] = []
    for a in to:
        a = a.strip()
        if a and a.lower() not in suppressed and a.lower() not in {x.lower() for x in out}:
            out.append(a)
    return out


def block(
    state: ClientState, items: Sequence[Bill], today: date, settings: ReminderSettings
) -> str | None:
    """Why a reminder of `items` would not go to the client today, or None."""
    if state.paused:
        return Note.client_off
    if today in state.reminded_on:
        return Note.reminded_today
    ids = {b.invoice_id for b in items}
    recent = [
        m.on
        for m in state.manual_sends
        if m.invoice_ids & ids and (today - m.on).days < settings.quiet_after_send_days
    ]
    if recent:
        return Note.quiet.format(day=max(recent).isoformat(), days=settings.quiet_after_send_days)
    if not [a for a in state.to if a.strip()]:
        return Note.no_email
    if not deliverable(state.to, state.suppressed):
        return Note.suppressed.format(addresses=", ".join(state.to))
    return None


def due_slots(
    items: Sequence[Bill],
    settings: ReminderSettings,
    today: date,
    claimed: frozenset[str],
    last_claimed: date | None,
) -> list[Slot]:
    """The slots of a client with unpaid `items` due by `today` and not yet recorded."""
    start = lookback_start(settings, today, last_claimed)
    return [s for s in slots_between(items, settings, start, today) if s.key not in claimed]


def decide(
    state: ClientState,
    settings: ReminderSettings,
    today: date,
    *,
    items: Sequence[Bill] | None = None,
    due: list[Slot] | None = None,
) -> Decision:
    """One pass for one client on the firm's local date `today` (the caller checked the
    business hours): of the slots due and not yet recorded, the most recent goes (or is
    recorded skipped with why it cannot), the older ones are recorded skipped "caught up"
    (missed while the scheduler was down: no flood), and one on the same day is recorded
    skipped too. At most one reminder per client per local day."""
    if items is None:  # (`items` and `due`: as the caller found them already)
        items = unpaid(state.bills, state.paused_invoices)
    if due is None:
        due = due_slots(items, settings, today, state.claimed, state.last_claimed)
    if not due:
        return Decision(None)
    chosen = due[-1]
    skipped = [(s, Note.same_day if s.on == chosen.on else Note.caught_up) for s in due[:-1]][
        -MAX_CATCH_UP_RECORDED:
    ]
    chosen_items = envelope_items(items)
    why = block(state, items, today, settings)
    if why is not None:
        return Decision(chosen, chosen_items, list(state.to), why, skipped)
    return Decision(chosen, chosen_items, deliverable(state.to, state.suppressed), None, skipped)


def send_now(state: ClientState, settings: ReminderSettings, today: date) -> Decision:
    """A person's Send now: the same rules as a scheduled reminder but the cadence (and the
    business hours: someone asked for it now)."""
    items = unpaid(state.bills, state.paused_invoices)
    slot = Slot(today, now_key(today), SlotKind.now, "sent now")
    if not settings.enabled:
        return Decision(slot, [], list(state.to), Note.firm_off)
    if not items:
        return Decision(slot, [], list(state.to), Note.no_items)
    if slot.key in state.claimed:
        return Decision(slot, [], list(state.to), Note.reminded_today)
    chosen_items = envelope_items(items)
    why = block(state, items, today, settings)
    if why is not None:
        return Decision(slot, chosen_items, list(state.to), why)
    return Decision(slot, chosen_items, deliverable(state.to, state.suppressed))


def upcoming(
    state: ClientState, settings: ReminderSettings, today: date, days: int
) -> tuple[Slot, str | None] | None:
    """The client's next slot not yet recorded, from `today` to `days` after it, with why it
    would not go (paused, quiet, no address, suppressed), or None."""
    items = unpaid(state.bills, state.paused_invoices)
    if not items:
        return None
    for slot in slots_between(items, settings, today, today + timedelta(days=days)):
        if slot.key in state.claimed:
            continue
        return slot, block(state, items, slot.on, settings)
    return None
