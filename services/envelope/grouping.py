"""How selected invoices become envelopes. Plain functions over plain data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class HasClient(Protocol):
    @property
    def client_id(self) -> str: ...


T = TypeVar("T", bound=HasClient)


def group_into_envelopes(
    items: Sequence[T], *, combine: bool, max_per_envelope: int = 10
) -> list[list[T]]:
    """Combine off: one envelope per item. Combine on: one client's items share envelopes of
    at most `max_per_envelope`, in the order selected; clients in order of first appearance."""
    if max_per_envelope < 1:
        raise ValueError("max_per_envelope must be at least 1")
    if not combine:
        return [[item] for item in items]
    by_client: dict[str, list[T]] = {}
    for item in items:
        by_client.setdefault(item.client_id, []).append(item)
    envelopes: list[list[T]] = []
    for client_items in by_client.values():
        for start in range(0, len(client_items), max_per_envelope):
            envelopes.append(client_items[start : start + max_per_envelope])
    return envelopes
