"""sync's internal API for LEDES 1998B imports, as the gateway calls it: upload a file, read
an import's result, give a client the email (and name) the format does not carry."""

from __future__ import annotations

import datetime as dt
from datetime import datetime

from pydantic import BaseModel, Field

# The largest file the import reads, in bytes. A LEDES line is a few hundred bytes: this is
# well over ten thousand line items, and small enough to hold and parse in one request.
MAX_FILE_BYTES = 5 * 1024 * 1024
DEFAULT_DUE_DAYS = 30


class ImportOptions(BaseModel):
    """What the format lacks, chosen on upload: a due date, or a term from the invoice date."""

    filename: str = Field(default="upload.txt", max_length=300)
    due_days: int = Field(default=DEFAULT_DUE_DAYS, ge=0, le=365)
    due_date: dt.date | None = None


class ImportedInvoice(BaseModel):
    invoice_id: str
    number: str
    client_ref: str
    client_name: str
    total_minor: int
    currency: str = "USD"
    # new, updated, unchanged
    outcome: str
    # False while the client has no email: the invoice waits for one before it is published.
    published: bool


class LineProblem(BaseModel):
    line: int  # 1-based; 0 for the file as a whole
    reason: str


class SkippedInvoice(BaseModel):
    number: str
    client_ref: str
    law_firm_id: str
    first_line: int
    problems: list[LineProblem]


class ClientNeedingEmail(BaseModel):
    client_ref: str
    name: str
    invoices: int


class ImportResult(BaseModel):
    import_id: int
    filename: str
    uploaded_at: datetime
    imported: list[ImportedInvoice] = Field(default_factory=list)
    skipped: list[SkippedInvoice] = Field(default_factory=list)
    # Lines that belong to no invoice (a short line, a missing []) and file-level problems.
    problems: list[LineProblem] = Field(default_factory=list)
    clients_needing_email: list[ClientNeedingEmail] = Field(default_factory=list)


class ImportSummary(BaseModel):
    import_id: int
    filename: str
    uploaded_at: datetime
    imported: int
    skipped: int


class ClientEmail(BaseModel):
    client_ref: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=320)
    name: str | None = Field(default=None, max_length=300)


class ClientEmailResult(BaseModel):
    client_ref: str
    published: int
