"""Processes die mid-way; nothing is sent twice."""

from __future__ import annotations

import re
import time

import httpx

from devtools.stack import login
from tests.e2e.conftest import RunningSystem
from tests.e2e.test_thin_slice import eventually, field, rows


def send_one(system: RunningSystem, client_name: str) -> tuple[str, str]:
    """Send one unpaid invoice of `client_name`; returns (recipient, envelope page URL)."""
    c = system.client()
    csrf = login(c)
    page = eventually(
        lambda: (
            (r := rows(c.get("/invoices", params={"q": client_name, "state": "unpaid"}).text)) and r
        ),
        what=f"an unpaid invoice of {client_name}",
    )
    invoice_id = re.search(r'data-invoice="([^"]+)"', page[0]).group(1)  # type: ignore[union-attr]
    batch = c.post(
        "/envelopes/review", data={"csrf_token": csrf, "invoice_ids": [invoice_id]}
    ).headers["location"]
    window = c.get(batch).text
    to, subject = field(window, "to"), field(window, "subject")
    body = re.search(r"<textarea name=\"body\"[^>]*>(.*?)</textarea>", window, re.S).group(1)  # type: ignore[union-attr]
    import html

    body = html.unescape(body)
    confirm = c.post(
        f"{batch}/continue", data={"csrf_token": csrf, "to": to, "subject": subject, "body": body}
    )
    c.post(
        f"{batch}/send",
        data={
            "csrf_token": csrf,
            "send_id": field(confirm.text, "send_id"),
            "to": to,
            "subject": subject,
            "body": body,
        },
    )
    return to, batch


def test_mailer_dying_after_the_relay_accepted_does_not_send_twice(system: RunningSystem) -> None:
    stack = system.stack
    stack.stop_service("mailer")
    system.cfg.extra_env["mailer"] = {"CRASH_AFTER_SMTP": "true"}
    stack.start_services(only=("mailer",))
    try:
        to, batch = send_one(system, "Daniel Okafor")
        # The relay accepted the message, then the mailer died before recording it.
        eventually(lambda: stack.procs["mailer"].poll() is not None, what="the mailer to die")
        assert len(httpx.get(system.mail_api, params={"to": to}).json()) == 1
    finally:
        # Whatever happened above, the shared stack gets a normal mailer back.
        system.cfg.extra_env.pop("mailer", None)
        stack.stop_service("mailer")
        stack.start_services(only=("mailer",))
    # Restarted, the mailer finds the message it was sending and does not send it again.
    c = system.client()
    login(c)
    eventually(
        lambda: (
            "uncertain" in c.get(batch).text.lower() or "stopped while sending" in c.get(batch).text
        ),
        what="the send to be marked uncertain",
    )
    time.sleep(2)
    assert len(httpx.get(system.mail_api, params={"to": to}).json()) == 1
