"""The public tracking routes of the emails' pixels and links, and the "viewed" report of the
client pages reached through them.

- `GET /t/o/{token}.gif`: always the same 1x1 transparent GIF, never cached; the open is
  reported to the mailer after the image is sent (a forged token reports nothing).
- `GET /t/c/{token}?u=<path>`: a 302 to `path`, one of this system's own pages (a relative
  Location), when the token was signed for exactly that path; the click is reported. Anything
  else (a forged or missing token, an absolute URL, `//host`, backslashes, control
  characters, any encoding of those) is a 400 page, never a redirect.
- A followed link leaves a short-lived cookie naming the email and recipient, signed; when
  the pay page or a bill's view is then served, `report_view` reports it as viewed.

Reports go to the mailer's internal API (clients/mailer.py) in the response's background
task: the client's image, redirect or page never waits for the mailer or fails with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.background import BackgroundTask

from services.gateway.clients.mailer import MailerClient, mailer_client
from services.gateway.deps import SettingsDep
from services.gateway.pages import render
from services.gateway.settings import GatewaySettings
from shared.tracking import own_page, read_click, read_open

log = logging.getLogger(__name__)
router = APIRouter()

# The smallest transparent GIF: 1x1, one transparent colour.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {
    "Cache-Control": "no-store, private",
    "Pragma": "no-cache",
    "X-Robots-Tag": "noindex",
}
PRIVATE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"}
# Names the email and recipient a person came from, for "viewed"; it lives as long as one
# visit to the pay page might, and only on this site's own pages.
VIEW_COOKIE = "ep_from_email"
VIEW_COOKIE_SECONDS = 30 * 60

MailerDep = Annotated[MailerClient, Depends(mailer_client)]


def _view_sig(secret: str, email_id: str, n: int) -> str:
    msg = f"viewed|{email_id}|{n}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:32]


def view_cookie(secret: str, email_id: str, n: int) -> str:
    return f"{email_id}.{n}.{_view_sig(secret, email_id, n)}"


def read_view_cookie(secret: str, raw: str | None) -> tuple[str, int] | None:
    """(email id, recipient) of a cookie this gateway set, or None if absent or forged."""
    parts = (raw or "").split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 3 or not parts[0]:
        return None
    email_id, n = parts[0], int(parts[1])
    if not hmac.compare_digest(parts[2], _view_sig(secret, email_id, n)):
        return None
    return email_id, n


def _agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


def refused(request: Request, message: str) -> Response:
    resp = render(
        request,
        "error.html",
        status_code=400,
        title="This link cannot be followed",
        message=message,
    )
    resp.headers.update(PRIVATE)
    return resp


@router.get("/t/o/{token:path}", response_model=None)
async def pixel(token: str, request: Request, mailer: MailerDep, settings: SettingsDep) -> Response:
    """The open pixel: the image whatever the token, the report only for a genuine one."""
    resp = Response(PIXEL, media_type="image/gif", headers=PIXEL_HEADERS)
    who = read_open(settings.tracking_secret, token)
    if who is not None:
        at = datetime.now(UTC)
        resp.background = BackgroundTask(
            mailer.report, "open", who.email_id, who.n, at, _agent(request)
        )
    return resp


@router.get("/t/c", response_model=None)
@router.get("/t/c/", response_model=None)
async def click_without_token(request: Request) -> Response:
    return refused(request, "This link is incomplete, so it was not followed.")


@router.get("/t/c/{token}", response_model=None)
async def click(token: str, request: Request, mailer: MailerDep, settings: SettingsDep) -> Response:
    """A tracked link: to this system's own page it was signed for, or a 400 page."""
    targets = request.query_params.getlist("u")
    if len(targets) != 1 or not targets[0]:
        return refused(request, "This link has no page to go to. Open the link in the email again.")
    path = targets[0]
    if not own_page(path):
        return refused(
            request,
            "This link points outside this site, so it was not followed. "
            "Links in your billing emails only ever lead to this site's own pages.",
        )
    who = read_click(settings.tracking_secret, token, path)
    if who is None:
        return refused(
            request,
            "This link was changed or is not one we sent, so it was not followed. "
            "Open the link in the email again.",
        )
    resp = RedirectResponse(path, status_code=302)
    resp.headers.update(PRIVATE)
    resp.set_cookie(
        VIEW_COOKIE,
        view_cookie(settings.tracking_secret, who.email_id, who.n),
        max_age=VIEW_COOKIE_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.session_cookie_secure,
    )
    at = datetime.now(UTC)
    resp.background = BackgroundTask(
        mailer.report, "click", who.email_id, who.n, at, _agent(request), path
    )
    return resp


def report_view(request: Request, resp: Response) -> Response:
    """A client page was served (the pay page, a bill, the statement): when the person came
    from an email's tracked link (the cookie), tell the mailer, after the page is sent."""
    settings: GatewaySettings = request.app.state.service.settings
    who = read_view_cookie(settings.tracking_secret, request.cookies.get(VIEW_COOKIE))
    mailer: MailerClient | None = getattr(request.app.state, "mailer", None)
    if who is None or mailer is None or resp.background is not None:
        return resp
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not own_page(path):
        return resp
    at = datetime.now(UTC)
    resp.background = BackgroundTask(
        mailer.report, "view", who[0], who[1], at, _agent(request), path
    )
    return resp
