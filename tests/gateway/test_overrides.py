"""The gateway's routes take their internal clients as dependencies, so a test replaces one
with `app.dependency_overrides`: here envelope's client, by a stub that needs no HTTP."""

from __future__ import annotations

from datetime import date

import pytest

from services.gateway.clients.base import Refused
from services.gateway.clients.envelope import EnvelopeClient
from services.gateway.deps import envelope_client
from shared.api.envelope import BalanceDraft, BalanceOut
from tests.gateway.conftest import Gateway, row

pytestmark = pytest.mark.timeout(60)


class StubEnvelope(EnvelopeClient):
    """envelope's client answering from memory."""

    def __init__(self, owing: dict[str, int]) -> None:
        self.owing = owing
        self.drafted: list[tuple[str, str]] = []

    async def balances(self, firm_id: str) -> list[BalanceOut]:
        return [
            BalanceOut(
                client_id=client_id,
                client_name=f"Client {client_id}",
                email=None,
                currency="USD",
                outstanding_minor=minor,
                unpaid_items=1,
                oldest_due=date(2025, 6, 30),
                last_sent_at=None,
            )
            for client_id, minor in self.owing.items()
        ]

    async def balance_draft(self, firm_id: str, client_id: str, created_by: str) -> BalanceDraft:
        if not self.owing.get(client_id):
            raise Refused(409, "This client owes nothing.")
        self.drafted.append((firm_id, client_id))
        return BalanceDraft(id=f"env-{client_id}")


async def test_an_overridden_client_answers_the_pages(gateway: Gateway) -> None:
    assert gateway.app is not None
    stub = StubEnvelope({"c1": 120_000, "c2": 0})
    gateway.app.dependency_overrides[envelope_client] = lambda: stub
    await gateway.login()
    page = await gateway.client.get("/balances")
    assert page.status_code == 200
    assert "$1,200.00" in row(page.text, "client", "c1")
    assert "Client c2" in row(page.text, "client", "c2")

    sent = await gateway.client.post("/balances/c1/send", {})
    assert sent.status_code == 303 and sent.headers["location"].endswith("/0")
    assert stub.drafted == [(gateway.firm_id, "c1")]
    # A client who owes nothing: the client's refusal reaches the page as before.
    await gateway.client.get("/balances")
    refused = await gateway.client.post("/balances/c2/send", {})
    assert refused.status_code == 409 and "owes nothing" in refused.text
    # Nothing went over HTTP to envelope.
    assert gateway.envelope.requests == []
