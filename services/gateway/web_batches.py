"""A batch of envelopes: its overview, Send All Envelopes, and the live progress of a send."""

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from services.gateway.auth import CurrentUser
from services.gateway.deps import DELIVERIES, Pages, pay_all_checked
from services.gateway.models import Batch, SendRequest
from services.gateway.sending import next_seq, request_sends, run_send_id, sent_envelopes
from services.gateway.web_templates import template_choices, template_text


def router(pages: Pages) -> APIRouter:
    r = APIRouter()
    service = pages.service
    upstream = pages.upstream
    sm = service.sessionmaker
    User = pages.User
    FormUser = pages.FormUser
    show = pages.show

    async def load_batch(user: CurrentUser, batch_id: str) -> Batch:
        async with sm() as s:
            batch = await s.get(Batch, batch_id)
        if batch is None or batch.firm_id != user.firm_id:
            raise HTTPException(status_code=404, detail="No such batch.")
        return batch

    async def summaries(user: CurrentUser, ids: list[str]) -> list[dict[str, Any]]:
        resp = await upstream.call(
            upstream.envelope,
            "POST",
            f"/internal/firms/{user.firm_id}/envelopes/summary",
            json={"ids": ids},
        )
        resp.raise_for_status()
        return resp.json()

    @r.get("/batches/{batch_id}", response_class=HTMLResponse)
    async def overview(request: Request, batch_id: str, user: User) -> HTMLResponse:
        batch = await load_batch(user, batch_id)
        ids = json.loads(batch.envelope_ids)
        envelopes = await summaries(user, ids)
        asked = await sent_envelopes(service, ids)
        for env in envelopes:
            env["index"] = ids.index(env["id"])
            env["asked"] = env["id"] in asked
        unsent = [e for e in envelopes if not e["asked"]]
        return show(
            request, "batch.html", user, batch=batch, envelopes=envelopes, unsent=len(unsent)
        )

    def send_settings(
        batch: Batch,
        envelopes: list[dict[str, Any]],
        delivery: str | None = None,
        pay_all_outstanding: bool | None = None,
    ) -> dict[str, Any]:
        """Additional settings and Payment settings for every envelope of the form: as
        posted, else the envelopes' delivery (the firm's default when they were drafted)
        and, for a client balance, payment for all unpaid bills."""
        if delivery not in DELIVERIES:
            delivery = envelopes[0].get("delivery", "link") if envelopes else "link"
        return {
            "delivery": delivery,
            "pay_all_outstanding": (
                batch.kind == "balance" if pay_all_outstanding is None else pay_all_outstanding
            ),
            "combined": any(len(e["invoice_ids"]) > 1 for e in envelopes),
            "many": len(envelopes) > 1,
        }

    @r.get("/batches/{batch_id}/send-all", response_class=HTMLResponse)
    async def send_all_form(
        request: Request, batch_id: str, user: User, template: str | None = None
    ) -> HTMLResponse:
        batch = await load_batch(user, batch_id)
        ids = json.loads(batch.envelope_ids)
        asked = await sent_envelopes(service, ids)
        envelopes = [e for e in await summaries(user, ids) if e["id"] not in asked]
        if not envelopes:
            return show(request, "send_all.html", user, batch=batch, envelopes=[], errors={},
                        subject="", body="", run_id="", expected="{}")  # fmt: skip
        # What this form will send, as it saw it: posting it twice, or from a second tab
        # showing the same form, sends nothing more.
        expected = {e["id"]: await next_seq(service, e["id"]) for e in envelopes}
        subject, body = envelopes[0]["subject"], envelopes[0]["body"]
        if template is not None:
            chosen = await template_text(upstream, user.firm_id, template)
            subject, body = chosen["subject"], chosen["body"]
        return show(
            request,
            "send_all.html",
            user,
            batch=batch,
            envelopes=envelopes,
            errors={},
            subject=subject,
            body=body,
            **send_settings(batch, envelopes),
            **await template_choices(upstream, user.firm_id, subject, body),
            run_id=str(uuid.uuid4()),
            expected=json.dumps(expected),
        )

    @r.post("/batches/{batch_id}/send-all", response_model=None)
    async def send_all(
        request: Request,
        batch_id: str,
        user: FormUser,
        run_id: Annotated[str, Form()],
        expected: Annotated[str, Form()],
        subject: Annotated[str, Form()] = "",
        body: Annotated[str, Form()] = "",
        delivery: Annotated[str, Form()] = "",
        pay_all_outstanding: Annotated[str, Form()] = "",
    ) -> Response:
        batch = await load_batch(user, batch_id)
        try:
            uuid.UUID(run_id)
            seqs: dict[str, int] = {k: int(v) for k, v in json.loads(expected).items()}
        except (ValueError, AttributeError) as exc:
            raise HTTPException(status_code=400, detail="The form is damaged; reload it.") from exc
        ids = [i for i in json.loads(batch.envelope_ids) if i in seqs]
        envelopes = await summaries(user, ids)
        errors: dict[str, str] = {}
        if not subject.strip():
            errors["subject"] = "The subject cannot be empty."
        if delivery and delivery not in DELIVERIES:
            errors["delivery"] = "Choose how to share the bills."
        pay_all = pay_all_checked(pay_all_outstanding)
        # Check the template once, against the first envelope, before anything is sent.
        if envelopes and not errors:
            resp = await upstream.call(
                upstream.envelope,
                "POST",
                f"/internal/firms/{user.firm_id}/envelopes/{envelopes[0]['id']}/preview",
                json={"subject": subject, "body": body},
            )
            if resp.status_code == 422:
                errors["body"] = "Template error: " + str(resp.json().get("detail"))
        if errors:
            return show(request, "send_all.html", user, status_code=422, batch=batch,
                        envelopes=envelopes, errors=errors, subject=subject, body=body,
                        run_id=run_id, expected=expected,
                        **send_settings(batch, envelopes, delivery, pay_all))  # fmt: skip
        await request_sends(
            service,
            [
                {
                    "firm_id": user.firm_id,
                    "user_id": user.id,
                    "envelope": env,
                    "send_id": run_send_id(run_id, env["id"]),
                    "seq": seqs[env["id"]],
                    "to": env["to"],
                    "subject": subject,
                    "body": body,
                    "batch_id": batch_id,
                    "run_id": run_id,
                    "pay_all_outstanding": pay_all,
                    "delivery": delivery or None,
                }
                for env in envelopes
                if env["to"]  # no recipient: shown as failed in the progress
            ],
        )
        return RedirectResponse(f"/batches/{batch_id}/runs/{run_id}", status_code=303)

    async def run_progress(user: CurrentUser, batch: Batch, run_id: str) -> dict[str, Any]:
        async with sm() as s:
            requests = list(
                await s.scalars(
                    select(SendRequest).where(
                        SendRequest.run_id == run_id, SendRequest.firm_id == user.firm_id
                    )
                )
            )
        resp = await upstream.call(
            upstream.envelope,
            "POST",
            f"/internal/firms/{user.firm_id}/sends/status",
            json={"send_ids": [r.send_id for r in requests]},
        )
        resp.raise_for_status()
        statuses = resp.json()
        sent = sum(1 for r in requests if statuses.get(r.send_id, {}).get("status") == "sent")
        failed = [
            {"envelope_id": r.envelope_id, "error": statuses[r.send_id].get("error")}
            for r in requests
            if statuses.get(r.send_id, {}).get("status") == "failed"
        ]
        total = len(requests)
        return {
            "total": total,
            "sent": sent,
            "failed": len(failed),
            "queued": total - sent - len(failed),
            "done": total == sent + len(failed),
            "failures": failed,
        }

    @r.get("/batches/{batch_id}/runs/{run_id}.json")
    async def progress_json(batch_id: str, run_id: str, user: User) -> JSONResponse:
        batch = await load_batch(user, batch_id)
        return JSONResponse(await run_progress(user, batch, run_id))

    @r.get("/batches/{batch_id}/runs/{run_id}", response_class=HTMLResponse)
    async def progress_page(
        request: Request, batch_id: str, run_id: str, user: User
    ) -> HTMLResponse:
        batch = await load_batch(user, batch_id)
        progress = await run_progress(user, batch, run_id)
        return show(request, "progress.html", user, batch=batch, run_id=run_id, p=progress)

    return r
