"""The sandbox application: Clio's API, its OAuth endpoints and the test hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from starlette._utils import get_route_path
from starlette.responses import Response

from sandbox.clio import api, hooks, oauth, webhook_api
from sandbox.clio.errors import ClioError, error_response, handle_clio_error
from sandbox.clio.regions import RegionPrefix, region_of
from sandbox.clio.state import LoggedRequest, SandboxState

# The minor versions Clio's OpenAPI document lists; 4.0.9 is its default.
API_VERSIONS = ("4.0.4", "4.0.5", "4.0.6", "4.0.7", "4.0.8", "4.0.9", "4.0.10")
DEFAULT_API_VERSION = "4.0.9"
ANONYMOUS_BUCKET = "anonymous"

CallNext = Callable[[Request], Awaitable[Response]]


def create_app(state: SandboxState | None = None) -> FastAPI:
    app = FastAPI(
        title="Clio Manage API v4 sandbox",
        description="A stand-in for the subset of Clio's API the sync service uses.",
        docs_url="/sandbox/docs",
        openapi_url="/sandbox/openapi.json",
        redoc_url=None,
    )
    app.state.sandbox = state if state is not None else SandboxState()
    app.include_router(oauth.router)
    app.include_router(api.router)
    app.include_router(webhook_api.router)
    app.include_router(hooks.router)
    app.add_exception_handler(ClioError, handle_clio_error)
    app.middleware("http")(_gate)
    # Added last, so outermost: the gate and the routes already see the region.
    app.add_middleware(RegionPrefix)
    return app


async def _gate(request: Request, call_next: CallNext) -> Response:
    """Token check, rate limit and version header for the API; a log of API and OAuth calls."""
    path = request.url.path
    route = get_route_path(request.scope)
    state: SandboxState = request.app.state.sandbox
    if route.startswith(api.API_PREFIX + "/"):
        response, authorized = await _api_call(request, call_next, state)
    elif route.startswith("/oauth/"):
        response, authorized = await call_next(request), False
    else:
        return await call_next(request)
    state.requests.append(
        LoggedRequest(
            at=state.clock(),
            method=request.method,
            path=path,
            query=request.url.query,
            params={key: request.query_params.getlist(key) for key in request.query_params},
            status=response.status_code,
            authorized=authorized,
            region=region_of(request),
        )
    )
    return response


async def _api_call(
    request: Request, call_next: CallNext, state: SandboxState
) -> tuple[Response, bool]:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    grant = state.oauth.authenticate(token) if token else None
    if grant is not None and grant.region != region_of(request):
        # A token works only at the host of the region that issued it.
        grant = None
    # Clio counts per access token; callers without a valid one share a bucket.
    decision = state.limiter.hit(token if grant is not None else ANONYMOUS_BUCKET)
    version = request.headers.get("x-api-version", DEFAULT_API_VERSION)
    if not decision.allowed:
        response = error_response(ClioError(429, "RateLimited", "Too Many Requests"))
    elif grant is None:
        response = error_response(
            ClioError(
                401,
                "Unauthorized",
                "The access token is missing, invalid, expired or revoked.",
                headers={"WWW-Authenticate": 'Bearer realm="Clio"'},
            )
        )
    elif version not in API_VERSIONS:
        response = error_response(
            ClioError(410, "Gone", f"API version {version} is not supported.")
        )
    else:
        response = await call_next(request)
        response.headers["X-API-VERSION"] = version
    response.headers.update(decision.headers())
    return response, grant is not None
