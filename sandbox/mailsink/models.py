"""JSON shapes of the mail sink API; the same models are persisted in the index."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class AttachmentInfo(BaseModel):
    index: int
    filename: str | None
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = Field(
        default=False, description="Embedded in the HTML body via cid:, e.g. a logo"
    )


class Envelope(BaseModel):
    """What the SMTP client said, which can differ from the headers (Bcc, bounces)."""

    mail_from: str
    rcpt_tos: list[str]


class MessageSummary(BaseModel):
    # "from" is a keyword in Python, so the field needs an alias; serialize_by_alias keeps
    # the index file and the API identical without callers remembering by_alias=True.
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: str
    from_: str = Field(alias="from", description="Bare address from the From header")
    from_name: str = Field(description="Display name from the From header, may be empty")
    to: list[str] = Field(description="Bare addresses from the To header")
    cc: list[str] = Field(default_factory=list)
    subject: str
    received_at: datetime
    message_id: str | None
    size: int
    attachments: list[AttachmentInfo]
    envelope: Envelope

    def matches_recipient(self, needle: str) -> bool:
        # What a mailbox receives is what the SMTP envelope names (RCPT TO): a Bcc'd address
        # finds its message, and a recipient named in To or Cc of a copy sent to someone else
        # (each recipient gets a copy of their own) does not. The headers only when the
        # envelope names no one.
        needle = needle.casefold()
        named = self.envelope.rcpt_tos or [*self.to, *self.cc]
        return any(needle in addr.casefold() for addr in named)


class MessageDetail(MessageSummary):
    headers: dict[str, str] = Field(
        description="Decoded headers; repeated headers (Received) are joined with newlines"
    )
    html: str | None
    text: str | None
    links: list[str]
