"""The firm user of send_all.py, through the gateway's pages as a browser posts them: log in,
save the settings, review a selection, open and post the Send All forms, follow progress."""

from __future__ import annotations

import html as htmllib
import re
import time
from typing import Any

import httpx

from bench.support.common import log
from devtools.stack import StackConfig, connect_clio, csrf_of, login

Form = tuple[str, dict[str, str]]  # a batch id and its Send All form


def error_text(resp: httpx.Response) -> str:
    """`status title: message` of a gateway error page (or the start of any other body)."""
    body = resp.text
    m = re.search(r"<h1>(.*?)</h1>\s*<p>(.*?)</p>", body, re.S)
    if m:
        text = f"{htmllib.unescape(m.group(1))}: {htmllib.unescape(m.group(2))}"
    else:
        text = " ".join(re.sub(r"<[^>]+>", " ", body).split())
    return f"{resp.status_code} {text[:200]}"


def parse_send_all_form(page: str) -> dict[str, str]:
    def hidden(name: str) -> str:
        m = re.search(rf'name="{name}" value="([^"]*)"', page)
        if not m:
            raise RuntimeError(f"no {name} on the Send All form")
        return htmllib.unescape(m.group(1))

    subject = hidden("subject")
    m = re.search(r'<textarea name="body"[^>]*>(.*?)</textarea>', page, re.S)
    body = htmllib.unescape(m.group(1)) if m else ""
    return {
        "csrf_token": csrf_of(page),
        "run_id": hidden("run_id"),
        "expected": hidden("expected"),
        "subject": subject,
        "body": body,
    }


class FirmUser:
    """Logged in as the demo user; `label` (the case) starts its log lines."""

    def __init__(self, cfg: StackConfig, label: str) -> None:
        self.cfg = cfg
        self.label = label
        self.gw = httpx.Client(base_url=f"http://127.0.0.1:{cfg.ports.gateway}", timeout=300)
        self.csrf = login(self.gw)

    def save_settings(self, delivery: str) -> None:
        resp = self.gw.post(
            "/settings",
            data={
                "csrf_token": self.csrf,
                "name": "Demo Law LLP",
                "email": "billing@demolaw.example",
                "phone": "(555) 010-2030",
                "address": "100 Main Street, Suite 400\nSpringfield, IL 62701",
                "website": "",
                "combine_envelopes": "on",
                "default_delivery": delivery,
            },
        )
        if resp.status_code != 303:
            raise RuntimeError(f"settings: {error_text(resp)}")

    def connect_clio(self) -> None:
        connect_clio(self.cfg, self.gw, self.csrf)

    def _review_post(self, ids: list[str]) -> httpx.Response:
        return self.gw.post("/envelopes/review", data={"csrf_token": self.csrf, "invoice_ids": ids})

    def review(
        self, ids: list[str], by_client: dict[str, list[str]], chunk: int
    ) -> tuple[list[str], dict[str, Any]]:
        """One POST /envelopes/review with every id. Should the gateway refuse that, the
        refusal is recorded and the selection is posted in chunks of whole clients (so the
        grouping is the same), giving more than one batch to Send All."""
        info: dict[str, Any] = {"invoices": len(ids)}
        t = time.monotonic()
        resp = self._review_post(ids)
        info["single_post_status"] = resp.status_code
        info["single_post_seconds"] = round(time.monotonic() - t, 2)
        if resp.status_code == 303:
            return [resp.headers["location"].split("/")[2]], info
        info["single_post_error"] = error_text(resp)
        log(
            f"{self.label}: review of {len(ids)} invoices in one POST refused: "
            f"{info['single_post_error']}; posting in chunks of whole clients"
        )
        chunks: list[list[str]] = [[]]
        for group in by_client.values():
            if len(chunks[-1]) + len(group) > chunk:
                chunks.append([])
            chunks[-1].extend(group)
        batches = []
        t = time.monotonic()
        for part in chunks:
            resp = self._review_post(part)
            if resp.status_code != 303:
                raise RuntimeError(f"review: {error_text(resp)}")
            batches.append(resp.headers["location"].split("/")[2])
        info["chunked_posts"] = [len(c) for c in chunks]
        info["chunked_seconds"] = round(time.monotonic() - t, 2)
        return batches, info

    def send_all_forms(self, batches: list[str]) -> list[Form]:
        forms = []
        for batch_id in batches:
            page = self.gw.get(f"/batches/{batch_id}/send-all")
            page.raise_for_status()
            forms.append((batch_id, parse_send_all_form(page.text)))
        return forms

    def post_send_all(self, batch_id: str, form: dict[str, str]) -> str:
        """ "303", or what went wrong."""
        try:
            resp = self.gw.post(f"/batches/{batch_id}/send-all", data=form)
            return error_text(resp) if resp.status_code != 303 else "303"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"

    def progress(self, forms: list[Form]) -> dict[str, Any]:
        agg: dict[str, Any] = {"total": 0, "sent": 0, "failed": 0, "queued": 0, "failures": []}
        done = True
        for batch_id, form in forms:
            try:
                p = self.gw.get(
                    f"/batches/{batch_id}/runs/{form['run_id']}.json", timeout=30
                ).json()
            except (httpx.HTTPError, ValueError):
                return {**agg, "done": False}
            for k in ("total", "sent", "failed", "queued"):
                agg[k] += p[k]
            agg["failures"] += p["failures"]
            done = done and p["done"]
        agg["done"] = done and agg["total"] > 0
        return agg
