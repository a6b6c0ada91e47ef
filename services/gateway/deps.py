"""What the firm's pages share: the dependencies their routes declare (the service, a session,
the logged-in user, the CSRF check, the internal clients), the form rules and page rendering.

Each dependency is a module-level function, so a test replaces one with
`app.dependency_overrides[...]`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway import auth
from services.gateway.clients.envelope import EnvelopeClient
from services.gateway.clients.payments import PaymentsClient
from services.gateway.clients.reminders import RemindersClient
from services.gateway.clients.sync import SyncClient
from services.gateway.models import Firm
from services.gateway.pages import render
from services.gateway.settings import GatewaySettings
from shared.events import Delivery
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
    "reminders_saved": "Reminder settings saved.",
    "reminders_on": "Reminders are on.",
    "reminders_off": "Reminders are off.",
    "reminder_sent": "Reminder queued. It appears in the history within seconds.",
}


# Fields one firm form may carry: invoice_ids of a large selection, and the rest.
MAX_FORM_FIELDS = 5000
DELIVERIES = tuple(Delivery)


class LoginRequired(Exception):
    pass


def parse_emails(text: str) -> tuple[list[str], list[str]]:
    """Split a To/Cc field on commas, semicolons and spaces; returns (valid, invalid)."""
    parts = [p.strip() for p in re.split(r"[,;\s]+", text or "") if p.strip()]
    good = [p for p in parts if EMAIL_RE.match(p)]
    bad = [p for p in parts if not EMAIL_RE.match(p)]
    return good, bad


def pay_all_checked(value: str | None) -> bool:
    """The "Accept payments for all unpaid bills" checkbox, as a form posts it."""
    return (value or "").strip() in ("1", "on", "true")


# --- the app's parts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Clients:
    """The internal clients, built once per app (app.state.clients)."""

    envelope: EnvelopeClient
    payments: PaymentsClient
    sync: SyncClient


def get_service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.service.settings  # type: ignore[no-any-return]


def envelope_client(request: Request) -> EnvelopeClient:
    return request.app.state.clients.envelope  # type: ignore[no-any-return]


def payments_client(request: Request) -> PaymentsClient:
    return request.app.state.clients.payments  # type: ignore[no-any-return]


def sync_client(request: Request) -> SyncClient:
    return request.app.state.clients.sync  # type: ignore[no-any-return]


def reminders_client(
    envelope: Annotated[EnvelopeClient, Depends(envelope_client)],
) -> RemindersClient:
    """envelope's reminders API on envelope client's connection: a test that replaces envelope's
    client by one without a connection has no reminders (the pages then show no switches)."""
    return RemindersClient(getattr(envelope, "http", None))


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
EnvelopeClientDep = Annotated[EnvelopeClient, Depends(envelope_client)]
PaymentsClientDep = Annotated[PaymentsClient, Depends(payments_client)]
SyncClientDep = Annotated[SyncClient, Depends(sync_client)]
RemindersClientDep = Annotated[RemindersClient, Depends(reminders_client)]


async def get_session(service: ServiceDep) -> AsyncIterator[AsyncSession]:
    """A session for the request; a route that writes opens its transaction (`s.begin()`)."""
    async with service.sessionmaker() as s:
        yield s


SessionDep = Annotated[AsyncSession, Depends(get_session)]


# --- the logged-in user -------------------------------------------------------------------


async def current_user(request: Request, service: ServiceDep) -> auth.CurrentUser:
    async with service.sessionmaker() as s:
        user = await auth.load_session(s, request.cookies.get(auth.SESSION_COOKIE))
    if user is None:
        raise LoginRequired()
    return user


CurrentUser = Annotated[auth.CurrentUser, Depends(current_user)]


async def check_csrf(request: Request, user: CurrentUser) -> auth.CurrentUser:
    # A selection of a thousand bills is a thousand fields (Starlette's default cap); the
    # form is parsed once here and cached for the route.
    form = await request.form(max_fields=MAX_FORM_FIELDS)
    if not auth.csrf_ok(user.csrf_token, str(form.get("csrf_token") or "")):
        raise HTTPException(
            status_code=403, detail="The form expired. Go back, reload the page and try again."
        )
    return user


# The logged-in user, once the form's CSRF token is checked.
FormUser = Annotated[auth.CurrentUser, Depends(check_csrf)]


# --- pages --------------------------------------------------------------------------------


async def firm_name(service: Service, firm_id: str) -> str:
    async with service.sessionmaker() as s:
        firm = await s.get(Firm, firm_id)
        return firm.name if firm else ""


def show(
    request: Request, name: str, user: auth.CurrentUser, status_code: int = 200, **ctx: Any
) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return render(request, name, status_code=status_code, user=user, notice=notice, **ctx)
