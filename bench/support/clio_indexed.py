"""The Clio sandbox with an index of line items by bill, for benchmarks with large firms.

The sandbox's `bill_line_items` scans every line item of the world, and `GET line_items.json`
renders every line item with its bill before filtering: O(lines^2) per request. With 1,000
bills (about 4,000 lines) that is ~1.3 s per request, and the first sync asks once per bill.
This launcher serves the same app with `bill_line_items` answered from an index (rebuilt
whenever line items were added: the sandbox only ever adds them) and `line_item_full`
memoized per line item while its bill, matter and user objects are the same ones (the
sandbox replaces a record's object when it changes it), so the first sync is not what the
benchmark waits for. Same responses; nothing under sandbox/ is changed.

    python bench/support/clio_indexed.py      # as `python -m sandbox.clio`, same env
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandbox.clio import render  # noqa: E402
from sandbox.clio.records import LineItem, World  # noqa: E402

_index: dict[int, tuple[int, int, dict[int, list[LineItem]]]] = {}


def bill_line_items(world: World, bill_id: int) -> list[LineItem]:
    items = world.line_items
    cached = _index.get(id(world))
    if cached is None or cached[0] != id(items) or cached[1] != len(items):
        by_bill: dict[int, list[LineItem]] = {}
        for item in items.values():
            by_bill.setdefault(item.bill_id, []).append(item)
        for group in by_bill.values():
            group.sort(key=lambda item: item.id)
        cached = (id(items), len(items), by_bill)
        _index.clear()
        _index[id(world)] = cached
    return list(cached[2].get(bill_id, ()))


_line_item_full = render.line_item_full
_rendered: dict[int, tuple[Any, ...]] = {}


def line_item_full(world: World, item: LineItem) -> dict[str, Any]:
    bill = world.bills.get(item.bill_id)
    matter = world.matters.get(item.matter_id) if item.matter_id is not None else None
    inputs = (item, world, bill, matter, world.user)
    hit = _rendered.get(id(item))
    # The cached objects are kept alive by the cache, so identity cannot be a reused id.
    if hit is not None and all(a is b for a, b in zip(hit[:5], inputs, strict=True)):
        return hit[5]
    row = _line_item_full(world, item)
    _rendered[id(item)] = (*inputs, row)
    return row


render.bill_line_items = bill_line_items
render.line_item_full = line_item_full

if __name__ == "__main__":
    from sandbox.clio.__main__ import main

    main()
