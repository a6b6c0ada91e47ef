"""Sending as staff do it: a second tab or a second post never sends twice; re-sending on
purpose does; Send All Envelopes sends each envelope once with live progress."""

from __future__ import annotations

import html
import re
import time

import httpx

from devtools.stack import login
from tests.e2e.conftest import RunningSystem
from tests.e2e.test_thin_slice import eventually, field, rows


def textarea(page: str) -> str:
    m = re.search(r'<textarea name="body"[^>]*>(.*?)</textarea>', page, re.S)
    assert m, "no message field"
    return html.unescape(m.group(1))


def mails(system: RunningSystem, to: str) -> list[dict]:
    return httpx.get(system.mail_api, params={"to": to}).json()


def test_second_tab_sends_once_and_a_deliberate_resend_sends_again(system: RunningSystem) -> None:
    c = system.client()
    csrf = login(c)
    row = rows(c.get("/invoices", params={"q": "Chen & Park", "state": "unpaid"}).text)[0]
    invoice_id = re.search(r'data-invoice="([^"]+)"', row).group(1)  # type: ignore[union-attr]
    batch = c.post("/envelopes/review", data={"csrf_token": csrf, "invoice_ids": [invoice_id]})
    review_url = batch.headers["location"]
    window = c.get(review_url).text
    to = field(window, "to")
    form = {
        "csrf_token": csrf,
        "to": to,
        "subject": field(window, "subject"),
        "body": textarea(window),
    }
    before = len(mails(system, to))

    # Two tabs show the confirmation: different send ids, the same place in the history.
    tab1 = c.post(f"{review_url}/continue", data=form).text
    tab2 = c.post(f"{review_url}/continue", data=form).text
    assert field(tab1, "send_id") != field(tab2, "send_id")
    assert field(tab1, "seq") == field(tab2, "seq")
    for tab in (tab1, tab2):
        c.post(
            f"{review_url}/send",
            data={**form, "send_id": field(tab, "send_id"), "seq": field(tab, "seq")},
        )
    eventually(lambda: len(mails(system, to)) == before + 1, what="the email")
    time.sleep(2)
    assert len(mails(system, to)) == before + 1, "a second tab must not send the envelope again"

    # Re-sending on purpose, later: a fresh confirmation sends it again.
    again = c.post(f"{review_url}/continue", data=form).text
    assert int(field(again, "seq")) == int(field(tab1, "seq")) + 1
    c.post(
        f"{review_url}/send",
        data={**form, "send_id": field(again, "send_id"), "seq": field(again, "seq")},
    )
    eventually(lambda: len(mails(system, to)) == before + 2, what="the re-sent email")
    history = c.get(review_url).text
    assert "Sent 2 times before" in history


def test_send_all_envelopes_sends_each_once_with_progress(system: RunningSystem) -> None:
    c = system.client()
    csrf = login(c)
    clients = ("Northwind Logistics", "Bluebird Bakery", "Siobh")
    ids: list[str] = []
    for name in clients:
        for row in rows(c.get("/invoices", params={"q": name, "state": "unpaid"}).text):
            ids.append(re.search(r'data-invoice="([^"]+)"', row).group(1))  # type: ignore[union-attr]
    batch = c.post("/envelopes/review", data={"csrf_token": csrf, "invoice_ids": ids}).headers[
        "location"
    ]
    batch = batch.rsplit("/", 1)[0]
    overview = c.get(batch).text
    envelopes = overview.count("data-envelope=")
    assert envelopes >= 3
    form_page = c.get(f"{batch}/send-all").text
    recipients = sorted(set(re.findall(r"([a-z.]+@example\.com)", form_page)))
    subject_start = "Statement from Demo Law LLP for "

    def statements(to: str) -> list[dict]:
        return [m for m in mails(system, to) if m["subject"].startswith(subject_start)]

    assert all(not statements(to) for to in recipients)
    data = {
        "csrf_token": csrf,
        "run_id": field(form_page, "run_id"),
        "expected": field(form_page, "expected"),
        "subject": "Statement from {{ firm_name }} for {{ client_name }}",
        "body": "Dear {{ client_name }},\n\n{{ amount_due }} is due.\n",
        # Additional settings: the PDFs attached, whatever the firm's default.
        "delivery": "attachment",
    }
    posted = c.post(f"{batch}/send-all", data=data)
    assert posted.status_code == 303
    c.post(f"{batch}/send-all", data=data)  # the same form posted again sends nothing more
    progress_url = posted.headers["location"]
    final = eventually(
        lambda: (p := c.get(progress_url + ".json").json())["done"] and p, what="Send All to finish"
    )
    assert final == {**final, "total": envelopes, "sent": envelopes, "failed": 0, "queued": 0}
    time.sleep(1.5)
    for to in recipients:
        assert statements(to), f"{to} got nothing"
    assert sum(len(statements(to)) for to in recipients) == envelopes
    for to in recipients:
        for m in statements(to):
            assert any(a["content_type"] == "application/pdf" for a in m["attachments"]), m
    assert "Finished." in c.get(progress_url).text


def test_send_client_balance_sends_every_unpaid_bill_in_one_email(system: RunningSystem) -> None:
    c = system.client()
    csrf = login(c)
    balances = c.get("/balances").text
    row = next(r for r in re.findall(r"<tr data-client=.*?</tr>", balances, re.S) if "Rivera" in r)
    client_id = re.search(r'data-client="([^"]+)"', row).group(1)  # type: ignore[union-attr]
    unpaid = int(re.findall(r'<td class="num">(\d+)</td>', row)[0])
    assert unpaid > 10, "the seed gives Rivera more than ten unpaid bills"
    review = c.post(f"/balances/{client_id}/send", data={"csrf_token": csrf})
    url = review.headers["location"]
    window = c.get(url).text
    assert window.count("View Invoice</a>") == unpaid
    to = field(window, "to")
    form = {
        "csrf_token": csrf,
        "to": to,
        "subject": field(window, "subject"),
        "body": textarea(window),
    }
    confirm = c.post(f"{url}/continue", data=form).text
    assert "Send client balance" in confirm
    before = len(mails(system, to))
    c.post(
        f"{url}/send",
        data={**form, "send_id": field(confirm, "send_id"), "seq": field(confirm, "seq")},
    )
    message = eventually(
        lambda: (m := mails(system, to)) and len(m) > before and m[0], what="the email"
    )
    full = httpx.get(f"{system.mail_api}/{message['id']}").json()
    assert "Pay All" in full["html"]
    assert full["html"].count(">Pay</a>") == unpaid
