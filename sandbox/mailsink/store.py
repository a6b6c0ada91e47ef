"""On-disk message store: one .eml file per message plus a JSON index.

The .eml files hold the bytes exactly as received over SMTP. The index holds the
envelope and the parsed summary so listing thousands of messages never re-parses them.
It is a snapshot (index.json) and a journal (index.log, one summary per line): a new
message appends one line, so storing the n-th message costs the same as the first (the
snapshot alone was rewritten whole per message, quadratic over a busy run). The journal
is folded into the snapshot when it grows past the snapshot's size and when the store
opens; a torn last line is skipped, and the .eml file salvages that message.
All methods are synchronous and thread-safe: the SMTP handler calls them through
asyncio.to_thread and FastAPI runs the sync endpoints in its thread pool, so large
messages never block the event loop.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from pydantic import ValidationError

from .models import Envelope, MessageSummary
from .parsing import header_addresses, parse_message, summarize

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGES = 5000
INDEX_VERSION = 2
JOURNAL_MIN_LINES = 500  # the journal is folded in past this or the snapshot's size

# Millisecond timestamp + random suffix: sorts by arrival, cannot collide, and the strict
# pattern means an id can never be used to escape the store directory.
_ID_RE = re.compile(r"[0-9]{13}-[0-9a-f]{8}")


@dataclass(frozen=True)
class _Salvaged:
    envelope: Envelope
    received_at: datetime


@dataclass(frozen=True)
class LoadedMessage:
    summary: MessageSummary
    raw: bytes
    message: EmailMessage


class MailStore:
    def __init__(
        self, directory: str | os.PathLike[str], max_messages: int = DEFAULT_MAX_MESSAGES
    ) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.directory = Path(directory)
        self.max_messages = max_messages
        self._messages_dir = self.directory / "messages"
        self._index_path = self.directory / "index.json"
        self._journal_path = self.directory / "index.log"
        self._journal_lines = 0
        self._lock = threading.Lock()
        # Oldest first; ids are generated in increasing order so appending keeps it sorted.
        self._summaries: dict[str, MessageSummary] = {}
        self._last_stamp = 0
        self._messages_dir.mkdir(parents=True, exist_ok=True)
        self._load()

    # -- public API -------------------------------------------------------------------

    def add(
        self,
        raw: bytes,
        mail_from: str,
        rcpt_tos: Sequence[str],
        received_at: datetime | None = None,
    ) -> MessageSummary:
        received_at = received_at or datetime.now(UTC)
        with self._lock:
            message_id = self._new_id()
        envelope = Envelope(mail_from=mail_from, rcpt_tos=list(rcpt_tos))
        # Parsing a 25 MB message takes a while; do it outside the lock.
        try:
            summary = summarize(
                message_id,
                raw,
                mail_from=envelope.mail_from,
                rcpt_tos=envelope.rcpt_tos,
                received_at=received_at,
            )
        except Exception:
            # A sink that refuses odd mail hides exactly the bugs it is there to show;
            # keep the bytes and let the raw view tell the story.
            log.exception("mailsink could not parse message %s; storing it raw", message_id)
            summary = MessageSummary(
                id=message_id,
                from_=mail_from,
                from_name="",
                to=list(rcpt_tos),
                subject="(unparseable message)",
                received_at=received_at,
                message_id=None,
                size=len(raw),
                attachments=[],
                envelope=envelope,
            )
        with self._lock:
            self._write_atomic(self._eml_path(message_id), raw)
            self._summaries[message_id] = summary
            # Ids are reserved in order but parsing may finish out of order.
            if next(reversed(self._summaries)) != message_id:
                self._summaries = dict(sorted(self._summaries.items()))
            self._trim()
            self._journal(summary)
        return summary

    def messages(self, to: str | None = None) -> list[MessageSummary]:
        """Newest first, optionally only messages with a recipient containing `to`."""
        with self._lock:
            summaries = list(reversed(self._summaries.values()))
        if to:
            summaries = [s for s in summaries if s.matches_recipient(to)]
        return summaries

    def get(self, message_id: str) -> MessageSummary | None:
        if not _ID_RE.fullmatch(message_id):
            return None
        with self._lock:
            return self._summaries.get(message_id)

    def raw(self, message_id: str) -> bytes | None:
        if self.get(message_id) is None:
            return None
        try:
            return self._eml_path(message_id).read_bytes()
        except FileNotFoundError:  # deleted between the lookup and the read
            return None

    def load(self, message_id: str) -> LoadedMessage | None:
        summary = self.get(message_id)
        raw = self.raw(message_id)
        if summary is None or raw is None:
            return None
        return LoadedMessage(summary=summary, raw=raw, message=parse_message(raw))

    def delete(self, message_id: str) -> bool:
        with self._lock:
            if self._summaries.pop(message_id, None) is None:
                return False
            self._eml_path(message_id).unlink(missing_ok=True)
            self._save_index()
            return True

    def delete_all(self) -> int:
        with self._lock:
            count = len(self._summaries)
            for message_id in self._summaries:
                self._eml_path(message_id).unlink(missing_ok=True)
            self._summaries.clear()
            self._save_index()
            return count

    def __len__(self) -> int:
        with self._lock:
            return len(self._summaries)

    # -- internals --------------------------------------------------------------------

    def _eml_path(self, message_id: str) -> Path:
        return self._messages_dir / f"{message_id}.eml"

    def _new_id(self) -> str:
        # Strictly increasing even within one millisecond, so id order is arrival order.
        stamp = max(time.time_ns() // 1_000_000, self._last_stamp + 1)
        self._last_stamp = stamp
        return f"{stamp:013d}-{secrets.token_hex(4)}"

    def _trim(self) -> None:
        while len(self._summaries) > self.max_messages:
            oldest = next(iter(self._summaries))
            del self._summaries[oldest]
            self._eml_path(oldest).unlink(missing_ok=True)

    def _save_index(self) -> None:
        """A new snapshot of every summary; the journal it folds in is emptied after."""
        payload = {
            "version": INDEX_VERSION,
            "messages": [s.model_dump(mode="json") for s in self._summaries.values()],
        }
        self._write_atomic(self._index_path, json.dumps(payload, ensure_ascii=False).encode())
        self._journal_path.unlink(missing_ok=True)
        self._journal_lines = 0

    def _journal(self, summary: MessageSummary) -> None:
        if self._journal_lines >= max(JOURNAL_MIN_LINES, len(self._summaries)):
            self._save_index()  # folds this summary in too
            return
        line = json.dumps(
            {"version": INDEX_VERSION, **summary.model_dump(mode="json")}, ensure_ascii=False
        )
        with self._journal_path.open("ab") as journal:
            journal.write(line.encode() + b"\n")
        self._journal_lines += 1

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        # A crash mid-write must never leave a truncated index or message behind.
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _load(self) -> None:
        indexed, salvaged = self._read_index()
        journaled = self._read_journal(indexed)
        on_disk = sorted(
            p.stem for p in self._messages_dir.glob("*.eml") if _ID_RE.fullmatch(p.stem)
        )
        summaries: dict[str, MessageSummary] = {}
        rebuilt = 0
        for message_id in on_disk:
            summary = indexed.get(message_id)
            if summary is None:
                # The .eml is written before the index, so a crash in between (or a lost
                # index) leaves messages only the files know about; keep them.
                summary = self._summary_from_file(message_id, salvaged.get(message_id))
                if summary is None:
                    continue
                rebuilt += 1
            summaries[message_id] = summary
        self._summaries = summaries
        if on_disk:
            self._last_stamp = int(on_disk[-1].split("-", 1)[0])
        self._trim()
        dropped = len(indexed.keys() - summaries.keys())
        if rebuilt or dropped:
            log.warning(
                "mailsink index updated: %d entries rebuilt from .eml files, %d dropped",
                rebuilt,
                dropped,
            )
        if rebuilt or dropped or journaled or not self._index_path.exists():
            self._save_index()
        for tmp in (*self.directory.glob(".*.tmp"), *self._messages_dir.glob(".*.tmp")):
            tmp.unlink(missing_ok=True)

    def _read_journal(self, indexed: dict[str, MessageSummary]) -> int:
        """Adds the journal's summaries to `indexed`; returns how many lines it had."""
        try:
            lines = self._journal_path.read_bytes().splitlines()
        except FileNotFoundError:
            return 0
        for line in lines:
            try:
                entry = json.loads(line)
                if entry.pop("version", None) != INDEX_VERSION:
                    continue
                summary = MessageSummary.model_validate(entry)
            except (ValueError, ValidationError, AttributeError):
                continue  # a line torn by a crash: the .eml file still has the message
            indexed[summary.id] = summary
        return max(1, len(lines))

    def _read_index(self) -> tuple[dict[str, MessageSummary], dict[str, _Salvaged]]:
        try:
            payload = json.loads(self._index_path.read_bytes())
        except FileNotFoundError:
            return {}, {}
        except ValueError as exc:
            log.warning("mailsink index %s unreadable (%s); rebuilding", self._index_path, exc)
            return {}, {}
        entries = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(entries, list):
            log.warning("mailsink index %s has no message list; rebuilding", self._index_path)
            return {}, {}
        current = payload.get("version") == INDEX_VERSION
        summaries: dict[str, MessageSummary] = {}
        salvaged: dict[str, _Salvaged] = {}
        for entry in entries:
            if current:
                try:
                    summary = MessageSummary.model_validate(entry)
                except ValidationError:
                    pass
                else:
                    summaries[summary.id] = summary
                    continue
            # An entry from another index version (or a damaged one) is re-derived from
            # its .eml, keeping what only the index knew: the envelope and arrival time.
            try:
                salvaged[str(entry["id"])] = _Salvaged(
                    envelope=Envelope.model_validate(entry["envelope"]),
                    received_at=datetime.fromisoformat(entry["received_at"]),
                )
            except (KeyError, TypeError, ValueError):
                continue
        return summaries, salvaged

    def _summary_from_file(
        self, message_id: str, salvaged: _Salvaged | None
    ) -> MessageSummary | None:
        try:
            raw = self._eml_path(message_id).read_bytes()
        except OSError:
            return None
        if salvaged is not None:
            envelope, received_at = salvaged.envelope, salvaged.received_at
        else:
            # The envelope only lived in the index; the headers are the best guess left.
            message = parse_message(raw)
            from_pairs = header_addresses(message, "From")
            envelope = Envelope(
                mail_from=from_pairs[0][1] if from_pairs else "",
                rcpt_tos=[
                    addr for name in ("To", "Cc") for _, addr in header_addresses(message, name)
                ],
            )
            stamp_ms = int(message_id.split("-", 1)[0])
            received_at = datetime.fromtimestamp(stamp_ms / 1000, tz=UTC)
        return summarize(
            message_id,
            raw,
            mail_from=envelope.mail_from,
            rcpt_tos=envelope.rcpt_tos,
            received_at=received_at,
        )
