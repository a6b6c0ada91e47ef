"""Sealed email content: it opens only with the right key, for the right email, unchanged."""

from __future__ import annotations

import os

import pytest

from shared.email_content import open_content, pack, seal_content, unpack
from shared.sealing import SealBroken, seal, unseal

TOKEN = "a-long-internal-token-shared-by-the-services"
PDF = b"%PDF-1.7\n" + os.urandom(4000) + b"\n%%EOF\n"


def content() -> dict:
    return {
        "to": ["dana@example.test"],
        "cc": ["office@example.test"],
        "from_name": "Hartwell & Moreno LLP",
        "reply_to": "billing@hartwell.test",
        "subject": "Invoice 1042 — $1,250.00",
        "html": '<p>Pay at <a href="https://pay.test/pay/SECRET-TOKEN">this link</a></p>',
        "text": "Pay at https://pay.test/pay/SECRET-TOKEN",
        "attachments": [
            {"filename": "statement.pdf", "content_type": "application/pdf", "data": PDF[::-1]},
            {"filename": "invoice-1042.pdf", "content_type": "application/pdf", "data": PDF},
            {"filename": "empty.pdf", "content_type": "application/pdf", "data": b""},
        ],
    }


def test_content_round_trips_through_the_seal_byte_for_byte() -> None:
    sealed = seal_content(TOKEN, "email-1", content())
    assert open_content(TOKEN, "email-1", sealed) == content()


def test_the_sealed_text_shows_neither_the_link_token_nor_the_pdf() -> None:
    sealed = seal_content(TOKEN, "email-1", content())
    assert "SECRET-TOKEN" not in sealed and "Hartwell" not in sealed
    assert sealed.isascii() and sealed.startswith("s1.")
    # A fresh nonce each time: the same content never seals to the same text.
    assert sealed != seal_content(TOKEN, "email-1", content())


@pytest.mark.parametrize(
    "how",
    ["another key", "another email", "a flipped byte", "truncated", "not base64", "not sealed"],
)
def test_a_blob_that_is_not_ours_for_this_email_does_not_open(how: str) -> None:
    sealed = seal_content(TOKEN, "email-1", content())
    token, email_id = TOKEN, "email-1"
    if how == "another key":
        token = TOKEN + "-rotated"
    elif how == "another email":
        email_id = "email-2"
    elif how == "a flipped byte":
        i = len(sealed) // 2
        sealed = sealed[:i] + ("A" if sealed[i] != "A" else "B") + sealed[i + 1 :]
    elif how == "truncated":
        sealed = sealed[:10]
    elif how == "not base64":
        sealed = "s1.***"
    elif how == "not sealed":
        sealed = '{"html": "<p>hi</p>"}'
    with pytest.raises(SealBroken):
        open_content(token, email_id, sealed)


def test_a_purpose_keeps_its_own_key() -> None:
    sealed = seal(TOKEN, "email-content", b"x")
    assert unseal(TOKEN, "email-content", sealed) == b"x"
    with pytest.raises(SealBroken):
        unseal(TOKEN, "something-else", sealed)


def test_a_packed_blob_with_bytes_missing_or_added_is_refused() -> None:
    blob = pack(content())
    assert unpack(blob) == content()
    with pytest.raises(SealBroken):
        unpack(blob[:-1])
    with pytest.raises(SealBroken):
        unpack(blob + b"!")
    with pytest.raises(SealBroken):
        unpack(b"\x00\x00")
