"""Log in and out."""

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway import auth
from services.gateway.deps import Pages
from services.gateway.pages import render


def router(pages: Pages) -> APIRouter:
    r = APIRouter()
    settings = pages.settings
    sm = pages.service.sessionmaker
    FormUser = pages.FormUser

    # --- log in -------------------------------------------------------------------------

    @r.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        resp = render(request, "login.html", csrf_token=token, error=None, email="")
        resp.set_cookie(
            auth.ANON_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="lax",
            secure=settings.session_cookie_secure,
        )
        return resp

    @r.post("/login", response_model=None)
    async def login(
        request: Request,
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
        async with sm() as s, s.begin():
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

    @r.post("/logout")
    async def logout(request: Request, user: FormUser) -> RedirectResponse:
        async with sm() as s, s.begin():
            await auth.end_session(s, request.cookies.get(auth.SESSION_COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(auth.SESSION_COOKIE)
        return resp

    @r.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse("/invoices", status_code=303)

    return r
