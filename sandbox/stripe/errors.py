"""Errors in Stripe's shape: `{"error": {"type", "code", "message", "param"}}` with Stripe's
HTTP statuses, so the stripe SDK raises the same exception classes it would against Stripe
(400/404 InvalidRequestError, 401 AuthenticationError, 402 CardError, 400 with type
idempotency_error IdempotencyError)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse, Response


class StripeError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                **self.extra,
            }
        }


def missing_param(name: str) -> StripeError:
    return StripeError(
        400, f"Missing required param: {name}.", code="parameter_missing", param=name
    )


def unknown_param(name: str) -> StripeError:
    return StripeError(
        400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
    )


def invalid_param(name: str, message: str, code: str | None = "parameter_invalid") -> StripeError:
    return StripeError(400, message, code=code, param=name)


def no_such(kind: str, object_id: str, *, param: str = "id", status: int = 404) -> StripeError:
    """A missing object: 404 when it is the path's object, 400 when a parameter names it."""
    return StripeError(
        status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
    )


def error_response(error: StripeError, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def handle_stripe_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StripeError)
    request_id = getattr(request.state, "request_id", None)
    return error_response(error, {"Request-Id": request_id} if request_id else None)
