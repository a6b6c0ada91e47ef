"""The payment rules on their own: fees, the trust/operating split, the refund rules of the
seed, and a payment's state from its events whatever their order."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from services.payments import deposit_rules, rules
from services.payments.rules import AllocationLeft, Fact, RefundInvalid, RefundRefused
from shared.events import PaymentStatus, RefundStatus

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("method", "amount", "fee"),
    [
        ("card", 10_000, 320),  # 2.9% of $100 + 30 cents
        ("card", 1_000, 59),  # 29 + 30
        ("card", 1_017, 59),  # 29.493 rounds down
        ("card", 1_018, 60),  # 29.522 rounds up
        ("card", 0, 0),
        ("ach", 10_000, 80),
        ("ach", 6_250, 50),  # 50.0 exactly
        ("ach", 6_313, 51),  # 50.504
        ("ach", 62_500, 500),  # the cap, exactly
        ("ach", 5_000_000, 500),
    ],
)
def test_processing_fee(method: str, amount: int, fee: int) -> None:
    assert rules.processing_fee(method, amount) == fee


def test_half_a_cent_rounds_up() -> None:
    assert rules.processing_fee("ach", 1_875) == 15  # 15.0
    assert rules.processing_fee("ach", 1_937) == 15  # 15.496
    assert rules.processing_fee("ach", 1_938) == 16  # 15.504
    assert rules.processing_fee("card", 50) == 31  # 1.45 -> 1, + 30
    assert rules.processing_fee("card", 1_500) == 74  # 43.5 -> 44, + 30


def test_split_puts_the_whole_fee_on_operating() -> None:
    plans = deposit_rules.split_deposits([("invoice", 70_000), ("trust_request", 30_000)], 2_930)
    assert plans == [
        deposit_rules.DepositPlan("operating", 70_000, 2_930),
        deposit_rules.DepositPlan("trust", 30_000, 0),
    ]
    assert [p.net_minor for p in plans] == [67_070, 30_000]


def test_split_of_trust_only_still_charges_operating() -> None:
    plans = deposit_rules.split_deposits([("trust_request", 30_000)], 900)
    assert plans == [
        deposit_rules.DepositPlan("operating", 0, 900),
        deposit_rules.DepositPlan("trust", 30_000, 0),
    ]
    assert plans[0].net_minor == -900


def test_split_of_invoices_only_has_no_trust_deposit() -> None:
    assert deposit_rules.split_deposits([("invoice", 100), ("invoice", 200)], 39) == [
        deposit_rules.DepositPlan("operating", 300, 39)
    ]


def test_reversals_take_back_at_most_what_each_account_received() -> None:
    assert deposit_rules.reversed_by_refunds("trust", 30_000, 30_000, 0) == 30_000
    assert deposit_rules.reversed_by_refunds("operating", 70_000, 70_000, 2_930) == 67_070
    assert deposit_rules.reversed_by_refunds("operating", 1_000, 70_000, 2_930) == 1_000
    assert deposit_rules.reversed_by_refunds("operating", 0, 0, 900) == 0


LEFT = [
    AllocationLeft("inv-1", "invoice", 10_000, 0),
    AllocationLeft("tr-1", "trust_request", 5_000, 1_000),
]


def test_card_refunds_in_part_per_item() -> None:
    planned = rules.plan_refund(
        status="succeeded", method="card", allocations=LEFT, full=False, items=[("inv-1", 2_500)]
    )
    assert planned == [("inv-1", 2_500)]


def test_a_full_refund_takes_every_item_remainder() -> None:
    planned = rules.plan_refund(
        status="partially_refunded", method="card", allocations=LEFT, full=True, items=[]
    )
    assert planned == [("inv-1", 10_000), ("tr-1", 4_000)]


def test_ach_refunds_only_in_full() -> None:
    with pytest.raises(RefundRefused, match="not eligible for partial refunds"):
        rules.plan_refund(
            status="succeeded", method="ach", allocations=LEFT, full=False, items=[("inv-1", 1)]
        )
    # Asking for every item's full remainder is a full refund, however it is spelled.
    spelled_out = rules.plan_refund(
        status="succeeded",
        method="ach",
        allocations=LEFT,
        full=False,
        items=[("tr-1", 4_000), ("inv-1", 10_000)],
    )
    assert sorted(spelled_out) == [("inv-1", 10_000), ("tr-1", 4_000)]


@pytest.mark.parametrize(
    ("status", "method", "reason"),
    [
        ("processing", "ach", "only after it settles"),
        ("failed", "card", "nothing to refund"),
        ("returned", "ach", "already went back"),
        ("refunded", "card", "refunded in full"),
    ],
)
def test_nothing_is_refunded_from_a_payment_that_holds_no_money(
    status: str, method: str, reason: str
) -> None:
    with pytest.raises(RefundRefused, match=reason):
        rules.plan_refund(status=status, method=method, allocations=LEFT, full=True, items=[])


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([("inv-1", 10_001)], "amount"),
        ([("tr-1", 4_001)], "amount"),  # 1,000 of it is already refunded or pending
        ([("inv-1", 6_000), ("inv-1", 5_000)], "amount"),  # the same item twice adds up
        ([("inv-1", 0)], "amount"),
        ([], "amount"),
        ([("nope", 5)], "items"),
    ],
)
def test_card_refund_amounts_are_bounded(items: list[tuple[str, int]], field: str) -> None:
    with pytest.raises(RefundInvalid) as err:
        rules.plan_refund(
            status="succeeded", method="card", allocations=LEFT, full=False, items=items
        )
    assert err.value.field == field


def test_external_refunds_are_taken_from_items_in_order() -> None:
    left = [("a", 1_000), ("b", 500), ("c", 0)]
    assert rules.allocate_external_refund(1_200, left) == [("a", 1_000), ("b", 200)]
    assert rules.allocate_external_refund(5_000, left) == [("a", 1_000), ("b", 500)]


@pytest.mark.parametrize(
    ("routing", "ok"),
    [("110000000", True), ("021000021", True), ("011401533", True), ("110000001", False)],
)
def test_aba_routing_checksum(routing: str, ok: bool) -> None:
    assert rules.aba_routing_ok(routing) is ok
    assert not rules.aba_routing_ok(routing[:8])


def _facts() -> list[Fact]:
    return [
        Fact("e1", "payment.processing", T0, payment_ref="pi", method="ach", payer_name="Dana"),
        Fact("e2", "checkout.completed", T0 + timedelta(seconds=2), payment_ref="pi"),
        Fact("e3", "payment.succeeded", T0 + timedelta(days=3), fee_minor=500, last4="6789"),
        Fact(
            "e4",
            "payment.disputed",
            T0 + timedelta(days=20),
            failure_code="R10",
            failure_reason="not authorized",
        ),
    ]


def test_a_payments_state_does_not_depend_on_arrival_order() -> None:
    states = [rules.derive_payment(list(p)) for p in itertools.permutations(_facts())]
    first = states[0]
    assert (first.status, first.method, first.fee_minor, first.failure_code) == (
        "returned",
        "ach",
        500,
        "R10",
    )
    assert first.succeeded_at == T0 + timedelta(days=3) and first.first_at == T0
    for state in states:
        assert (state.rank, state.method, state.succeeded_at, state.payer_name, state.last4) == (
            first.rank,
            first.method,
            first.succeeded_at,
            first.payer_name,
            first.last4,
        )


def test_each_fact_only_moves_a_payment_forward() -> None:
    processing, completed, succeeded, _ = _facts()
    failed = Fact("e5", "payment.failed", T0 + timedelta(days=3), failure_code="R01")
    assert rules.derive_payment([processing, completed]).status == "processing"
    assert rules.derive_payment([failed, processing]).status == "failed"
    assert rules.derive_payment([succeeded, processing]).status == "succeeded"
    card = Fact("c1", "checkout.completed", T0, method="card")
    assert rules.derive_payment([card]).status == "succeeded"
    # Without a method, a processing phase means a bank debit.
    assert rules.derive_payment([Fact("p", "payment.processing", T0)]).method == "ach"


def test_a_refund_that_fails_after_it_succeeded_is_failed() -> None:
    ok = Fact("r1", "refund.succeeded", T0, refund_ref="re_1")
    bad = Fact("r2", "refund.failed", T0 + timedelta(days=2), failure_reason="account closed")
    assert rules.derive_refund([bad, ok]) == (RefundStatus.failed, "re_1", "account closed")
    assert rules.derive_refund([ok]) == (RefundStatus.succeeded, "re_1", None)
    assert rules.derive_refund([])[0] == RefundStatus.pending


@pytest.mark.parametrize(
    ("rank", "refunded", "status"),
    [
        (rules.Progress.succeeded, 0, "succeeded"),
        (rules.Progress.succeeded, 1, "partially_refunded"),
        (rules.Progress.succeeded, 100, "refunded"),
        (rules.Progress.returned, 50, "returned"),
        (rules.Progress.processing, 0, "processing"),
    ],
)
def test_shown_status(rank: rules.Progress, refunded: int, status: str) -> None:
    assert rules.shown_status(rank, 100, refunded) == status


def test_progress_shows_as_the_shared_payment_status() -> None:
    assert [p.status for p in rules.Progress] == [
        PaymentStatus.processing,
        PaymentStatus.failed,
        PaymentStatus.succeeded,
        PaymentStatus.returned,
    ]
    # The order is the rule: a later fact never moves a payment back.
    assert rules.Progress.processing < rules.Progress.failed < rules.Progress.succeeded
    assert rules.Progress.succeeded < rules.Progress.returned


@pytest.mark.parametrize(
    ("progress", "method", "news"),
    [
        (rules.Progress.failed, "card", False),  # a declined card: the client tries again
        (rules.Progress.failed, "ach", True),  # a debit announced as processing failed
        (rules.Progress.returned, "card", True),
        (rules.Progress.returned, "ach", True),
        (rules.Progress.succeeded, "ach", False),
        (rules.Progress.processing, "ach", False),
    ],
)
def test_which_failures_are_announced(progress: rules.Progress, method: str, news: bool) -> None:
    assert rules.announces_failure(progress, method) is news


def test_only_a_settled_payment_holds_money_to_refund_or_return() -> None:
    assert rules.SETTLED == {PaymentStatus.succeeded, PaymentStatus.partially_refunded}


def test_trust_requests_go_to_trust_everything_else_to_operating() -> None:
    assert deposit_rules.account_for("trust_request") is deposit_rules.Account.trust
    assert deposit_rules.account_for("invoice") is deposit_rules.Account.operating
    assert deposit_rules.account_for("anything else") is deposit_rules.Account.operating


@pytest.mark.parametrize(
    ("transferred", "reversed_minor", "returned", "status"),
    [
        (False, 0, False, deposit_rules.DepositStatus.pending),
        (True, 0, False, deposit_rules.DepositStatus.paid),
        (True, 1_000, False, deposit_rules.DepositStatus.partially_reversed),
        (True, 9_680, False, deposit_rules.DepositStatus.reversed),  # all it received: 10,000 - fee
        (False, 0, True, deposit_rules.DepositStatus.returned),
        (True, 9_680, True, deposit_rules.DepositStatus.returned),
    ],
)
def test_deposit_status(
    transferred: bool, reversed_minor: int, returned: bool, status: deposit_rules.DepositStatus
) -> None:
    assert (
        deposit_rules.deposit_status(transferred, reversed_minor, 10_000, 320, returned) is status
    )


def test_a_return_takes_back_what_each_account_received() -> None:
    assert deposit_rules.reversed_minor("trust", 0, 30_000, 0, returned=True) == 30_000
    assert deposit_rules.reversed_minor("operating", 0, 70_000, 2_930, returned=True) == 67_070
    assert deposit_rules.reversed_minor("operating", 0, 0, 900, returned=True) == 0
    # Without a return, only the refunds take back.
    assert deposit_rules.reversed_minor("operating", 1_000, 70_000, 2_930, returned=False) == 1_000
