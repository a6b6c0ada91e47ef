"""To record in Clio's pure rules: what is listed, and how Clio's movement is matched to the
payments of one bill."""

from __future__ import annotations

from services.payments.record_rules import Held, moved, now_recorded, to_record


def held(i: int, amount: int, paid: int | None, balance: int, recorded: bool = False) -> Held:
    return Held(i, amount, paid, balance, recorded)


def test_only_money_that_arrived_less_refunds() -> None:
    assert to_record("succeeded", 10_000, 0) == 10_000
    assert to_record("partially_refunded", 10_000, 2_500) == 7_500
    for status in ("processing", "failed", "returned", "refunded"):
        assert to_record(status, 10_000, 0) == 0
    assert to_record("succeeded", 10_000, 12_000) == 0


def test_movement_is_paid_up_or_else_balance_down() -> None:
    h = held(1, 100, paid=500, balance=1_000)
    assert moved(h, paid_now=600, balance_now=1_000) == 100  # recorded; total unchanged
    assert moved(h, paid_now=600, balance_now=1_200) == 100  # recorded; a new charge too
    assert moved(held(1, 100, None, 1_000), paid_now=None, balance_now=900) == 100


def test_a_payment_leaves_once_clio_moved_by_its_amount() -> None:
    items = [held(1, 400, 0, 1_000)]
    assert now_recorded(items, paid_now=0, balance_now=1_000) == []
    assert now_recorded(items, paid_now=399, balance_now=601) == []
    assert now_recorded(items, paid_now=400, balance_now=600) == [1]


def test_several_payments_matched_in_order_a_smaller_later_one_first() -> None:
    items = [held(1, 900, 0, 900), held(2, 300, 0, 1_200)]
    assert now_recorded(items, paid_now=300, balance_now=900) == [2]
    after = [held(1, 900, 0, 900), held(2, 300, 0, 1_200, recorded=True)]
    assert now_recorded(after, paid_now=300, balance_now=900) == []  # same figures again
    assert now_recorded(after, paid_now=1_200, balance_now=0) == [1]
    assert now_recorded(items, paid_now=1_200, balance_now=0) == [1, 2]


def test_nothing_waiting_nothing_found() -> None:
    assert now_recorded([], 0, 0) == []
    assert now_recorded([held(1, 0, 0, 0), held(2, 50, 0, 50, recorded=True)], 50, 0) == []
