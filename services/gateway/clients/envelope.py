"""envelope's internal API as the gateway uses it: invoices, drafts, previews, batches,
balances, email templates and the PDFs behind the client's links."""

from __future__ import annotations

from typing import Any

from services.gateway.clients.base import InternalClient, Pdf, Refused, read
from shared.api.envelope import (
    BalanceDraft,
    BalanceDraftRequest,
    BalanceOut,
    DefaultIn,
    DraftRequest,
    EnvelopeOut,
    EnvelopeSummary,
    InvoicePage,
    Preview,
    PreviewRequest,
    SendState,
    SendStatusRequest,
    SummaryRequest,
    TemplateIn,
    TemplateList,
    TemplateOut,
    TextIn,
)


class EnvelopeClient(InternalClient):
    # --- invoices and envelopes ----------------------------------------------------------

    async def invoices(self, firm_id: str, **params: Any) -> InvoicePage:
        """A page of the firm's bills; params: q, state, kind, page, per_page, ids (a
        comma-separated list)."""
        resp = await self.call("GET", f"/internal/firms/{firm_id}/invoices", params=params)
        return read(InvoicePage, resp)

    async def invoice_pdf(self, firm_id: str, invoice_id: str) -> Pdf | None:
        return await self.pdf(f"/internal/firms/{firm_id}/invoices/{invoice_id}/pdf")

    async def drafts(
        self, firm_id: str, invoice_ids: list[str], created_by: str
    ) -> list[EnvelopeOut]:
        body = DraftRequest(invoice_ids=invoice_ids, created_by=created_by)
        resp = await self.call(
            "POST", f"/internal/firms/{firm_id}/envelopes/drafts", json=body.model_dump()
        )
        return read(list[EnvelopeOut], resp)

    async def envelope(self, firm_id: str, envelope_id: str) -> EnvelopeOut | None:
        """The envelope with its preview and sends; None when the firm has no such one."""
        return await self.found(EnvelopeOut, f"/internal/firms/{firm_id}/envelopes/{envelope_id}")

    async def preview(self, firm_id: str, envelope_id: str, subject: str, body: str) -> Preview:
        """The envelope's email with this subject and message; Refused (422) with the
        template's error."""
        text = PreviewRequest(subject=subject, body=body)
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/envelopes/{envelope_id}/preview",
            json=text.model_dump(),
            refuse=(422,),
        )
        return read(Preview, resp)

    async def summaries(self, firm_id: str, ids: list[str]) -> list[EnvelopeSummary]:
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/envelopes/summary",
            json=SummaryRequest(ids=ids).model_dump(),
        )
        return read(list[EnvelopeSummary], resp)

    async def send_states(self, firm_id: str, send_ids: list[str]) -> dict[str, SendState]:
        """The sends envelope knows of; the others are still on their way there."""
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/sends/status",
            json=SendStatusRequest(send_ids=send_ids).model_dump(),
        )
        return read(dict[str, SendState], resp)

    # --- Outstanding Balances ------------------------------------------------------------

    async def balances(self, firm_id: str) -> list[BalanceOut]:
        resp = await self.call("GET", f"/internal/firms/{firm_id}/balances")
        return read(list[BalanceOut], resp)

    async def balance_draft(self, firm_id: str, client_id: str, created_by: str) -> BalanceDraft:
        """The client balance's envelope; Refused (409) when the client owes nothing."""
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/clients/{client_id}/balance-envelope",
            json=BalanceDraftRequest(created_by=created_by).model_dump(),
            refuse=(409,),
        )
        return read(BalanceDraft, resp)

    # --- the client's links --------------------------------------------------------------

    async def link_issued(self, token: str) -> bool:
        """Whether envelope issued this link and it still works."""
        return (await self.send("GET", f"/internal/links/{token}")).status_code == 200

    async def link_statement(self, token: str) -> Pdf | None:
        return await self.pdf(f"/internal/links/{token}/statement.pdf")

    async def link_invoice(self, token: str, invoice_id: str) -> Pdf | None:
        return await self.pdf(f"/internal/links/{token}/invoices/{invoice_id}/pdf")

    # --- email templates -----------------------------------------------------------------

    async def templates(self, firm_id: str) -> TemplateList:
        resp = await self.call("GET", f"/internal/firms/{firm_id}/templates")
        return read(TemplateList, resp)

    async def template(self, firm_id: str, template_id: str) -> TemplateOut | None:
        return await self.found(TemplateOut, f"/internal/firms/{firm_id}/templates/{template_id}")

    async def create_template(self, firm_id: str, template: TemplateIn) -> TemplateOut:
        """Refused (422) with {"field", "message", "errors"} when it cannot be saved."""
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/templates",
            json=template.model_dump(),
            refuse=(422,),
        )
        return read(TemplateOut, resp)

    async def update_template(
        self, firm_id: str, template_id: str, template: TemplateIn
    ) -> TemplateOut:
        """Refused (404) when it is gone, (422) when it cannot be saved."""
        resp = await self.call(
            "PUT",
            f"/internal/firms/{firm_id}/templates/{template_id}",
            json=template.model_dump(),
            refuse=(404, 422),
        )
        return read(TemplateOut, resp)

    async def delete_template(self, firm_id: str, template_id: str) -> bool:
        """False when it was gone already."""
        try:
            await self.call(
                "DELETE", f"/internal/firms/{firm_id}/templates/{template_id}", refuse=(404,)
            )
        except Refused:
            return False
        return True

    async def set_default_template(self, firm_id: str, template_id: str | None) -> bool:
        """Make the template (None: the built-in one) the firm's default; False if it is gone."""
        try:
            await self.call(
                "POST",
                f"/internal/firms/{firm_id}/templates/default",
                json=DefaultIn(template_id=template_id).model_dump(),
                refuse=(404,),
            )
        except Refused:
            return False
        return True

    async def preview_template(self, firm_id: str, subject: str, body: str) -> Preview:
        """The text with example values; Refused (422) with {"field", "message", "errors"}."""
        resp = await self.call(
            "POST",
            f"/internal/firms/{firm_id}/templates/preview",
            json=TextIn(subject=subject, body=body).model_dump(),
            refuse=(422,),
        )
        return read(Preview, resp)
