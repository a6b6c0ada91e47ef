"""The hosted checkout page a Checkout Session's `url` points at: pay by card or by US bank
account with Stripe's test numbers, then back to the session's success_url.

Plain HTML and no script, so browser tests can drive it with ordinary form fields.
"""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sandbox.stripe import checkout
from sandbox.stripe.checkout import PaymentDetails
from sandbox.stripe.deps import StateDep
from sandbox.stripe.errors import StripeError
from sandbox.stripe.objects import Obj
from sandbox.stripe.state import SandboxState

router = APIRouter(tags=["hosted checkout"])

STYLE = """
body{font-family:system-ui,sans-serif;background:#f6f9fc;color:#1a1f36;margin:0}
main{max-width:30rem;margin:2rem auto;background:#fff;padding:2rem;border-radius:8px;
box-shadow:0 2px 8px #0002}
h1{font-size:1.2rem}table{width:100%;border-collapse:collapse;margin:1rem 0}
td{padding:.3rem 0}td.amount{text-align:right}tr.total td{font-weight:600;border-top:1px solid #ccd}
fieldset{border:1px solid #ccd;border-radius:6px;margin:1rem 0}
label{display:block;margin:.4rem 0}input[type=text],input[type=email]{width:100%;padding:.4rem;
box-sizing:border-box}.error{background:#fde8e8;color:#9b1c1c;padding:.6rem;border-radius:6px}
button{background:#635bff;color:#fff;border:0;border-radius:6px;padding:.7rem 1.2rem;
font-size:1rem;width:100%}.note{color:#697386;font-size:.85rem}
"""


def _money(amount: int, currency: str) -> str:
    symbol = "$" if currency == "usd" else currency.upper() + " "
    return f"{symbol}{amount // 100:,}.{amount % 100:02d}"


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status)


def _items_table(state: SandboxState, session: Obj) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(item['description'])}"
        f"{' × ' + str(item['quantity']) if item['quantity'] > 1 else ''}</td>"
        f"<td class=amount>{_money(item['amount_total'], item['currency'])}</td></tr>"
        for item in state.line_items.get(session["id"], [])
    )
    total = _money(session["amount_total"], session["currency"])
    return f"<table>{rows}<tr class=total><td>Total</td><td class=amount>{total}</td></tr></table>"


def _field(values: dict[str, str], name: str, default: str = "") -> str:
    return html.escape(values.get(name, default), quote=True)


def _card_fields(values: dict[str, str]) -> str:
    checked = " checked" if values.get("method", "card") == "card" else ""
    return (
        f"<fieldset><legend><label><input type=radio name=method value=card{checked}> Card"
        "</label></legend>"
        "<label>Card number <input type=text name=card_number "
        f'value="{_field(values, "card_number")}" autocomplete=cc-number '
        'placeholder="4242 4242 4242 4242"></label>'
        f'<label>Expiry (MM / YY) <input type=text name=exp value="{_field(values, "exp")}"'
        ' placeholder="12 / 34"></label>'
        f'<label>CVC <input type=text name=cvc value="{_field(values, "cvc")}" '
        "placeholder=123></label>"
        "<p class=note>4242 4242 4242 4242 pays; 4000 0000 0000 0002 is declined.</p>"
        "</fieldset>"
    )


def _bank_fields(values: dict[str, str]) -> str:
    checked = " checked" if values.get("method") == "us_bank_account" else ""
    routing = _field(values, "routing_number", checkout.TEST_ROUTING_NUMBER)
    return (
        "<fieldset><legend><label><input type=radio name=method value=us_bank_account"
        f"{checked}> US bank account (ACH)</label></legend>"
        f'<label>Routing number <input type=text name=routing_number value="{routing}">'
        "</label><label>Account number <input type=text name=account_number "
        f'value="{_field(values, "account_number")}" placeholder=000123456789></label>'
        "<p class=note>000123456789 succeeds; 000222222227 fails (insufficient funds); "
        "000111111116 fails (no account).</p></fieldset>"
    )


def _form(state: SandboxState, session: Obj, values: dict[str, str], error: str | None) -> str:
    methods = session["payment_method_types"]
    card = _card_fields(values) if "card" in methods else ""
    bank = _bank_fields(values) if "us_bank_account" in methods else ""
    email = html.escape(values.get("email") or session["customer_email"] or "", quote=True)
    banner = f"<p class=error role=alert>{html.escape(error)}</p>" if error else ""
    cancel = session.get("cancel_url")
    back = f'<p><a href="{html.escape(cancel, quote=True)}">Back</a></p>' if cancel else ""
    total = _money(session["amount_total"], session["currency"])
    return (
        f"<h1>Pay {total}</h1>{_items_table(state, session)}{banner}"
        f'<form method=post action="/pay/{html.escape(session["id"], quote=True)}">'
        f'<label>Email <input type=email name=email value="{email}"></label>'
        f'<label>Name <input type=text name=name value="{_field(values, "name")}"></label>'
        f"{card}{bank}<button type=submit>Pay {total}</button></form>{back}"
        "<p class=note>Stripe sandbox: test mode, no money moves.</p>"
    )


def _closed(session: Obj) -> HTMLResponse:
    if session["status"] == "complete":
        target = html.escape(_success_url(session), quote=True)
        body = (
            "<h1>Payment received</h1><p>This checkout is complete.</p>"
            f'<p><a href="{target}">Continue</a></p>'
        )
        return _page("Payment received", body)
    cancel = session.get("cancel_url")
    back = f'<p><a href="{html.escape(cancel, quote=True)}">Back</a></p>' if cancel else ""
    body = f"<h1>This checkout has expired</h1><p>Start the payment again.</p>{back}"
    return _page("Checkout expired", body, status=410)


def _success_url(session: Obj) -> str:
    return str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])


@router.get("/pay/{session_id}", response_class=HTMLResponse)
async def hosted_page(session_id: str, state: StateDep) -> Response:
    session = state.get("checkout.session", session_id)
    if session is None:
        return _page("Not found", "<h1>Something went wrong</h1><p>No such checkout.</p>", 404)
    checkout.expire_if_due(state, session)
    if session["status"] != "open":
        return _closed(session)
    return _page("Checkout", _form(state, session, {}, None))


@router.post("/pay/{session_id}", response_class=HTMLResponse)
async def submit_payment(session_id: str, request: Request, state: StateDep) -> Response:
    session = state.get("checkout.session", session_id)
    if session is None:
        return _page("Not found", "<h1>Something went wrong</h1><p>No such checkout.</p>", 404)
    values = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
    try:
        details = _details(values)
        checkout.pay(state, session_id, details)
    except StripeError as error:
        if session["status"] != "open":
            return _closed(session)
        return _page("Checkout", _form(state, session, values, error.message), error.status)
    return RedirectResponse(_success_url(session), status_code=303)


def _details(values: dict[str, str]) -> PaymentDetails:
    method = values.get("method", "card")
    common = {"name": values.get("name") or None, "email": values.get("email") or None}
    if method == "us_bank_account":
        return PaymentDetails(
            method=method,
            routing_number=values.get("routing_number", "").strip(),
            account_number=values.get("account_number", ""),
            **common,
        )
    if method != "card":
        raise StripeError(400, "Choose a card or a bank account.")
    month, year = _expiry(values.get("exp", ""))
    return PaymentDetails(
        method="card",
        card_number=values.get("card_number", ""),
        exp_month=month,
        exp_year=year,
        cvc=values.get("cvc", "").strip(),
        **common,
    )


def _expiry(raw: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*", raw)
    if not match:
        raise StripeError(
            402,
            "Your card's expiration date is incomplete.",
            type_="card_error",
            code="invalid_expiry_month",
            param="exp_month",
        )
    month, year = int(match.group(1)), int(match.group(2))
    return month, year + 2000 if year < 100 else year
