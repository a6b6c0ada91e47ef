"""sync's internal API for LEDES 1998B imports, called by the gateway: upload a file (the raw
bytes as the body, the options as query parameters), read an import back, give a client its
email. Also wires the payment events that keep what was paid on imported invoices."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from sqlalchemy.exc import IntegrityError

from services.sync.ledes_import import BadEmail, LedesImporter, UnknownClient
from shared.api.ledes import (
    DEFAULT_DUE_DAYS,
    MAX_FILE_BYTES,
    ClientEmail,
    ClientEmailResult,
    ImportOptions,
    ImportResult,
    ImportSummary,
)
from shared.events import PaymentFailed, PaymentRefunded, PaymentSucceeded
from shared.runtime import Service


def install(app: FastAPI, service: Service) -> LedesImporter:
    importer = LedesImporter(service)
    for event_type in (PaymentSucceeded, PaymentFailed, PaymentRefunded):
        service.handles(event_type)(importer.on_payment)
    app.include_router(router(service, importer))
    app.state.ledes = importer
    return importer


async def _body(request: Request) -> bytes:
    """The upload, refused as soon as it passes the limit rather than after reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_FILE_BYTES:
        raise HTTPException(status_code=413, detail=_too_large())
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise HTTPException(status_code=413, detail=_too_large())
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> str:
    return f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB."


def router(service: Service, importer: LedesImporter) -> APIRouter:
    r = APIRouter(
        prefix="/internal/firms/{firm_id}/ledes",
        dependencies=[Depends(service.require_internal())],
    )

    @r.post("/imports")
    async def upload(
        firm_id: str,
        request: Request,
        filename: Annotated[str, Query(max_length=300)] = "upload.txt",
        due_days: Annotated[int, Query(ge=0, le=365)] = DEFAULT_DUE_DAYS,
        due_date: dt.date | None = None,
    ) -> ImportResult:
        data = await _body(request)
        options = ImportOptions(filename=filename, due_days=due_days, due_date=due_date)
        try:
            return await importer.import_file(firm_id, data, options)
        except IntegrityError as exc:
            # Another sync process imported the same invoice at the same moment.
            raise HTTPException(
                status_code=409,
                detail="Another import of the same invoices was running. Import the file again.",
            ) from exc

    @r.get("/imports")
    async def imports(firm_id: str) -> list[ImportSummary]:
        return [
            ImportSummary(
                import_id=i.id,
                filename=i.filename,
                uploaded_at=i.uploaded_at,
                imported=i.imported,
                skipped=i.skipped,
            )
            for i in await importer.imports(firm_id)
        ]

    @r.get("/imports/{import_id}")
    async def get_import(firm_id: str, import_id: int) -> ImportResult:
        result = await importer.result(firm_id, import_id)
        if result is None:
            raise HTTPException(status_code=404, detail="No such import.")
        return result

    @r.post("/clients")
    async def set_client(firm_id: str, body: ClientEmail) -> ClientEmailResult:
        try:
            return await importer.set_client(firm_id, body)
        except IntegrityError as exc:
            raise HTTPException(status_code=409, detail="Please try again.") from exc
        except UnknownClient as exc:
            raise HTTPException(status_code=404, detail="No such LEDES client.") from exc
        except BadEmail as exc:
            raise HTTPException(
                status_code=422, detail={"field": "email", "message": str(exc)}
            ) from exc

    return r
