"""The firm's Clio line items, kept by line id (clio_lines), and reading a bill's lines from them.

Clio lists line items across bills (`GET line_items.json`, 200 a page, `updated_since`), so a
first sync costs lines/200 requests instead of one per bill. A listing says which lines were
added or changed, never which were removed: see `Syncer` for when a bill's lines are fetched
by `bill_id` and replaced."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.sync.mapping import line_bill_id, line_items_from_clio, parse_ts
from services.sync.models import ClioLine
from shared.events import LineItem

_CHUNK = 500  # ids per IN (...): well under SQLite's and PostgreSQL's parameter limits
# One encoder for every line (json.dumps with options builds a new one each call).
_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
# One statement, built once (its compiled form is cached): a page's rows go in as executemany.
_INSERT = ClioLine.__table__.insert()


class Held:
    """A first sync's line items as listed, by bill, kept in memory for the bills pass so
    it maps them without reading clio_lines back (about 1 KB a line: 50 MB for 50,000)."""

    def __init__(self) -> None:
        self.by_bill: dict[str, dict[str, Any]] = defaultdict(dict)
        self.owner: dict[str, str] = {}  # line id -> bill id

    def keep(self, rows: dict[str, tuple[str, Any]]) -> None:
        for line_id, (bill_id, raw) in rows.items():
            before = self.owner.get(line_id)
            if before is not None and before != bill_id:
                self.by_bill[before].pop(line_id, None)
            self.owner[line_id] = bill_id
            self.by_bill[bill_id][line_id] = raw

    def raw_lines(self, bill_ids: Iterable[str]) -> dict[str, list[Any]]:
        """As `raw_lines` gives them: each bill's lines in Clio's id order."""
        found: dict[str, list[Any]] = {}
        for bill_id in bill_ids:
            lines = self.by_bill.get(bill_id)
            if lines:
                found[bill_id] = [lines[k] for k in sorted(lines, key=_as_int)]
        return found


async def has_lines(s: AsyncSession, firm_id: str) -> bool:
    return bool(await s.scalar(select(exists().where(ClioLine.firm_id == firm_id))))


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


async def store_page(
    s: AsyncSession,
    firm_id: str,
    page: list[Any],
    *,
    bill_id: str | None = None,
    held: Held | None = None,
) -> tuple[set[str], datetime | None]:
    """Upsert one listed page of line items; the bills they belong to and the newest
    updated_at among them. `bill_id` names the bill when the listing was for one bill.
    `held`: a first sync into an empty clio_lines, whose lines are kept there too; only a
    line listed twice is deleted before it is inserted again."""
    rows: dict[str, dict[str, Any]] = {}
    kept: dict[str, tuple[str, Any]] = {}
    newest: datetime | None = None
    for item in page:
        if not isinstance(item, dict) or item.get("id") is None:
            continue
        owner = line_bill_id(item) or bill_id
        if owner is None:
            continue
        ts = parse_ts(item.get("updated_at"))
        if ts and (newest is None or ts > newest):
            newest = ts
        raw = {k: v for k, v in item.items() if k not in ("bill", "updated_at")}
        line_id = str(item["id"])
        rows[line_id] = {
            "firm_id": firm_id,
            "line_id": line_id,
            "bill_id": owner,
            "raw": _dumps(raw),
        }
        if held is not None:
            kept[line_id] = (owner, raw)
    if rows:
        again = list(rows) if held is None else [i for i in rows if i in held.owner]
        for chunk in _chunks(again):
            await s.execute(
                delete(ClioLine).where(ClioLine.firm_id == firm_id, ClioLine.line_id.in_(chunk))
            )
        await s.execute(_INSERT, list(rows.values()))
        if held is not None:
            held.keep(kept)
    return {r["bill_id"] for r in rows.values()}, newest


async def forget_bill(s: AsyncSession, firm_id: str, bill_id: str) -> None:
    await s.execute(
        delete(ClioLine).where(ClioLine.firm_id == firm_id, ClioLine.bill_id == bill_id)
    )


async def raw_lines(s: AsyncSession, firm_id: str, bill_ids: list[str]) -> dict[str, list[Any]]:
    """Each bill's stored line items (as Clio listed them), by Clio bill id."""
    found: dict[str, list[Any]] = defaultdict(list)
    for chunk in _chunks(bill_ids):
        rows = await s.execute(
            select(ClioLine.bill_id, ClioLine.line_id, ClioLine.raw).where(
                ClioLine.firm_id == firm_id, ClioLine.bill_id.in_(chunk)
            )
        )
        # In Clio's id order, the order the listing gives and mapping falls back to.
        for bill_id, _, raw in sorted(rows, key=lambda r: (r[0], _as_int(r[1]))):
            found[bill_id].append(json.loads(raw))
    return found


def _as_int(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (2**63, value)


def mapped(raw: list[Any] | None, currency: str) -> list[LineItem]:
    return line_items_from_clio(raw or [], currency)
