"""The public tracking routes: the open pixel is always an image and reports only genuine
opens; a tracked link redirects only to this system's own page it was signed for, every
other target is a 400 page; a followed link makes the pay page and a bill's view report
"viewed". Reports go to the mailer's intake (recorded here) and never hold up the client."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest

from services.gateway.clients.mailer import MailerClient
from services.gateway.settings import GatewaySettings
from services.gateway.tracking import PIXEL, VIEW_COOKIE, view_cookie
from shared.tracking import _sig, click_url, open_token, pixel_url
from tests.gateway.conftest import Gateway, item, paylink, unknown_link

SECRET = GatewaySettings(environment="test").tracking_secret
EMAIL_ID = "3f0c9a2b7d6e4f1a8b5c2d9e0f1a2b3c"
TOKEN = "tok_" + "a" * 40


class Mailer:
    """The mailer's tracking intake: records each report; `fail` makes it unreachable."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, dict]] = []
        self.fail: Exception | None = None
        self.status = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail is not None:
            raise self.fail
        kind = request.url.path.rsplit("/", 1)[1]
        self.reports.append((kind, json.loads(request.content)))
        return httpx.Response(self.status, json={"machine": False, "published": True})


@pytest.fixture
def mailer(gateway: Gateway) -> Mailer:
    fake = Mailer()
    assert gateway.app is not None
    gateway.app.state.mailer = MailerClient(
        httpx.AsyncClient(transport=httpx.MockTransport(fake), base_url="http://mailer")
    )
    return fake


def path_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1].join(["/", ""])


# --- the pixel ----------------------------------------------------------------------------


async def test_the_pixel_is_an_uncached_gif_and_reports_the_open(
    gateway: Gateway, mailer: Mailer
) -> None:
    url = pixel_url("https://pay.example", SECRET, EMAIL_ID, 1)
    resp = await gateway.client.http.get(
        path_of(url), headers={"User-Agent": "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15"}
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/gif"
    assert resp.content == PIXEL and resp.content.startswith(b"GIF89a")
    assert resp.headers["cache-control"] == "no-store, private"
    assert [k for k, _ in mailer.reports] == ["open"]
    report = mailer.reports[0][1]
    assert (report["email_id"], report["n"]) == (EMAIL_ID, 1)
    assert report["user_agent"].startswith("Mozilla/5.0 (Macintosh)")
    assert report["at"] is not None


@pytest.mark.parametrize(
    "token",
    [
        f"{EMAIL_ID}.1.{'A' * 22}.gif",  # a signature nobody made
        f"{EMAIL_ID}.2.{open_token(SECRET, EMAIL_ID, 1).rsplit('.', 1)[1]}.gif",  # another n
        open_token("another-secret", EMAIL_ID, 1) + ".gif",
        "nothing.gif",
        "x" * 500,
        "%00.gif",
        "a/b/c.gif",
        "",
    ],
)
async def test_a_forged_pixel_is_still_an_image_and_reports_nothing(
    gateway: Gateway, mailer: Mailer, token: str
) -> None:
    resp = await gateway.client.http.get(f"/t/o/{token}")
    assert resp.status_code == 200
    assert resp.content == PIXEL and resp.headers["cache-control"] == "no-store, private"
    assert mailer.reports == []


async def test_the_pixel_never_fails_with_the_mailer(gateway: Gateway, mailer: Mailer) -> None:
    url = path_of(pixel_url("https://pay.example", SECRET, EMAIL_ID, 0))
    mailer.fail = httpx.ConnectError("mailer down")
    resp = await gateway.client.http.get(url)
    assert resp.status_code == 200 and resp.content == PIXEL
    mailer.fail = None
    mailer.status = 500
    resp = await gateway.client.http.get(url)
    assert resp.status_code == 200 and resp.content == PIXEL
    mailer.status = 404  # an email the mailer does not know
    resp = await gateway.client.http.get(url)
    assert resp.status_code == 200 and resp.content == PIXEL


# --- the tracked link ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [f"/pay/{TOKEN}?invoice=clio:1001", f"/pay/{TOKEN}", f"/v/{TOKEN}/clio:1001"],
)
async def test_a_tracked_link_redirects_to_its_own_page_and_reports_the_click(
    gateway: Gateway, mailer: Mailer, target: str
) -> None:
    url = click_url("https://pay.example", SECRET, EMAIL_ID, 0, target)
    resp = await gateway.client.http.get(path_of(url), headers={"User-Agent": "Firefox/1"})
    assert resp.status_code == 302
    assert resp.headers["location"] == target  # relative: this system's own page
    assert resp.headers["cache-control"] == "no-store"
    cookie = resp.cookies.get(VIEW_COOKIE)
    assert cookie == view_cookie(SECRET, EMAIL_ID, 0)
    assert "httponly" in resp.headers["set-cookie"].lower()
    assert [k for k, _ in mailer.reports] == ["click"]
    assert mailer.reports[0][1]["path"] == target


def signed(path: str, n: int = 0) -> str:
    """A token as if the signer had signed `path` (whatever it is): the gateway must refuse
    a target that is not its own page even with a good signature."""
    return f"{EMAIL_ID}.{n}.{_sig(SECRET, 'c', EMAIL_ID, str(n), path)}"


NOT_OURS = [
    "https://evil.example/pay",
    "http://evil.example",
    "HTTPS://evil.example/",
    "hTtPs://evil.example/",
    "//evil.example/pay",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/pay\\..\\..\\evil",
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/%2f%2fevil.example",
    "%2f%2Fevil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "/%255Cevil.example",
    "/%252F%252Fevil.example",
    "https:%2F%2Fevil.example",
    "https%3A%2F%2Fevil.example",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example/pay",
    " /pay/x",
    "/pay/x\r\nSet-Cookie: a=b",
    "/pay/x%0d%0aLocation:%20https://evil.example",
    "/pay/x%0D%0ALocation: https://evil.example",
    "/pay/\x00x",
    "/pay/%00x",
    "/pay/\tx",
    "/pay/%7Fx",
    "/" + "a" * 2100,
]


@pytest.mark.parametrize("target", NOT_OURS)
async def test_every_target_not_our_own_is_refused_even_when_signed(
    gateway: Gateway, mailer: Mailer, target: str
) -> None:
    resp = await gateway.client.http.get(
        f"/t/c/{signed(target)}", params={"u": target}, follow_redirects=False
    )
    assert resp.status_code == 400, target
    assert "location" not in resp.headers
    assert VIEW_COOKIE not in resp.cookies
    assert "This link cannot be followed" in resp.text
    assert "outside this site" in resp.text
    assert mailer.reports == []


@pytest.mark.parametrize(
    "target",
    ["https://evil.example", "//evil.example", "/\\evil.example", "/%5Cevil"],
)
async def test_a_raw_query_is_refused_too(gateway: Gateway, mailer: Mailer, target: str) -> None:
    # As a browser would send it, without httpx's own encoding of the query.
    kept = ":/\\%"
    raw = f"/t/c/{signed(target)}?u={quote(target, safe=kept)}"
    resp = await gateway.client.http.get(raw)
    assert resp.status_code == 400 and "location" not in resp.headers
    assert mailer.reports == []


@pytest.mark.parametrize(
    ("token", "query"),
    [
        (f"{EMAIL_ID}.0.{'A' * 22}", {"u": f"/pay/{TOKEN}"}),  # forged
        (signed(f"/pay/{TOKEN}?invoice=clio:1"), {"u": f"/pay/{TOKEN}"}),  # another path
        (signed(f"/pay/{TOKEN}", n=1).replace(".1.", ".0."), {"u": f"/pay/{TOKEN}"}),
        (signed(f"/pay/{TOKEN}").replace(EMAIL_ID, "f" * 32), {"u": f"/pay/{TOKEN}"}),
        ("garbage", {"u": f"/pay/{TOKEN}"}),
        (signed(f"/pay/{TOKEN}"), {}),  # no target
        (signed(f"/pay/{TOKEN}"), {"u": ""}),
        (signed(f"/pay/{TOKEN}"), {"u": [f"/pay/{TOKEN}", "https://evil.example"]}),
    ],
)
async def test_a_forged_or_incomplete_link_is_refused(
    gateway: Gateway, mailer: Mailer, token: str, query: dict
) -> None:
    resp = await gateway.client.http.get(f"/t/c/{token}", params=query)
    assert resp.status_code == 400
    assert "location" not in resp.headers and VIEW_COOKIE not in resp.cookies
    assert "This link cannot be followed" in resp.text
    assert mailer.reports == []


@pytest.mark.parametrize("url", ["/t/c", "/t/c/", f"/t/c/?u=/pay/{TOKEN}"])
async def test_a_link_without_a_token_is_refused(
    gateway: Gateway, mailer: Mailer, url: str
) -> None:
    resp = await gateway.client.http.get(url)
    assert resp.status_code == 400 and "location" not in resp.headers
    assert mailer.reports == []


async def test_the_redirect_never_waits_for_the_mailer(gateway: Gateway, mailer: Mailer) -> None:
    mailer.fail = httpx.ReadTimeout("slow")
    url = click_url("https://pay.example", SECRET, EMAIL_ID, 0, f"/pay/{TOKEN}")
    resp = await gateway.client.http.get(path_of(url))
    assert resp.status_code == 302 and resp.headers["location"] == f"/pay/{TOKEN}"


# --- viewed -------------------------------------------------------------------------------


async def test_the_pay_page_reached_from_a_tracked_link_reports_viewed(
    gateway: Gateway, mailer: Mailer
) -> None:
    gateway.payments.on(
        "GET", f"/internal/paylinks/{TOKEN}", body=paylink([item("clio:1", "INV-1", 5000)])
    )
    target = f"/pay/{TOKEN}?invoice=clio:1"
    url = click_url("https://pay.example", SECRET, EMAIL_ID, 2, target)
    resp = await gateway.client.http.get(path_of(url), follow_redirects=True)
    assert resp.status_code == 200, resp.text
    assert [k for k, _ in mailer.reports] == ["click", "view"]
    view = mailer.reports[1][1]
    assert (view["email_id"], view["n"], view["path"]) == (EMAIL_ID, 2, target)


async def test_pages_without_the_cookie_or_with_a_forged_one_report_nothing(
    gateway: Gateway, mailer: Mailer
) -> None:
    gateway.payments.on(
        "GET", f"/internal/paylinks/{TOKEN}", body=paylink([item("clio:1", "INV-1", 5000)])
    )
    resp = await gateway.client.http.get(f"/pay/{TOKEN}")
    assert resp.status_code == 200
    forged = f"{EMAIL_ID}.0.{'0' * 32}"
    gateway.client.http.cookies.set(VIEW_COOKIE, forged)
    resp = await gateway.client.http.get(f"/pay/{TOKEN}")
    assert resp.status_code == 200
    assert mailer.reports == []


async def test_an_expired_link_is_not_a_view(gateway: Gateway, mailer: Mailer) -> None:
    gateway.payments.on("GET", f"/internal/paylinks/{TOKEN}", body=unknown_link())
    gateway.envelope.on("GET", f"/internal/links/{TOKEN}", status=404, body={"detail": "gone"})
    gateway.client.http.cookies.set(VIEW_COOKIE, view_cookie(SECRET, EMAIL_ID, 0))
    resp = await gateway.client.http.get(f"/pay/{TOKEN}")
    assert resp.status_code == 404
    assert mailer.reports == []


async def test_a_bill_viewed_from_a_tracked_link_reports_viewed(
    gateway: Gateway, mailer: Mailer
) -> None:
    gateway.envelope.handle(
        "GET",
        f"/internal/links/{TOKEN}/invoices/clio:1/pdf",
        lambda r: httpx.Response(
            200, content=b"%PDF-1.7", headers={"Content-Type": "application/pdf"}
        ),
    )
    gateway.client.http.cookies.set(VIEW_COOKIE, view_cookie(SECRET, EMAIL_ID, 0))
    resp = await gateway.client.http.get(f"/v/{TOKEN}/clio:1")
    assert resp.status_code == 200 and resp.content == b"%PDF-1.7"
    assert [(k, r["path"]) for k, r in mailer.reports] == [("view", f"/v/{TOKEN}/clio:1")]
