"""Tracking tokens: the open pixel and the click redirect of each recipient's copy of an email.

The mailer writes them into each copy (`pixel_url`, `click_url`); the gateway, the only
service facing the internet, reads them back (`read_open`, `read_click`) and never
redirects anywhere but to one of this system's own pages: the target path is part of what
is signed, and is checked again by `own_page` before any redirect.

A token names an email and a recipient's place in it (`n`, 0-based over To then Cc), never
the address, and carries no link token of the client's: the pay link's own token travels in
the signed path, which only this system's pages accept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

DEV_TRACKING_SECRET = "dev-tracking-secret"  # noqa: S105 - refused outside development

# Email ids are ours (uuid hex, or "<send id>"): letters, digits, '-' and '_'.
_EMAIL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN = re.compile(r"(?P<email>[A-Za-z0-9_-]{1,64})\.(?P<n>\d{1,3})\.(?P<sig>[A-Za-z0-9_-]{22})")
MAX_PATH = 2000
# A control character (C0 or DEL): one C search instead of a Python step per character.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# `quote(path, safe="")` for a path of ASCII characters, which quotes each byte in a Python
# step: a C search for the characters to quote (all but letters, digits and "_.-~"), each
# written as its %XX.
_TO_QUOTE = re.compile(r"[^A-Za-z0-9_.~-]")
_QUOTED = {chr(c): f"%{c:02X}" for c in range(128)}


@dataclass(frozen=True)
class Recipient:
    """Whose copy a token came from."""

    email_id: str
    n: int


def _sig(secret: str, *parts: str) -> str:
    mac = hmac.new(secret.encode(), "\x1f".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).decode().rstrip("=")


def own_page(path: str) -> bool:
    """Whether `path` is one of this system's own pages: a path from the root, with no
    scheme, no host (`//host`, `/\\host`), no control character, in any encoding of them."""
    if not path or len(path) > MAX_PATH:
        return False
    decoded = path
    for _ in range(3):  # %252F and the like: decode until it no longer changes
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    for candidate in (path, decoded):
        # From the root, and not "//host": urlsplit would find no scheme (it needs a letter
        # first) and no host in what passes, so it is not asked (it cost as much as the rest).
        if not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
            return False
        if "\\" in candidate or _CONTROL.search(candidate):
            return False
    return True


def open_token(secret: str, email_id: str, n: int) -> str:
    return f"{email_id}.{n}.{_sig(secret, 'o', email_id, str(n))}"


def pixel_url(base_url: str, secret: str, email_id: str, n: int) -> str:
    return f"{base_url}/t/o/{open_token(secret, email_id, n)}.gif"


def click_url(base_url: str, secret: str, email_id: str, n: int, path: str) -> str:
    """The tracked form of a link to `path`, one of this system's pages."""
    if not _EMAIL_ID.fullmatch(email_id) or not own_page(path):
        raise ValueError(f"not a trackable link: {path!r}")
    token = f"{email_id}.{n}.{_sig(secret, 'c', email_id, str(n), path)}"
    if path.isascii():
        quoted = _TO_QUOTE.sub(lambda m: _QUOTED[m[0]], path)
    else:
        quoted = quote(path, safe="")
    return f"{base_url}/t/c/{token}?u={quoted}"


def _parsed(token: str) -> re.Match[str] | None:
    return _TOKEN.fullmatch(token)


def read_open(secret: str, token: str) -> Recipient | None:
    """The recipient of a pixel's token (with or without its `.gif`), or None if forged."""
    m = _parsed(token.removesuffix(".gif"))
    if m is None:
        return None
    expected = _sig(secret, "o", m["email"], m["n"])
    if not hmac.compare_digest(expected, m["sig"]):
        return None
    return Recipient(m["email"], int(m["n"]))


def read_click(secret: str, token: str, path: str) -> Recipient | None:
    """The recipient of a click's token, or None unless it was signed for exactly `path` and
    `path` is one of this system's pages."""
    m = _parsed(token)
    if m is None or not own_page(path):
        return None
    expected = _sig(secret, "c", m["email"], m["n"], path)
    if not hmac.compare_digest(expected, m["sig"]):
        return None
    return Recipient(m["email"], int(m["n"]))
