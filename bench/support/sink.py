"""Counting the messages the mail sink accepted, as they arrive."""

from __future__ import annotations

import threading
import time
from pathlib import Path


class SinkCounter:
    """Counts messages the sink accepted by following its log: it logs 'mailsink stored'
    once a message is on disk, just before answering 250. Cheaper than listing the API."""

    def __init__(self, log_path: Path) -> None:
        self.path = log_path
        self.offset = log_path.stat().st_size if log_path.exists() else 0
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._buf = b""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def count(self) -> int:
        return len(self.times)

    def _run(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while not self._stop.is_set():
                chunk = f.read()
                if chunk:
                    t = time.monotonic()
                    self._buf += chunk
                    *lines, self._buf = self._buf.split(b"\n")
                    self.times.extend(t for line in lines if b"mailsink stored" in line)
                else:
                    time.sleep(0.01)
