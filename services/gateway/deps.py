"""What the firm's pages share: the logged-in user, the CSRF check, page rendering.

Modules with routes do not use `from __future__ import annotations`: FastAPI resolves their
signatures' Annotated dependencies, which are built here at run time, when they are defined.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from services.gateway import auth
from services.gateway.auth import CurrentUser
from services.gateway.clients import Upstream
from services.gateway.models import Firm
from services.gateway.pages import render
from services.gateway.settings import GatewaySettings
from shared.runtime import Service

# The part before the @ in ASCII: a mail header cannot carry anything else without SMTPUTF8,
# which the mailer does not use. The domain may be internationalized (sent in its IDNA form).
EMAIL_RE = re.compile(r"^(?:(?![@<>,;])[!-~])+@[^@\s<>,;]+\.[^@\s<>,;]+$")
NOTICES = {
    "synced": "Sync finished.",
    "sent": "Envelope sent. Its Last Sent and email status update within seconds.",
    "settings": "Settings saved.",
    "clio": "Clio is connected. Your bills are syncing.",
    "template_saved": "Template saved.",
    "template_deleted": "Template deleted.",
    "template_default": "Default template saved.",
}


# Fields one firm form may carry: invoice_ids of a large selection, and the rest.
MAX_FORM_FIELDS = 5000


class LoginRequired(Exception):
    pass


def parse_emails(text: str) -> tuple[list[str], list[str]]:
    """Split a To/Cc field on commas, semicolons and spaces; returns (valid, invalid)."""
    parts = [p.strip() for p in re.split(r"[,;\s]+", text or "") if p.strip()]
    good = [p for p in parts if EMAIL_RE.match(p)]
    bad = [p for p in parts if not EMAIL_RE.match(p)]
    return good, bad


DELIVERIES = ("link", "attachment")


def pay_all_checked(value: str | None) -> bool:
    """The "Accept payments for all unpaid bills" checkbox, as a form posts it."""
    return (value or "").strip() in ("1", "on", "true")


@dataclass
class Pages:
    """Built once per app; each web_* module takes it and returns its router."""

    service: Service
    settings: GatewaySettings
    upstream: Upstream

    def __post_init__(self) -> None:
        sm = self.service.sessionmaker

        async def current_user(request: Request) -> CurrentUser:
            async with sm() as s:
                user = await auth.load_session(s, request.cookies.get(auth.SESSION_COOKIE))
            if user is None:
                raise LoginRequired()
            return user

        user_dep = Annotated[CurrentUser, Depends(current_user)]

        async def check_csrf(request: Request, user: user_dep) -> CurrentUser:  # type: ignore[valid-type]
            # A selection of a thousand bills is a thousand fields (Starlette's default cap);
            # the form is parsed once here and cached for the route.
            form = await request.form(max_fields=MAX_FORM_FIELDS)
            if not auth.csrf_ok(user.csrf_token, str(form.get("csrf_token") or "")):
                raise HTTPException(
                    status_code=403,
                    detail="The form expired. Go back, reload the page and try again.",
                )
            return user

        # Route parameters annotated with these get the logged-in user; FormUser also checks
        # the form's CSRF token.
        self.User: Any = user_dep
        self.FormUser: Any = Annotated[CurrentUser, Depends(check_csrf)]

    async def firm_name(self, firm_id: str) -> str:
        async with self.service.sessionmaker() as s:
            firm = await s.get(Firm, firm_id)
            return firm.name if firm else ""

    def show(
        self, request: Request, name: str, user: CurrentUser, status_code: int = 200, **ctx: Any
    ) -> HTMLResponse:
        notice = NOTICES.get(request.query_params.get("notice", ""))
        return render(request, name, status_code=status_code, user=user, notice=notice, **ctx)
