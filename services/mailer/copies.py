"""Each recipient's copy of an email: the same headers (To and Cc show everyone), bodies that
differ only by their tracking links, its own return path (VERP) and DSN envelope id, and its
DKIM signature. Plain functions and data: the postman sends the copies.

Built in two steps, for speed (a Send All builds hundreds): `prepare_copies` once per email
(the headers and attachments written once, by `services.mailer.message`, and each body cut
where its links to this system's pages are), then `EmailCopies.copy(n)` per recipient, which
only joins the pieces with that recipient's tracked links, quoted-printable encodes the two
bodies and signs the result.

Only links to this system's own client pages are tracked: an href (in the HTML part) or a URL
(in the text part) that starts with `public_base_url` followed by `/pay/` or `/v/`. Every
other URL is left exactly as it is.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from services.mailer.message import MessageParts, OutgoingMessage, prepare_message
from services.mailer.verp import return_path
from shared import tracking

# Pages of ours that a client reaches from an email, and whose clicks are tracked.
TRACKED_PREFIXES = ("/pay/", "/v/")

# A start tag: its name, then its attributes up to the next '>', never across a '<': so that
# finding every tag takes one pass, whatever the body (a quoted '>' or '<' in an attribute
# makes that tag unread, and its links are left as they are).
_TAG = re.compile(r"<([A-Za-z][A-Za-z0-9]*)([^<>]*)>")
# One attribute of a start tag, with its value (quoted or not) where it has one. A match
# starts only where a run of spaces starts, and never gives back what it took: one pass.
_ATTR = re.compile(
    r"""(?<!\s)(\s++)([^\s"'>/=]+)(?:(\s*+=\s*+)("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""",
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
# Characters a URL in plain text may hold; punctuation that ends a sentence is left out
# after the match (`_TRAILING`).
_TEXT_URL_CHARS = r"""[^\s<>"'`]"""
_TRAILING = ".,;:!?)]}"


@dataclass(frozen=True)
class Link:
    """A place in a body where a tracked link goes: the path (and query) of our page, and
    what stood there (written back should the path not be trackable after all)."""

    path: str
    original: str = ""


# A body cut at its links: text as it is, and `Link`s; `PIXEL` where the open pixel goes.
Piece = str | Link
PIXEL = Link("")


# A path of one of our client pages as our links are written (`shared.tracking.click_url`
# checks each again with `own_page`, which costs a Python step per character: it runs once
# per link and copy, not also here).
_CLIENT_PAGE = re.compile(r"/(?:pay|v)/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")


def _own_path(url: str, base_url: str) -> str | None:
    """The path of `url` when it is one of our tracked client pages, else None."""
    if not url.startswith(base_url):
        return None
    path = url[len(base_url) :]
    if not _CLIENT_PAGE.fullmatch(path) or "//" in path:
        return None
    return path


def _tags_with_href(body: str) -> Iterator[re.Match[str]]:
    """The start tags (`_TAG`) whose attributes hold "href", in any case: those of
    `_TAG.finditer(body)`, without a Python step for each of the others (a body has ten
    times more tags than links). Found from each "href" of the lowercased body (C searches)
    back to the '<' before it: a tag holds no '<' but its first character, so that '<'
    starts the tag around the "href" if there is one, and every '<' where `_TAG` matches is
    a match of `finditer`. Each stretch of the body is searched for '<' once, and each '<'
    found matched once: one pass."""
    lowered = body.lower()
    if len(lowered) != len(body):  # a letter lowercased to two ("İ"): no longer aligned
        yield from (t for t in _TAG.finditer(body) if "href" in t.group(2).lower())
        return
    after = 0  # the end of the last tag given: the next one starts there or later
    scanned = 0  # searched for '<' up to here
    lt, tag = -1, None  # the last '<' before the "href" at hand, and the tag it starts
    i = lowered.find("href")
    while i >= 0:
        if i >= after:  # else in the tag just given
            found = body.rfind("<", max(scanned, after), i)
            scanned = i
            if found >= 0:
                lt, tag = found, _TAG.match(body, found)
            if tag is not None and lt >= after and tag.start(2) <= i and i + 4 <= tag.end(2):
                after = tag.end()
                yield tag
        i = lowered.find("href", i + 4)


def cut_html(body: str, base_url: str) -> list[Piece]:
    """The HTML body cut at each href value (quotes included: the tracked link is written
    double-quoted) that leads to one of our client pages, with the place of the open pixel
    (before the last `</body>`, else at the end)."""
    pieces: list[Piece] = []
    done = 0
    for tag in _tags_with_href(body):
        attrs = tag.group(2)
        attrs_start = tag.start(2)
        for attr in _ATTR.finditer(attrs):
            if attr.group(2).lower() != "href" or attr.group(4) is None:
                continue
            raw = attr.group(4)
            value = raw[1:-1] if raw[0] in "\"'" else raw
            path = _own_path(html.unescape(value).strip(), base_url)
            if path is None:
                continue
            start, end = attrs_start + attr.start(4), attrs_start + attr.end(4)
            pieces += [body[done:start], Link(path, raw)]
            done = end
    ends = list(_BODY_END.finditer(body, done))
    at = ends[-1].start() if ends else len(body)
    pieces += [body[done:at], PIXEL, body[at:]]
    return pieces


def cut_text(body: str, base_url: str) -> list[Piece]:
    """The text body cut at each URL of one of our client pages."""
    pieces: list[Piece] = []
    done = 0
    url = re.compile(re.escape(base_url) + _TEXT_URL_CHARS + "+")
    for m in url.finditer(body):
        found = m.group(0).rstrip(_TRAILING)
        path = _own_path(found, base_url)
        if path is None:
            continue
        pieces += [body[done : m.start()], Link(path, found)]
        done = m.start() + len(found)
    pieces.append(body[done:])
    return pieces


def pixel_tag(url: str) -> str:
    return (
        f'<img src="{html.escape(url)}" alt="" width="1" height="1" border="0" '
        'style="display:block;width:1px;height:1px;border:0">'
    )


@dataclass(frozen=True)
class Tracking:
    base_url: str
    secret: str


@dataclass(frozen=True)
class EmailCopies:
    """An email ready to go out as one copy per recipient."""

    email_id: str
    message_id: str
    parts: MessageParts
    text: list[Piece]
    html: list[Piece]
    tracking: Tracking
    bounce_local: str
    bounce_domain: str
    sign: Callable[[bytes], bytes] | None = None  # DKIM: the signature header to prepend

    @property
    def recipients(self) -> list[str]:
        return self.parts.recipients

    def bodies(self, n: int) -> tuple[str, str]:
        """Recipient `n`'s text and HTML bodies, with its tracked links and pixel."""
        t = self.tracking
        clicks: dict[str, str | None] = {}

        def click(path: str) -> str | None:
            if path not in clicks:
                try:
                    url = tracking.click_url(t.base_url, t.secret, self.email_id, n, path)
                except ValueError:  # not one of our pages after all: left as it was
                    url = None
                clicks[path] = url
            return clicks[path]

        def text_link(link: Link) -> str:
            url = click(link.path)
            return link.original if url is None else url

        def html_link(link: Link) -> str:
            if link is PIXEL:
                return pixel
            url = click(link.path)
            return link.original if url is None else f'"{html.escape(url)}"'

        text = "".join(p if isinstance(p, str) else text_link(p) for p in self.text)
        pixel = pixel_tag(tracking.pixel_url(t.base_url, t.secret, self.email_id, n))
        body = "".join(p if isinstance(p, str) else html_link(p) for p in self.html)
        return text, body

    def copy(self, n: int) -> OutgoingMessage:
        text, body = self.bodies(n)
        data = self.parts.assemble(text, body)
        if self.sign is not None:
            data = self.sign(data) + data
        return OutgoingMessage(
            mail_from=return_path(
                self.bounce_local, self.bounce_domain, self.email_id, n, self.tracking.secret
            ),
            recipients=[self.parts.recipients[n]],
            data=data,
            message_id=self.message_id,
            envid=f"{self.email_id}.{n}",
        )


def prepare_copies(
    content: dict[str, Any],
    *,
    email_id: str,
    mail_from: str,
    message_id: str,
    tracking: Tracking,
    bounce_local: str,
    bounce_domain: str,
    sign: Callable[[bytes], bytes] | None = None,
) -> EmailCopies:
    parts = prepare_message(content, mail_from=mail_from, message_id=message_id)
    return EmailCopies(
        email_id=email_id,
        message_id=message_id,
        parts=parts,
        text=cut_text(content["text"], tracking.base_url),
        html=cut_html(content["html"], tracking.base_url),
        tracking=tracking,
        bounce_local=bounce_local,
        bounce_domain=bounce_domain,
        sign=sign,
    )
