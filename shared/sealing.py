"""Sealed blobs: content that may travel on the bus only when nobody but its services can
read it or change it.

An email's content holds the client's link token, and no secret may be readable on the
bus. Sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the internal token and
a purpose, it travels as opaque text: whoever holds the internal token can already fetch
the same content from the internal API, so sealing grants nobody anything new. The
associated data (the email's id, say) binds a blob to its one use: a blob moved into
another event does not open.

    sealed = seal(token, "email-content", blob, aad=email_id.encode())
    blob = unseal(token, "email-content", sealed, aad=email_id.encode())  # or SealBroken
"""

from __future__ import annotations

import binascii
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "s1"
NONCE_BYTES = 12


class SealBroken(ValueError):
    """The blob is not one we sealed for this purpose and use: wrong key, changed bytes,
    another use's associated data, or not a sealed blob at all."""


@lru_cache(maxsize=16)
def _aead(secret: str, purpose: str) -> AESGCM:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"envelopepay sealing v1",
        info=purpose.encode(),
    ).derive(secret.encode())
    return AESGCM(key)


def seal(secret: str, purpose: str, data: bytes, *, aad: bytes = b"") -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = _aead(secret, purpose).encrypt(nonce, data, aad)
    return f"{VERSION}.{binascii.b2a_base64(nonce + sealed, newline=False).decode('ascii')}"


def unseal(secret: str, purpose: str, text: str, *, aad: bytes = b"") -> bytes:
    version, _, body = text.partition(".")
    if version != VERSION or not body:
        raise SealBroken(f"not a sealed blob of version {VERSION}")
    try:
        raw = binascii.a2b_base64(body, strict_mode=True)
    except binascii.Error as exc:
        raise SealBroken("the sealed blob is not valid base64") from exc
    if len(raw) <= NONCE_BYTES:
        raise SealBroken("the sealed blob is too short")
    try:
        return _aead(secret, purpose).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise SealBroken("the sealed blob does not open with this key and use") from exc
