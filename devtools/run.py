"""`make run`: the whole system on this machine, with the demo firm, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx

from devtools.stack import (
    DEMO_EMAIL,
    DEMO_PASSWORD,
    ROOT,
    Stack,
    StackConfig,
    connect_clio,
    login,
    wait_for_webhooks,
)


def main() -> int:
    # The demo's Clio sandbox counts requests as Clio does (50 a minute per token); the
    # sync paces itself within that. The test stack keeps a higher limit unless told.
    os.environ.setdefault("CLIO_SANDBOX_RATE_LIMIT", "50")
    cfg = StackConfig(
        var_dir=Path(os.environ.get("VAR_DIR", ROOT / "var")),
        amqp_url=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        database_url_template=os.environ.get("DATABASE_URL_TEMPLATE") or None,
        otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        # The sink tells the mailer of each delivery, as a relay asked for DSNs would.
        mailsink_success_dsn=True,
    )
    stack = Stack(cfg)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        print("Starting the Clio sandbox and the dev mail sink...", flush=True)
        stack.start_sandboxes()
        print("Migrating the databases...", flush=True)
        stack.migrate()
        stack.create_demo_user()
        print("Starting sync, envelope, mailer, payments and gateway...", flush=True)
        stack.start_services()
        with httpx.Client(base_url=f"http://127.0.0.1:{cfg.ports.gateway}", timeout=30) as client:
            csrf = login(client)
            # The sandbox keeps its tokens in memory only: after a restart the demo firm's
            # stored tokens are unknown to it, so connect again (Settings > Connect Clio).
            print("Connecting the demo firm to the Clio sandbox...", flush=True)
            connect_clio(cfg, client, csrf)
        hooks = wait_for_webhooks(cfg)
        live = (
            "webhooks (changes in the sandbox show at once)"
            if hooks.get("mode") == "webhooks"
            else f"polling every {cfg.sync_interval_seconds:.0f}s ({hooks.get('reason')})"
        )
        print(
            "\n"
            f"  EnvelopePay is running: http://127.0.0.1:{cfg.ports.gateway}\n"
            f"  Log in as {DEMO_EMAIL} / {DEMO_PASSWORD}\n"
            f"  Dev mail viewer:        http://127.0.0.1:{cfg.ports.mailview}\n"
            f"  Clio sandbox:           http://127.0.0.1:{cfg.ports.clio}\n"
            f"  Clio changes arrive by: {live}\n"
            "  Bounces:                send to bounce@example.com (a DSN comes back) or\n"
            "                          soft-bounce@example.com (refused for now, retried)\n"
            f"  Logs:                   {os.path.relpath(cfg.var_dir / 'logs')}\n"
            "  Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stopping:
            for name, proc in list(stack.procs.items()):
                if proc.poll() is not None:
                    print(
                        f"{name} stopped with code {proc.returncode}; its last lines:\n"
                        + stack.tail(name),
                        flush=True,
                    )
                    return 1
            time.sleep(0.5)
        return 0
    except Exception as exc:
        print(f"make run failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("Stopping...", flush=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
