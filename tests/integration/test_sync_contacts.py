"""sync's contact search, behind the review window's Add contacts picker: the firm's own Clio
contacts with an email, matched on name or email in any case, with LIKE's wildcards taken as
plain characters, names that start with what was typed first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.sync import api
from services.sync.app import MIGRATIONS
from services.sync.models import Base, Contact
from services.sync.settings import SyncSettings
from services.sync.syncer import Syncer
from shared.migrations import upgrade_async
from shared.runtime import Service

FIRM, OTHER_FIRM = "firm-contacts", "firm-elsewhere"
CONTACTS = [
    (FIRM, "1", "Morgan Ellis", "m.ellis@example.com"),
    (FIRM, "2", "Elena Rivera", "elena.rivera@example.com"),
    (FIRM, "3", "Amorim & Sons", "ap@amorim.example"),
    (FIRM, "4", "100% Legal Supply", "orders@legalsupply.example"),
    (FIRM, "5", "Under_Score Ltd", "billing@underscore.example"),
    (FIRM, "6", "Morgan Noemail", None),
    (FIRM, "7", '<script>alert("x")</script> {{ 7*7 }}', "hostile@example.com"),
    (OTHER_FIRM, "1", "Morgan Elsewhere", "morgan@elsewhere.example"),
]


@pytest.fixture
async def search(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    await upgrade_async(MIGRATIONS, database_url)
    settings = SyncSettings(database_url=database_url, environment="test", var_dir=tmp_path)
    service = Service(settings, Base.metadata, MIGRATIONS)
    async with service.sessionmaker() as s, s.begin():
        s.add_all(
            Contact(firm_id=f, contact_id=cid, name=name, email=email)
            for f, cid, name, email in CONTACTS
        )
    app = FastAPI()
    app.include_router(api.router(service, Syncer(service, settings)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://sync",
        headers={"X-Internal-Token": settings.internal_token},
    ) as http:
        yield http
    await service.engine.dispose()


async def names(http: httpx.AsyncClient, q: str, firm: str = FIRM, **params: int) -> list[str]:
    resp = await http.get(f"/internal/firms/{firm}/contacts", params={"q": q, **params})
    assert resp.status_code == 200, resp.text
    return [c["name"] for c in resp.json()]


async def test_names_and_emails_match_in_any_case_and_starts_come_first(
    search: httpx.AsyncClient,
) -> None:
    # "mor": Morgan Ellis starts with it, Amorim & Sons only contains it; the contact with no
    # email and the other firm's Morgan are never offered.
    assert await names(search, "MOR") == ["Morgan Ellis", "Amorim & Sons"]
    assert await names(search, "rivera@") == ["Elena Rivera"]
    assert await names(search, "  elena ") == ["Elena Rivera"]
    assert await names(search, "nobody") == []
    assert await names(search, "morgan", firm=OTHER_FIRM) == ["Morgan Elsewhere"]


async def test_like_wildcards_are_plain_characters(search: httpx.AsyncClient) -> None:
    assert await names(search, "%") == ["100% Legal Supply"]
    assert await names(search, "r_s") == ["Under_Score Ltd"]
    assert await names(search, "0% l") == ["100% Legal Supply"]


async def test_nothing_typed_lists_every_contact_with_an_email_up_to_the_limit(
    search: httpx.AsyncClient,
) -> None:
    everyone = await names(search, "", limit=50)
    assert set(everyone) == {n for f, _, n, e in CONTACTS if f == FIRM and e}
    assert len(everyone) == 6
    # In the database's own collation, which orders punctuation as it likes.
    assert await names(search, "", limit=3) == everyone[:3]
    resp = await search.get(f"/internal/firms/{FIRM}/contacts", params={"limit": 51})
    assert resp.status_code == 422


async def test_a_hostile_name_comes_back_as_data(search: httpx.AsyncClient) -> None:
    resp = await search.get(f"/internal/firms/{FIRM}/contacts", params={"q": "script"})
    assert resp.json() == [
        {
            "contact_id": "7",
            "name": '<script>alert("x")</script> {{ 7*7 }}',
            "email": "hostile@example.com",
        }
    ]


async def test_the_search_needs_the_internal_token(search: httpx.AsyncClient) -> None:
    resp = await search.get(
        f"/internal/firms/{FIRM}/contacts", params={"q": "mor"}, headers={"X-Internal-Token": ""}
    )
    assert resp.status_code == 401
