"""Each recipient's copy, built without SMTP: which links are tracked (only this system's
client pages, nothing else touched), where the pixel goes, what differs between copies."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest

from services.mailer.copies import Tracking, cut_html, cut_text, prepare_copies
from services.mailer.message import build_message
from services.mailer.verp import return_path
from shared import tracking

BASE = "https://pay.firm.example"
SECRET = "s3cret"
T = Tracking(BASE, SECRET)


def html_copy(body: str, n: int = 0, email_id: str = "e1") -> str:
    return prepare_copies(
        content(html=body), email_id=email_id, mail_from="b@ep.test", message_id="<m@ep>",
        tracking=T, bounce_local="bounces", bounce_domain="ep.test",
    ).bodies(n)[1]  # fmt: skip


def text_copy(body: str, n: int = 0) -> str:
    return prepare_copies(
        content(text=body), email_id="e1", mail_from="b@ep.test", message_id="<m@ep>",
        tracking=T, bounce_local="bounces", bounce_domain="ep.test",
    ).bodies(n)[0]  # fmt: skip


def content(**extra: object) -> dict[str, object]:
    c: dict[str, object] = {
        "from_name": "Kanzlei Müller LLP",
        "to": ["ada@client.example", "bob@client.example"],
        "cc": ["audit@client.example"],
        "reply_to": "billing@firm.example",
        "subject": "Rechnung",
        "text": "Pay: " + BASE + "/pay/tok",
        "html": f"<html><body><a href='{BASE}/pay/tok'>Pay</a></body></html>",
        "attachments": [],
    }
    c.update(extra)
    return c


def click(path: str, n: int = 0, email_id: str = "e1") -> str:
    return tracking.click_url(BASE, SECRET, email_id, n, path)


def pixel(n: int = 0, email_id: str = "e1") -> str:
    return (
        f'<img src="{tracking.pixel_url(BASE, SECRET, email_id, n)}" alt="" width="1" '
        'height="1" border="0" style="display:block;width:1px;height:1px;border:0">'
    )


@pytest.mark.parametrize(
    ("href", "path"),
    [
        (f'"{BASE}/pay/tok"', "/pay/tok"),
        (f"'{BASE}/pay/tok'", "/pay/tok"),
        (f"{BASE}/pay/tok", "/pay/tok"),  # unquoted
        (f'"{BASE}/pay/tok?invoice=i-1&amp;b=2"', "/pay/tok?invoice=i-1&b=2"),
        (f'"{BASE}/v/tok/statement"', "/v/tok/statement"),
        (f'" {BASE}/v/tok/inv-7 "', "/v/tok/inv-7"),
    ],
)
def test_a_link_to_our_client_pages_becomes_the_tracked_redirect(href: str, path: str) -> None:
    body = html_copy(f'<p><a class="btn" href={href} style="color:red">Pay</a></p>')
    assert body == (
        f'<p><a class="btn" href="{click(path).replace("&", "&amp;")}" style="color:red">Pay</a>'
        f"</p>{pixel()}"
    )
    [url] = re.findall(r'href="([^"]*)"', body)
    url = unescape(url)
    token = urlsplit(url).path.rsplit("/", 1)[1]
    target = parse_qs(urlsplit(url).query)["u"][0]
    assert target == path
    assert tracking.read_click(SECRET, token, target) == tracking.Recipient("e1", 0)


@pytest.mark.parametrize(
    "tag",
    [
        '<a href="https://other.example/pay/tok">x</a>',  # another host
        f'<a href="{BASE}.evil.example/pay/tok">x</a>',  # our host as a prefix of another
        f'<a href="{BASE}@evil.example/pay/tok">x</a>',
        f'<a href="{BASE}/login">x</a>',  # ours, but not a client page
        f'<a href="{BASE}/payments">x</a>',
        f'<a href="{BASE}//evil.example/pay/x">x</a>',
        '<a href="mailto:a@b.test">x</a>',
        f'<a href="{BASE.replace("https", "http")}/pay/tok">x</a>',  # another scheme
        f'<a data-href="{BASE}/pay/tok" title="href={BASE}/pay/tok">x</a>',  # not an href
        f'<img src="{BASE}/pay/tok">',
        f"<p>{BASE}/pay/tok as text of the HTML part</p>",
        f'<a href="{BASE}/pay/tok\\evil">x</a>',
    ],
)
def test_every_other_url_is_left_exactly_as_it_is(tag: str) -> None:
    assert html_copy(tag) == tag + pixel()


def test_the_pixel_goes_before_the_last_body_end_and_each_copy_has_its_own() -> None:
    body = "<html><BODY><p>Hi</p></BODY ></html>"
    assert html_copy(body, n=2) == f"<html><BODY><p>Hi</p>{pixel(2)}</BODY ></html>"
    one, two = html_copy(body, n=0), html_copy(body, n=1)
    assert one != two and one.replace(pixel(0), pixel(1)) == two


def test_text_urls_to_our_pages_are_tracked_and_sentence_punctuation_stays_text() -> None:
    text = (
        f"Pay: {BASE}/pay/tok?invoice=i-1&b=2.\n"
        f"View ({BASE}/v/tok/inv-1), or {BASE}/v/tok/statement!\n"
        f"Elsewhere: https://other.example/pay/tok and {BASE}/login."
    )
    assert text_copy(text, n=1) == (
        f"Pay: {click('/pay/tok?invoice=i-1&b=2', 1)}.\n"
        f"View ({click('/v/tok/inv-1', 1)}), or {click('/v/tok/statement', 1)}!\n"
        f"Elsewhere: https://other.example/pay/tok and {BASE}/login."
    )


def test_a_body_with_no_links_is_cut_into_itself() -> None:
    assert cut_text("no links here", BASE) == ["no links here"]
    pieces = cut_html("<p>x</p>", BASE)
    assert "".join(p for p in pieces if isinstance(p, str)) == "<p>x</p>"


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_each_copy_is_the_message_with_its_own_links_return_path_and_envid() -> None:
    c = content()
    copies = prepare_copies(
        c, email_id="e1", mail_from="billing@ep.test", message_id="<e1@ep>", tracking=T,
        bounce_local="bounces", bounce_domain="bounce.ep.test",
    )  # fmt: skip
    assert copies.recipients == ["ada@client.example", "bob@client.example", "audit@client.example"]
    whole = parse(build_message(c, mail_from="billing@ep.test", message_id="<e1@ep>").data)
    for n, address in enumerate(copies.recipients):
        out = copies.copy(n)
        assert out.recipients == [address]
        assert out.mail_from == return_path("bounces", "bounce.ep.test", "e1", n, SECRET)
        assert out.envid == f"e1.{n}" and out.message_id == "<e1@ep>"
        assert out.data.count(b"\r\n") == out.data.count(b"\n") == out.data.count(b"\r")
        msg = parse(out.data)
        for header in ("From", "To", "Cc", "Reply-To", "Subject", "Message-ID", "MIME-Version"):
            assert msg[header] == whole[header], header
        html = msg.get_body(("html",))
        text = msg.get_body(("plain",))
        assert html is not None and text is not None
        assert html.get_content().rstrip("\n") == copies.bodies(n)[1]
        assert click("/pay/tok", n) in text.get_content()


def test_building_copies_keeps_the_shared_parts_once() -> None:
    """The headers and attachments are written once per email: a copy only joins them."""
    pdf = bytes(range(256)) * 4000
    c = content(attachments=[{"filename": "a.pdf", "content_type": "application/pdf", "data": pdf}])
    copies = prepare_copies(
        c, email_id="e1", mail_from="b@ep.test", message_id="<m@ep>", tracking=T,
        bounce_local="bounces", bounce_domain="ep.test",
    )  # fmt: skip
    one, two = copies.copy(0).data, copies.copy(1).data
    assert one.startswith(copies.parts.head) and two.startswith(copies.parts.head)
    assert one.endswith(copies.parts.tail) and two.endswith(copies.parts.tail)
    [att] = list(parse(two).iter_attachments())
    assert att.get_content() == pdf


@pytest.mark.parametrize(
    "body",
    [
        "<a " * 50_000,  # no '>' anywhere
        '<a href="' * 30_000,
        "<a x='" * 30_000,
        "<a href" + " " * 200_000 + ">",
        f"<a href={BASE}/pay/" + "x" * 200_000,
        f"{BASE}/pay/" * 20_000,
    ],
)
def test_a_body_built_to_be_slow_is_cut_in_one_pass(body: str) -> None:
    """Finding the links is linear in the body: bodies that made a backtracking pattern
    take seconds to minutes are cut at once (the bound leaves room for a loaded machine)."""
    import time

    start = time.process_time()
    cut_html(body, BASE)
    cut_text(body, BASE)
    assert time.process_time() - start < 1.0


def cut_html_as_written_first(body: str, base_url: str) -> list[object]:
    """`cut_html` before it found its tags from each "href": every tag, one by one."""
    import html as html_module

    from services.mailer.copies import _ATTR, _BODY_END, _TAG, PIXEL, Link, _own_path

    pieces: list[object] = []
    done = 0
    for tag in _TAG.finditer(body):
        attrs = tag.group(2)
        if "href" not in attrs.lower():
            continue
        attrs_start = tag.start(2)
        for attr in _ATTR.finditer(attrs):
            if attr.group(2).lower() != "href" or attr.group(4) is None:
                continue
            raw = attr.group(4)
            value = raw[1:-1] if raw[0] in "\"'" else raw
            path = _own_path(html_module.unescape(value).strip(), base_url)
            if path is None:
                continue
            start, end = attrs_start + attr.start(4), attrs_start + attr.end(4)
            pieces += [body[done:start], Link(path, raw)]
            done = end
    ends = list(_BODY_END.finditer(body, done))
    at = ends[-1].start() if ends else len(body)
    pieces += [body[done:at], PIXEL, body[at:]]
    return pieces


def test_cut_html_finds_the_links_every_tag_by_tag_reading_finds() -> None:
    """Odd markup included: "href" in text, in tag names, in values, tags left open, '<' in
    attributes, capitals, several hrefs in a tag."""
    import random

    from services.mailer.copies import cut_html

    base = "https://pay.example"
    fragments = [
        '<a href="https://pay.example/pay/t1">', "<A HREF=https://pay.example/v/t2>",
        "<a title='x' href = 'https://pay.example/pay/t3?invoice=clio:1'>", "href",
        "<ahref x>", "<a ahref='https://pay.example/pay/t4'>", "<a href>", "<", ">",
        "<a href='https://pay.example/pay/t5' <b href='https://pay.example/pay/t6'>",
        "<p>see href= here</p>", '<a data-x="<" href="https://pay.example/pay/t7">',
        "<a hReF=\"https://other.example/pay/t8\">", "</body>", "text ", "<br/>", "<a\nhref",
        "=\"https://pay.example/pay/t9\">", "<img src=x>", "<a href='https://pay.example//x'>",
    ]  # fmt: skip
    rng = random.Random(15)
    for _ in range(3000):
        body = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 14)))
        assert cut_html(body, base) == cut_html_as_written_first(body, base), body
