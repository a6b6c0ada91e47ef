"""One replica of the envelope scheduler in its own process, for
tests/envelope/test_reminders_concurrency.py: reads its settings, says "ready", waits for a
line on stdin, runs passes as of the moments given, prints what it queued as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime

from services.envelope.app import MIGRATIONS
from services.envelope.models import Base
from services.envelope.reminders import Reminders
from services.envelope.settings import EnvelopeSettings
from shared.clock import ManualClock
from shared.runtime import Service


async def main(database_url: str, moments: list[str]) -> None:
    settings = EnvelopeSettings(database_url=database_url, environment="test")
    service = Service(settings, Base.metadata, MIGRATIONS)
    reminders = Reminders(service, settings, ManualClock(datetime.fromisoformat(moments[0])))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    queued = lost = 0
    for m in moments:
        r = await reminders.run_pass(datetime.fromisoformat(m))
        queued, lost = queued + r.queued, lost + r.lost
    await service.engine.dispose()
    print(json.dumps({"queued": queued, "lost": lost}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
