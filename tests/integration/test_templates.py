"""Email templates on both databases, through envelope's internal API: a firm creates, edits,
deletes and chooses its default template; another firm never sees or touches it; a template
that cannot render is refused when saved, naming the field; new drafts start from the
default, with every autofill field filled in and user input escaped in the email."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.envelope.app import MIGRATIONS, create_app
from services.envelope.compose import AUTOFILL_FIELDS, DEFAULT_BODY, DEFAULT_SUBJECT
from services.envelope.desk import Desk
from services.envelope.settings import EnvelopeSettings
from shared.events import FirmProfile, FirmUpdated, InvoiceSnapshot, InvoiceUpdated
from shared.migrations import upgrade_async

pytestmark = pytest.mark.timeout(60)

FIRM_A = "firm-a"
FIRM_B = "firm-b"
PUBLIC = "https://pay.hartwell.test"


@dataclass
class Envelope:
    http: httpx.AsyncClient
    desk: Desk

    async def create(self, firm_id: str, **fields: Any) -> httpx.Response:
        body = {"name": "Friendly", "subject": "Bill {{ invoice_numbers }}", "body": "Hi"}
        return await self.http.post(f"/internal/firms/{firm_id}/templates", json=body | fields)

    async def listing(self, firm_id: str) -> dict[str, Any]:
        resp = await self.http.get(f"/internal/firms/{firm_id}/templates")
        assert resp.status_code == 200
        return dict(resp.json())

    async def set_default(self, firm_id: str, template_id: str | None) -> httpx.Response:
        return await self.http.post(
            f"/internal/firms/{firm_id}/templates/default", json={"template_id": template_id}
        )

    async def draft(self, firm_id: str) -> dict[str, Any]:
        resp = await self.http.post(
            f"/internal/firms/{firm_id}/envelopes/drafts",
            json={"invoice_ids": ["clio:1042"], "created_by": "u1"},
        )
        assert resp.status_code == 200, resp.text
        [env] = resp.json()
        return dict(env)

    async def preview(self, firm_id: str, envelope_id: str) -> dict[str, str]:
        resp = await self.http.get(f"/internal/firms/{firm_id}/envelopes/{envelope_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json()["preview"])


@pytest.fixture
async def envelope(database_url: str) -> AsyncIterator[Envelope]:
    await upgrade_async(MIGRATIONS, database_url)
    settings = EnvelopeSettings(
        database_url=database_url, environment="test", public_base_url=PUBLIC
    )
    app: FastAPI = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    headers = {"X-Internal-Token": settings.internal_token}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://envelope", headers=headers
    ) as http:
        env = Envelope(http, app.state.desk)
        for firm_id in (FIRM_A, FIRM_B):
            await seed_firm(env.desk, firm_id)
        yield env
    await app.state.service.engine.dispose()


async def seed_firm(desk: Desk, firm_id: str) -> None:
    firm = FirmProfile(name=f"Hartwell & Moreno ({firm_id})", email="billing@hartwell.test")
    snapshot = InvoiceSnapshot(
        invoice_id="clio:1042",
        source_id="1042",
        number="1042",
        kind="invoice",
        state="awaiting_payment",
        client_id="c1",
        client_name="Dana Whitfield",
        client_email="dana@example.test",
        matter_number="00042",
        matter_description="Estate plan",
        due_at=date(2025, 4, 30),
        total_minor=180_000,
        balance_minor=125_000,
    )
    async with desk.service.sessionmaker() as s, s.begin():
        await desk.on_firm_updated(s, FirmUpdated(firm_id=firm_id, firm=firm))
        await desk.on_invoice_updated(s, InvoiceUpdated(firm_id=firm_id, invoice=snapshot))


async def test_create_edit_delete_and_choose_the_default(envelope: Envelope) -> None:
    created = await envelope.create(FIRM_A, name="Friendly reminder", is_default=False)
    assert created.status_code == 201, created.text
    tid = created.json()["id"]
    listing = await envelope.listing(FIRM_A)
    assert [t["name"] for t in listing["items"]] == ["Friendly reminder"]
    assert listing["default_id"] is None
    assert listing["builtin"]["subject"] == DEFAULT_SUBJECT
    assert listing["autofill_fields"] == AUTOFILL_FIELDS

    edited = await envelope.http.put(
        f"/internal/firms/{FIRM_A}/templates/{tid}",
        json={"name": "Final notice", "subject": "Overdue: {{ amount_due }}", "body": "Pay now"},
    )
    assert edited.status_code == 200, edited.text
    got = (await envelope.http.get(f"/internal/firms/{FIRM_A}/templates/{tid}")).json()
    assert (got["name"], got["subject"], got["body"]) == (
        "Final notice",
        "Overdue: {{ amount_due }}",
        "Pay now",
    )

    # New drafts start from the default template; a second default replaces the first.
    other = (await envelope.create(FIRM_A, name="Other", is_default=True)).json()["id"]
    assert (await envelope.set_default(FIRM_A, tid)).status_code == 200
    listing = await envelope.listing(FIRM_A)
    assert listing["default_id"] == tid
    assert [t["is_default"] for t in listing["items"]] == [True, False]  # Final notice, Other
    draft = await envelope.draft(FIRM_A)
    assert (draft["subject"], draft["body"]) == ("Overdue: {{ amount_due }}", "Pay now")
    assert (await envelope.preview(FIRM_A, draft["id"]))["subject"] == "Overdue: $1,250.00"

    # Back to the built-in one, by choice or because the default was deleted.
    assert (await envelope.set_default(FIRM_A, None)).status_code == 200
    draft = await envelope.draft(FIRM_A)
    assert (draft["subject"], draft["body"]) == (DEFAULT_SUBJECT, DEFAULT_BODY)
    await envelope.set_default(FIRM_A, other)
    deleted = await envelope.http.delete(f"/internal/firms/{FIRM_A}/templates/{other}")
    assert deleted.status_code == 204
    assert (
        await envelope.http.get(f"/internal/firms/{FIRM_A}/templates/{other}")
    ).status_code == 404
    assert (await envelope.listing(FIRM_A))["default_id"] is None
    draft = await envelope.draft(FIRM_A)
    assert (draft["subject"], draft["body"]) == (DEFAULT_SUBJECT, DEFAULT_BODY)
    # An envelope drafted from a template keeps its text when the template goes.
    await envelope.set_default(FIRM_A, tid)
    kept = await envelope.draft(FIRM_A)
    await envelope.http.delete(f"/internal/firms/{FIRM_A}/templates/{tid}")
    again = await envelope.http.get(f"/internal/firms/{FIRM_A}/envelopes/{kept['id']}")
    assert again.json()["subject"] == "Overdue: {{ amount_due }}"


async def test_another_firm_cannot_see_or_change_a_template(envelope: Envelope) -> None:
    tid = (await envelope.create(FIRM_A, name="Ours", is_default=True)).json()["id"]
    url = f"/internal/firms/{FIRM_B}/templates/{tid}"
    assert (await envelope.listing(FIRM_B))["items"] == []
    assert (await envelope.http.get(url)).status_code == 404
    changed = await envelope.http.put(url, json={"name": "Theirs", "subject": "x", "body": "y"})
    assert changed.status_code == 404
    assert (await envelope.http.delete(url)).status_code == 404
    assert (await envelope.set_default(FIRM_B, tid)).status_code == 404
    # Firm B's drafts do not start from firm A's default, and its own choice leaves A's alone.
    assert (await envelope.draft(FIRM_B))["subject"] == DEFAULT_SUBJECT
    assert (await envelope.set_default(FIRM_B, None)).status_code == 200
    ours = await envelope.listing(FIRM_A)
    assert [(t["id"], t["name"], t["is_default"]) for t in ours["items"]] == [(tid, "Ours", True)]
    # Names are unique per firm, not across firms.
    assert (await envelope.create(FIRM_B, name="Ours")).status_code == 201


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        (
            {"subject": "Bill for {{ clien_name }}"},
            "subject",
            "“clien_name”. Did you mean “client_name”?",
        ),
        ({"body": "Dear {{ client_name }},\n\nPay {{ amount_due }"}, "body", "Line 3"),
        ({"body": "{{ client_name.__class__ }}"}, "body", "unsafe"),
        ({"body": "{{ amount_due / 2 }}"}, "body", "cannot render"),
        ({"name": "   "}, "name", "name"),
        ({"subject": ""}, "subject", "empty"),
    ],
)
async def test_an_invalid_template_is_refused_naming_the_field(
    envelope: Envelope, fields: dict[str, str], field: str, says: str
) -> None:
    resp = await envelope.create(FIRM_A, **fields)
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert detail["field"] == field
    assert says in detail["message"]
    assert (await envelope.listing(FIRM_A))["items"] == []

    # Editing a good template into a bad one keeps the good one.
    tid = (await envelope.create(FIRM_A, name="Good")).json()["id"]
    good = (await envelope.http.get(f"/internal/firms/{FIRM_A}/templates/{tid}")).json()
    edit = {"name": "Good", "subject": "S", "body": "B"} | fields
    resp = await envelope.http.put(f"/internal/firms/{FIRM_A}/templates/{tid}", json=edit)
    assert resp.status_code == 422
    assert resp.json()["detail"]["field"] == field
    after = (await envelope.http.get(f"/internal/firms/{FIRM_A}/templates/{tid}")).json()
    assert after == good


async def test_a_name_is_used_once_per_firm(envelope: Envelope) -> None:
    assert (await envelope.create(FIRM_A, name="Reminder")).status_code == 201
    second = await envelope.create(FIRM_A, name=" reminder ")
    assert second.status_code == 422
    assert second.json()["detail"]["field"] == "name"
    other = (await envelope.create(FIRM_A, name="Other")).json()["id"]
    renamed = await envelope.http.put(
        f"/internal/firms/{FIRM_A}/templates/{other}",
        json={"name": "REMINDER", "subject": "S", "body": "B"},
    )
    assert renamed.status_code == 422
    assert renamed.json()["detail"] == {
        "field": "name",
        "message": "A template named “REMINDER” already exists.",
        "errors": {"name": "A template named “REMINDER” already exists."},
    }


async def test_every_autofill_field_is_filled_in_a_draft(envelope: Envelope) -> None:
    body = "\n".join(f"{field}=[{{{{ {field} }}}}]" for field in AUTOFILL_FIELDS)
    made = await envelope.create(
        FIRM_A, name="All fields", subject="{{ client_name }} {{ envelope_total }}", body=body
    )
    assert made.status_code == 201, made.text
    await envelope.set_default(FIRM_A, made.json()["id"])
    draft = await envelope.draft(FIRM_A)
    preview = await envelope.preview(FIRM_A, draft["id"])
    assert preview["subject"] == "Dana Whitfield $1,800.00"
    expected = {
        "client_name": "Dana Whitfield",
        "invoice_numbers": "invoice 1042",
        "amount_due": "$1,250.00",
        "envelope_total": "$1,800.00",
        "due_date": "April 30, 2025",
        "matter": "00042 Estate plan",
        "firm_name": "Hartwell & Moreno (firm-a)",
        "pay_link": f"{PUBLIC}/pay/preview",
        "view_link": f"{PUBLIC}/v/preview/clio:1042",
    }
    assert expected.keys() == AUTOFILL_FIELDS.keys()
    for field, value in expected.items():
        assert f"{field}=[{value}]" in preview["text"], field


async def test_user_markup_in_a_template_is_escaped_in_the_email(envelope: Envelope) -> None:
    made = await envelope.create(
        FIRM_A,
        name="<b>Bold</b>",
        subject="<i>{{ client_name }}</i>",
        body='<script>alert("x")</script>\n\n<a href="https://evil.test">{{ firm_name }}</a>',
        is_default=True,
    )
    assert made.status_code == 201, made.text
    draft = await envelope.draft(FIRM_A)
    html = (await envelope.preview(FIRM_A, draft["id"]))["html"]
    assert "<script" not in html and 'evil.test">' not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "Hartwell &amp; Moreno (firm-a)&lt;/a&gt;" in html
    # The Settings page's preview escapes the same way.
    resp = await envelope.http.post(
        f"/internal/firms/{FIRM_A}/templates/preview",
        json={"subject": "Hi", "body": "<script>alert(1)</script>"},
    )
    assert resp.status_code == 200
    assert "<script" not in resp.json()["html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in resp.json()["html"]


async def test_the_settings_preview_fills_example_values_and_names_errors(
    envelope: Envelope,
) -> None:
    url = f"/internal/firms/{FIRM_A}/templates/preview"
    resp = await envelope.http.post(url, json={"subject": DEFAULT_SUBJECT, "body": DEFAULT_BODY})
    assert resp.status_code == 200
    assert resp.json()["subject"] == "Hartwell & Moreno (firm-a): invoice 1042 ($1,250.00 due)"
    bad = await envelope.http.post(url, json={"subject": "ok", "body": "{{ nope }}"})
    assert bad.status_code == 422
    assert bad.json()["detail"]["field"] == "body"


async def test_the_api_wants_the_internal_token(envelope: Envelope) -> None:
    resp = await envelope.http.get(
        f"/internal/firms/{FIRM_A}/templates", headers={"X-Internal-Token": "wrong"}
    )
    assert resp.status_code == 401
    assert json.loads(resp.text)["detail"] == "internal token required"
