"""The firm's list of payments."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.gateway.deps import Pages


def router(pages: Pages) -> APIRouter:
    r = APIRouter()
    upstream = pages.upstream
    User = pages.User
    show = pages.show

    # --- Payments -----------------------------------------------------------------------

    @r.get("/payments", response_class=HTMLResponse)
    async def payments(request: Request, user: User) -> HTMLResponse:
        resp = await upstream.call(
            upstream.payments, "GET", f"/internal/firms/{user.firm_id}/payments"
        )
        resp.raise_for_status()
        return show(request, "payments.html", user, payments=resp.json())

    return r
