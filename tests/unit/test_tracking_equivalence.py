"""shared.tracking's checks were made cheaper (issue 15, benchmark 2): they must answer
exactly as the straightforward versions they replaced, for every input, the hostile first."""

from __future__ import annotations

import random
from urllib.parse import quote, unquote, urlsplit

from shared import tracking


def own_page_as_written_first(path: str) -> bool:
    """`own_page` before it was made cheaper: a Python step per character, and urlsplit."""
    if not path or len(path) > tracking.MAX_PATH:
        return False
    decoded = path
    for _ in range(3):
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    for candidate in (path, decoded):
        if not candidate.startswith("/") or candidate.startswith(("//", "/\\")):
            return False
        if "\\" in candidate or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in candidate):
            return False
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            return False
    return True


HOSTILE = [
    "/pay/abc?invoice=clio:1",
    "//evil.example/x",
    "/\\evil.example",
    "/%2F%2Fevil.example",
    "/%252F%252Fevil.example",
    "%2F%2Fevil.example",
    "https://evil.example/",
    "/https://evil.example/",
    "javascript:alert(1)",
    "/x\r\nSet-Cookie: a=b",
    "/x%0d%0aSet-Cookie:%20a=b",
    "/x\x7f",
    "/x%7F",
    "/x\t/y",
    " /pay/abc",
    "/pay/ab c",
    "/pay/\u00e9t\u00e9",
    "/%5Cevil",
    "/%25%32%46",
    "",
    "/" + "a" * 2000,
    "/" + "a" * 1999,
]
ALPHABET = "/\\:%.?#@ aZ09-_~=&+\t\r\n\x00\x1f\x7f\u00e9\u2028" + "25FfCc"


def samples() -> list[str]:
    rng = random.Random(15)
    made = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))) for _ in range(20_000)]
    return HOSTILE + made + ["/" + s for s in made]


def test_own_page_answers_as_the_straightforward_check_for_every_input() -> None:
    for path in samples():
        assert tracking.own_page(path) == own_page_as_written_first(path), repr(path)


def test_click_urls_quote_the_path_as_urllib_does() -> None:
    for path in samples():
        if not tracking.own_page(path):
            continue
        url = tracking.click_url("https://pay.example", "s", "e1", 0, path)
        assert url.endswith("?u=" + quote(path, safe="")), repr(path)
        assert tracking.read_click("s", url.split("/t/c/")[1].split("?")[0], path) is not None
