"""Benchmark of issue 3: Send All Envelopes for 1,000 unpaid invoices of 300 clients, combine on.

    .venv/bin/python bench/send_all.py                      # all three cases + raw baselines
    .venv/bin/python bench/send_all.py --cases link,cold    # some cases only
    .venv/bin/python bench/send_all.py --postgres           # the services on PostgreSQL

Per case a fresh stack (devtools.stack: five services, Clio sandbox, mail sink as real
processes, free ports, a unique exchange, fresh databases) is seeded through the Clio
sandbox hooks, Clio is connected (the first sync brings the invoices in), and the firm user
selects the 1,000 invoices, reviews them and posts the Send All form. Measured: the time from
that POST until the mail sink accepted every message, and the peak RSS of each process.

Cases: link (secure-link delivery), warm (PDF attachments, PDFs rendered ahead of time and
settled before the click), cold (PDF attachments, clicked the moment the invoices arrived).
Baselines in the same run: WeasyPrint rendering the same 1,000 invoice snapshots alone in one
process, and aiosmtplib sending the same number of messages alone to a fresh sink.

Prints figures and asserts nothing: the targets are shown next to them. Results go to
bench/results/send_all-<timestamp>.json; each stack's var dir (logs, databases, mail) stays
under var/bench/ for inspection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.support.aot import AheadOfTime  # noqa: E402
from bench.support.baselines import render_worker, run_baselines  # noqa: E402
from bench.support.bus import bus_prefetch, queue_depths  # noqa: E402
from bench.support.common import (  # noqa: E402
    code_version,
    fresh_ports,
    loadavg,
    log,
    stop_cleanly_on_signals,
)
from bench.support.envelope_peek import EnvelopePeek  # noqa: E402
from bench.support.firm_user import FirmUser, Form  # noqa: E402
from bench.support.logs import scan_logs  # noqa: E402
from bench.support.pg import PgConnWatch, PgDatabases  # noqa: E402
from bench.support.procs import CpuMark, ProcWatch, machine_cpu, merge_peaks  # noqa: E402
from bench.support.profiler import Profiler  # noqa: E402
from bench.support.results import Results  # noqa: E402
from bench.support.send_all_report import (  # noqa: E402
    TARGET_COLD_RATIO,
    TARGET_FAST_S,
    print_report,
)
from bench.support.send_all_world import (  # noqa: E402
    CLIENT_PREFIX,
    MAX_PER_ENVELOPE,
    Plan,
    seed_clio,
)
from bench.support.sink import SinkCounter  # noqa: E402
from bench.support.stack import (  # noqa: E402
    BenchStack,
    fresh_exchange,
    log_tails,
    parse_service_env,
    stack_config,
)
from devtools.stack import DEMO_FIRM_ID, SERVICES  # noqa: E402

CASES = {
    "link": "secure-link delivery",
    "warm": "PDF attachments, rendered ahead of time (warm)",
    "cold": "PDF attachments, clicked as the invoices arrive (cold)",
}


def now() -> float:
    return time.monotonic()


# --- one case ---------------------------------------------------------------------------


@dataclass
class Send:
    """The click and what followed it, while it is measured."""

    forms: list[Form]
    expected_all: int  # envelopes of every form, posted or not
    counter: SinkCounter
    before: CpuMark
    t0: float = field(default_factory=now)
    after: CpuMark | None = None
    expected: int = 0  # envelopes of the forms whose POST was accepted
    progress: dict[str, Any] = field(default_factory=dict)
    t_done: float | None = None
    t_all: float | None = None
    pdf_timeline: list[tuple[Any, ...]] = field(default_factory=list)


class Case:
    def __init__(self, name: str, plan: Plan, args: argparse.Namespace, run_dir: Path) -> None:
        self.name = name
        self.plan = plan
        self.args = args
        self.var_dir = run_dir / name
        self.delivery = "link" if name == "link" else "attachment"
        self.result: dict[str, Any] = {"case": name, "description": CASES[name]}
        self.pg: PgDatabases | None = None
        self.pg_watch: PgConnWatch | None = None
        self.log_ends: dict[str, int] | None = None

    def _new_stack(self) -> None:
        self.stack = BenchStack(self.cfg)
        self.watch = ProcWatch(self.stack)
        self.envelope = EnvelopePeek(self.cfg, DEMO_FIRM_ID, CLIENT_PREFIX)

    def run(self) -> dict[str, Any]:
        template = None
        if self.args.postgres:
            self.pg = PgDatabases(SERVICES)
            self.pg.create()
            template = self.pg.url_template
        self.cfg = stack_config(self.var_dir, template, parse_service_env(self.args.service_env))
        self._new_stack()
        self.result["var_dir"] = str(self.var_dir)
        self.result["loadavg_before"] = loadavg()
        try:
            self._run()
        except Exception as exc:
            self.result["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{self.name}: FAILED: {exc}")
            log_tails(self.stack)
        finally:
            self._clean_up()
        return self.result

    def _clean_up(self) -> None:
        self.watch.stop()
        if self.pg_watch is not None:
            self.result["pg_connections"] = self.pg_watch.stop()
        self.stack.stop()
        if self.pg:
            self.pg.drop()
        self.result["log_findings"] = scan_logs(self.cfg.var_dir / "logs", self.log_ends)

    def _run(self) -> None:
        self._start_stack()
        self._seed()
        user = FirmUser(self.cfg, self.name)
        self._save_settings(user)
        t_arrived = self._connect_and_sync(user)
        if self.name in ("link", "warm"):
            self._settle_before_review()
        ids, by_client, forms = self._select_and_review(user)
        if self.name == "warm":
            self._settle_statements_after_review(by_client)
        at_click = self._before_click(ids, t_arrived, forms)
        send = self._click(user, forms)
        self._wait_for_delivery(user, send, ids)
        self._record_send(send, ids)
        self._record_end_state(send, ids, at_click)
        if self.args._dump_for_baselines:
            self.dump_for_baselines(set(ids))

    # -- the steps, in order --

    def _start_stack(self) -> None:
        for attempt in (1, 2):
            log(f"{self.name}: starting a fresh stack in {self.cfg.var_dir}")
            try:
                self.stack.start_all()
                break
            except RuntimeError as exc:
                # Seen when the shared broker is slow to accept connections (other stacks on
                # the machine): the services wait for it past the stack's 60 s readiness wait.
                first = str(exc).splitlines()[0][:200]
                self.result.setdefault("start_retries", []).append(first)
                if attempt == 2:
                    raise
                log(f"{self.name}: stack did not start ({first}); once more")
                self.stack.stop()
                self.cfg.var_dir = self.var_dir.with_name(self.name + "-retry")
                self.cfg.ports = fresh_ports()
                self.cfg.exchange = fresh_exchange()
                self._new_stack()
                self.result["var_dir"] = str(self.cfg.var_dir)
        self.watch.start()
        if self.pg:
            self.pg_watch = PgConnWatch(self.pg.prefix)
            self.pg_watch.start()

    def _seed(self) -> None:
        r = self.result
        clio = f"http://127.0.0.1:{self.cfg.ports.clio}"
        r["seed"] = asyncio.run(seed_clio(clio, self.plan))
        log(
            f"{self.name}: seeded {r['seed']['bills']} bills for {self.plan.clients} clients "
            f"in {r['seed']['seconds']} s"
        )

    def _save_settings(self, user: FirmUser) -> None:
        """Settings first: the firm profile is part of every PDF's cache key, so PDFs rendered
        ahead of time are only reusable if they were rendered with the final settings."""
        user.save_settings(self.delivery)
        deadline = now() + 60
        while True:
            prof = self.envelope.firm_profile()
            if (
                prof
                and prof.get("combine_envelopes")
                and prof.get("default_delivery") == (self.delivery)
            ):
                break
            if now() > deadline:
                raise RuntimeError(f"envelope never saw the settings (profile {prof})")
            time.sleep(0.2)

    def _connect_and_sync(self, user: FirmUser) -> float:
        """Connect Clio; returns when the envelope service lists every invoice."""
        r, want = self.result, self.plan.invoices
        t_connect = now()
        user.connect_clio()
        poll = 0.05 if self.name == "cold" else 0.5
        deadline = now() + self.args.sync_timeout
        total = 0
        while total < want:
            try:
                total = self.envelope.unpaid_total()
            except httpx.HTTPError as exc:
                # Counted, not fatal: the envelope service failing requests while the first
                # sync floods it is itself a finding.
                errs = r.setdefault("envelope_api_errors_during_sync", {})
                key = str(exc).split(" for url")[0][:80]
                errs[key] = errs.get(key, 0) + 1
            if now() > deadline:
                raise RuntimeError(f"sync brought only {total} of {want} invoices")
            if total < want:
                time.sleep(poll)
        t_arrived = now()
        r["sync_seconds"] = round(t_arrived - t_connect, 2)
        pdfs_at_arrival = len(self.envelope.pdf_invoice_ids())
        log(
            f"{self.name}: {total} invoices arrived {r['sync_seconds']} s after connecting; "
            f"{pdfs_at_arrival} PDFs rendered by then"
        )
        return t_arrived

    def _settle_before_review(self) -> None:
        mine = {i["invoice_id"] for i in self.envelope.invoices()}
        aot = AheadOfTime(self.name, self.envelope, self.watch, self.args)
        self.result["render_settle"] = aot.settle_rendering(mine)
        if self.name == "warm":
            self.result["prefetch"] = aot.prefetch_missing(mine)
        self.result["quiet_wait_seconds"] = self.watch.wait_quiet()

    def _select_and_review(
        self, user: FirmUser
    ) -> tuple[list[str], dict[str, list[str]], list[Form]]:
        """Select all, review, open Send All."""
        r = self.result
        t_sel = now()
        invoices = self.envelope.invoices()
        by_client: dict[str, list[str]] = {}
        for inv in sorted(invoices, key=lambda i: (i["client_name"], i["invoice_id"])):
            by_client.setdefault(inv["client_id"], []).append(inv["invoice_id"])
        ids = [i for group in by_client.values() for i in group]
        batches, r["review"] = user.review(ids, by_client, self.args.chunk)
        forms = user.send_all_forms(batches)
        r["envelopes"] = envelopes_of(forms)
        r["envelopes_by_grouping"] = self.plan.envelopes
        r["select_review_open_seconds"] = round(now() - t_sel, 2)
        return ids, by_client, forms

    def _settle_statements_after_review(self, by_client: dict[str, list[str]]) -> None:
        """Drafting the envelopes renders their statements (a combined envelope's PDF of all
        its bills), while the firm user reviews them: warm means those too."""
        combined = sum(
            math.ceil(len(g) / MAX_PER_ENVELOPE) - (1 if len(g) % MAX_PER_ENVELOPE == 1 else 0)
            for g in by_client.values()
            if len(g) > 1
        )
        aot = AheadOfTime(self.name, self.envelope, self.watch, self.args)
        self.result["statement_settle"] = aot.settle_statements(combined)
        self.result["quiet_wait_seconds_after_review"] = self.watch.wait_quiet()

    def _before_click(self, ids: list[str], t_arrived: float, forms: list[Form]) -> dict[str, int]:
        """What is ready at the click: invoice PDFs of the selection, and statements."""
        r = self.result
        pdfs_at_click = len(self.envelope.pdf_invoice_ids() & set(ids))
        r["pdfs_ready_at_click"] = pdfs_at_click
        statements_at_click = self.envelope.statement_pdfs()
        if self.name == "cold":
            r["click_after_arrival_seconds"] = round(now() - t_arrived, 2)
        log(
            f"{self.name}: {len(ids)} invoices -> {r['envelopes']} envelopes in "
            f"{len(forms)} batch(es); {pdfs_at_click} of their PDFs ready; clicking"
        )
        return {"invoices": pdfs_at_click, "statements": statements_at_click}

    def _click(self, user: FirmUser, forms: list[Form]) -> Send:
        """The timed POSTs of the Send All forms, back to back."""
        r = self.result
        r["peak_before_click"] = self.watch.reset_peaks()
        counter = SinkCounter(self.stack.logs["mailsink"])
        counter.start()
        send = Send(forms, envelopes_of(forms), counter, CpuMark.take(self.watch))
        post_latency = []
        posted = []
        self.profiler = Profiler(self.args.py_spy, self.stack, self.cfg.var_dir / "profiles")
        self.profiler.start()
        for batch_id, form in forms:
            ts = now()
            status = user.post_send_all(batch_id, form)
            post_latency.append(round(now() - ts, 3))
            if status == "303":
                posted.append((batch_id, form))
            else:
                # Recorded, and the rest measured: what a user sees after such a click.
                r.setdefault("post_errors", []).append(status)
                log(f"{self.name}: Send All POST of batch {batch_id} failed: {status}")
        r["post_seconds"] = post_latency
        if not posted:
            self.profiler.stop()
            raise RuntimeError(f"every Send All POST failed: {r['post_errors']}")
        send.forms = posted
        send.expected = envelopes_of(posted)
        r["envelopes_posted"] = send.expected
        return send

    def _wait_for_delivery(self, user: FirmUser, send: Send, ids: list[str]) -> None:
        """Until the sink accepted every message (and progress says done), nothing moved for
        --stall-seconds, or --send-timeout."""
        counter, a = send.counter, self.args
        deadline = send.t0 + a.send_timeout
        next_progress = now()
        seen_state: tuple[Any, ...] = ()
        last_move = now()
        while now() < deadline:
            if counter.count >= send.expected and send.t_all is None:
                send.t_all = counter.times[send.expected - 1]
            state = (counter.count, send.progress.get("sent"), send.progress.get("failed"))
            if state != seen_state:
                seen_state, last_move = state, now()
            elif now() - last_move > a.stall_seconds:
                self.result["stalled_after_seconds"] = round(last_move - send.t0, 1)
                log(f"{self.name}: nothing moved for {a.stall_seconds:.0f} s; giving up")
                break
            if now() >= next_progress:
                next_progress = now() + 1.0
                if self._follow_progress(user, send, ids):
                    break  # the missing messages will never come
            if send.t_all is not None and (send.t_done is not None or now() - send.t_all > 30):
                break
            time.sleep(0.05)
        send.after = CpuMark.take(self.watch)
        counter.stop()
        self.result["profile"] = self.profiler.stop()

    def _follow_progress(self, user: FirmUser, send: Send, ids: list[str]) -> bool:
        """One look at the progress JSON (and the PDFs); True once it is done with failures."""
        send.progress = user.progress(send.forms)
        if self.delivery == "attachment":
            send.pdf_timeline.append(
                (
                    round(now() - send.t0, 1),
                    len(self.envelope.pdf_invoice_ids() & set(ids)),
                    self.envelope.statement_pdfs(),
                    send.counter.count,
                )
            )
        if send.progress["done"] and send.t_done is None:
            send.t_done = now()
        return bool(send.progress["failed"] and send.progress["done"])

    def _record_send(self, send: Send, ids: list[str]) -> None:
        r, counter, t0 = self.result, send.counter, send.t0
        end = send.t_all if send.t_all is not None else now()
        elapsed = end - t0
        r["delivered"] = counter.count
        r["complete"] = send.t_all is not None
        r["seconds"] = round(elapsed, 2)
        r["messages_per_second"] = round(counter.count / elapsed, 2) if elapsed else None
        r["invoices_per_second"] = (
            round(len(ids) * counter.count / send.expected_all / elapsed, 2) if elapsed else None
        )
        r["progress_done_seconds"] = round(send.t_done - t0, 2) if send.t_done else None
        r["progress"] = {k: send.progress.get(k) for k in ("total", "sent", "failed", "queued")}
        r["failures_sample"] = (send.progress.get("failures") or [])[:3]
        if counter.times:
            ts = counter.times
            r["accept_timeline_s"] = {
                "first": round(ts[0] - t0, 2),
                "p50": round(ts[len(ts) // 2] - t0, 2),
                "p90": round(ts[int(len(ts) * 0.9) - 1] - t0, 2) if len(ts) > 1 else None,
                "last": round(ts[-1] - t0, 2),
            }
        r["pdf_timeline"] = send.pdf_timeline[:: max(1, len(send.pdf_timeline) // 40)]
        assert send.after is not None
        r["cpu_seconds_during_send"] = self.watch.cpu_seconds_between(
            send.before.procs, send.after.procs
        )
        r["machine_cpu_during_send"] = machine_cpu(
            send.before, send.after, now() - t0, r["cpu_seconds_during_send"]
        )

    def _record_end_state(self, send: Send, ids: list[str], at_click: dict[str, int]) -> None:
        r = self.result
        if self.delivery == "attachment":
            r["pdfs_rendered_during_send"] = {
                "invoices": len(self.envelope.pdf_invoice_ids() & set(ids)) - at_click["invoices"],
                "statements": self.envelope.statement_pdfs() - at_click["statements"],
            }
        self.watch.sample()
        r["peak_since_click"] = self.watch.report()
        r["peak_threads"] = dict(sorted(self.watch.threads.items()))
        if not self.args.postgres:
            r["peak_sqlite_connections"] = dict(sorted(self.watch.db_conns.items()))
        r["peak_lifetime"] = merge_peaks(r["peak_before_click"], r["peak_since_click"])
        sink_api = httpx.get(
            f"http://127.0.0.1:{self.cfg.ports.mailview}/api/messages", timeout=60
        ).json()
        r["sink_api_count"] = len(sink_api)
        r["sink_attachments"] = sum(len(m.get("attachments") or []) for m in sink_api)
        r["loadavg_after"] = loadavg()
        r["queues_at_end"] = self._queues_at_end()
        # Log findings are counted up to here: stopping the stack adds its own noise.
        self.log_ends = {n: p.stat().st_size for n, p in self.stack.logs.items() if p.exists()}
        log(
            f"{self.name}: {send.counter.count}/{send.expected} accepted in {r['seconds']} s "
            f"(POST {r['post_seconds']} s; progress done at {r['progress_done_seconds']} s; "
            f"failed {send.progress.get('failed')})"
        )

    def _queues_at_end(self) -> dict[str, Any]:
        """What is left on the bus: sends still queued, and sends dead-lettered after the
        queue's delivery limit (lost unless someone replays them)."""
        names = [
            f"{self.cfg.exchange}.{svc}.{key}.v1{suffix}"
            for svc, key in (("envelope", "envelope.send_requested"), ("mailer", "email.requested"))
            for suffix in ("", ".dlq")
        ]
        try:
            return dict(asyncio.run(queue_depths(self.cfg.amqp_url, names)))
        except Exception as exc:  # a figure, not a reason to lose the run
            return {"error": repr(exc)}

    def dump_for_baselines(self, ids: set[str]) -> None:
        """The same invoice snapshots and emails, for the raw baselines."""
        path = self.var_dir.parent / "baseline-input.json"
        path.write_text(json.dumps(self.envelope.baseline_input(ids)))
        self.args._baseline_input = path
        self.args._dump_for_baselines = False


def envelopes_of(forms: list[Form]) -> int:
    return sum(len(json.loads(f["expected"])) for _, f in forms)


# --- the run ----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", default="link,warm,cold")
    p.add_argument("--invoices", type=int, default=1000)
    p.add_argument("--clients", type=int, default=300)
    p.add_argument("--postgres", action="store_true", help="services on PostgreSQL")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument(
        "--baseline-input",
        help="baselines only, from an earlier run's var dir file baseline-input.json",
    )
    p.add_argument(
        "--stock-clio",
        action="store_true",
        help="the Clio sandbox as is (its line-item listing makes a 1,000-bill sync take ~30 min)",
    )
    p.add_argument(
        "--no-prefetch",
        action="store_true",
        help="warm case: do not render PDFs that ahead-of-time rendering left out",
    )
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=15,
        help="ahead-of-time rendering counts as settled after this long without growth",
    )
    p.add_argument("--sync-timeout", type=float, default=600)
    p.add_argument("--send-timeout", type=float, default=1200)
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=150,
        help="stop waiting when no message and no progress moved for this long",
    )
    add_diagnosis_options(p)
    return p


def add_diagnosis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="SERVICE:KEY=VALUE",
        help="extra environment for one service, e.g. envelope:DB_MAX_OVERFLOW=200 "
        "(diagnosis: shown in the results next to the figures)",
    )
    p.add_argument(
        "--py-spy",
        metavar="PATH",
        help="py-spy binary: profile envelope, mailer and gateway during each send "
        "(diagnosis only: it takes CPU from the stack)",
    )
    p.add_argument(
        "--smtp-concurrency",
        type=int,
        default=None,
        help="raw SMTP baseline concurrency (default: the bus prefetch, as the mailer)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=900,
        help="invoices per review POST, only if one POST of all is refused",
    )
    p.add_argument("--render-worker", nargs=2, metavar=("INPUT", "OUT_DIR"), help=argparse.SUPPRESS)


def chosen_cases(args: argparse.Namespace) -> list[str]:
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.baseline_input:
        cases = []  # baselines only
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    return cases


def new_report(args: argparse.Namespace, plan: Plan, run_dir: Path) -> dict[str, Any]:
    return {
        "started_at": datetime.now(UTC).isoformat(),
        "invoices": args.invoices,
        "clients": args.clients,
        "envelopes_expected": plan.envelopes,
        "largest_client_bills": max(plan.per_client),
        "cpus": os.cpu_count(),
        "database": "postgresql" if args.postgres else "sqlite",
        "code": code_version(),
        "bus_prefetch": bus_prefetch(),
        "service_env": parse_service_env(args.service_env),
        "var_dir": str(run_dir),
        "targets": {
            "link_and_warm_seconds_below": TARGET_FAST_S,
            "cold_ratio_to_raw_render_at_least": TARGET_COLD_RATIO,
        },
        "cases": [],
    }


def main() -> None:
    args = parser().parse_args()
    if args.render_worker:
        render_worker(*args.render_worker)
        return
    BenchStack.stock_clio = args.stock_clio
    stop_cleanly_on_signals()
    cases = chosen_cases(args)
    # The seeding and the first sync are not what is measured: let the sandbox serve the
    # 1,000+ line-item requests of the first sync without Clio's 600-per-minute limit.
    os.environ["CLIO_SANDBOX_RATE_LIMIT"] = "1000000"
    results = Results("send_all")
    run_dir = results.run_dir
    plan = Plan.make(args.clients, args.invoices)
    args._dump_for_baselines = not args.no_baselines
    args._baseline_input = args.baseline_input
    report = new_report(args, plan, run_dir)
    log(
        f"plan: {args.invoices} invoices for {args.clients} clients -> {plan.envelopes} "
        f"envelopes (largest client {max(plan.per_client)} bills); var dir {run_dir}"
    )
    try:
        for name in cases:
            report["cases"].append(Case(name, plan, args, run_dir).run())
            results.write(report)
        if not args.no_baselines and args._baseline_input:
            concurrency = args.smtp_concurrency or bus_prefetch()
            report["baselines"] = run_baselines(args._baseline_input, run_dir, concurrency)
    finally:
        report["finished_at"] = datetime.now(UTC).isoformat()
        if report["cases"]:
            print_report(report)
        elif report.get("baselines"):
            print(json.dumps(report["baselines"], indent=2, default=str))
        results.write(report)
        results.announce()


if __name__ == "__main__":
    main()
