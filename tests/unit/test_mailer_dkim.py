"""DKIM: each copy signed with the configured key, and the signature verified by dkimpy
against a DNS answer the test gives (no network)."""

from __future__ import annotations

import base64
from functools import cache
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.mailer import dkim
from services.mailer.copies import Tracking, prepare_copies
from services.mailer.settings import MailerSettings


@cache
def key_pair() -> tuple[str, bytes]:
    """A fresh RSA key as PEM text, and the DNS TXT record that publishes its public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def dns(record: bytes, name: bytes = b"mail2026._domainkey.firm.example."):
    def txt(qname: bytes, timeout: int = 5) -> bytes | None:
        return record if qname == name else None

    return txt


def settings(**extra: object) -> MailerSettings:
    pem, _ = key_pair()
    given: dict[str, object] = {
        "dkim_private_key": pem,
        "dkim_selector": "mail2026",
        "dkim_domain": "firm.example",
    }
    given.update(extra)
    return MailerSettings(environment="test", **given)  # type: ignore[arg-type]


def signed_copy(sign, n: int = 1) -> bytes:  # type: ignore[no-untyped-def]
    copies = prepare_copies(
        {
            "from_name": "Hartwell & Moreno LLP",
            "to": ["ada@client.example", "bob@client.example"],
            "cc": ["audit@client.example"],
            "reply_to": "billing@hartwell.test",
            "subject": "Your invoice — März",
            "text": "Pay: https://pay.firm.example/pay/tok\n.\n",
            "html": "<html><body><a href='https://pay.firm.example/pay/tok'>Pay</a></body></html>",
            "attachments": [
                {"filename": "a.pdf", "content_type": "application/pdf", "data": b"%PDF" * 9000}
            ],
        },
        email_id="e1",
        mail_from="billing@firm.example",
        message_id="<e1@firm.example>",
        tracking=Tracking("https://pay.firm.example", "secret"),
        bounce_local="bounces",
        bounce_domain="firm.example",
        sign=sign,
    )
    return copies.copy(n).data


def test_each_copy_carries_a_signature_that_verifies() -> None:
    sign = dkim.from_settings(settings())
    assert sign is not None
    _, record = key_pair()
    for n in range(3):
        data = signed_copy(sign, n)
        assert data.startswith(b"DKIM-Signature: ")
        assert dkimpy.verify(data, dnsfunc=dns(record))
        # CRLF throughout still (the relay sends our messages as they are).
        assert data.count(b"\r\n") == data.count(b"\n") == data.count(b"\r")
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    signed = head.split("h=", 1)[1].split(";", 1)[0].replace("\r\n", "").replace(" ", "")
    assert signed.lower().split(":") == [h.lower() for h in dkim.SIGNED_HEADERS]
    assert "d=firm.example" in head and "s=mail2026" in head


def test_a_changed_header_or_body_no_longer_verifies() -> None:
    sign = dkim.from_settings(settings())
    _, record = key_pair()
    data = signed_copy(sign)
    assert not dkimpy.verify(data.replace(b"Subject: ", b"Subject: Re: ", 1), dnsfunc=dns(record))
    assert not dkimpy.verify(data.replace(b"Pay", b"Pya", 1), dnsfunc=dns(record))
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    wrong = b"v=DKIM1; k=rsa; p=" + base64.b64encode(
        other.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert not dkimpy.verify(data, dnsfunc=dns(wrong))


def test_the_key_may_be_a_file(tmp_path: Path) -> None:
    pem, record = key_pair()
    path = tmp_path / "dkim.pem"
    path.write_text(pem)
    sign = dkim.from_settings(settings(dkim_private_key=str(path)))
    assert sign is not None
    assert dkimpy.verify(signed_copy(sign), dnsfunc=dns(record))


def test_no_key_no_signature_and_half_a_configuration_is_refused() -> None:
    assert dkim.from_settings(MailerSettings(environment="test")) is None
    with pytest.raises(dkim.DkimNotConfigured, match="together"):
        dkim.from_settings(settings(dkim_selector=None))
    with pytest.raises(dkim.DkimNotConfigured, match="neither a PEM key nor a readable file"):
        dkim.from_settings(settings(dkim_private_key="/no/such/key.pem"))
    with pytest.raises(dkim.DkimNotConfigured, match="does not sign"):
        dkim.from_settings(
            settings(dkim_private_key="-----BEGIN PRIVATE KEY-----\nnot a key\n-----END")
        )
