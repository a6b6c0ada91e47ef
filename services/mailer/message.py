"""Building the MIME message. Plain functions."""

from __future__ import annotations

import base64
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any


def message_id_for(email_id: str, domain: str) -> str:
    # Deterministic: should a message ever go out twice, mail clients that thread or
    # deduplicate by Message-ID still show it once.
    return f"<{email_id}@{domain}>"


def build_message(content: dict[str, Any], *, mail_from: str, message_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = formataddr((content["from_name"], mail_from))
    msg["To"] = ", ".join(content["to"])
    if content.get("cc"):
        msg["Cc"] = ", ".join(content["cc"])
    if content.get("reply_to"):
        msg["Reply-To"] = content["reply_to"]
    msg["Subject"] = content["subject"]
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id
    msg.set_content(content["text"])
    msg.add_alternative(content["html"], subtype="html")
    for att in content.get("attachments") or []:
        maintype, _, subtype = att["content_type"].partition("/")
        msg.add_attachment(
            base64.b64decode(att["content_b64"]),
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=att["filename"],
        )
    return msg
