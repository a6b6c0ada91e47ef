"""The To field's check: what the review window accepts is what the mailer can carry."""

from __future__ import annotations

from services.gateway.deps import EMAIL_RE, parse_emails
from services.mailer.message import build_message


def test_to_splits_on_commas_semicolons_and_spaces_and_names_what_is_wrong() -> None:
    good, bad = parse_emails(
        "ada@client.example, jürgen@client.example; ana@bücher.example  not-an-address\n"
        "a<b@c.example x@y a@b@c.example"
    )
    assert good == ["ada@client.example", "ana@bücher.example"]
    assert bad == [
        "jürgen@client.example",
        "not-an-address",
        "a<b@c.example",
        "x@y",
        "a@b@c.example",
    ]


def test_every_address_the_form_accepts_builds_a_message() -> None:
    accepted = [
        a
        for a in (
            "o'neil@client.example",
            'q"uote@client.example',
            "ana@bücher.example",
            "x+tag@a.io",
        )
        if EMAIL_RE.match(a)
    ]
    assert len(accepted) == 4
    content = {"from_name": "Firm", "to": accepted, "subject": "s", "text": "t", "html": "<p>h</p>"}
    built = build_message(content, mail_from="b@ep.test", message_id="<m@ep>")
    assert len(built.recipients) == 4
