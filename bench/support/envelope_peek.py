"""What the envelope service holds for the benchmark's firm, asked through its internal API
and read from its database while it runs."""

from __future__ import annotations

import json
from typing import Any

import httpx

from bench.support.common import INTERNAL
from bench.support.db import Db
from devtools.stack import StackConfig

EMAIL_COLUMNS = (
    "email_id",
    "envelope_id",
    "to",
    "from_name",
    "reply_to",
    "subject",
    "html",
    "text",
    "invoice_ids",
)


class EnvelopePeek:
    def __init__(self, cfg: StackConfig, firm_id: str, client_prefix: str) -> None:
        self.cfg = cfg
        self.firm_id = firm_id
        self.client_prefix = client_prefix
        self.db = Db(cfg.database_url("envelope"))

    def api(self, path: str, **params: Any) -> Any:
        resp = httpx.get(
            f"http://127.0.0.1:{self.cfg.ports.envelope}/internal{path}",
            params=params,
            headers=INTERNAL,
            timeout=60,
        )
        resp.raise_for_status()
        return resp.json()

    def unpaid_total(self) -> int:
        """How many of the bench's unpaid invoices the envelope service lists."""
        page = self.api(
            f"/firms/{self.firm_id}/invoices", state="unpaid", q=self.client_prefix, per_page=1
        )
        return int(page["total"])

    def invoices(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.api(
                f"/firms/{self.firm_id}/invoices",
                state="unpaid",
                q=self.client_prefix,
                per_page=200,
                page=page,
            )
            out.extend(data["items"])
            if page * 200 >= data["total"]:
                return out
            page += 1

    def pdf_invoice_ids(self) -> set[str]:
        return {r[0] for r in self.db.rows("SELECT invoice_id FROM pdfs") if r[0]}

    def statement_pdfs(self) -> int:
        rows = self.db.rows("SELECT count(*) FROM pdfs WHERE invoice_id IS NULL")
        return int(rows[0][0])

    def firm_profile(self) -> dict[str, Any] | None:
        rows = self.db.rows("SELECT profile FROM firms WHERE firm_id = $1", self.firm_id)
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    def baseline_input(self, ids: set[str]) -> dict[str, Any]:
        """The invoice snapshots and emails of a send, for the raw baselines."""
        rows = self.db.rows("SELECT invoice_id, snapshot FROM invoices")
        snaps = {i: s for i, s in rows if i in ids}
        emails = self.db.rows(
            'SELECT e.email_id, e.envelope_id, e."to", e.from_name, e.reply_to, e.subject, '
            "e.html, e.text, v.invoice_ids FROM emails e JOIN envelopes v ON v.id = e.envelope_id"
        )
        return {
            "firm_id": self.firm_id,
            "firm": self.firm_profile(),
            "public_base_url": f"http://127.0.0.1:{self.cfg.ports.gateway}",
            "snapshots": snaps,
            "emails": [dict(zip(EMAIL_COLUMNS, e, strict=True)) for e in emails],
        }
