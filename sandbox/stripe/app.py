"""The sandbox application: Stripe's API under /v1, the hosted checkout page under /pay, the
test hooks under /sandbox, and the background work (webhook delivery, ACH timers, session
expiry) that runs while it serves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from starlette.responses import Response

from sandbox.stripe import api, checkout, hooks, hosted
from sandbox.stripe.errors import StripeError, handle_stripe_error
from sandbox.stripe.objects import new_id
from sandbox.stripe.state import SandboxState
from sandbox.stripe.webhooks import Dispatcher

CallNext = Callable[[Request], Awaitable[Response]]
SWEEP_SECONDS = 5.0


def create_app(state: SandboxState | None = None) -> FastAPI:
    sandbox = state if state is not None else SandboxState()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher = Dispatcher(sandbox)
        await dispatcher.start()
        app.state.dispatcher = dispatcher
        loop = asyncio.get_running_loop()
        sandbox.scheduler = lambda delay, action: _later(loop, delay, action)
        sweeper = asyncio.create_task(_sweep(sandbox), name="stripe-sandbox-expiry")
        try:
            yield
        finally:
            sandbox.scheduler = None
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await dispatcher.stop()

    app = FastAPI(
        title="Stripe API sandbox",
        description="A stand-in for the part of Stripe's API EnvelopePay uses.",
        docs_url="/sandbox/docs",
        openapi_url="/sandbox/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    app.include_router(api.router)
    app.include_router(hosted.router)
    app.include_router(hooks.router)
    app.add_exception_handler(StripeError, handle_stripe_error)
    app.middleware("http")(_request_id)
    return app


def _later(loop: asyncio.AbstractEventLoop, delay: float, action: Callable[[], None]) -> None:
    loop.call_later(delay, _guarded, action)


def _guarded(action: Callable[[], None]) -> None:
    """A timer that finds its object gone or changed (a reset, a hook first) does nothing."""
    with contextlib.suppress(StripeError, KeyError):
        action()


async def _sweep(state: SandboxState) -> None:
    """Expire sessions whose expires_at has passed, with their checkout.session.expired."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        checkout.sweep_expired(state)


async def _request_id(request: Request, call_next: CallNext) -> Response:
    """Stripe's `Request-Id` on every API answer, and the API version it was served with."""
    if not request.url.path.startswith(api.API_PREFIX + "/"):
        return await call_next(request)
    request.state.request_id = new_id("req_", 14)
    response = await call_next(request)
    response.headers["Request-Id"] = request.state.request_id
    state: SandboxState = request.app.state.sandbox
    response.headers["Stripe-Version"] = request.headers.get(
        "stripe-version", state.settings.api_version
    )
    return response
