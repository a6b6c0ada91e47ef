"""`python -m sandbox.clio`: serve the sandbox on CLIO_SANDBOX_HOST:CLIO_SANDBOX_PORT."""

from __future__ import annotations

import uvicorn

from sandbox.clio.app import create_app
from sandbox.clio.settings import SandboxSettings
from sandbox.clio.state import SandboxState


def main() -> None:
    settings = SandboxSettings.from_env()
    app = create_app(SandboxState(settings=settings))
    uvicorn.run(app, host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
