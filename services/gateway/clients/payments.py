"""payments' internal API as the gateway uses it: the client's pay link and checkout, the
firm's payments, refunds and CSV export, and Stripe's webhooks passed through."""

from __future__ import annotations

from typing import Literal

import httpx

from services.gateway.clients.base import InternalClient, ServiceUnavailable, read
from shared.api.payments import (
    AchForm,
    CardForm,
    CheckoutBody,
    CheckoutOut,
    CheckoutStarted,
    LinkOut,
    PaymentDetailOut,
    PaymentOut,
    RefundBody,
    RefundOut,
)


class PaymentsClient(InternalClient):
    # --- the client's pages --------------------------------------------------------------

    async def paylink(self, token: str) -> LinkOut | None:
        """What payments knows of a client link; None when it knows nothing of it (yet)."""
        return await self.found(LinkOut, f"/internal/paylinks/{token}")

    async def start_checkout(
        self, token: str, invoice_ids: list[str], scope: Literal["items", "outstanding"]
    ) -> CheckoutStarted:
        """A checkout session for these bills; Refused (409) when they cannot be paid so, (502)
        when the processor does not answer."""
        body = CheckoutBody(invoice_ids=invoice_ids, scope=scope)
        resp = await self.call(
            "POST",
            f"/internal/paylinks/{token}/checkout",
            json=body.model_dump(),
            refuse=(409, 502),
        )
        return read(CheckoutStarted, resp)

    async def checkout(self, session_id: str) -> CheckoutOut | None:
        return await self.found(CheckoutOut, f"/internal/checkout/{session_id}")

    async def pay(self, session_id: str, form: CardForm | AchForm) -> PaymentOut:
        """Test mode: pay the session by card or bank account; Refused (402, 409, 422) with
        {"field", "message"} when the details or the session refuse it."""
        method = "ach" if isinstance(form, AchForm) else "card"
        resp = await self.call(
            "POST",
            f"/internal/checkout/{session_id}/{method}",
            json=form.model_dump(),
            refuse=(402, 409, 422),
        )
        return read(PaymentOut, resp)

    # --- the firm's pages ----------------------------------------------------------------

    async def payments(self, firm_id: str, params: dict[str, str]) -> list[PaymentOut]:
        """The firm's payments; params: status, q."""
        resp = await self.call("GET", f"/internal/firms/{firm_id}/payments", params=params)
        return read(list[PaymentOut], resp)

    async def payments_csv(self, firm_id: str, params: dict[str, str]) -> httpx.Response | None:
        """The CSV export as a response still streaming (the caller closes it); None when
        payments cannot give it."""
        req = self.http.build_request(
            "GET", f"/internal/firms/{firm_id}/payments.csv", params=params
        )
        try:
            resp = await self.http.send(req, stream=True)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"payments is not answering ({type(exc).__name__})") from exc
        if resp.status_code != 200:
            await resp.aclose()
            return None
        return resp

    async def payment(self, firm_id: str, payment_id: str) -> PaymentDetailOut | None:
        url = f"/internal/firms/{firm_id}/payments/{payment_id}"
        return await self.found(PaymentDetailOut, url)

    async def refund(self, firm_id: str, payment_id: str, body: RefundBody) -> RefundOut:
        """Refused (404) for no such payment, (409) when payments' rules refuse it, (422)
        with {"field", "message"} for an amount it does not take."""
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/payments/{payment_id}/refunds",
            json=body.model_dump(),
            refuse=(404, 409, 422),
        )
        return read(RefundOut, resp)

    # --- Stripe --------------------------------------------------------------------------

    async def stripe_webhook(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Stripe's webhook, its bytes untouched; payments' answer as it is."""
        return await self.send("POST", "/webhooks/stripe", content=body, headers=headers)
