"""Log in and out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway import auth
from services.gateway.deps import FormUser, SessionDep, SettingsDep
from services.gateway.pages import render

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, settings: SettingsDep) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    resp = render(request, "login.html", csrf_token=token, error=None, email="")
    auth.set_anon_csrf(resp, token, settings.session_cookie_secure)
    return resp


@router.post("/login", response_model=None)
async def login(
    request: Request,
    s: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    if not auth.csrf_ok(request.cookies.get(auth.ANON_CSRF_COOKIE), csrf_token):
        return render(
            request,
            "login.html",
            status_code=403,
            csrf_token=csrf_token,
            error="The form expired. Please try again.",
            email=email,
        )
    async with s.begin():
        user = await auth.authenticate(s, email, password)
        if user is None:
            return render(
                request,
                "login.html",
                status_code=401,
                csrf_token=csrf_token,
                error="That email and password do not match.",
                email=email,
            )
        token = await auth.start_session(s, user, settings.session_hours)
    resp = RedirectResponse("/invoices", status_code=303)
    resp.set_cookie(
        auth.SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=settings.session_cookie_secure,
        max_age=settings.session_hours * 3600,
    )
    resp.delete_cookie(auth.ANON_CSRF_COOKIE)
    return resp


@router.post("/logout")
async def logout(request: Request, user: FormUser, s: SessionDep) -> RedirectResponse:
    async with s.begin():
        await auth.end_session(s, request.cookies.get(auth.SESSION_COOKIE))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(auth.SESSION_COOKIE)
    return resp


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/invoices", status_code=303)
