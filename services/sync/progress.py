"""A sync round's counters while it runs, and the SyncProgress the Sync button shows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.sync.models import SyncRun
from shared.api.sync import SyncProgress

PAGE = 200  # records per listed page: Clio's maximum


@dataclass
class SyncResult:
    fetched: int = 0
    changed: int = 0
    quarantined: int = 0
    error: str | None = None


@dataclass
class RunState(SyncResult):
    """One sync round of one firm. `planned` is the requests the round expects to make, known
    piecemeal from each listing's first page (meta.records)."""

    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    total: int | None = None
    requests: int = 0
    planned: int = 0

    def outcome(self) -> SyncResult:
        return SyncResult(self.fetched, self.changed, self.quarantined, self.error)

    def expect(self, records: object) -> None:
        """A listing's first page said how many records it has: plan its remaining pages."""
        if isinstance(records, int) and not isinstance(records, bool) and records > PAGE:
            self.planned += math.ceil(records / PAGE) - 1


def seconds_left(run: RunState, now: datetime) -> float | None:
    """At the rate so far: by requests when the plan is known past what was made (a first
    sync's line items come before its bills), else by bills read of `total`."""
    elapsed = (now - run.started_at).total_seconds()
    if elapsed <= 0:
        return None
    if run.planned > run.requests and run.requests > 0:
        return round((run.planned - run.requests) * elapsed / run.requests, 1)
    if run.total is None:
        return None
    if run.fetched >= run.total:
        return 0.0
    if run.fetched == 0:
        return None
    return round((run.total - run.fetched) * elapsed / run.fetched, 1)


def running(run: RunState, now: datetime | None = None) -> SyncProgress:
    return SyncProgress(
        running=True,
        started_at=run.started_at,
        fetched=run.fetched,
        total=run.total,
        changed=run.changed,
        quarantined=run.quarantined,
        requests=run.requests,
        seconds_left=seconds_left(run, now or datetime.now(UTC)),
        error=run.error,
    )


def finished(row: SyncRun | None) -> SyncProgress:
    if row is None:
        return SyncProgress()
    return SyncProgress(
        running=False,
        started_at=row.started_at,
        finished_at=row.finished_at,
        fetched=row.fetched or 0,
        total=row.total,
        changed=row.changed or 0,
        quarantined=row.quarantined or 0,
        requests=row.requests or 0,
        seconds_left=None,
        error=row.error,
    )
