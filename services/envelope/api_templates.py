"""envelope's internal HTTP API for a firm's email templates, for the gateway's Settings
pages and the review window.

A template that cannot be saved answers 422 with
{"detail": {"field": ..., "message": ..., "errors": {field: message, ...}}}.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Response

from services.envelope import reads, template_store
from services.envelope.compose import AUTOFILL_FIELDS
from services.envelope.desk import Desk
from services.envelope.models import EmailTemplate
from services.envelope.template_store import TemplateFieldError, TemplateNotFound
from shared.api.envelope import (
    BuiltinOut,
    DefaultIn,
    DefaultOut,
    TemplateIn,
    TemplateList,
    TemplateOut,
    TextIn,
)
from shared.runtime import Service


def _out(t: EmailTemplate) -> TemplateOut:
    return TemplateOut.model_validate(t, from_attributes=True)


def _invalid(exc: TemplateFieldError) -> HTTPException:
    return HTTPException(
        status_code=422,
        detail={"field": exc.field, "message": exc.message, "errors": exc.errors},
    )


def _missing() -> HTTPException:
    return HTTPException(status_code=404, detail="no such template")


def router(service: Service, desk: Desk) -> APIRouter:
    r = APIRouter(prefix="/internal", dependencies=[Depends(service.require_internal())])
    sm = service.sessionmaker
    base = "/firms/{firm_id}/templates"

    @r.get(base)
    async def list_templates(firm_id: str) -> TemplateList:
        async with sm() as s:
            rows = await template_store.list_templates(s, firm_id)
        default = next((t.id for t in rows if t.is_default), None)
        return TemplateList(
            items=[_out(t) for t in rows],
            default_id=default,
            builtin=BuiltinOut(
                name=template_store.BUILTIN_NAME,
                subject=template_store.BUILTIN.subject,
                body=template_store.BUILTIN.body,
            ),
            autofill_fields=AUTOFILL_FIELDS,
        )

    @r.post(base, status_code=201)
    async def create_template(firm_id: str, body: TemplateIn) -> TemplateOut:
        try:
            async with sm() as s, s.begin():
                row = await template_store.create_template(
                    s,
                    firm_id,
                    name=body.name,
                    subject=body.subject,
                    body=body.body,
                    is_default=bool(body.is_default),
                )
                await s.refresh(row)
        except TemplateFieldError as exc:
            raise _invalid(exc) from exc
        return _out(row)

    # Registered before the {template_id} routes, which would otherwise take these paths.
    @r.post(base + "/default")
    async def set_default(firm_id: str, body: DefaultIn) -> DefaultOut:
        try:
            async with sm() as s, s.begin():
                await template_store.set_default(s, firm_id, body.template_id or None)
        except TemplateNotFound as exc:
            raise _missing() from exc
        return DefaultOut(default_id=body.template_id or None)

    @r.post(base + "/preview")
    async def preview(firm_id: str, body: TextIn) -> dict[str, str]:
        """The subject and message as a client would get them, with example values."""
        try:
            _, subject, text = template_store.validate("preview", body.subject, body.body)
        except TemplateFieldError as exc:
            raise _invalid(exc) from exc
        async with sm() as s:
            firm = await reads.firm_profile(s, firm_id)
        token = "preview"
        composed = template_store.sample_email(
            firm,
            subject,
            text,
            pay_url=desk.pay_url(token),
            view_url=desk.view_url(token, "sample"),
        )
        return {"subject": composed.subject, "html": composed.html, "text": composed.text}

    @r.get(base + "/{template_id}")
    async def get_template(firm_id: str, template_id: str) -> TemplateOut:
        try:
            async with sm() as s:
                return _out(await template_store.get_template(s, firm_id, template_id))
        except TemplateNotFound as exc:
            raise _missing() from exc

    @r.put(base + "/{template_id}")
    async def update_template(firm_id: str, template_id: str, body: TemplateIn) -> TemplateOut:
        try:
            async with sm() as s, s.begin():
                row = await template_store.update_template(
                    s,
                    firm_id,
                    template_id,
                    name=body.name,
                    subject=body.subject,
                    body=body.body,
                    is_default=body.is_default,
                )
                await s.refresh(row)
        except TemplateNotFound as exc:
            raise _missing() from exc
        except TemplateFieldError as exc:
            raise _invalid(exc) from exc
        return _out(row)

    @r.delete(base + "/{template_id}", status_code=204)
    async def delete_template(firm_id: str, template_id: str) -> Response:
        try:
            async with sm() as s, s.begin():
                await template_store.delete_template(s, firm_id, template_id)
        except TemplateNotFound as exc:
            raise _missing() from exc
        return Response(status_code=204)

    return r
