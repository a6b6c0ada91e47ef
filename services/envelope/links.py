"""Client links' tokens and URLs: derived from the link secret, so the same bills always get
the same link and nothing needs storing to make one."""

from __future__ import annotations

from services.envelope.settings import EnvelopeSettings
from shared.tokens import derive_token


class Links:
    def __init__(self, settings: EnvelopeSettings) -> None:
        self.settings = settings

    def send_token(self, send_id: str) -> str:
        return derive_token(self.settings.link_secret, "send", send_id)

    def invoice_token(self, firm_id: str, invoice_id: str) -> str:
        return derive_token(self.settings.link_secret, "invoice", firm_id, invoice_id)

    def statement_token(self, firm_id: str, invoice_ids: list[str]) -> str:
        # The statement of a set of bills has one Pay All link, whichever email carries it.
        return derive_token(self.settings.link_secret, "statement", firm_id, *sorted(invoice_ids))

    def view_url(self, token: str, invoice_id: str) -> str:
        return f"{self.settings.public_base_url}/v/{token}/{invoice_id}"

    def pay_url(self, token: str, invoice_id: str | None = None) -> str:
        base = f"{self.settings.public_base_url}/pay/{token}"
        return f"{base}?invoice={invoice_id}" if invoice_id else base

    def statement_url(self, token: str) -> str:
        return f"{self.settings.public_base_url}/v/{token}/statement"
