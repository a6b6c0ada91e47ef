"""VERP: each recipient's copy of an email goes out with its own return path,
`<local>+<email id>.<n>.<sig>@<bounce domain>`, so that a bounce names the email and the
recipient it is about even when its text does not (a DSN without Final-Recipient, an
autoreply).

`sig` proves the address is one this mailer wrote, so that whoever can send mail to the
bounce intake cannot bounce (and so suppress) a copy by its email id alone: the first 10
characters of the lower-cased base32 of HMAC-SHA256(key, "verp|<email id>|<n>"), where
`key` = HMAC-SHA256(tracking_secret, "envelopepay verp key v1"): a key derived from the
mailer's `TRACKING_SECRET`, so that a VERP signature is never a valid tracking token (or the
reverse). 10 base32 characters are 50 bits. The alphabet is lower case and the signature is
compared case-insensitively: some MTAs lower-case the local part of the address they return
a report to. Changing `TRACKING_SECRET` makes the return paths of copies already sent
unreadable (their bounces are then placed, if at all, by ENVID or Message-ID: see
`services.mailer.dsn`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from shared.tracking import Recipient

SIG_LENGTH = 10
_KEY_LABEL = b"envelopepay verp key v1"
_VERP = re.compile(
    r"(?P<local>[A-Za-z0-9._-]+)\+(?P<email>[A-Za-z0-9_-]{1,64})\.(?P<n>\d{1,3})"
    rf"\.(?P<sig>[A-Za-z2-7]{{{SIG_LENGTH}}})"
)


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def signature(secret: str, email_id: str, n: int) -> str:
    """The signature of copy `n` of `email_id` (lower-case base32, `SIG_LENGTH` characters)."""
    mac = hmac.new(_key(secret), f"verp|{email_id}|{n}".encode(), hashlib.sha256).digest()
    return base64.b32encode(mac).decode("ascii")[:SIG_LENGTH].lower()


def return_path(local: str, domain: str, email_id: str, n: int, secret: str) -> str:
    return f"{local}+{email_id}.{n}.{signature(secret, email_id, n)}@{domain}"


def read_return_path(address: str, local: str, domain: str, secret: str) -> Recipient | None:
    """The email and recipient a bounce address names, or None when it is not one of ours:
    another domain or local part, no signature, or a signature this mailer did not write."""
    addr = address.strip().strip("<>")
    at_local, at, at_domain = addr.rpartition("@")
    if not at or at_domain.lower() != domain.lower():
        return None
    m = _VERP.fullmatch(at_local)
    if m is None or m["local"].lower() != local.lower():
        return None
    expected = signature(secret, m["email"], int(m["n"]))
    if not hmac.compare_digest(expected, m["sig"].lower()):
        return None
    return Recipient(m["email"], int(m["n"]))
