"""`python -m sandbox.stripe`: serve the sandbox on STRIPE_SANDBOX_HOST:STRIPE_SANDBOX_PORT."""

from __future__ import annotations

import uvicorn

from sandbox.stripe.app import create_app
from sandbox.stripe.settings import StripeSandboxSettings
from sandbox.stripe.state import SandboxState


def main() -> None:
    settings = StripeSandboxSettings.from_env()
    app = create_app(SandboxState(settings))
    uvicorn.run(app, host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
