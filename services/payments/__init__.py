"""payments: pay sessions, Pay All, card and ACH through a processor, settlement,
refunds, the ledger."""
