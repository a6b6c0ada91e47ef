"""Errors in Clio's shape: `{"error": {"type": ..., "message": ...}}` (the `Error` schema)."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from sandbox.clio.jsonenc import ClioJSONResponse


class ClioError(Exception):
    def __init__(
        self, status: int, type_: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ClioError:
    return ClioError(400, "BadRequest", message)


def not_found(resource: str, record_id: object) -> ClioError:
    return ClioError(404, "RecordNotFound", f"Couldn't find {resource} with 'id'={record_id}")


def error_response(error: ClioError) -> Response:
    return ClioJSONResponse(
        {"error": {"type": error.type, "message": error.message}},
        status_code=error.status,
        headers=error.headers,
    )


async def handle_clio_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, ClioError)
    return error_response(error)
