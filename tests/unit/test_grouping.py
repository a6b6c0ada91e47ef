"""Grouping selected bills into envelopes, as Settings > Invoices > Combine describes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.envelope.grouping import group_into_envelopes


@dataclass(frozen=True)
class Bill:
    client_id: str
    number: str
    kind: str = "invoice"


def bills(client: str, count: int, kind: str = "invoice") -> list[Bill]:
    return [Bill(client, f"{client}-{kind}-{n}", kind) for n in range(1, count + 1)]


def sizes(envelopes: list[list[Bill]]) -> list[int]:
    return [len(e) for e in envelopes]


def test_combine_off_sends_one_envelope_per_bill() -> None:
    selected = bills("acme", 3) + bills("zeta", 2, "trust_request")
    envelopes = group_into_envelopes(selected, combine=False)
    assert envelopes == [[b] for b in selected]


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, [1]), (10, [10]), (11, [10, 1]), (20, [10, 10]), (23, [10, 10, 3])],
)
def test_combine_on_fills_envelopes_of_at_most_ten(count: int, expected: list[int]) -> None:
    selected = bills("acme", count)
    envelopes = group_into_envelopes(selected, combine=True)
    assert sizes(envelopes) == expected
    assert [b for e in envelopes for b in e] == selected  # in the order selected


def test_invoices_and_trust_requests_share_an_envelope() -> None:
    invoice, trust = Bill("acme", "INV-1"), Bill("acme", "TR-1", "trust_request")
    assert group_into_envelopes([invoice, trust], combine=True) == [[invoice, trust]]


def test_several_clients_keep_the_order_of_first_appearance() -> None:
    a1, b1, a2, c1, b2 = (
        Bill("acme", "A1"),
        Bill("beta", "B1"),
        Bill("acme", "A2"),
        Bill("cole", "C1"),
        Bill("beta", "B2", "trust_request"),
    )
    assert group_into_envelopes([a1, b1, a2, c1, b2], combine=True) == [[a1, a2], [b1, b2], [c1]]


def test_one_client_never_shares_an_envelope_with_another() -> None:
    selected = bills("acme", 12) + bills("beta", 3)
    envelopes = group_into_envelopes(selected, combine=True)
    assert sizes(envelopes) == [10, 2, 3]
    assert [{b.client_id for b in e} for e in envelopes] == [{"acme"}, {"acme"}, {"beta"}]


def test_nothing_selected_makes_no_envelope() -> None:
    assert group_into_envelopes([], combine=True) == []
    assert group_into_envelopes([], combine=False) == []


@pytest.mark.parametrize("limit", [0, -1])
def test_an_envelope_must_hold_at_least_one_bill(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        group_into_envelopes(bills("acme", 2), combine=True, max_per_envelope=limit)
    with pytest.raises(ValueError, match="at least 1"):
        group_into_envelopes(bills("acme", 2), combine=False, max_per_envelope=limit)


SELECTIONS = st.lists(
    st.builds(
        Bill,
        client_id=st.sampled_from(["acme", "beta", "cole"]),
        number=st.text(min_size=1, max_size=4),
        kind=st.sampled_from(["invoice", "trust_request"]),
    ),
    max_size=60,
)


@given(selected=SELECTIONS, limit=st.integers(min_value=1, max_value=12))
def test_combined_envelopes_hold_every_bill_once(selected: list[Bill], limit: int) -> None:
    envelopes = group_into_envelopes(selected, combine=True, max_per_envelope=limit)
    assert all(1 <= len(e) <= limit for e in envelopes)
    assert all(len({b.client_id for b in e}) == 1 for e in envelopes)
    for client in {b.client_id for b in selected}:
        mine = [b for e in envelopes for b in e if b.client_id == client]
        assert mine == [b for b in selected if b.client_id == client]
        # only a client's last envelope may be short
        counts = [len(e) for e in envelopes if e[0].client_id == client]
        assert all(n == limit for n in counts[:-1])
