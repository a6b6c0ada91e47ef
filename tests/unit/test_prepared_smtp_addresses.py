"""PreparedSMTP checks plain addresses with a regex instead of aiosmtplib's parse_address:
only sound if parse_address takes every address that regex takes, unchanged."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.email import parse_address

from services.mailer.prepared_smtp import _PLAIN_ADDRESS, check_address

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
DOMAIN = "abcXYZ019-"


def plain_addresses() -> list[str]:
    rng = random.Random(15)

    def word(chars: str) -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(1, 6)))

    made = []
    for _ in range(20_000):
        local = ".".join(word(ATEXT) for _ in range(rng.randint(1, 3)))
        domain = ".".join(word(DOMAIN) for _ in range(rng.randint(1, 3)))
        made.append(f"{local}@{domain}")
    return made + ["bounces+e1.0@envelopepay.test", "client0@clients.example"]


def test_plain_addresses_are_ones_parse_address_takes_as_they_are() -> None:
    for address in plain_addresses():
        assert _PLAIN_ADDRESS.fullmatch(address), address
        assert parse_address(address) == address, address


@pytest.mark.parametrize(
    "address",
    ["a b@x.test", "a@x.test> SIZE=1", "<a@x.test>", '"a b"@x.test', "a@x.test\r\nRSET", "a@b@c"],
)
def test_other_addresses_are_left_to_parse_address(address: str) -> None:
    assert _PLAIN_ADDRESS.fullmatch(address) is None
    try:
        parse_address(address)
    except ValueError:
        with pytest.raises(ValueError):
            check_address(address)
    else:
        check_address(address)
