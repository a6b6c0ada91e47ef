"""The envelope service's parts, wired together: each job lives in its own module, and the
`Desk` hands out their entry points under the names the API, the handlers and the tests use.

    links.py        client links' tokens and URLs
    paylinks.py     client links' rows and paylink.issued; a client's click checked
    projections.py  firm.updated, invoice.updated and payment.* kept as envelope sees them
    reads.py        a firm's profile, bills by id, the Invoices list
    drafting.py     draft envelopes, their sends so far, their preview
    contents.py     an email's items, links and composed text, or why a send has none
    sending.py      envelope.send_requested -> emails and links (send_inputs, send_writes)
    mail_reports.py email.sent and email.failed
    sealing.py      stored emails read back and sealed into email.requested
    rendering.py    PDFs on demand (pdf_pool: the process pool; prerender: ahead of time)
    rules.py        the decisions, pure
"""

from __future__ import annotations

from services.envelope import mail_reports
from services.envelope.drafting import Drafting
from services.envelope.links import Links
from services.envelope.paylinks import PayLinks
from services.envelope.projections import Projections
from services.envelope.rendering import Renderer
from services.envelope.sealing import Sealing
from services.envelope.sending import Sending
from services.envelope.settings import EnvelopeSettings
from shared.runtime import Service


class Desk:
    def __init__(self, service: Service, settings: EnvelopeSettings) -> None:
        self.service = service
        self.settings = settings
        self.links = Links(settings)
        self.paylinks = PayLinks(service, self.links)
        self.renderer = Renderer(service, settings, self.links, self.paylinks)
        self.projections = Projections(self.renderer.scheduler)
        self.drafting = Drafting(service, settings, self.links, self.renderer.scheduler)
        self.sending = Sending(service, settings, self.links, self.renderer)
        self.sealing = Sealing(service, settings)

        # links
        self.send_token = self.links.send_token
        self.invoice_token = self.links.invoice_token
        self.statement_token = self.links.statement_token
        self.view_url = self.links.view_url
        self.pay_url = self.links.pay_url
        self.statement_url = self.links.statement_url
        self.link_issued = self.paylinks.issued
        self.link_invoice = self.paylinks.invoice
        self.link_statement = self.renderer.link_statement
        # other services' events
        self.on_firm_updated = self.projections.on_firm_updated
        self.on_invoice_updated = self.projections.on_invoice_updated
        self.on_payment = self.projections.on_payment
        # drafting
        self.create_drafts = self.drafting.create_drafts
        self.envelope = self.drafting.envelope
        self.sends = self.drafting.sends
        self.preview = self.drafting.preview
        # sending, and what the mailer reports
        self.prepare_sends = self.sending.prepare_sends
        self.prepare_send = self.sending.prepare_send
        self.on_sends_requested = self.sending.on_sends_requested
        self.on_send_requested = self.sending.on_send_requested
        self.on_emails_sent = mail_reports.on_emails_sent
        self.on_email_sent = mail_reports.on_email_sent
        self.on_email_failed = mail_reports.on_email_failed
        # email contents
        self.seal_email_contents = self.sealing.seal_email_contents
        self.email_content = self.sealing.email_content
        self.email_contents = self.sealing.email_contents
