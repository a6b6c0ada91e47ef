"""DKIM signatures (RFC 6376, through dkimpy) for each recipient's copy, when a key, a
selector and a domain are configured.

Relaxed header canonicalization (relays refold headers), simple body canonicalization (our
bodies are quoted-printable and base64 with CRLF throughout: nothing to relax, and the
simple form costs no pass of Python over a message with attachments).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dkim

from services.mailer.settings import MailerSettings

SIGNED_HEADERS = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
)


class DkimNotConfigured(ValueError):
    """Part of the DKIM settings is given, not all of it, or the key does not load."""


def load_key(setting: str) -> bytes:
    """The private key from its setting: PEM text itself, or the path of a PEM file."""
    text = setting.strip()
    if text.startswith("-----BEGIN"):
        return text.encode("ascii")
    path = Path(text)
    if not path.is_file():
        raise DkimNotConfigured("DKIM_PRIVATE_KEY is neither a PEM key nor a readable file")
    return path.read_bytes()


def signer(selector: str, domain: str, key: bytes) -> Callable[[bytes], bytes]:
    """A function that returns the DKIM-Signature header (CRLF-ended, folded) for a message."""
    sel, dom = selector.encode("ascii"), domain.encode("ascii")
    headers = [h.encode("ascii") for h in SIGNED_HEADERS]

    def sign(message: bytes) -> bytes:
        return dkim.sign(
            message,
            sel,
            dom,
            key,
            canonicalize=(b"relaxed", b"simple"),
            include_headers=headers,
            linesep=b"\r\n",
        )

    # A key that does not sign fails at start, not with the first email.
    try:
        sign(b"From: a@b.test\r\nSubject: check\r\n\r\nbody\r\n")
    except (dkim.DKIMException, ValueError) as exc:  # binascii.Error for a broken PEM
        raise DkimNotConfigured(f"the DKIM key does not sign: {exc}") from exc
    return sign


def from_settings(settings: MailerSettings) -> Callable[[bytes], bytes] | None:
    """The signer the settings configure, None when DKIM is off (no key given)."""
    given = [settings.dkim_private_key, settings.dkim_selector, settings.dkim_domain]
    if not any(given):
        return None
    if not all(given):
        raise DkimNotConfigured(
            "DKIM needs DKIM_PRIVATE_KEY, DKIM_SELECTOR and DKIM_DOMAIN together"
        )
    assert settings.dkim_private_key and settings.dkim_selector and settings.dkim_domain
    key = load_key(settings.dkim_private_key)
    return signer(settings.dkim_selector, settings.dkim_domain, key)
