"""Review & Send: drafting envelopes, the review window, Continue, Send Envelope Now."""

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.gateway import auth
from services.gateway.auth import CurrentUser
from services.gateway.clients import ServiceUnavailable
from services.gateway.deps import DELIVERIES, Pages, parse_emails, pay_all_checked
from services.gateway.models import Batch
from services.gateway.sending import next_seq, request_send, sent_envelopes
from services.gateway.web_templates import template_choices, template_text


def router(pages: Pages) -> APIRouter:
    r = APIRouter()
    service = pages.service
    upstream = pages.upstream
    sm = pages.service.sessionmaker
    User = pages.User
    FormUser = pages.FormUser
    show = pages.show

    # --- Review & Send ------------------------------------------------------------------

    @r.post("/envelopes/review", response_model=None)
    async def review_selected(request: Request, user: FormUser) -> Response:
        form = await request.form()
        ids = [str(v) for v in form.getlist("invoice_ids")]
        if not ids:
            return RedirectResponse("/invoices", status_code=303)
        resp = await upstream.call(
            upstream.envelope,
            "POST",
            f"/internal/firms/{user.firm_id}/envelopes/drafts",
            json={"invoice_ids": ids, "created_by": user.id},
        )
        resp.raise_for_status()
        envelopes = resp.json()
        if not envelopes:
            return RedirectResponse("/invoices", status_code=303)
        batch_id = auth.new_id()
        async with sm() as s, s.begin():
            s.add(
                Batch(
                    id=batch_id,
                    firm_id=user.firm_id,
                    user_id=user.id,
                    envelope_ids=json.dumps([e["id"] for e in envelopes]),
                    created_at=datetime.now(UTC),
                )
            )
        return RedirectResponse(f"/batches/{batch_id}/0", status_code=303)

    async def load_batch(user: CurrentUser, batch_id: str) -> list[str]:
        async with sm() as s:
            batch = await s.get(Batch, batch_id)
        if batch is None or batch.firm_id != user.firm_id:
            raise HTTPException(status_code=404, detail="No such batch.")
        return json.loads(batch.envelope_ids)

    async def is_balance(batch_id: str) -> bool:
        async with sm() as s:
            batch = await s.get(Batch, batch_id)
        return batch is not None and batch.kind == "balance"

    async def load_envelope(user: CurrentUser, envelope_id: str) -> dict[str, Any]:
        resp = await upstream.call(
            upstream.envelope, "GET", f"/internal/firms/{user.firm_id}/envelopes/{envelope_id}"
        )
        if resp.status_code == 404:
            raise HTTPException(status_code=404, detail="No such envelope.")
        resp.raise_for_status()
        return resp.json()

    async def invoices_of(user: CurrentUser, ids: list[str]) -> list[dict[str, Any]]:
        # The envelope's bills, for the review window's list and View Invoice buttons.
        resp = await upstream.call(
            upstream.envelope,
            "GET",
            f"/internal/firms/{user.firm_id}/invoices",
            params={"state": "all", "per_page": 200, "ids": ",".join(ids)},
        )
        resp.raise_for_status()
        by_id = {i["invoice_id"]: i for i in resp.json()["items"]}
        return [by_id[i] for i in ids if i in by_id]

    async def send_settings(
        batch_id: str,
        env: dict[str, Any],
        delivery: str | None = None,
        pay_all_outstanding: bool | None = None,
    ) -> dict[str, Any]:
        """Additional settings and Payment settings as the page shows them: as posted, else
        the envelope's delivery (the firm's default when it was drafted) and, for a client
        balance, payment for all unpaid bills."""
        if pay_all_outstanding is None:
            pay_all_outstanding = await is_balance(batch_id)
        return {
            "delivery": delivery if delivery in DELIVERIES else env.get("delivery", "link"),
            "pay_all_outstanding": pay_all_outstanding,
            "combined": len(env["invoice_ids"]) > 1,
        }

    @r.get("/contacts")
    async def contacts(user: User, q: str = "") -> JSONResponse:
        """The review window's contact picker: the firm's Clio contacts matching what was typed.
        It only suggests; the To field is what is sent, so a failure here suggests nothing."""
        try:
            resp = await upstream.call(
                upstream.sync,
                "GET",
                f"/internal/firms/{user.firm_id}/contacts",
                params={"q": q[:200], "limit": 8},
            )
        except ServiceUnavailable:
            return JSONResponse([], status_code=503)
        if resp.status_code != 200:
            return JSONResponse([], status_code=502)
        return JSONResponse(
            [{"name": c["name"], "email": c["email"]} for c in resp.json()],
            headers={"Cache-Control": "no-store"},
        )

    @r.get("/batches/{batch_id}/{n}", response_class=HTMLResponse)
    async def review(request: Request, batch_id: str, n: int, user: User) -> HTMLResponse:
        ids = await load_batch(user, batch_id)
        if not 0 <= n < len(ids):
            raise HTTPException(status_code=404, detail="No such envelope in this batch.")
        env = await load_envelope(user, ids[n])
        return show(
            request,
            "review.html",
            user,
            batch_id=batch_id,
            n=n,
            count=len(ids),
            env=env,
            items=await invoices_of(user, env["invoice_ids"]),
            to=", ".join(env["to"]),
            subject=env["subject"],
            body=env["body"],
            preview=env["preview"],
            errors={},
            **await send_settings(batch_id, env),
            **await template_choices(upstream, user.firm_id, env["subject"], env["body"]),
        )

    @r.post("/batches/{batch_id}/{n}/continue", response_class=HTMLResponse)
    async def review_continue(
        request: Request,
        batch_id: str,
        n: int,
        user: FormUser,
        to: Annotated[str, Form()] = "",
        subject: Annotated[str, Form()] = "",
        body: Annotated[str, Form()] = "",
        delivery: Annotated[str, Form()] = "",
        pay_all_outstanding: Annotated[str, Form()] = "",
    ) -> HTMLResponse:
        ids = await load_batch(user, batch_id)
        if not 0 <= n < len(ids):
            raise HTTPException(status_code=404, detail="No such envelope in this batch.")
        env = await load_envelope(user, ids[n])
        errors: dict[str, str] = {}
        good, bad = parse_emails(to)
        if bad:
            errors["to"] = "Not an email address: " + ", ".join(bad)
        elif not good:
            errors["to"] = "Add at least one recipient."
        if not subject.strip():
            errors["subject"] = "The subject cannot be empty."
        if delivery and delivery not in DELIVERIES:
            errors["delivery"] = "Choose how to share the bill."
        preview = env["preview"]
        resp = await upstream.call(
            upstream.envelope,
            "POST",
            f"/internal/firms/{user.firm_id}/envelopes/{env['id']}/preview",
            json={"subject": subject, "body": body},
        )
        if resp.status_code == 422:
            errors["body"] = "Template error: " + str(resp.json().get("detail"))
        else:
            resp.raise_for_status()
            preview = resp.json()
        items = await invoices_of(user, env["invoice_ids"])
        common = dict(
            batch_id=batch_id,
            n=n,
            count=len(ids),
            env=env,
            items=items,
            to=to,
            subject=subject,
            body=body,
            preview=preview,
            **await send_settings(batch_id, env, delivery, pay_all_checked(pay_all_outstanding)),
        )
        if errors:
            choices = await template_choices(upstream, user.firm_id, subject, body)
            return show(
                request, "review.html", user, status_code=422, errors=errors, **common, **choices
            )
        return show(
            request,
            "confirm.html",
            user,
            send_id=auth.new_id(),
            seq=await next_seq(service, env["id"]),
            balance=await is_balance(batch_id),
            recipients=good,
            **common,
        )

    @r.post("/batches/{batch_id}/{n}/back", response_class=HTMLResponse)
    async def review_back(
        request: Request,
        batch_id: str,
        n: int,
        user: FormUser,
        to: Annotated[str, Form()] = "",
        subject: Annotated[str, Form()] = "",
        body: Annotated[str, Form()] = "",
        delivery: Annotated[str, Form()] = "",
        pay_all_outstanding: Annotated[str, Form()] = "",
    ) -> HTMLResponse:
        """Go Back: the review window again, with the edits kept."""
        ids = await load_batch(user, batch_id)
        if not 0 <= n < len(ids):
            raise HTTPException(status_code=404, detail="No such envelope in this batch.")
        env = await load_envelope(user, ids[n])
        resp = await upstream.call(
            upstream.envelope,
            "POST",
            f"/internal/firms/{user.firm_id}/envelopes/{env['id']}/preview",
            json={"subject": subject, "body": body},
        )
        preview = resp.json() if resp.status_code == 200 else env["preview"]
        return show(
            request,
            "review.html",
            user,
            batch_id=batch_id,
            n=n,
            count=len(ids),
            env=env,
            items=await invoices_of(user, env["invoice_ids"]),
            to=to,
            subject=subject,
            body=body,
            preview=preview,
            errors={},
            **await send_settings(batch_id, env, delivery, pay_all_checked(pay_all_outstanding)),
            **await template_choices(upstream, user.firm_id, subject, body),
        )

    @r.post("/batches/{batch_id}/{n}/template", response_class=HTMLResponse)
    async def apply_template(
        request: Request,
        batch_id: str,
        n: int,
        user: FormUser,
        to: Annotated[str, Form()] = "",
        template_id: Annotated[str, Form()] = "",
        delivery: Annotated[str, Form()] = "",
        pay_all_outstanding: Annotated[str, Form()] = "",
    ) -> HTMLResponse:
        """Email template: Subject and Message from the chosen template; To and the
        settings as they were."""
        chosen = await template_text(upstream, user.firm_id, template_id)
        return await review_back(
            request,
            batch_id,
            n,
            user,
            to=to,
            subject=chosen["subject"],
            body=chosen["body"],
            delivery=delivery,
            pay_all_outstanding=pay_all_outstanding,
        )

    @r.post("/batches/{batch_id}/{n}/send")
    async def send_now(
        batch_id: str,
        n: int,
        user: FormUser,
        send_id: Annotated[str, Form()],
        seq: Annotated[int, Form()] = 1,
        to: Annotated[str, Form()] = "",
        subject: Annotated[str, Form()] = "",
        body: Annotated[str, Form()] = "",
        delivery: Annotated[str, Form()] = "",
        # Posted by the confirmation ("" when unchecked); absent, the batch's default.
        pay_all_outstanding: Annotated[str | None, Form()] = None,
    ) -> RedirectResponse:
        ids = await load_batch(user, batch_id)
        if not 0 <= n < len(ids):
            raise HTTPException(status_code=404, detail="No such envelope in this batch.")
        env = await load_envelope(user, ids[n])
        good, bad = parse_emails(to)
        if bad or not good or not subject.strip() or (delivery and delivery not in DELIVERIES):
            return RedirectResponse(f"/batches/{batch_id}/{n}", status_code=303)
        await request_send(
            service,
            firm_id=user.firm_id,
            user_id=user.id,
            envelope=env,
            send_id=send_id,
            seq=seq,
            to=good,
            subject=subject,
            body=body,
            batch_id=batch_id,
            pay_all_outstanding=(
                await is_balance(batch_id)
                if pay_all_outstanding is None
                else pay_all_checked(pay_all_outstanding)
            ),
            delivery=delivery or None,
        )  # False: a double click, a retried request or a second tab; nothing more to do
        # The next envelope of the batch not yet sent, so unsent ones stay in review.
        done = await sent_envelopes(service, ids)
        for m in list(range(n + 1, len(ids))) + list(range(0, n)):
            if ids[m] not in done:
                return RedirectResponse(f"/batches/{batch_id}/{m}?notice=sent", status_code=303)
        return RedirectResponse(f"/batches/{batch_id}?notice=sent", status_code=303)

    return r
