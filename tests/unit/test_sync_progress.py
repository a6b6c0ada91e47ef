"""The Sync button's progress: time left at the rate so far, by requests while the plan of
requests is ahead of what was made (a first sync lists line items before bills), else by
bills read of the total Clio announced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.sync.progress import RunState, running, seconds_left

T0 = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


def test_the_plan_grows_by_the_pages_a_listing_announces() -> None:
    run = RunState(started_at=T0)
    run.planned = 1
    run.expect(50_000)  # 250 pages: the first is made
    assert run.planned == 250
    run.expect(150)  # one page, the one made
    run.expect(None)
    assert run.planned == 250


def test_time_left_by_requests_then_by_bills() -> None:
    run = RunState(started_at=T0, requests=50, planned=300)
    # 50 requests in 60 s: 250 more take 300 s.
    assert seconds_left(run, T0 + timedelta(seconds=60)) == 300.0
    run = RunState(started_at=T0, requests=300, planned=300, total=10_000, fetched=2_500)
    assert seconds_left(run, T0 + timedelta(seconds=100)) == 300.0
    run.fetched = 10_000
    assert seconds_left(run, T0 + timedelta(seconds=400)) == 0.0


def test_nothing_to_go_on_is_no_estimate() -> None:
    assert seconds_left(RunState(started_at=T0), T0 + timedelta(seconds=5)) is None
    assert seconds_left(RunState(started_at=T0, total=100), T0) is None


def test_a_running_sync_reads_as_running() -> None:
    run = RunState(started_at=T0, fetched=10, total=20, changed=3, requests=2, planned=2)
    progress = running(run, T0 + timedelta(seconds=10))
    assert progress.running and progress.fetched == 10 and progress.total == 20
    assert progress.seconds_left == 10.0 and progress.finished_at is None
