"""VERP: each recipient's copy of an email goes out with its own return path,
`<local>+<email id>.<n>@<bounce domain>`, so that a bounce names the email and the recipient
it is about even when its text does not (a DSN without Final-Recipient, an autoreply)."""

from __future__ import annotations

import re

from shared.tracking import Recipient

_VERP = re.compile(r"(?P<local>[A-Za-z0-9._-]+)\+(?P<email>[A-Za-z0-9_-]{1,64})\.(?P<n>\d{1,3})")


def return_path(local: str, domain: str, email_id: str, n: int) -> str:
    return f"{local}+{email_id}.{n}@{domain}"


def read_return_path(address: str, local: str, domain: str) -> Recipient | None:
    """The email and recipient a bounce address names, or None when it is not one of ours."""
    addr = address.strip().strip("<>")
    at_local, at, at_domain = addr.rpartition("@")
    if not at or at_domain.lower() != domain.lower():
        return None
    m = _VERP.fullmatch(at_local)
    if m is None or m["local"].lower() != local.lower():
        return None
    return Recipient(m["email"], int(m["n"]))
