"""An email's content as one sealed blob, carried in `email.requested` from the envelope
service to the mailer.

The blob is a 4-byte big-endian length, a JSON header (recipients, sender name, subject, the
HTML and text parts, and each attachment's filename, type and size), then the attachments'
bytes one after another: PDFs travel once, raw inside the seal, not base64 inside JSON
inside base64. Sealed (`shared.sealing`) under the internal token, bound to the email's id.

The content is a dict, the shape the internal API `GET /internal/emails/{id}` answers with,
except that attachments carry `data` (bytes) rather than `content_b64`.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from shared.sealing import SealBroken, seal, unseal

PURPOSE = "email-content"
_FIELDS = ("to", "cc", "from_name", "reply_to", "subject", "html", "text")


def pack(content: dict[str, Any]) -> bytes:
    attachments = content.get("attachments") or []
    header = {k: content.get(k) for k in _FIELDS}
    header["attachments"] = [
        {
            "filename": att["filename"],
            "content_type": att.get("content_type") or "application/octet-stream",
            "size": len(att["data"]),
        }
        for att in attachments
    ]
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([struct.pack(">I", len(head)), head, *(att["data"] for att in attachments)])


def unpack(blob: bytes) -> dict[str, Any]:
    if len(blob) < 4:
        raise SealBroken("the email content is truncated")
    (head_len,) = struct.unpack(">I", blob[:4])
    try:
        header = json.loads(blob[4 : 4 + head_len])
    except ValueError as exc:
        raise SealBroken("the email content's header is not JSON") from exc
    offset = 4 + head_len
    attachments = []
    for att in header.pop("attachments", []):
        end = offset + int(att["size"])
        if end > len(blob):
            raise SealBroken("the email content is truncated")
        attachments.append(
            {
                "filename": att["filename"],
                "content_type": att["content_type"],
                "data": blob[offset:end],
            }
        )
        offset = end
    if offset != len(blob):
        raise SealBroken("the email content has trailing bytes")
    header["attachments"] = attachments
    return header


def seal_content(secret: str, email_id: str, content: dict[str, Any]) -> str:
    return seal(secret, PURPOSE, pack(content), aad=email_id.encode())


def open_content(secret: str, email_id: str, sealed: str) -> dict[str, Any]:
    """The content sealed for `email_id`; `SealBroken` when it does not open."""
    return unpack(unseal(secret, PURPOSE, sealed, aad=email_id.encode()))
