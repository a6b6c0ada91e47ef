"""send_all.py's printed report: the cases against their targets, peak memory, CPU during the
send, the raw baselines and what each case noticed on the way."""

from __future__ import annotations

from typing import Any

from bench.support.report import code_text, rule

TARGET_FAST_S = 10.0  # secure-link and warm: all delivered within 10 s
TARGET_COLD_RATIO = 0.8  # cold throughput >= 0.8 x raw single-process rendering throughput


def print_report(report: dict[str, Any]) -> None:
    cases = report["cases"]
    base = report.get("baselines", {})
    print()
    rule("=")
    _print_header(report)
    rule()
    _print_cases(cases, (base.get("render") or {}).get("pdfs_per_second"))
    rule()
    _print_peaks(cases)
    _print_send_cpu(cases)
    rule()
    if base:
        _print_baselines(base)
    for c in cases:
        for n in case_notes(c):
            print(f"  [{c['case']}] {n}")
    rule("=")


def _print_header(report: dict[str, Any]) -> None:
    print(
        f"{code_text(report['code'])}; bus prefetch {report['bus_prefetch']}"
        + (f"; service env {report['service_env']}" if report.get("service_env") else "")
    )
    print(
        f"Send All benchmark: {report['invoices']} unpaid invoices, {report['clients']} "
        f"clients, combine on -> {report['envelopes_expected']} envelopes; "
        f"{report['cpus']} CPUs; db {report['database']}"
    )


def _target(c: dict[str, Any], raw_pdf: float | None) -> str:
    """The case against its target; a cold case's ratio is kept in its results too."""
    if c["case"] in ("link", "warm"):
        ok = c.get("complete") and c["seconds"] < TARGET_FAST_S
        return f"< {TARGET_FAST_S:.0f} s: {'MET' if ok else 'MISSED'}"
    ratio = (c.get("invoices_per_second") or 0) / raw_pdf if raw_pdf else None
    c["ratio_to_raw_render"] = round(ratio, 2) if ratio is not None else None
    ok = ratio is not None and ratio >= TARGET_COLD_RATIO and c.get("complete")
    return (
        f">= {TARGET_COLD_RATIO} x raw {raw_pdf} pdf/s: ratio "
        f"{c['ratio_to_raw_render']} {'MET' if ok else 'MISSED'}"
    )


def _print_cases(cases: list[dict[str, Any]], raw_pdf: float | None) -> None:
    hdr = f"{'case':<6}{'msgs':>10}{'time s':>9}{'msg/s':>8}{'inv/s':>8}{'POST s':>8}"
    hdr += f"{'done s':>8}{'pdf@clk':>8}{'peak MB':>9}  target"
    print(hdr)
    for c in cases:
        if "error" in c and "seconds" not in c:
            print(f"{c['case']:<6} ERROR {c['error']}")
            continue
        msgs = f"{c.get('delivered')}/{c.get('envelopes')}"
        target = _target(c, raw_pdf)
        print(
            f"{c['case']:<6}{msgs:>10}{c['seconds']:>9}{c.get('messages_per_second') or 0:>8}"
            f"{c.get('invoices_per_second') or 0:>8}{sum(c.get('post_seconds') or [0]):>8.2f}"
            f"{c.get('progress_done_seconds') or '-':>8}{c.get('pdfs_ready_at_click', '-'):>8}"
            f"{c['peak_lifetime']['sum_mb']:>9}  {target}"
        )


def _print_peaks(cases: list[dict[str, Any]]) -> None:
    print("peak RSS per process, MB (lifetime / since the click):")
    names = sorted({n for c in cases for n in c.get("peak_lifetime", {}).get("per_process_mb", {})})
    print(f"  {'process':<28}" + "".join(f"{c['case']:>18}" for c in cases))
    for n in names:
        cells = []
        for c in cases:
            life = c.get("peak_lifetime", {}).get("per_process_mb", {}).get(n)
            since = c.get("peak_since_click", {}).get("per_process_mb", {}).get(n)
            cells.append(
                f"{life if life is not None else '-'} / {since if since is not None else '-'}"
            )
        print(f"  {n:<28}" + "".join(f"{x:>18}" for x in cells))
    sums = [
        f"{c.get('peak_lifetime', {}).get('sum_mb', '-')} / "
        f"{c.get('peak_since_click', {}).get('sum_mb', '-')}"
        for c in cases
    ]
    print(f"  {'SUM':<28}" + "".join(f"{x:>18}" for x in sums))


def _print_send_cpu(cases: list[dict[str, Any]]) -> None:
    print("CPU seconds per process during the send (click -> last message):")
    for c in cases:
        print(f"  {c['case']:<6} {c.get('cpu_seconds_during_send')}")
        m = c.get("machine_cpu_during_send")
        if m:
            print(
                f"         machine: {m['busy_cpu_seconds']} of {m['capacity_cpu_seconds']} "
                f"CPU-s busy; stack {m['stack_cpu_seconds']}, RabbitMQ "
                f"{m.get('rabbitmq_cpu_seconds')}, other processes on the machine "
                f"{m['other_processes_cpu_seconds']}"
            )
        q = {k.split(".", 2)[2]: v for k, v in (c.get("queues_at_end") or {}).items() if v}
        if q:
            print(f"         left on the bus at the end: {q}")
        if c.get("pdfs_rendered_during_send"):
            print(f"         PDFs rendered after the click: {c['pdfs_rendered_during_send']}")


def _print_baselines(base: dict[str, Any]) -> None:
    r = base.get("render", {})
    print(
        f"raw render (1 process): {r.get('pdfs')} invoice PDFs in {r.get('seconds')} s = "
        f"{r.get('pdfs_per_second')} PDFs/s; peak RSS {r.get('peak_rss_mb')} MB; "
        f"mean {r.get('mean_pdf_kb')} KB/PDF; + {r.get('statements')} statements at "
        f"{r.get('statements_per_second')}/s"
    )
    for s in base.get("smtp", []):
        print(
            f"raw SMTP ({'attachments' if s.get('attachments') else 'link-style'}, "
            f"concurrency {s.get('concurrency')}): {s.get('messages')} msgs in "
            f"{s.get('seconds')} s = {s.get('messages_per_second')} msg/s; "
            f"mean {s.get('mean_message_kb')} KB; sink CPU {s.get('sink_cpu_seconds')} s"
        )


def case_notes(c: dict[str, Any]) -> list[str]:
    """What a case noticed besides its figures, one line each."""
    notes = _setup_notes(c)
    if c.get("log_findings"):
        counts = {
            k: {kk: vv for kk, vv in v.items() if kk != "first_error"}
            for k, v in c["log_findings"].items()
        }
        notes.append(f"logs up to the end of the send: {counts}")
    for err in c.get("post_errors", []):
        notes.append(f"Send All POST failed: {err}")
    if c.get("stalled_after_seconds") is not None:
        notes.append(f"stalled: nothing moved after {c['stalled_after_seconds']} s")
    for svc, prof in (c.get("profile") or {}).items():
        if isinstance(prof, dict) and prof.get("samples"):
            top = "; ".join(f"{f} {pct}%" for f, pct in prof["inclusive_project_pct"][:6])
            notes.append(f"profile {svc} ({prof['samples']} samples): {top}")
    if c.get("progress", {}).get("failed"):
        notes.append(f"failures: {c.get('failures_sample')}")
    return notes


def _setup_notes(c: dict[str, Any]) -> list[str]:
    notes = []
    if c.get("review", {}).get("single_post_status") not in (None, 303):
        notes.append(
            f"review of all in one POST refused ({c['review'].get('single_post_error')}); "
            f"posted in chunks of {c['review'].get('chunked_posts')} invoices"
        )
    if c.get("peak_sqlite_connections"):
        notes.append(
            f"peak open SQLite connections {c['peak_sqlite_connections']}; "
            f"peak threads {c.get('peak_threads')}"
        )
    if c.get("pg_connections"):
        notes.append(f"PostgreSQL connections: {c['pg_connections']}")
    if c.get("envelope_api_errors_during_sync"):
        notes.append(f"envelope API errors during sync: {c['envelope_api_errors_during_sync']}")
    if c.get("render_settle"):
        notes.append(f"AOT rendering: {c['render_settle']}")
    if c.get("statement_settle"):
        notes.append(f"statements rendered while reviewing: {c['statement_settle']}")
    if c.get("prefetch", {}).get("prefetched"):
        notes.append(f"prefetched via on-demand endpoint: {c['prefetch']}")
    return notes
