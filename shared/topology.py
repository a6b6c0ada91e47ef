"""Who consumes what. Every service declares the whole topology when it starts, so an event
published before its consumers have ever run is kept in their queues, not dropped by the
exchange for want of a binding (the gateway's first firm.updated, say)."""

from __future__ import annotations

from shared.events import (
    EmailBounced,
    EmailClicked,
    EmailDelivered,
    EmailFailed,
    EmailOpened,
    EmailRequested,
    EmailSent,
    EmailViewed,
    EnvelopeSendRequested,
    Event,
    FirmUpdated,
    InvoiceRemoved,
    InvoiceUpdated,
    PayLinkIssued,
    PaymentFailed,
    PaymentProcessing,
    PaymentRecorded,
    PaymentRefunded,
    PaymentSucceeded,
)

SUBSCRIPTIONS: dict[str, tuple[type[Event], ...]] = {
    "envelope": (
        FirmUpdated,
        InvoiceUpdated,
        InvoiceRemoved,
        EnvelopeSendRequested,
        EmailSent,
        EmailFailed,
        EmailDelivered,
        EmailBounced,
        EmailOpened,
        EmailClicked,
        EmailViewed,
        PaymentProcessing,
        PaymentSucceeded,
        PaymentFailed,
        PaymentRefunded,
        PaymentRecorded,
    ),
    "mailer": (EmailRequested,),
    "payments": (FirmUpdated, InvoiceUpdated, InvoiceRemoved, PayLinkIssued),
    # What was paid online on LEDES-imported invoices, which have no source system to say so.
    "sync": (PaymentSucceeded, PaymentFailed, PaymentRefunded),
}
