"""The ledger the webhook events should make (payments.py's stories), compared with the one
the payments service made: payments, deposits and the bus events announced. Reported, not
asserted."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench.support.db import Db
from bench.support.stripe_webhooks import ANNOUNCED, Story


@dataclass
class Ledger:
    """What the payments database holds, keyed as the checks look it up."""

    payments: dict[str, tuple[Any, ...]]  # by session id
    deposits: dict[str, list[tuple[Any, ...]]]  # by payment id
    announced: dict[str, list[tuple[str, str]]]  # by payment id: (routing key, method)
    recorded: int
    orphans: int
    sessions_left: int
    mismatches: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, db: Db) -> Ledger:
        payments = {
            r[1]: r
            for r in db.rows(
                "SELECT id, session_id, status, method, amount_minor, refunded_minor, fee_minor "
                "FROM payments"
            )
        }
        deposits: dict[str, list[tuple[Any, ...]]] = {}
        for r in db.rows(
            "SELECT payment_id, account, amount_minor, fee_minor, transferred, status FROM deposits"
        ):
            deposits.setdefault(r[0], []).append(r)
        announced: dict[str, list[tuple[str, str]]] = {}
        for key, payload in db.rows(
            "SELECT routing_key, payload FROM outbox WHERE routing_key LIKE 'payment.%' ORDER BY id"
        ):
            body = json.loads(payload)
            announced.setdefault(body["payment_id"], []).append((key, body.get("method")))
        return cls(
            payments=payments,
            deposits=deposits,
            announced=announced,
            recorded=db.count("SELECT count(*) FROM processor_events"),
            orphans=db.count("SELECT count(*) FROM processor_events WHERE payment_id IS NULL"),
            sessions_left=db.count(
                "SELECT count(*) FROM checkout_sessions WHERE payment_id IS NULL"
            ),
        )

    def bad(self, what: str, detail: str) -> None:
        self.mismatches.setdefault(what, []).append(detail)

    def payment_as_expected(self, st: Story) -> bool:
        row = self.payments.get(st.session_id)
        if row is None:
            self.bad("payment missing", f"{st.kind} {st.session_id}")
            return False
        pid, _, status, method, amount, refunded, fee = row
        ok = True
        want = (st.status, st.method, st.link.amount_minor, st.refund_minor, st.fee_minor)
        got = (status, method, amount, refunded, fee)
        if got != want:
            ok = False
            self.bad(
                "payment state",
                f"{st.kind} {pid}: (status, method, amount, refunded, fee) {got}, expected {want}",
            )
        ok = self.deposits_as_expected(st, row) and ok
        got_ann = self.announced.get(pid, [])
        want_ann = [(k, st.method) for k in ANNOUNCED[st.kind]]
        if got_ann != want_ann:
            ok = False
            self.bad("announcements", f"{st.kind} {pid}: {got_ann}, expected {want_ann}")
        return ok

    def deposits_as_expected(self, st: Story, row: tuple[Any, ...]) -> bool:
        pid, _, _, method, amount, _, fee = row
        if st.status not in ("succeeded", "partially_refunded", "refunded"):
            if self.deposits.get(pid):
                self.bad("deposit for an unpaid payment", f"{st.kind} {pid}: {self.deposits[pid]}")
                return False
            return True
        ok = True
        rows = self.deposits.get(pid, [])
        pending = [r for r in rows if not bool(r[4])]
        dep_amount = sum(r[2] for r in rows)
        dep_fee = sum(r[3] for r in rows)
        if pending:
            ok = False
            self.bad("deposit not transferred", f"{st.kind} {pid}: {len(pending)} pending")
        if dep_amount != st.link.amount_minor or dep_fee != fee:
            ok = False
            self.bad(
                "deposits disagree with the payment",
                f"{st.kind} {pid} ({method}): deposits amount {dep_amount} fee {dep_fee}; "
                f"payment amount {amount} fee {fee}",
            )
        return ok


def check_ledger(db: Db, stories: list[Story], unique: int) -> dict[str, Any]:
    """The ledger the events should make, compared with the one they made."""
    by_session = {st.session_id: st for st in stories}
    ledger = Ledger.read(db)
    as_expected = sum(ledger.payment_as_expected(st) for st in by_session.values())
    extra = set(ledger.payments) - set(by_session)
    if extra:
        ledger.bad("unexpected payments", f"{len(extra)} for sessions the bench did not open")
    counts: dict[str, Any] = {
        "payments_expected": len(stories),
        "payments_found": len(ledger.payments),
        "payments_as_expected": as_expected,
        "events_recorded": ledger.recorded,
        "events_unique_sent": unique,
        "events_waiting_for_a_payment": ledger.orphans,
        "sessions_without_payment": ledger.sessions_left,
        "announcements": sum(len(v) for v in ledger.announced.values()),
        "announcements_expected": sum(len(ANNOUNCED[st.kind]) for st in stories),
    }
    counts["equal"] = (
        not ledger.mismatches
        and as_expected == len(stories)
        and ledger.recorded == unique
        and ledger.orphans == 0
        and ledger.sessions_left == 0
    )
    counts["mismatches"] = {
        k: {"count": len(v), "examples": v[:5]} for k, v in sorted(ledger.mismatches.items())
    }
    counts["state_by_story"] = state_by_story(ledger, stories)
    return counts


def state_by_story(ledger: Ledger, stories: list[Story]) -> dict[str, dict[str, int]]:
    by_kind: dict[str, dict[str, int]] = {}
    for st in stories:
        row = ledger.payments.get(st.session_id)
        cell = by_kind.setdefault(st.kind, {"payments": 0, "wrong": 0})
        cell["payments"] += 1
        if row is None or (row[2], row[3], row[5], row[6]) != (
            st.status,
            st.method,
            st.refund_minor,
            st.fee_minor,
        ):
            cell["wrong"] += 1
    return by_kind
