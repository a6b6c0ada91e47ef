"""Drafting envelope emails: autofill fields, sandboxed templates, escaping, and the buttons
the client clicks."""

from __future__ import annotations

from datetime import date
from html.parser import HTMLParser

import pytest

from services.envelope.compose import (
    AUTOFILL_FIELDS,
    DEFAULT_BODY,
    DEFAULT_SUBJECT,
    ComposedEmail,
    EmailItem,
    TemplateInvalid,
    check_template,
    compose_email,
    render_user_template,
    sample_context,
)
from shared.events import FirmProfile

FIRM = FirmProfile(
    name="Hartwell & Moreno LLP", email="billing@hartwell.test", phone="415-555-0182"
)
PAY_ALL = "https://pay.hartwell.test/p/tok3n?all=1&src=email"
VIEW_ALL = "https://pay.hartwell.test/v/tok3n"


def item(
    number: str,
    *,
    kind: str = "invoice",
    balance: int = 100000,
    total: int | None = None,
    due: date | None = date(2025, 4, 30),
    matter: str | None = "00042 Estate plan",
) -> EmailItem:
    return EmailItem(
        invoice_id=f"clio:{number}",
        number=number,
        kind=kind,
        matter=matter,
        due_at=due,
        currency="USD",
        total_minor=balance if total is None else total,
        balance_minor=balance,
        view_url=f"https://pay.hartwell.test/v/tok3n/{number}",
        pay_url=f"https://pay.hartwell.test/p/tok3n/{number}?src=email&x=1",
    )


def compose(
    items: list[EmailItem],
    subject: str = DEFAULT_SUBJECT,
    body: str = DEFAULT_BODY,
    client: str = "Dana Whitfield",
) -> ComposedEmail:
    return compose_email(
        FIRM,
        client,
        items,
        subject_template=subject,
        body_template=body,
        pay_all_url=PAY_ALL,
        view_all_url=VIEW_ALL,
    )


class Links(HTMLParser):
    """The (href, text) of every link in an HTML part."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href") or "", []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, " ".join("".join(self._text).split())))
            self._href = None


def test_every_autofill_field_renders_in_subject_and_body() -> None:
    every_field = " | ".join(f"{name}={{{{ {name} }}}}" for name in AUTOFILL_FIELDS)
    items = [
        item(
            "INV-7", balance=150000, total=200000, due=date(2025, 5, 15), matter="00042 Estate plan"
        ),
        item(
            "TR-3",
            kind="trust_request",
            balance=50025,
            due=date(2025, 4, 1),
            matter="00051 Probate",
        ),
    ]
    email = compose(items, subject=every_field, body=every_field)
    expected = {
        "client_name": "Dana Whitfield",
        "invoice_numbers": "invoice INV-7 and trust request TR-3",
        "amount_due": "$2,000.25",
        "envelope_total": "$2,500.25",
        "due_date": "April 1, 2025",  # the earliest
        "matter": "00042 Estate plan, 00051 Probate",
        "firm_name": "Hartwell & Moreno LLP",
        "pay_link": PAY_ALL,
        "view_link": VIEW_ALL,
    }
    assert set(expected) == set(AUTOFILL_FIELDS)
    rendered = " | ".join(f"{name}={value}" for name, value in expected.items())
    assert email.subject == rendered
    assert email.text.startswith(rendered)
    # the HTML part carries the same words, escaped
    assert "firm_name=Hartwell &amp; Moreno LLP" in email.html
    assert "pay_link=https://pay.hartwell.test/p/tok3n?all=1&amp;src=email" in email.html


def test_the_default_templates_read_naturally() -> None:
    email = compose([item("INV-7", balance=123450, due=None)])
    assert email.subject == "Hartwell & Moreno LLP: invoice INV-7 ($1,234.50 due)"
    assert email.text.startswith(
        "Dear Dana Whitfield,\n\nPlease find invoice INV-7 for $1,234.50, due on receipt."
    )


def test_three_numbers_are_listed_with_commas_and_and() -> None:
    email = compose(
        [item("A"), item("B"), item("C", kind="trust_request")], subject="{{ invoice_numbers }}"
    )
    assert email.subject == "invoice A, invoice B and trust request C"


def test_the_subject_is_one_line() -> None:
    email = compose(
        [item("INV-7")], subject="Bill\n{{ invoice_numbers }}\n\n  from {{ firm_name }}"
    )
    assert email.subject == "Bill invoice INV-7 from Hartwell & Moreno LLP"


def test_an_unknown_field_names_the_known_ones() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        compose([item("INV-7")], body="Dear {{ client_nmae }}")
    message = str(caught.value)
    assert "client_nmae" in message
    for name in AUTOFILL_FIELDS:
        assert name in message


@pytest.mark.parametrize(
    "source",
    [
        "{{ client_name",  # does not parse
        "{% if %}",
        "{{ 1/0 }}",
        "{{ amount_due / 2 }}",
        "{% for i in range(1000000) %}{% endfor %}",
    ],
)
def test_a_template_that_cannot_render_is_reported_not_crashed(source: str) -> None:
    with pytest.raises(TemplateInvalid):
        check_template(source)


def test_the_default_templates_pass_the_check() -> None:
    check_template(DEFAULT_SUBJECT)
    check_template(DEFAULT_BODY)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ client_name.__class__ }}",
        "{{ client_name|attr('__class__') }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ config }}",
        "{{ request }}",
    ],
)
def test_templates_are_sandboxed(source: str) -> None:
    with pytest.raises(TemplateInvalid):
        render_user_template(source, sample_context())


HOSTILE = "Dana <script>alert(1)</script> {{ 7*7 }}"


def test_a_hostile_client_name_stays_text() -> None:
    email = compose(
        [item("INV-<b>7</b>", matter="<img src=x onerror=alert(2)>")],
        subject="For {{ client_name }}",
        body="Dear {{ client_name }},\n\nPlease pay.",
        client=HOSTILE,
    )
    assert email.subject == f"For {HOSTILE}"
    assert f"Dear {HOSTILE}," in email.text
    assert "Dear Dana &lt;script&gt;alert(1)&lt;/script&gt; {{ 7*7 }}," in email.html
    assert "<script" not in email.html
    assert "<img" not in email.html and "&lt;img src=x onerror=alert(2)&gt;" in email.html
    assert "INV-&lt;b&gt;7&lt;/b&gt;" in email.html
    for part in (email.subject, email.text, email.html):
        assert "{{ 7*7 }}" in part
        assert "Dana 49" not in part and "</script> 49" not in part


def test_the_firm_name_is_escaped_in_html() -> None:
    email = compose([item("INV-7")])
    assert "Hartwell &amp; Moreno LLP" in email.html
    assert "Hartwell & Moreno" not in email.html


def test_the_firm_address_is_one_line_in_the_footer() -> None:
    """As the Settings textarea sends it: CRLF line ends, a blank line, stray spaces."""
    firm = FIRM.model_copy(update={"address": "100 Main Street, Suite 400 \r\n\r\nSpringfield, IL"})
    email = compose_email(
        firm,
        "Dana Whitfield",
        [item("INV-7")],
        subject_template=DEFAULT_SUBJECT,
        body_template=DEFAULT_BODY,
        pay_all_url=PAY_ALL,
        view_all_url=VIEW_ALL,
    )
    assert "100 Main Street, Suite 400, Springfield, IL" in email.html
    assert "100 Main Street, Suite 400, Springfield, IL" in email.text
    assert "\r" not in email.html and "\r" not in email.text


def test_one_bill_has_view_invoice_and_pay_online() -> None:
    bill = item("INV-7", balance=123450)
    email = compose([bill])
    links = Links(email.html).links
    assert (bill.view_url, "View Invoice") in links
    assert (bill.pay_url, "Pay Online") in links
    assert not any(text.startswith("Pay All") for _, text in links)
    assert f"View Invoice: {bill.view_url}" in email.text
    assert f"Pay Online: {bill.pay_url}" in email.text
    assert "Pay All" not in email.text


def test_several_bills_have_view_and_pay_each_and_pay_all() -> None:
    bills = [item("INV-7", balance=100000), item("TR-3", kind="trust_request", balance=25050)]
    email = compose(bills)
    links = Links(email.html).links
    for bill in bills:
        assert (bill.view_url, "View") in links
        assert (bill.pay_url, "Pay") in links
    assert (PAY_ALL, "Pay All ($1,250.50)") in links
    assert not any(text in ("View Invoice", "Pay Online") for _, text in links)
    assert "Trust request TR-3" in email.html and "Invoice INV-7" in email.html
    for bill in bills:
        assert f"View Invoice: {bill.view_url}" in email.text
        assert f"Pay Online: {bill.pay_url}" in email.text
    assert f"Pay All ($1,250.50): {PAY_ALL}" in email.text
