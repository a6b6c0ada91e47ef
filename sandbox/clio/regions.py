"""Clio's regions in one process: US at the root, the others under `/ca`, `/eu` and `/au`.

Clio gives each region its own host; the sandbox serves a region's OAuth endpoints, API and
test hooks under its path prefix, so a region's base URL is e.g. `http://127.0.0.1:8090/eu`.
The prefix becomes the ASGI `root_path`, so routes match without it while `request.url`
(and with it every `meta.paging.next`) keeps it.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.clio.state import DEFAULT_REGION, REGION_PREFIXES

SCOPE_KEY = "clio_region"


class RegionPrefix:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            region, prefix = _match(scope["path"])
            scope = {
                **scope,
                "root_path": scope.get("root_path", "") + prefix,
                SCOPE_KEY: region,
            }
        await self.app(scope, receive, send)


def _match(path: str) -> tuple[str, str]:
    for region, prefix in REGION_PREFIXES.items():
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            return region, prefix
    return DEFAULT_REGION, ""


def region_of(connection: HTTPConnection) -> str:
    region: str = connection.scope.get(SCOPE_KEY, DEFAULT_REGION)
    return region


def prefix_of(connection: HTTPConnection) -> str:
    return REGION_PREFIXES[region_of(connection)]
