"""Test mode: an offline processor with Stripe's test numbers and Stripe's states.

Cards charge at once (4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 and the other
`DECLINES` are declined). ACH debits are processing at first and settle after
`ach_settle_seconds`, or fail with a NACHA return code for Stripe's failing test accounts.
Everything it does reaches the ledger as `ProcessorEvent`s, as Stripe's webhooks would, so
the ledger has one path. Settlements due are kept in the payments table and applied by a
background loop, so a restart does not lose one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, get_args

from sqlalchemy import select

from services.payments import rules
from services.payments.balances import ItemStatus, aware, item_views
from services.payments.ledger import Ledger
from services.payments.models import CheckoutSession, CheckoutStatus, Payment
from services.payments.processors import (
    CardInvalid,
    CheckoutRequest,
    Deposit,
    DepositRequest,
    EventKind,
    InvalidSignature,
    ProcessorCheckout,
    ProcessorEvent,
    RefundOrder,
    RefundResult,
    test_mode_charge,
    validate_card,
)
from services.payments.settings import PaymentsSettings
from shared.events import PaymentMethod, PaymentStatus, RefundStatus

log = logging.getLogger(__name__)

TEST_ROUTING = "110000000"
# Stripe's test bank accounts that fail, and the return each fails with.
ACH_FAILURES = {"000222222227": "R01", "000111111116": "R03"}
RETURN_REASONS = {
    "R01": "Insufficient funds (R01): the bank account did not have enough money.",
    "R02": "Account closed (R02).",
    "R03": "No account (R03): the bank could not find this account.",
    "R10": "Customer advises not authorized (R10): the account holder disputed the debit.",
}
# A development-only secret for test mode's signed webhooks, when none is configured.
TEST_WEBHOOK_SECRET = "whsec_envelopepay_test_mode"  # noqa: S105 - test mode only


class CheckoutClosed(ValueError):
    """The session cannot take a payment now (409): expired, or its bills paid meanwhile."""


class NotSettled(ValueError):
    """A test-mode return of a payment that has not settled."""


def return_reason(code: str) -> str:
    return RETURN_REASONS.get(code, f"The bank returned the payment ({code}).")


# --- the processor ------------------------------------------------------------------------


class TestModeProcessor:
    """The `Processor` of `make run` and the tests: no network, deterministic refs."""

    __test__ = False  # not a pytest test class, despite its name
    name = "test"

    def __init__(self, settings: PaymentsSettings) -> None:
        self.settings = settings

    async def create_checkout(self, req: CheckoutRequest) -> ProcessorCheckout:
        return ProcessorCheckout(ref=f"test_cs_{req.session_id}", redirect_url=None)

    async def deposit(self, req: DepositRequest) -> list[Deposit]:
        return [replace(d, ref=f"test_tr_{req.payment_id}_{d.account}") for d in req.deposits]

    async def refund(self, req: RefundOrder) -> RefundResult:
        if self.settings.test_refund_fail:
            return RefundResult(
                ref=f"test_re_{req.refund_id}",
                status=RefundStatus.failed,
                failure_reason="The refund failed (test mode is set to fail every refund).",
            )
        return RefundResult(
            ref=f"test_re_{req.refund_id}",
            status=RefundStatus.succeeded,
            reversals=[f"test_trr_{req.refund_id}_{d.account}" for d in req.reversals],
        )

    def parse_webhook(self, payload: bytes, signature: str | None) -> ProcessorEvent | None:
        """Test mode's own webhooks, signed as Stripe signs (`t=...,v1=...`), carrying a
        normalised event: `{"id", "type", "created", "data": {ProcessorEvent fields}}`."""
        secret = self.settings.stripe_webhook_secret
        if not secret:
            if self.settings.environment == "production":
                raise InvalidSignature("test mode takes no webhooks in production without a secret")
            secret = TEST_WEBHOOK_SECRET
        verify_signature(payload, signature, secret, self.settings.stripe_webhook_tolerance_seconds)
        try:
            body = json.loads(payload)
            kind = body["type"]
            created = datetime.fromtimestamp(int(body["created"]), UTC)
            event_id = str(body["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidSignature("not an event") from exc
        if kind not in get_args(EventKind):
            return None
        fields = {k: v for k, v in (body.get("data") or {}).items() if k in _EVENT_FIELDS}
        return ProcessorEvent(
            event_id=event_id, kind=kind, occurred_at=created, raw_type=kind, **fields
        )


_EVENT_FIELDS = set(ProcessorEvent.__dataclass_fields__) - {
    "event_id",
    "kind",
    "occurred_at",
    "raw_type",
}


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header value for `payload`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(payload: bytes, header: str | None, secret: str, tolerance: int) -> None:
    """Stripe's scheme: HMAC-SHA256 of `<t>.<raw body>`, any v1 matching, t recent."""
    parts = [p.split("=", 1) for p in (header or "").split(",") if "=" in p]
    stamps = [v for k, v in parts if k.strip() == "t"]
    macs = [v for k, v in parts if k.strip() == "v1"]
    if not stamps or not macs or not stamps[0].isdigit():
        raise InvalidSignature("no usable Stripe-Signature header")
    t = int(stamps[0])
    if abs(time.time() - t) > tolerance:
        raise InvalidSignature("signature timestamp outside the tolerance")
    want = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(want, m.strip()) for m in macs):
        raise InvalidSignature("signature does not match")


# --- the checkout form and the bank ---------------------------------------------------------


@dataclass(frozen=True)
class AchForm:
    name: str
    email: str | None
    routing_number: str
    account_number: str
    account_type: str


def validate_ach(form: dict[str, Any]) -> AchForm:
    """The bank fields, or CardInvalid naming the first field to correct."""
    name = (form.get("name") or "").strip()
    if not name:
        raise CardInvalid("name", "Enter the account holder's name.")
    routing = re.sub(r"\s", "", form.get("routing_number") or "")
    if not rules.aba_routing_ok(routing):
        raise CardInvalid("routing_number", "Your routing number is invalid.")
    account = re.sub(r"[\s-]", "", form.get("account_number") or "")
    if not (account.isdigit() and 4 <= len(account) <= 17):
        raise CardInvalid("account_number", "Your account number must be 4 to 17 digits.")
    kind = (form.get("account_type") or "checking").strip().lower()
    if kind not in ("checking", "savings"):
        raise CardInvalid("account_type", "Choose checking or savings.")
    email = (form.get("email") or "").strip() or None
    return AchForm(name, email, routing, account, kind)


class TestMode:
    """The payment side of test mode: the checkout form's card and bank payments, ACH
    settlement, and the returns a test may simulate."""

    __test__ = False

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.settings = ledger.settings

    async def _open_session(
        self, s: Any, session_id: str
    ) -> tuple[CheckoutSession, Payment | None]:
        cs = await s.get(CheckoutSession, session_id)
        if cs is None:
            raise LookupError(session_id)
        payment = await s.get(Payment, cs.payment_id) if cs.payment_id else None
        if payment is None and (
            cs.status != CheckoutStatus.open or aware(cs.expires_at) < datetime.now(UTC)
        ):
            raise CheckoutClosed(
                "This checkout has expired. Nothing was charged: go back to the bill and "
                "click Pay again."
            )
        return cs, payment

    async def _paid_meanwhile(self, s: Any, cs: CheckoutSession) -> CheckoutClosed | None:
        """Another tab may have paid these bills since the session opened: then the session
        expires, and this is the refusal to raise once that is committed."""
        items = json.loads(cs.items)
        current = {
            v.invoice_id: v
            for v in await item_views(s, cs.firm_id, [i["invoice_id"] for i in items])
        }
        if all(
            (v := current.get(i["invoice_id"])) is not None
            and v.status == ItemStatus.unpaid
            and v.balance_minor >= i["amount_minor"]
            for i in items
        ):
            return None
        cs.status = CheckoutStatus.expired
        return CheckoutClosed("These bills were paid in the meantime; nothing was charged.")

    async def pay_card(self, session_id: str, form: dict[str, Any]) -> Payment:
        """Charge the session's card once; a second submit returns the payment made.
        A decline or a session closed meanwhile commits what it changed, then raises."""
        refusal: Exception | None = None
        payment_id: str | None = None
        async with self.ledger.tx() as s:
            cs, paid = await self._open_session(s, session_id)
            if paid is not None:
                return paid
            digits, _, _ = validate_card(
                form.get("card_number", ""), form.get("exp", ""), form.get("cvc", ""), date.today()
            )
            name = (form.get("name") or "").strip()
            if not name:
                raise CardInvalid("name", "Enter the name on the card.")
            refusal = await self._paid_meanwhile(s, cs)
            if refusal is None:
                charge = test_mode_charge(digits, idempotency_key=cs.id)
                if charge.status == "declined":
                    cs.last_error = charge.message
                    refusal = CardInvalid("card_number", charge.message)
                else:
                    payment_id = await self._record(
                        s,
                        cs,
                        "payment.succeeded",
                        PaymentMethod.card,
                        charge_ref=charge.ref,
                        fee_minor=rules.processing_fee(PaymentMethod.card, cs.amount_minor),
                        payer_name=name,
                        payer_email=(form.get("email") or "").strip() or None,
                        last4=charge.last4,
                    )
        if refusal is not None:
            raise refusal
        assert payment_id is not None
        await self.ledger.transfer_deposits(payment_id)
        return await self._payment(payment_id)

    async def pay_ach(self, session_id: str, form: dict[str, Any]) -> Payment:
        """Start the debit: processing now, settled (or returned) after the delay."""
        refusal: Exception | None = None
        payment_id: str | None = None
        async with self.ledger.tx() as s:
            cs, paid = await self._open_session(s, session_id)
            if paid is not None:
                return paid
            bank = validate_ach(form)
            refusal = await self._paid_meanwhile(s, cs)
            if refusal is None:
                payment_id = await self._record(
                    s,
                    cs,
                    "payment.processing",
                    PaymentMethod.ach,
                    payer_name=bank.name,
                    payer_email=bank.email,
                    last4=bank.account_number[-4:],
                )
                assert payment_id is not None
                payment = await s.get(Payment, payment_id)
                assert payment is not None
                payment.settle_at = datetime.now(UTC) + timedelta(
                    seconds=self.settings.ach_settle_seconds
                )
                payment.settle_code = ACH_FAILURES.get(bank.account_number)
        if refusal is not None:
            raise refusal
        assert payment_id is not None
        return await self._payment(payment_id)

    async def _record(
        self, s: Any, cs: CheckoutSession, kind: str, method: str, **fields: Any
    ) -> str | None:
        """Record what the checkout form did as the processor's event about the session."""
        event = self._event(cs, kind, method, **fields)
        return await self.ledger.record(s, event, self.ledger.processor.name)

    def _event(self, cs: CheckoutSession, kind: str, method: str, **fields: Any) -> ProcessorEvent:
        suffix = cs.id.split("_", 1)[-1]
        return ProcessorEvent(
            event_id=f"test_evt_{suffix}_{kind}",
            kind=kind,  # type: ignore[arg-type]
            occurred_at=datetime.now(UTC),
            session_id=cs.id,
            payment_ref=f"test_pi_{suffix}",
            method=method,  # type: ignore[arg-type]
            amount_minor=cs.amount_minor,
            raw_type=f"test {kind}",
            **fields,
        )

    async def _payment(self, payment_id: str) -> Payment:
        async with self.ledger.service.sessionmaker() as s:
            payment = await s.get(Payment, payment_id)
            assert payment is not None
            return payment

    # --- settlement and returns -----------------------------------------------------------

    async def settle_due(self, now: datetime | None = None) -> int:
        """Settle (or fail) every test-mode ACH debit whose time has come."""
        now = now or datetime.now(UTC)
        settled: list[str] = []
        async with self.ledger.tx() as s:
            due = list(
                await s.scalars(
                    select(Payment)
                    .where(
                        Payment.processor == "test",
                        Payment.method == PaymentMethod.ach,
                        Payment.status == PaymentStatus.processing,
                        Payment.settle_at <= now,
                    )
                    .order_by(Payment.settle_at)
                )
            )
            for payment in due:
                code = payment.settle_code
                event = ProcessorEvent(
                    event_id=f"test_evt_{payment.id}_{'failed' if code else 'settled'}",
                    kind="payment.failed" if code else "payment.succeeded",
                    occurred_at=now,
                    payment_ref=payment.processor_ref,
                    method=PaymentMethod.ach,
                    amount_minor=payment.amount_minor,
                    fee_minor=None
                    if code
                    else rules.processing_fee(PaymentMethod.ach, payment.amount_minor),
                    failure_code=code,
                    failure_reason=return_reason(code) if code else None,
                    raw_type="test ach settlement",
                )
                await self.ledger.record(s, event, "test")
                if not code:
                    settled.append(payment.id)
        for payment_id in settled:
            await self.ledger.transfer_deposits(payment_id)
        return len(due)

    async def simulate_return(self, payment_id: str, code: str) -> Payment:
        """An ACH return after settlement (Stripe: charge.dispute.created)."""
        async with self.ledger.tx() as s:
            payment = await s.get(Payment, payment_id)
            if payment is None:
                raise LookupError(payment_id)
            if payment.status not in rules.SETTLED:
                raise NotSettled("Only a settled payment can be returned.")
            await self.ledger.record(
                s,
                ProcessorEvent(
                    event_id=f"test_evt_{payment.id}_returned_{code}",
                    kind="payment.disputed",
                    occurred_at=datetime.now(UTC),
                    payment_ref=payment.processor_ref,
                    charge_ref=payment.charge_ref,
                    failure_code=code,
                    failure_reason=return_reason(code),
                    raw_type="test ach return",
                ),
                "test",
            )
        return await self._payment(payment_id)

    async def settle_loop(self) -> None:
        """Applies due settlements, also those that fell due while the service was down."""
        while True:
            try:
                await self.settle_due()
            except Exception:
                log.exception("test mode: settling ACH debits failed; will retry")
            await asyncio.sleep(self.settings.settle_poll_seconds)
