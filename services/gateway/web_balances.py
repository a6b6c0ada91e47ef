"""The Outstanding Balances tab: what each client owes, and Send client balance."""

import json
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services.gateway import auth
from services.gateway.deps import Pages
from services.gateway.models import Batch


def router(pages: Pages) -> APIRouter:
    r = APIRouter()
    upstream = pages.upstream
    sm = pages.service.sessionmaker
    User = pages.User
    FormUser = pages.FormUser
    show = pages.show

    @r.get("/balances", response_class=HTMLResponse)
    async def balances(request: Request, user: User) -> HTMLResponse:
        resp = await upstream.call(
            upstream.envelope, "GET", f"/internal/firms/{user.firm_id}/balances"
        )
        resp.raise_for_status()
        rows = resp.json()
        return show(request, "balances.html", user, rows=rows)

    @r.post("/balances/{client_id}/send")
    async def send_client_balance(client_id: str, user: FormUser) -> RedirectResponse:
        resp = await upstream.call(
            upstream.envelope,
            "POST",
            f"/internal/firms/{user.firm_id}/clients/{client_id}/balance-envelope",
            json={"created_by": user.id},
        )
        if resp.status_code == 409:
            raise HTTPException(status_code=409, detail="This client owes nothing.")
        resp.raise_for_status()
        batch_id = auth.new_id()
        async with sm() as s, s.begin():
            s.add(
                Batch(
                    id=batch_id,
                    firm_id=user.firm_id,
                    user_id=user.id,
                    kind="balance",
                    envelope_ids=json.dumps([resp.json()["id"]]),
                    created_at=datetime.now(UTC),
                )
            )
        return RedirectResponse(f"/batches/{batch_id}/0", status_code=303)

    return r
