"""payments.py's printed report: the webhook deliveries and the ledger they made, then the
pay page under load."""

from __future__ import annotations

from typing import Any

from bench.support.report import code_text, fmt_cpu, fmt_lat, rule


def print_report(report: dict[str, Any]) -> None:
    print()
    rule("=")
    print(
        f"payments benchmark; {code_text(report['code'])}; {report['cpus']} CPUs; "
        f"db {report['database']}"
    )
    if report.get("webhooks"):
        print_webhooks(report["webhooks"])
    if report.get("pay_page"):
        print_pay_page(report["pay_page"])
    rule("=")


def print_webhooks(w: dict[str, Any]) -> None:
    rule()
    print(
        f"WEBHOOKS: {w['deliveries']} signed deliveries ({w['unique_events']} unique events, "
        f"{w['duplicate_deliveries']} repeats = {w['duplicate_share'] * 100:.1f} %), "
        f"{w['payments']} payments, {w['concurrency']} concurrent clients"
    )
    if "wall_seconds" in w:
        print(
            f"  {w['wall_seconds']} s: {w['deliveries_per_second']} deliveries/s, "
            f"{w['unique_events_per_second']} unique events/s; errors {w['errors']} "
            f"{w['statuses']}"
        )
        print(f"  latency          {fmt_lat(w['latency_ms'])}")
        print(f"  first deliveries {fmt_lat(w['latency_ms_first_delivery'])}")
        print(f"  repeats          {fmt_lat(w['latency_ms_repeat'])}")
        print(f"  {fmt_cpu(w['cpu'])}")
    if w.get("ledger"):
        print_ledger(w["ledger"])
    if w.get("open_sessions_failures"):
        print(f"  opening the checkouts first failed: {w['open_sessions_failures']}")
    if w.get("redelivered"):
        print(f"  redelivered after errors: {w['redelivered']}")
    if w.get("log", {}).get("errors"):
        print(f"  payments log during the deliveries: {w['log']}")
    if w.get("log_seeding", {}).get("errors"):
        print(f"  payments log while seeding: {w['log_seeding']}")
    if w.get("error"):
        print(f"  ERROR {w['error']}")


def print_ledger(led: dict[str, Any]) -> None:
    print(
        f"  ledger {'EQUALS' if led['equal'] else 'DIFFERS FROM'} the expected one: "
        f"{led['payments_as_expected']}/{led['payments_expected']} payments as "
        f"expected; events recorded {led['events_recorded']}/"
        f"{led['events_unique_sent']}; waiting for a payment "
        f"{led['events_waiting_for_a_payment']}; announcements "
        f"{led['announcements']}/{led['announcements_expected']}"
    )
    for what, m in led["mismatches"].items():
        print(f"    {what}: {m['count']}, e.g. {m['examples'][0]}")
    wrong = {k: v for k, v in led["state_by_story"].items() if v["wrong"]}
    if wrong:
        print(f"    payment state wrong, by story: {wrong}")


def print_pay_page(p: dict[str, Any]) -> None:
    rule()
    print(
        f"PAY PAGE: {p['links']} links ({p['links_pay_all_outstanding']} with the full "
        f"balance) over {p['bills']} bills of {p['clients_with_bills']} clients"
    )
    for key, label in (("get", "GET /pay/{token}"), ("checkout", "POST /pay/{token}/checkout")):
        g = p.get(key)
        if not g:
            continue
        print(
            f"  {label}: {g['clients']} clients x {g['measured_seconds']} s: "
            f"{g['requests']} requests, {g['requests_per_second']} req/s, errors "
            f"{g['errors']} {g['statuses']}"
        )
        print(f"    {fmt_lat(g['latency_ms'])}")
        print(f"    {fmt_cpu(g['cpu'])}")
    for when, key in (("during the load", "log"), ("while seeding", "log_seeding")):
        for svc, found in (p.get(key) or {}).items():
            if found.get("errors"):
                print(f"  {svc} log {when}: {found}")
    if p.get("error"):
        print(f"  ERROR {p['error']}")
