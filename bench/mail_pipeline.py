"""The mail pipeline (issue 15, benchmark 2): messages per second from `email.requested` on
the bus to accepted by the mail sink, against aiosmtplib alone sending the same messages to
the same kind of sink, in the same run. Target: at least 0.7 of aiosmtplib alone.

    .venv/bin/python bench/mail_pipeline.py                  # 325 secure-link emails, 3 rounds
    .venv/bin/python bench/mail_pipeline.py --postgres       # the mailer on PostgreSQL
    .venv/bin/python bench/mail_pipeline.py --pdfs           # a PDF per bill attached
    .venv/bin/python bench/mail_pipeline.py --py-spy /path/to/py-spy   # where the CPU went

Each round: the mailer as a real process (`python -m services.mailer`, migrated, production
defaults: nothing is tuned for the bench) and a fresh dev mail sink, on free ports, a unique
exchange, a fresh SQLite file or PostgreSQL database. N `email.requested` events, their
content sealed in them as the envelope service seals it, are published straight onto the
exchange (the envelope service is not in the measurement). Timed from the first publish
until the sink has accepted all N (its log says `mailsink stored` just before its 250).
Then the messages the sink received, byte for byte, are sent again by plain
`aiosmtplib.SMTP` from this process to a fresh sink: as many connections, kept open, as the
mailer's relay pool holds. Rounds alternate which goes first. Asserts nothing."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.bus import delete_bus_objects  # noqa: E402
from bench.support.common import (  # noqa: E402
    AMQP_URL,
    ROOT,
    code_version,
    loadavg,
    log,
    machine_busy_ticks,
    stop_cleanly_on_signals,
)
from bench.support.db import Db  # noqa: E402
from bench.support.mail_world import (  # noqa: E402
    PUBLIC,
    Received,
    email_contents,
    received_messages,
    requested_events,
)
from bench.support.pg import PgDatabases  # noqa: E402
from bench.support.procs import TICK, ProcWatch, broker_ticks, cpu_ticks  # noqa: E402
from bench.support.profiler import Profiler  # noqa: E402
from bench.support.results import Results  # noqa: E402
from bench.support.sink import SinkCounter  # noqa: E402
from bench.support.stack import stack_config  # noqa: E402
from devtools.stack import Stack, service_env  # noqa: E402
from services.mailer.postman import BATCHES_SENDING  # noqa: E402
from shared.settings import DEV_INTERNAL_TOKEN, ServiceSettings  # noqa: E402

TARGET = 0.7


def relay_pool_size() -> int:
    """The mailer's SMTP connections, as services/mailer/postman.py sizes its RelayPool
    (`relay_pool_size`), with production defaults: as many as emails of the batches that
    may be past their commit at once."""
    fields = ServiceSettings.model_fields
    batch = max(int(fields["bus_prefetch"].default), int(fields["bus_batch"].default))
    return BATCHES_SENDING * batch


class SinkStack(Stack):
    """devtools.stack with only the mail sink of the sandboxes (no Clio); the services run
    from `code` (this checkout by default: another one for `--baseline-code`)."""

    code: Path = ROOT

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        if self.code == ROOT or name == "mailsink":
            super()._spawn(name, args, env)
            return
        log_path = self.cfg.var_dir / "logs" / f"{name}.log"
        self.logs[name] = log_path
        self.procs[name] = subprocess.Popen(
            [sys.executable, *args],
            cwd=self.code,
            env={**env, "PYTHONPATH": str(self.code)},
            stdout=open(log_path, "ab"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_sink(self) -> None:
        p = self.cfg.ports
        self._spawn(
            "mailsink",
            ["-m", "sandbox.mailsink"],
            {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "MAILSINK_SMTP_PORT": str(p.smtp),
                "MAILSINK_HTTP_PORT": str(p.mailview),
                "MAILSINK_DIR": str(self.cfg.var_dir / "mailsink"),
            },
        )
        self.wait_http("mailsink", f"http://127.0.0.1:{p.mailview}/health", timeout=120)

    @property
    def mailview_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.ports.mailview}"


class Window:
    """CPU seconds per process over a measured window, this process's, RabbitMQ's and the
    rest of the machine's (other work on the machine skews every figure)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def _take(self) -> tuple[dict[str, int], int, float, int]:
        t = os.times()
        return (
            {n: cpu_ticks(p) or 0 for n, p in self.pids.items()},
            machine_busy_ticks(),
            t.user + t.system,
            broker_ticks(),
        )

    def start(self) -> None:
        self.a = self._take()

    def stop(self) -> None:
        self.b = self._take()

    def report(self, seconds: float) -> dict[str, Any]:
        (pa, ma, ea, ba), (pb, mb, eb, bb) = self.a, self.b
        procs = {n: round((pb[n] - pa[n]) / TICK, 2) for n in pa}
        bench = round(eb - ea, 2)
        broker = round((bb - ba) / TICK, 2)
        busy = (mb - ma) / TICK
        return {
            "cpu_seconds": {**procs, "bench": bench, "rabbitmq": broker},
            "machine_busy_cpu_seconds": round(busy, 2),
            "machine_capacity_cpu_seconds": round(seconds * (os.cpu_count() or 1), 2),
            "other_processes_cpu_seconds": round(
                max(0.0, busy - sum(procs.values()) - bench - broker), 2
            ),
        }


def wait_count(counter: SinkCounter, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while counter.count < n and time.monotonic() < deadline:
        time.sleep(0.005)
    return counter.count >= n


async def publish_all(exchange: str, events: list[tuple[str, bytes]], concurrency: int) -> float:
    """Publish through the services' own publisher (persistent, confirmed), the connection
    made first; returns the monotonic time of the first publish."""
    from shared.bus import Bus

    bus = Bus(service="bench", amqp_url=AMQP_URL, exchange=exchange)
    await bus.broker.connect()
    sem = asyncio.Semaphore(concurrency)

    async def one(event_id: str, body: bytes) -> None:
        async with sem:
            await bus.publish_raw(body, "email.requested", event_id, {})

    started = time.monotonic()
    try:
        await asyncio.gather(*(one(i, b) for i, b in events))
    finally:
        await bus.stop()
    return started


def pipeline_case(
    run_dir: Path,
    events: list[tuple[str, bytes]],
    args: argparse.Namespace,
    code: Path = ROOT,
) -> tuple[dict[str, Any], list[Received]]:
    """The mailer (run from `code`) and a sink; N email.requested published; until the
    sink accepted N."""
    n = len(events)
    pg = PgDatabases(("mailer",)) if args.postgres else None
    # The emails' links to the client pages are written with PUBLIC as the base URL, as the
    # envelope service writes them with the public base URL the mailer has too: the mailer
    # then tracks them, as in production (with the stack's own base URL, it would not).
    cfg = stack_config(
        run_dir, pg.url_template if pg else None, {"mailer": {"PUBLIC_BASE_URL": PUBLIC}}
    )
    stack = SinkStack(cfg)
    stack.code = code
    out: dict[str, Any] = {"case": "pipeline", "messages": n, "code": str(code)}
    received: list[Received] = []
    try:
        if pg:
            pg.create()
        stack.start_sink()
        subprocess.run(
            [sys.executable, "-m", "services.mailer", "migrate"],
            cwd=code,
            env={**service_env(cfg, "mailer"), "PYTHONPATH": str(code)},
            check=True,
            capture_output=True,
        )
        stack.start_services(only=("mailer",))
        watch = ProcWatch(stack)
        out["waited_quiet_s"] = watch.wait_quiet(threshold=0.1, window=1.0, limit=30)
        counter = SinkCounter(stack.logs["mailsink"])
        counter.start()
        profiler = Profiler(args.py_spy, stack, run_dir / "py-spy")
        profiler.start()
        window = Window({name: proc.pid for name, proc in stack.procs.items()})
        load_before = loadavg()
        window.start()
        t_first = asyncio.run(publish_all(cfg.exchange, events, args.publish_concurrency))
        published = time.monotonic()
        done = wait_count(counter, n, args.timeout)
        window.stop()
        counter.stop()
        out["profile"] = profiler.stop()
        out["complete"] = done
        out["accepted"] = counter.count
        if done:
            end = counter.times[n - 1]
            seconds = end - t_first
            out["seconds"] = round(seconds, 3)
            out["messages_per_second"] = round(n / seconds, 1)
            out["published_after_s"] = round(published - t_first, 3)
            out["first_accepted_after_s"] = round(counter.times[0] - t_first, 3)
            out["half_accepted_after_s"] = round(counter.times[n // 2] - t_first, 3)
            out["accepted_at_s"] = [round(t - t_first, 4) for t in counter.times[:n]]
            out.update(window.report(seconds))
        out["loadavg_before"] = load_before
        out["mailer_emails"] = dict(
            Db(cfg.database_url("mailer")).rows("SELECT status, count(*) FROM emails GROUP BY 1")
        )
        if done:
            received = received_messages(stack.mailview_url)
    finally:
        stack.stop()
        try:
            asyncio.run(delete_bus_objects(cfg.exchange))
        except Exception as exc:  # cleanup only: the queues expire on their own anyway
            log(f"could not delete the bench's queues: {exc}")
        if pg:
            pg.drop()
    return out, received


def raw_case(run_dir: Path, messages: list[Received], concurrency: int, timeout: float) -> dict:
    """The same bytes, plain aiosmtplib.SMTP, `concurrency` connections kept open, to a
    fresh sink; until the sink accepted them all."""
    import aiosmtplib

    n = len(messages)
    cfg = stack_config(run_dir, None, {})
    stack = SinkStack(cfg)
    out: dict[str, Any] = {
        "case": "aiosmtplib",
        "messages": n,
        "connections": concurrency,
        "mean_message_kb": round(sum(len(m.data) for m in messages) / max(n, 1) / 1024, 1),
    }
    try:
        stack.start_sink()
        counter = SinkCounter(stack.logs["mailsink"])
        counter.start()
        window = Window({"mailsink": stack.procs["mailsink"].pid})
        load_before = loadavg()

        async def go() -> float:
            queue: asyncio.Queue[Received] = asyncio.Queue()
            for m in messages:
                queue.put_nowait(m)

            async def worker() -> None:
                async with aiosmtplib.SMTP(
                    hostname="127.0.0.1", port=cfg.ports.smtp, timeout=60
                ) as smtp:
                    while not queue.empty():
                        m = queue.get_nowait()
                        await smtp.sendmail(m.mail_from, m.rcpt_tos, m.data)

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return started

        window.start()
        t_first = asyncio.run(go())
        done = wait_count(counter, n, timeout)
        window.stop()
        counter.stop()
        out["complete"] = done
        out["accepted"] = counter.count
        if done:
            seconds = counter.times[n - 1] - t_first
            out["seconds"] = round(seconds, 3)
            out["messages_per_second"] = round(n / seconds, 1)
            out.update(window.report(seconds))
        out["loadavg_before"] = load_before
    finally:
        stack.stop()
    return out


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=325)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--postgres", action="store_true", help="the mailer on PostgreSQL")
    ap.add_argument("--pdfs", action="store_true", help="a PDF attached per bill")
    ap.add_argument("--pdf-kb", type=int, default=60, help="size of each PDF (default 60)")
    ap.add_argument("--publish-concurrency", type=int, default=32)
    ap.add_argument(
        "--raw-connections",
        type=int,
        default=None,
        help="aiosmtplib's connections (default: the mailer's relay pool size)",
    )
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--py-spy", default=None, help="a py-spy binary: profile mailer and sink")
    ap.add_argument(
        "--baseline-code",
        type=Path,
        default=None,
        help="another checkout (git archive of a commit): its mailer is measured too, in "
        "every round, for before/after figures from one run",
    )
    args = ap.parse_args()
    stop_cleanly_on_signals()

    results = Results("mail_pipeline")
    results.announce()
    connections = args.raw_connections or relay_pool_size()
    contents = email_contents(args.messages, pdfs=args.pdfs, pdf_kb=args.pdf_kb)
    events = requested_events(contents, DEV_INTERNAL_TOKEN, "http://127.0.0.1:9")
    mean_kb = sum(len(b) for _, b in events) / len(events) / 1024
    report: dict[str, Any] = {
        "benchmark": "mail_pipeline",
        "args": vars(args),
        "code": code_version(),
        "database": "postgresql" if args.postgres else "sqlite",
        "relay_pool_size": connections,
        "mean_event_kb": round(mean_kb, 1),
        "loadavg_start": loadavg(),
        "cpu_count": os.cpu_count(),
        "rounds": [],
    }
    log(
        f"{args.messages} emails ({'PDFs attached' if args.pdfs else 'secure links'}), "
        f"events of {mean_kb:.1f} KB on average; {args.rounds} rounds; load {loadavg()}"
    )
    previous: list[Received] = []
    try:
        for r in range(args.rounds):
            rd = results.run_dir / f"round-{r + 1}"
            rnd: dict[str, Any] = {}
            raw_first = r % 2 == 1 and bool(previous)
            if raw_first:
                rnd["aiosmtplib"] = raw_case(rd / "raw", previous, connections, args.timeout)
            if args.baseline_code and r % 2 == 0:
                rnd["pipeline_baseline"], _ = pipeline_case(
                    rd / "baseline", events, args, args.baseline_code.resolve()
                )
            rnd["pipeline"], received = pipeline_case(rd / "pipeline", events, args)
            if args.baseline_code and r % 2 == 1:
                rnd["pipeline_baseline"], _ = pipeline_case(
                    rd / "baseline", events, args, args.baseline_code.resolve()
                )
            if received:
                previous = received
                if not raw_first:
                    rnd["aiosmtplib"] = raw_case(rd / "raw", received, connections, args.timeout)
            rnd["first"] = "aiosmtplib" if raw_first else "pipeline"
            p, a = (
                rnd["pipeline"].get("messages_per_second"),
                rnd.get("aiosmtplib", {}).get("messages_per_second"),
            )
            if p and a:
                rnd["ratio"] = round(p / a, 3)
            b = rnd.get("pipeline_baseline", {}).get("messages_per_second")
            if b and a:
                rnd["baseline_ratio"] = round(b / a, 3)
            report["rounds"].append(rnd)
            results.write(report)
            log(
                f"round {r + 1}: pipeline {p} msg/s ({rnd['pipeline'].get('seconds')} s), "
                f"aiosmtplib {a} msg/s, ratio {rnd.get('ratio')}; "
                + (f"baseline code {b} msg/s, ratio {rnd.get('baseline_ratio')}; " if b else "")
                + f"cpu pipeline {rnd['pipeline'].get('cpu_seconds')}, "
                f"aiosmtplib {rnd.get('aiosmtplib', {}).get('cpu_seconds')}; "
                f"load {rnd['pipeline'].get('loadavg_before')}"
            )
    finally:
        rounds = report["rounds"]

        def col(case: str, key: str) -> list[float]:
            return [r[case][key] for r in rounds if r.get(case, {}).get(key) is not None]

        def cpu(case: str, proc: str) -> list[float]:
            return [
                r[case]["cpu_seconds"][proc]
                for r in rounds
                if proc in r.get(case, {}).get("cpu_seconds", {})
            ]

        report["summary"] = {
            "pipeline_messages_per_second": spread(col("pipeline", "messages_per_second")),
            "aiosmtplib_messages_per_second": spread(col("aiosmtplib", "messages_per_second")),
            "ratio": spread([r["ratio"] for r in rounds if "ratio" in r]),
            "baseline_code_messages_per_second": spread(
                col("pipeline_baseline", "messages_per_second")
            ),
            "baseline_code_ratio": spread(
                [r["baseline_ratio"] for r in rounds if "baseline_ratio" in r]
            ),
            "target_ratio": TARGET,
            "pipeline_cpu_seconds": {
                p: spread(cpu("pipeline", p)) for p in ("mailer", "mailsink", "bench", "rabbitmq")
            },
            "baseline_code_cpu_seconds": {
                p: spread(cpu("pipeline_baseline", p)) for p in ("mailer", "mailsink")
            },
            "aiosmtplib_cpu_seconds": {
                p: spread(cpu("aiosmtplib", p)) for p in ("mailsink", "bench")
            },
            "loadavg_end": loadavg(),
        }
        results.write(report)
        s = report["summary"]
        print()
        print(
            f"mail pipeline, {args.messages} messages, {report['database']}, {len(rounds)} rounds"
        )
        print(f"  pipeline   msg/s {s['pipeline_messages_per_second']}")
        print(
            f"  aiosmtplib msg/s {s['aiosmtplib_messages_per_second']} ({connections} connections)"
        )
        print(f"  ratio            {s['ratio']}  (target >= {TARGET})")
        if args.baseline_code:
            print(f"  baseline code    msg/s {s['baseline_code_messages_per_second']}")
            print(f"  baseline ratio   {s['baseline_code_ratio']}")
            print(f"  CPU-s baseline   {s['baseline_code_cpu_seconds']}")
        print(f"  CPU-s pipeline   {s['pipeline_cpu_seconds']}")
        print(f"  CPU-s aiosmtplib {s['aiosmtplib_cpu_seconds']}")
        print(f"  load average     start {report['loadavg_start']}, end {s['loadavg_end']}")
        results.announce()


if __name__ == "__main__":
    main()
