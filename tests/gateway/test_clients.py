"""The internal clients' contract with their callers: answers read as the shared/api models,
a 404 on a lookup as None, the statuses a caller handles as Refused with the service's
detail, any other error status as an HTTP error, a service that does not answer as
ServiceUnavailable. And the one helper the templates ask which bills may be sent."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.clients.base import Refused, ServiceUnavailable
from services.gateway.clients.envelope import EnvelopeClient
from services.gateway.clients.sync import SyncClient
from services.gateway.pages import sendable
from shared.api.envelope import BalanceDraft, SendState
from shared.events import InvoiceState

FIRM = "firm-1"


def client(answer: httpx.Response | Exception) -> EnvelopeClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://envelope")
    return EnvelopeClient(http)


async def test_answers_read_as_the_contracts_models() -> None:
    answer = {"s1": {"status": "sent"}, "s2": {"status": "failed", "error": "x"}}
    states = await client(httpx.Response(200, json=answer)).send_states(FIRM, ["s1", "s2"])
    assert states == {
        "s1": SendState(status="sent"),
        "s2": SendState(status="failed", error="x"),
    }


async def test_a_lookup_answered_404_is_none() -> None:
    assert await client(httpx.Response(404, json={"detail": "no"})).envelope(FIRM, "e1") is None
    assert await client(httpx.Response(404, json={"detail": "no"})).invoice_pdf(FIRM, "i") is None


async def test_the_statuses_a_caller_handles_are_refused_with_the_detail() -> None:
    refusing = client(httpx.Response(409, json={"detail": "This client owes nothing."}))
    with pytest.raises(Refused) as caught:
        await refusing.balance_draft(FIRM, "c1", "u1")
    assert (caught.value.status, caught.value.message) == (409, "This client owes nothing.")
    field = {"detail": {"field": "subject", "message": "Unknown field", "errors": {}}}
    with pytest.raises(Refused) as caught:
        await client(httpx.Response(422, json=field)).preview_template(FIRM, "{{ x }}", "")
    assert (caught.value.field, caught.value.message) == ("subject", "Unknown field")
    drafted = await client(httpx.Response(200, json={"id": "env-1"})).balance_draft(FIRM, "c", "u")
    assert drafted == BalanceDraft(id="env-1")


async def test_other_error_statuses_stay_errors() -> None:
    with pytest.raises(httpx.HTTPStatusError):
        await client(httpx.Response(500, json={"detail": "boom"})).balance_draft(FIRM, "c", "u")


async def test_a_service_that_does_not_answer_is_unavailable() -> None:
    down = client(httpx.ConnectError("connection refused"))
    with pytest.raises(ServiceUnavailable, match="is not answering"):
        await down.balances(FIRM)


async def test_a_failing_sync_shows_clio_as_not_connected() -> None:
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(500, json={"detail": "x"})),
        base_url="http://sync",
    )
    status = await SyncClient(http).clio(FIRM)
    assert status.connected is False


@pytest.mark.parametrize("state", list(InvoiceState))
def test_only_unpaid_and_paid_bills_are_sendable(state: InvoiceState) -> None:
    expected = state in (InvoiceState.awaiting_payment, InvoiceState.paid)
    assert sendable({"state": str(state)}) is expected
