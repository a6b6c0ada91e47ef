"""What the services logged during a run: errors, tracebacks and known trouble, counted (a
500's traceback is in the log, never shown to the client)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

LOG_PATTERNS = {
    "errors": re.compile(r" ERROR "),
    "warnings": re.compile(r" WARNING "),
    "tracebacks": re.compile(r"^Traceback"),
    "requeued": re.compile(r"failed; requeued"),
    "database_locked": re.compile(r"database is locked"),
    "retrying": re.compile(r"retrying in"),
    "clio_429": re.compile(r"Clio answered 429"),
    "db_pool_timeouts": re.compile(r"QueuePool limit"),
    "upstream_timeouts": re.compile(r"is not answering"),
    "render_pool_broke": re.compile(r"render pool broke"),
}


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def scan_log(path: Path, since: int = 0) -> dict[str, Any]:
    """Errors and tracebacks a service logged from byte `since` on."""
    if not path.exists():
        return {}
    with open(path, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    errors = [
        line
        for line in text.splitlines()
        if " ERROR " in line or " CRITICAL " in line or line.startswith("ERROR:")
    ]
    out: dict[str, Any] = {"errors": len(errors), "tracebacks": text.count("Traceback")}
    if errors:
        out["first_error"] = errors[0][:400]
    return out


def _count_patterns(text: str) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    first_error = None
    for line in text.splitlines():
        for key, pat in LOG_PATTERNS.items():
            if pat.search(line):
                counts[key] = counts.get(key, 0) + 1
                if key == "errors" and first_error is None:
                    first_error = line[:300]
    if first_error:
        counts["first_error"] = first_error
    return counts


def scan_logs(log_dir: Path, ends: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """LOG_PATTERNS counted per log file of a stack, each up to byte ends[service] if given."""
    out: dict[str, dict[str, Any]] = {}
    if not log_dir.exists():
        return out
    for path in sorted(log_dir.glob("*.log")):
        raw = path.read_bytes()
        if ends and path.stem in ends:
            raw = raw[: ends[path.stem]]
        counts = _count_patterns(raw.decode(errors="replace"))
        if counts:
            out[path.stem] = counts
    return out
