"""Clio's OAuth 2.0 authorization-code flow: consent page, token endpoint, deauthorize."""

from __future__ import annotations

import base64
import binascii
import secrets
from html import escape
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sandbox.clio.errors import ClioError, error_response
from sandbox.clio.jsonenc import ClioJSONResponse
from sandbox.clio.regions import prefix_of, region_of
from sandbox.clio.state import OAuthError, SandboxState

router = APIRouter(prefix="/oauth")


def get_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


StateDep = Annotated[SandboxState, Depends(get_state)]

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title} - Clio (sandbox)</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f6f8; margin: 0; }}
main {{ max-width: 28rem; margin: 4rem auto; background: #fff; padding: 2rem;
        border-radius: 8px; box-shadow: 0 1px 4px rgba(0, 0, 0, .15); }}
button {{ font-size: 1rem; padding: .6rem 1.2rem; margin-right: .5rem; cursor: pointer; }}
.allow {{ background: #0070e0; color: #fff; border: 0; border-radius: 4px; }}
</style></head>
<body><main>{body}</main></body>
</html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status)


def _error_page(message: str) -> HTMLResponse:
    body = f"<h1>Authorization failed</h1><p>{escape(message)}</p>"
    return _page("Authorization failed", body, status=400)


def _authorize_problem(
    state: SandboxState, response_type: str | None, client_id: str | None, redirect_uri: str | None
) -> str | None:
    settings = state.settings
    if client_id != settings.client_id:
        return "Client authentication failed: unknown client_id."
    if response_type != "code":
        return "response_type must be 'code'."
    if not redirect_uri:
        return "redirect_uri is required."
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "redirect_uri must be an absolute http(s) URL."
    if settings.redirect_uris and redirect_uri not in settings.redirect_uris:
        return "redirect_uri is not registered for this application."
    return None


def _with_params(uri: str, params: dict[str, str | None]) -> str:
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend((key, value) for key, value in params.items() if value is not None)
    return urlunsplit(parts._replace(query=urlencode(query)))


@router.get("/authorize")
async def authorize_page(request: Request, state: StateDep) -> Response:
    params = request.query_params
    problem = _authorize_problem(
        state, params.get("response_type"), params.get("client_id"), params.get("redirect_uri")
    )
    if problem is not None:
        return _error_page(problem)
    world = state.world_of(request)
    user = world.user
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{escape(params[name])}">'
        for name in ("response_type", "client_id", "redirect_uri", "state")
        if name in params
    )
    body = (
        f"<h1>Authorize {escape(state.settings.client_id)}</h1>"
        f"<p>The application <strong>{escape(state.settings.client_id)}</strong> is asking "
        f"to access the Clio account of <strong>{escape(world.account.name)}</strong> as "
        f"{escape(user.first_name)} {escape(user.last_name)} ({escape(user.email)}).</p>"
        f'<form method="post" action="{escape(prefix_of(request))}/oauth/authorize">{hidden}'
        '<button class="allow" type="submit" name="decision" value="allow">Allow access</button>'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</form>"
    )
    return _page("Authorize application", body)


@router.post("/authorize")
async def authorize_decision(request: Request, state: StateDep) -> Response:
    form = await request.form()
    response_type, client_id, redirect_uri, client_state = (
        _field(form, name) for name in ("response_type", "client_id", "redirect_uri", "state")
    )
    problem = _authorize_problem(state, response_type, client_id, redirect_uri)
    if problem is not None or client_id is None or redirect_uri is None:
        return _error_page(problem or "Invalid request.")
    if _field(form, "decision") != "allow":
        target = _with_params(redirect_uri, {"error": "access_denied", "state": client_state})
        return RedirectResponse(target, status_code=302)
    code = state.oauth.issue_code(client_id, redirect_uri, region_of(request))
    target = _with_params(redirect_uri, {"code": code, "state": client_state})
    return RedirectResponse(target, status_code=302)


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _client_credentials(request: Request, form: FormData) -> tuple[str | None, str | None]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return _field(form, "client_id"), _field(form, "client_secret")


def _oauth_error(error: OAuthError) -> Response:
    return ClioJSONResponse(
        {"error": error.error, "error_description": error.description},
        status_code=error.status,
        headers={"Cache-Control": "no-store"},
    )


@router.post("/token")
async def token(request: Request, state: StateDep) -> Response:
    form = await request.form()
    client_id, client_secret = _client_credentials(request, form)
    settings = state.settings
    known = client_id == settings.client_id and secrets.compare_digest(
        client_secret or "", settings.client_secret
    )
    if not known or client_id is None:
        return _oauth_error(OAuthError("invalid_client", "Client authentication failed.", 401))
    grant_type = _field(form, "grant_type")
    try:
        if grant_type == "authorization_code":
            code, redirect_uri = _field(form, "code"), _field(form, "redirect_uri")
            if not code or not redirect_uri:
                raise OAuthError("invalid_request", "code and redirect_uri are required.")
            pair = state.oauth.redeem_code(code, client_id, redirect_uri, region_of(request))
        elif grant_type == "refresh_token":
            refresh_token = _field(form, "refresh_token")
            if not refresh_token:
                raise OAuthError("invalid_request", "refresh_token is required.")
            pair = state.oauth.refresh(refresh_token, client_id, region_of(request))
        elif grant_type is None:
            raise OAuthError("invalid_request", "grant_type is required.")
        else:
            raise OAuthError("unsupported_grant_type", f"Unsupported grant_type {grant_type}.")
    except OAuthError as error:
        return _oauth_error(error)
    return ClioJSONResponse(pair.as_json(), headers={"Cache-Control": "no-store"})


@router.post("/deauthorize")
async def deauthorize(request: Request, state: StateDep) -> Response:
    header = request.headers.get("authorization", "")
    presented = header[7:].strip() if header.lower().startswith("bearer ") else None
    if presented is None:
        presented = _field(await request.form(), "token")
    if not presented or not state.oauth.revoke(presented, region_of(request)):
        return error_response(ClioError(401, "Unauthorized", "Invalid or already revoked token."))
    return ClioJSONResponse({})
