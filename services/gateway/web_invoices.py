"""The Invoices tab: the synced bills, filters, paging, Sync, the firm-side PDF."""

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.gateway.deps import Pages

PER_PAGE_CHOICES = (10, 25, 50, 100)


def router(pages: Pages) -> APIRouter:
    r = APIRouter()
    upstream = pages.upstream
    User = pages.User
    FormUser = pages.FormUser
    show = pages.show
    firm_name = pages.firm_name

    # --- Invoices -----------------------------------------------------------------------

    @r.get("/invoices", response_class=HTMLResponse)
    async def invoices(
        request: Request,
        user: User,
        q: str = "",
        state: str = "unpaid",
        kind: str = "all",
        page: Annotated[int, Query(ge=1)] = 1,
        per_page: int = 25,
    ) -> HTMLResponse:
        per_page = per_page if per_page in PER_PAGE_CHOICES else 25
        params = {"q": q, "state": state, "kind": kind, "page": page, "per_page": per_page}
        resp = await upstream.call(
            upstream.envelope, "GET", f"/internal/firms/{user.firm_id}/invoices", params=params
        )
        resp.raise_for_status()
        data = resp.json()
        clio = (
            await upstream.call(upstream.sync, "GET", f"/internal/firms/{user.firm_id}/clio")
        ).json()
        pages = max(1, -(-data["total"] // per_page))

        def link(**changes: Any) -> str:
            return "/invoices?" + urlencode({**params, **changes})

        return show(
            request,
            "invoices.html",
            user,
            data=data,
            params=params,
            pages=pages,
            link=link,
            per_page_choices=PER_PAGE_CHOICES,
            clio=clio,
            firm_name=await firm_name(user.firm_id),
        )

    @r.post("/invoices/sync")
    async def sync_now(user: FormUser) -> RedirectResponse:
        resp = await upstream.call(upstream.sync, "POST", f"/internal/firms/{user.firm_id}/sync")
        if resp.status_code == 409:
            return RedirectResponse("/settings", status_code=303)
        return RedirectResponse("/invoices?notice=synced", status_code=303)

    @r.get("/invoices/{invoice_id}/pdf")
    async def invoice_pdf(invoice_id: str, user: User) -> Response:
        resp = await upstream.call(
            upstream.envelope, "GET", f"/internal/firms/{user.firm_id}/invoices/{invoice_id}/pdf"
        )
        if resp.status_code == 404:
            raise HTTPException(status_code=404, detail="No such invoice.")
        resp.raise_for_status()
        return Response(
            resp.content,
            media_type="application/pdf",
            headers={"Content-Disposition": resp.headers.get("Content-Disposition", "inline")},
        )

    return r
