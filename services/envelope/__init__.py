"""envelope: groups invoices into envelopes, drafts the emails from templates, renders PDFs."""
