"""Where a run's figures go: bench/results/<name>-<stamp>.json (git-ignored), and its working
directory under var/bench/<name>-<stamp>/ (logs, databases, mail)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bench.support.common import ROOT, VAR_ROOT, log

RESULTS_DIR = ROOT / "bench" / "results"


class Results:
    """One run's results file and var dir, named by the benchmark and the start time."""

    def __init__(self, name: str) -> None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.run_dir = VAR_ROOT / f"{name}-{stamp}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.path = RESULTS_DIR / f"{name}-{stamp}.json"

    def write(self, report: dict[str, Any]) -> None:
        """Written after each part as well as at the end, so a run cut short keeps its parts."""
        self.path.write_text(json.dumps(report, indent=2, default=str))

    def announce(self) -> None:
        log(f"results: {self.path}")
