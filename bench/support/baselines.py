"""send_all.py's raw baselines, with no stack running: render_invoice_pdf on the same
snapshots in one fresh process, and aiosmtplib sending the same emails to a fresh sink.

Their input is the first case's envelope DB, dumped to baseline-input.json in the run's
var dir (--baseline-input runs them alone from an earlier run's dump)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.support.common import ROOT, fresh_ports, loadavg, log
from bench.support.procs import TICK, cpu_ticks, status_kb
from bench.support.sink import SinkCounter
from bench.support.stack import BenchStack
from devtools.stack import StackConfig

# The worker runs as send_all.py --render-worker, as it always has.
SEND_ALL = ROOT / "bench" / "send_all.py"


def now() -> float:
    return time.monotonic()


def run_baselines(input_path: Path, run_dir: Path, smtp_concurrency: int) -> dict[str, Any]:
    data = json.loads(Path(input_path).read_text())
    pdf_dir = run_dir / "baseline-pdfs"
    base: dict[str, Any] = {"loadavg_before": loadavg()}
    base["render"] = render_baseline(input_path, pdf_dir)
    base["smtp"] = [
        smtp_baseline(data, None, 1, run_dir / "smtp-link-seq"),
        smtp_baseline(data, None, smtp_concurrency, run_dir / "smtp-link"),
    ]
    if "error" not in base["render"]:
        base["smtp"].append(smtp_baseline(data, pdf_dir, smtp_concurrency, run_dir / "smtp-attach"))
    return base


def render_worker(input_path: str, out_dir: str) -> None:
    """Child process: render every snapshot once with render_invoice_pdf, as the envelope
    service would for an attachment (same firm profile, same pay link)."""
    from services.envelope import pdf
    from shared.events import FirmProfile, InvoiceSnapshot

    data = json.loads(Path(input_path).read_text())
    shown = getattr(pdf, "FIRM_FIELDS", None)  # the profile fields a PDF shows, if declared
    firm = FirmProfile.model_validate(
        {k: v for k, v in data["firm"].items() if shown is None or k in shown}
    )
    snaps = [InvoiceSnapshot.model_validate_json(s) for s in data["snapshots"].values()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rss_start = status_kb(os.getpid(), "VmHWM") or 0
    figures = _render_invoices(data, snaps, firm, out)
    figures = {**_render_statements(data, snaps, firm), **figures}
    figures["peak_rss_mb"] = round((status_kb(os.getpid(), "VmHWM") or 0) / 1024, 1)
    figures["rss_after_imports_mb"] = round(rss_start / 1024, 1)
    print(json.dumps(figures))


def _render_invoices(
    data: dict[str, Any], snaps: list[Any], firm: Any, out: Path
) -> dict[str, Any]:
    from services.envelope import pdf
    from shared.tokens import derive_token

    t = now()
    first = None
    total_bytes = 0
    for snap in snaps:
        token = derive_token("dev-link-secret", "invoice", data["firm_id"], snap.invoice_id)
        pay_url = f"{data['public_base_url']}/pay/{token}" if snap.balance_minor > 0 else None
        content = pdf.render_invoice_pdf(snap, firm, pay_url=pay_url)
        if first is None:
            first = now() - t
        total_bytes += len(content)
        (out / f"{snap.invoice_id.replace(':', '_')}.pdf").write_bytes(content)
    elapsed = now() - t
    return {
        "pdfs": len(snaps),
        "seconds": round(elapsed, 2),
        "pdfs_per_second": round(len(snaps) / elapsed, 2),
        "first_pdf_seconds": round(first or 0, 3),
        "mean_pdf_kb": round(total_bytes / max(1, len(snaps)) / 1024, 1),
    }


def _render_statements(data: dict[str, Any], snaps: list[Any], firm: Any) -> dict[str, Any]:
    """The statements of combined envelopes (one per envelope of more than one bill), which
    the send renders too: their pay link is the send's own, so none can be made ahead."""
    from services.envelope import pdf

    by_id = {s.invoice_id: s for s in snaps}
    groups = [json.loads(e["invoice_ids"]) for e in data["emails"]]
    groups = [[by_id[i] for i in g if i in by_id] for g in groups if len(g) > 1]
    st = now()
    for group in groups:
        if hasattr(pdf, "render_statement_pdf"):
            pdf.render_statement_pdf(
                group,
                firm,
                client_name=group[0].client_name,
                pay_url=f"{data['public_base_url']}/pay/{'x' * 43}",
                statement_date=date.today(),
            )
    st_elapsed = now() - st
    return {
        "statements": len(groups),
        "statement_seconds": round(st_elapsed, 2),
        "statements_per_second": round(len(groups) / st_elapsed, 2) if groups else None,
    }


def render_baseline(input_path: Path, out_dir: Path) -> dict[str, Any]:
    log("baseline: rendering the same PDFs with render_invoice_pdf in one process")
    proc = subprocess.run(
        [sys.executable, str(SEND_ALL), "--render-worker", str(input_path), str(out_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log(f"baseline: render {result}")
    return result


def build_messages(data: dict[str, Any], pdf_dir: Path | None) -> list[Any]:
    from services.mailer.message import build_message, message_id_for

    msgs = []
    for e in data["emails"]:
        attachments = []
        if pdf_dir is not None:
            for inv_id in json.loads(e["invoice_ids"]):
                path = pdf_dir / f"{inv_id.replace(':', '_')}.pdf"
                attachments.append(
                    {
                        "filename": f"invoice-{inv_id.split(':')[-1]}.pdf",
                        "content_type": "application/pdf",
                        "content_b64": base64.b64encode(path.read_bytes()).decode(),
                    }
                )
        content = {
            "to": json.loads(e["to"]),
            "cc": [],
            "from_name": e["from_name"],
            "reply_to": e["reply_to"],
            "subject": e["subject"],
            "html": e["html"],
            "text": e["text"],
            "attachments": attachments,
        }
        msgs.append(
            build_message(
                content,
                mail_from="billing@envelopepay.test",
                message_id=message_id_for(e["email_id"], "envelopepay.test"),
            )
        )
    return msgs


def smtp_baseline(
    data: dict[str, Any], pdf_dir: Path | None, concurrency: int, var_dir: Path
) -> dict[str, Any]:
    """aiosmtplib.send of the mailer's own MIME bytes, a connection per message (the mailer
    keeps its connections open: this is the plainer way), to a fresh sink."""
    import aiosmtplib

    msgs = build_messages(data, pdf_dir)
    cfg = StackConfig(var_dir=var_dir, ports=fresh_ports())
    stack = BenchStack(cfg)
    try:
        stack.start_sandboxes()
        counter = SinkCounter(stack.logs["mailsink"])
        counter.start()

        async def go() -> float:
            sem = asyncio.Semaphore(concurrency)

            async def one(m: Any) -> None:
                async with sem:
                    await aiosmtplib.send(
                        m.data,
                        sender=m.mail_from,
                        recipients=m.recipients,
                        hostname="127.0.0.1",
                        port=cfg.ports.smtp,
                        timeout=60,
                    )

            t = now()
            await asyncio.gather(*(one(m) for m in msgs))
            return now() - t

        elapsed = asyncio.run(go())
        deadline = now() + 10
        while counter.count < len(msgs) and now() < deadline:
            time.sleep(0.01)
        counter.stop()
        sink_pid = stack.procs["mailsink"].pid
        result = {
            "messages": len(msgs),
            "attachments": pdf_dir is not None,
            "concurrency": concurrency,
            "seconds": round(elapsed, 2),
            "messages_per_second": round(len(msgs) / elapsed, 1),
            "mean_message_kb": round(sum(len(m.data) for m in msgs) / len(msgs) / 1024, 1),
            "sink_cpu_seconds": round((cpu_ticks(sink_pid) or 0) / TICK, 2),
            "sink_peak_rss_mb": round((status_kb(sink_pid, "VmHWM") or 0) / 1024, 1),
        }
    finally:
        stack.stop()
    log(f"baseline: smtp {result}")
    return result
