"""Envelope's decisions, as pure functions over plain data (no database, bus or HTTP): which
bills may be sent and are rendered ahead of time, why a send is refused, how sends and
envelopes move between states, what a client still owes, and what the firm sees of a bill's
online payments. The I/O code asks these; tests/unit/test_envelope_rules.py pins them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from shared.events import (
    SENDABLE_STATES,
    BillPayment,
    InvoiceState,
    PaymentFailed,
    PaymentMethod,
    PaymentProcessing,
    PaymentRefunded,
    PaymentSucceeded,
    SendStatus,
)

# --- what may be sent --------------------------------------------------------------------


# A bill voided or deleted at its source: on no unpaid list, in no email or reminder.
REMOVED_STATES: frozenset[InvoiceState] = frozenset({InvoiceState.void, InvoiceState.deleted})


def may_send(state: str) -> bool:
    """Whether a bill in this source state may go in an envelope."""
    return state in SENDABLE_STATES


# Bills worth rendering before anyone asks: those a firm sends. Other states (drafts, void,
# paid) render on demand.
PRERENDER_STATES: frozenset[InvoiceState] = frozenset({InvoiceState.awaiting_payment})


def prerendered(state: str) -> bool:
    return state in PRERENDER_STATES


def carries_statement(bills: int) -> bool:
    """Whether an envelope of this many bills carries their statement (its Pay All and
    View All lead to it) rather than the one bill's own."""
    return bills > 1


def shows_pay_link(balance_minor: int) -> bool:
    """Whether a bill's PDF carries a pay link: only while something is owed."""
    return balance_minor > 0


# --- why a send is refused -----------------------------------------------------------------


class Refusal(StrEnum):
    """Why a send becomes no email: its send is recorded as failed with `message`."""

    no_bills = "no_bills"
    no_recipient = "no_recipient"
    template_error = "template_error"
    suppressed = "suppressed"

    def message(self, detail: str = "") -> str:
        return _REFUSAL_MESSAGES[self].format(detail=detail)


_REFUSAL_MESSAGES: dict[Refusal, str] = {
    Refusal.no_bills: "none of the envelope's bills can be sent",
    Refusal.no_recipient: "the envelope has no recipient",
    Refusal.template_error: "template error: {detail}",
    Refusal.suppressed: "{detail}",
}


def refusal(
    bills: int, recipients: Sequence[str], suppressed: Mapping[str, str] | None = None
) -> Refusal | None:
    """Why a send of `bills` bills (those that still exist) to `recipients` cannot be
    composed at all, or None. `suppressed` holds the firm's suppressed addresses
    (lower-cased) among them: a send to any of them is refused (`suppression_detail` says
    which and why). A template that does not render is found when composing."""
    if bills == 0:
        return Refusal.no_bills
    if not recipients:
        return Refusal.no_recipient
    if suppressed and any(r.strip().lower() in suppressed for r in recipients):
        return Refusal.suppressed
    return None


def suppressed_message(address: str, reason: str, status: str | None = None) -> str:
    """What a refused send says of one suppressed address: which, why, and what to do."""
    why = f"{status} {reason}" if status and status not in reason else reason
    return (
        f"{address} bounced ({why.strip() or 'hard bounce'}), so no email goes to it. "
        "Change the recipient, or clear the address on the Invoices page once it is fixed."
    )


def suppression_detail(recipients: Sequence[str], suppressed: Mapping[str, str]) -> str:
    """The refusal's message: each suppressed recipient's `suppressed_message`."""
    seen = dict.fromkeys(r.strip().lower() for r in recipients)
    return " ".join(suppressed[r] for r in seen if r in suppressed)


# --- sends' and envelopes' states ----------------------------------------------------------


def send_status(refused: Refusal | None) -> SendStatus:
    """A send's status when it is recorded: queued for the mailer, or failed at once."""
    return SendStatus.failed if refused is not None else SendStatus.queued


# An envelope takes its new send's status only from these: a queued send moves a draft or a
# failed envelope to queued; a refused one marks only a draft failed (an envelope already
# queued or sent keeps that).
ENVELOPE_TAKES_SEND_STATUS_FROM: dict[SendStatus, frozenset[SendStatus]] = {
    SendStatus.queued: frozenset({SendStatus.draft, SendStatus.failed}),
    SendStatus.failed: frozenset({SendStatus.draft}),
}


def envelope_status(current: str, send: SendStatus) -> str:
    """An envelope's status once a send of it with status `send` is recorded."""
    return send if current in ENVELOPE_TAKES_SEND_STATUS_FROM[send] else current


# --- what is owed ------------------------------------------------------------------------

# Paid online here, or on its way (ACH), but not yet recorded in the source: not owed.
SETTLING_ONLINE: frozenset[BillPayment] = frozenset(
    {BillPayment.paid_online, BillPayment.processing}
)


def balance_due(balance_minor: int, paid_online_minor: int | None) -> int:
    """A bill's balance less what was paid online and not yet recorded in the source."""
    return max(0, balance_minor - (paid_online_minor or 0))


def outstanding(
    state: str, balance_minor: int, paid_online_minor: int | None, payment: str | None
) -> int:
    """What the client still owes on a bill, counting payments made here but not yet
    recorded in the source."""
    if state != InvoiceState.awaiting_payment or payment in SETTLING_ONLINE:
        return 0
    return balance_due(balance_minor, paid_online_minor)


# --- the bill's payment projection -------------------------------------------------------


@dataclass(frozen=True)
class PaymentSums:
    """A bill's online payments as sums that commute: payment events travel on different
    queues, so a refund may arrive before the success it refunds."""

    paid: int = 0  # succeeded, net of refunds and returns
    processing: int = 0  # ACH not settled
    refunded: int = 0


def apply_payment(
    sums: PaymentSums,
    routing_key: str,
    method: str,
    amount_minor: int,
    *,
    returned: bool = False,
) -> PaymentSums:
    """The sums once one payment event's allocation to the bill is counted."""
    paid, processing, refunded = sums.paid, sums.processing, sums.refunded
    if routing_key == PaymentProcessing.routing_key:
        processing += amount_minor
    elif routing_key == PaymentSucceeded.routing_key:
        paid += amount_minor
        if method == PaymentMethod.ach:
            processing -= amount_minor  # its payment.processing came (or comes) first
    elif routing_key == PaymentFailed.routing_key:
        if returned:
            paid -= amount_minor  # it had succeeded: the money went back
        elif method == PaymentMethod.ach:
            processing -= amount_minor
    elif routing_key == PaymentRefunded.routing_key:
        paid -= amount_minor
        refunded += amount_minor
    return PaymentSums(paid, processing, refunded)


def unrecorded_sums(sums: PaymentSums, recorded: int) -> PaymentSums:
    """The sums the firm sees once `recorded` of the money paid here is recorded at the
    source (payment.recorded): Clio's balance counts that part, so it is not subtracted again.
    `paid` can go below zero only while a recording arrives before the payment it records,
    or when a refund follows a recording (money Clio counts but the client got back)."""
    return PaymentSums(sums.paid - recorded, sums.processing, sums.refunded)


def bill_payment(paid: int, processing: int, refunded: int) -> BillPayment | None:
    """What the firm sees of a bill's online payments, derived from the sums, never from
    the last event seen."""
    if processing > 0:
        return BillPayment.processing
    if paid > 0:
        return BillPayment.paid_online
    if refunded > 0:
        return BillPayment.refunded
    return None


# --- what a bill is called -----------------------------------------------------------------


def matter_label(number: str | None, description: str | None) -> str | None:
    """A bill's matter as the firm and the client read it: number and description."""
    return " ".join(x for x in (number, description) if x) or None


def bill_filename(kind: str, number: str) -> str:
    return f"{kind.replace('_', '-')}-{number}.pdf"


def statement_filename(day: date) -> str:
    return f"statement-{day.isoformat()}.pdf"
