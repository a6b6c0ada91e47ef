"""A first sync's line items (issue 16, benchmark 1): stored without deleting first and kept
in memory by bill for the bills pass, they read the same as the stored ones; a line listed
twice, or moved to another bill, ends as it was last listed, in memory and in clio_lines; a
first sync that finds lines already stored (an earlier one stopped half-way) upserts them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from services.sync import lines as line_store
from services.sync.app import MIGRATIONS
from services.sync.models import Base, ClioLine
from services.sync.settings import SyncSettings
from shared.migrations import upgrade_async
from shared.runtime import Service

FIRM = "firm-first-lines"


def line(line_id: int | str, bill: int, total: float, **more: Any) -> dict[str, Any]:
    return {
        "id": line_id,
        "type": "ActivityLineItem",
        "kind": "Service",
        "date": "2026-01-02",
        "description": f"line {line_id}",
        "quantity": 1.5,
        "price": total / 1.5,
        "total": total,
        "updated_at": "2026-01-02T10:00:00Z",
        "bill": {"id": bill},
        **more,
    }


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    await upgrade_async(MIGRATIONS, database_url)
    settings = SyncSettings(database_url=database_url, environment="test", var_dir=tmp_path)
    svc = Service(settings, Base.metadata, MIGRATIONS)
    try:
        yield svc
    finally:
        await svc.engine.dispose()


async def store(service: Service, pages: list[list[Any]], held: line_store.Held | None) -> None:
    for page in pages:
        async with service.sessionmaker() as s, s.begin():
            await line_store.store_page(s, FIRM, page, held=held)


PAGES = [
    [line(12, 1, 10.0), line(3, 1, 20.5), line(4, 2, 7.25), "not a line", {"id": None}],
    [line(5, 2, 1.0), line(4, 2, 8.0), line("x7", 1, 3.0)],  # 4 again, changed
    [line(5, 3, 2.0), line(40, 1, 0.1, group_ordering=1)],  # 5 moved to bill 3
]


async def test_held_lines_read_as_the_stored_ones(service: Service) -> None:
    async with service.sessionmaker() as s:
        assert not await line_store.has_lines(s, FIRM)
    held = line_store.Held()
    await store(service, PAGES, held)
    bills = ["1", "2", "3", "9"]
    async with service.sessionmaker() as s:
        stored = await line_store.raw_lines(s, FIRM, bills)
        assert await line_store.has_lines(s, FIRM)
        count = await s.scalar(select(func.count()).select_from(ClioLine))
    assert count == 6  # 12, 3, 4, 5, x7, 40: each once
    assert held.raw_lines(bills) == dict(stored)
    assert [r["id"] for r in stored["1"]] == [3, 12, 40, "x7"]
    assert [r["total"] for r in stored["2"]] == [8.0]
    assert [r["id"] for r in stored["3"]] == [5]
    for bill in bills:
        assert line_store.mapped(held.raw_lines([bill]).get(bill), "USD") == line_store.mapped(
            stored.get(bill), "USD"
        )


async def test_a_first_sync_after_one_stopped_half_way_upserts(service: Service) -> None:
    await store(service, PAGES[:2], line_store.Held())
    # The cursor was never saved; the next round lists everything again, lines are stored.
    async with service.sessionmaker() as s:
        assert await line_store.has_lines(s, FIRM)
    await store(service, PAGES, None)
    async with service.sessionmaker() as s:
        stored = await line_store.raw_lines(s, FIRM, ["1", "2", "3"])
        count = await s.scalar(select(func.count()).select_from(ClioLine))
    assert count == 6
    held = line_store.Held()
    for page in PAGES:  # the same pages as a first sync would keep them
        held.keep(
            {
                str(i["id"]): (
                    str(i["bill"]["id"]),
                    {k: v for k, v in i.items() if k not in ("bill", "updated_at")},
                )
                for i in page
                if isinstance(i, dict) and i.get("id") is not None
            }
        )
    assert held.raw_lines(["1", "2", "3"]) == dict(stored)
