"""Drafting envelope emails: autofill fields, sandboxed templates, the HTML and text parts."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from shared.events import FirmProfile, InvoiceKind
from shared.money import format_money

# The autofill fields a template may use, with the names staff see in the picker.
AUTOFILL_FIELDS: dict[str, str] = {
    "client_name": "Client name",
    "invoice_numbers": "Invoice number(s)",
    "amount_due": "Amount due",
    "envelope_total": "Total for the envelope",
    "due_date": "Due date",
    "matter": "Matter",
    "firm_name": "Firm name",
    "pay_link": "Pay link",
    "view_link": "View link",
}

DEFAULT_SUBJECT = "{{ firm_name }}: {{ invoice_numbers }} ({{ amount_due }} due)"
DEFAULT_BODY = (
    "Dear {{ client_name }},\n\n"
    "Please find {{ invoice_numbers }} for {{ amount_due }}, due {{ due_date }}. "
    "You can view each bill and pay online, by card or bank transfer (ACH), "
    "using the buttons below.\n\n"
    "Thank you for your business.\n\n"
    "{{ firm_name }}"
)

MAX_RENDERED = 100_000  # characters: far beyond any email, far below exhausting memory


class _TemplateSandbox(SandboxedEnvironment):
    """No attribute games, no undefined names passing silently, and no arithmetic that
    builds huge values (`'x' * 10**9`, `10**10**8`)."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            raise TemplateInvalidError("powers are not allowed in templates")
        if operator == "*":
            for a, b in ((left, right), (right, left)):
                if (
                    isinstance(a, (str, list, tuple))
                    and isinstance(b, int)
                    and len(a) * b > MAX_RENDERED
                ):
                    raise TemplateInvalidError("the template builds a value that is too large")
        return super().call_binop(context, operator, left, right)


class TemplateInvalidError(Exception):
    pass


_user_env = _TemplateSandbox(undefined=StrictUndefined, autoescape=False)
_mail_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "email"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class TemplateInvalid(ValueError):
    """A template that cannot render; the message says why, for the person who wrote it."""


@dataclass(frozen=True)
class EmailItem:
    invoice_id: str
    number: str
    kind: str
    matter: str | None
    due_at: date | None
    currency: str
    total_minor: int
    balance_minor: int
    view_url: str
    pay_url: str

    @property
    def kind_label(self) -> str:
        return "Trust request" if self.kind == InvoiceKind.trust_request else "Invoice"


@dataclass(frozen=True)
class ComposedEmail:
    subject: str
    html: str
    text: str


def _numbers(items: list[EmailItem]) -> str:
    """`invoice INV-1`, `invoice INV-1 and trust request TR-2`; past three bills a count
    with the first few, so a subject line stays readable."""
    labels = [
        f"{'trust request' if i.kind == 'trust_request' else 'invoice'} {i.number}" for i in items
    ]
    if len(labels) <= 1:
        return labels[0] if labels else ""
    if len(labels) <= 3:
        return ", ".join(labels[:-1]) + " and " + labels[-1]
    shown = ", ".join(i.number for i in items[:3])
    return f"{len(items)} bills ({shown} and {len(items) - 3} more)"


def autofill(
    firm: FirmProfile, client_name: str, items: list[EmailItem], *, pay_link: str, view_link: str
) -> dict[str, str]:
    currency = items[0].currency if items else "USD"
    due_dates = sorted(i.due_at for i in items if i.due_at)
    matters = sorted({i.matter for i in items if i.matter})
    due = sum(i.balance_minor for i in items)
    return {
        "client_name": client_name,
        "invoice_numbers": _numbers(items),
        "amount_due": format_money(due, currency),
        "envelope_total": format_money(sum(i.total_minor for i in items), currency),
        "due_date": due_dates[0].strftime("%B %-d, %Y") if due_dates else "on receipt",
        "matter": ", ".join(matters),
        "firm_name": firm.name,
        "pay_link": pay_link,
        "view_link": view_link,
    }


def sample_context() -> dict[str, str]:
    return {field: f"[{label}]" for field, label in AUTOFILL_FIELDS.items()}


def check_template(source: str) -> None:
    """Raise TemplateInvalid unless `source` parses and renders with every autofill field."""
    render_user_template(source, sample_context())


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    # Send All renders one subject and one body for hundreds of envelopes: compile once.
    return _user_env.from_string(source)


def render_user_template(source: str, context: dict[str, Any]) -> str:
    try:
        rendered = _compiled(source).render(context)
    except TemplateError as exc:
        message = getattr(exc, "message", None) or str(exc)
        if "is undefined" in message:
            known = ", ".join(AUTOFILL_FIELDS)
            message = f"{message}. Autofill fields are: {known}"
        raise TemplateInvalid(message) from exc
    except Exception as exc:
        # `{{ 1/0 }}`, `{{ amount_due / 2 }}`, a sandbox range limit: the template's fault, for
        # its author to fix, not a crash of the preview or of the send.
        raise TemplateInvalid(f"the template cannot render: {exc}") from exc
    if len(rendered) > MAX_RENDERED:
        raise TemplateInvalid("the template renders to more text than an email can hold")
    return rendered


def _paragraphs(text: str) -> Markup:
    escaped = escape(text)
    parts = [p.replace("\n", Markup("<br>\n")) for p in escaped.split("\n\n") if p.strip()]
    return Markup("").join(
        Markup('<p style="margin:0 0 14px 0;">{}</p>\n').format(p) for p in parts
    )


def compose_email(
    firm: FirmProfile,
    client_name: str,
    items: list[EmailItem],
    *,
    subject_template: str,
    body_template: str,
    pay_all_url: str,
    view_all_url: str,
) -> ComposedEmail:
    context = autofill(firm, client_name, items, pay_link=pay_all_url, view_link=view_all_url)
    subject = " ".join(render_user_template(subject_template, context).split())
    body = render_user_template(body_template, context)
    combined = len(items) > 1
    view = {
        "firm": firm,
        "client_name": client_name,
        "items": items,
        "combined": combined,
        "body_html": _paragraphs(body),
        "body_text": body,
        "pay_all_url": pay_all_url,
        "view_all_url": view_all_url,
        "amount_due": context["amount_due"],
        "fmt": format_money,
    }
    html = _mail_env.get_template("envelope.html").render(view)
    text = _mail_env.get_template("envelope.txt").render(view)
    return ComposedEmail(subject=subject, html=html, text=text)
