"""The mailer's tracking intake: what the gateway's public tracking routes saw (a pixel
fetched, a tracked link followed, a page served after one), recorded on the recipient's copy
(`EmailRecipient`) and told to envelope as `email.opened`, `email.clicked`, `email.viewed`
through the outbox.

Which fetches a person made, and which a machine (`is_machine`, pure): a mail privacy proxy
or a security scanner fetches the pixel and follows the links of a message as it arrives, or
announces itself in its user agent. Those are recorded (`machine_opens`) and their events are
marked `machine`, but they never count as a person reading.

Events: every click and every view; opens at most one a minute per recipient (a reloading
client or a proxy fetching again does not flood the bus), except that a recipient's first
open by a person always goes out. The minute is kept in this process (`Throttle`): with
several mailer replicas each may let one through.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.mailer.models import EmailRecipient, OutgoingEmail
from shared.api.timeline import TrackingAnswer, TrackingHit
from shared.events import ClickTarget, EmailClicked, EmailOpened, EmailViewed
from shared.runtime import Service
from shared.tracking import own_page

# --- who fetched it: a person, or a machine ----------------------------------------------

# How long after the relay accepted a copy a fetch is taken for a machine's: scanners and
# privacy proxies fetch as the message arrives, people seldom read it within seconds.
DEFAULT_MACHINE_SECONDS = 10.0

# User agents of fetchers that are not a person reading (compared lower-cased, as substrings).
# - Apple Mail Privacy Protection fetches every image of every message through Apple's
#   proxies when it arrives, whether or not anyone opens it; it sends the bare user agent
#   "Mozilla/5.0" (matched exactly in `is_machine`, not as a substring).
# - Microsoft Defender for Office 365 Safe Links and Outlook's link scanners, Bing's preview.
# - Mail security gateways that follow links and fetch images to check them: Barracuda,
#   Mimecast, Proofpoint, Cisco IronPort / Secure Email, Symantec (MessageLabs), Trend Micro,
#   Sophos, FireEye / Trellix, Forcepoint, Zscaler, Check Point, Fortinet, Hornetsecurity,
#   Google's own link safety checker.
# - Generic HTTP libraries, headless browsers and crawlers: nobody reads mail with those.
# NOT here, on purpose: GoogleImageProxy (Gmail) and YahooMailProxy fetch the images through
# their proxy when the person opens the message (and cache them after), so their fetch is a
# person's open, though without the person's own user agent.
MACHINE_AGENTS: tuple[str, ...] = (
    "bingpreview",
    "safelinks",
    "safe links",
    "microsoft defender",
    "ms-atp",
    "microsoftpreview",
    "barracuda",
    "mimecast",
    "proofpoint",
    "ironport",
    "cisco secure email",
    "messagelabs",
    "symantec",
    "trendmicro",
    "trend micro",
    "sophos",
    "fireeye",
    "trellix",
    "forcepoint",
    "zscaler",
    "checkpoint",
    "check point",
    "fortinet",
    "fortiguard",
    "hornetsecurity",
    "google-safety",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "httpx",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww-perl",
    "headlesschrome",
    "phantomjs",
    "bot",
    "crawler",
    "spider",
    "scanner",
    "preview",
    "facebookexternalhit",
)
# Apple's privacy proxy: exactly this, nothing after it.
APPLE_PRIVACY_PROXY = "mozilla/5.0"
_SPACES = re.compile(r"\s+")


def is_machine(
    user_agent: str | None,
    at: datetime,
    accepted_at: datetime | None,
    *,
    window_seconds: float = DEFAULT_MACHINE_SECONDS,
) -> bool:
    """Whether a fetch at `at` of a copy the relay accepted at `accepted_at` was a machine's:
    within `window_seconds` of acceptance, no user agent, Apple's privacy proxy, or a known
    scanner or library (MACHINE_AGENTS)."""
    if accepted_at is not None and at - accepted_at < timedelta(seconds=window_seconds):
        return True
    agent = _SPACES.sub(" ", (user_agent or "").strip().lower())
    if not agent or agent == APPLE_PRIVACY_PROXY:
        return True
    return any(token in agent for token in MACHINE_AGENTS)


def click_target(path: str) -> ClickTarget:
    """Which of the email's links a path is, as compose writes them: /v/{token}/{id} and
    /v/{token}/statement are View Invoice (View All); /pay/{token}?invoice={id} is an item's
    Pay Online; /pay/{token} alone is Pay All."""
    parts = urlsplit(path)
    if parts.path.startswith("/v/"):
        return ClickTarget.view_invoice
    if parts.path.startswith("/pay/"):
        if parse_qs(parts.query).get("invoice"):
            return ClickTarget.pay_online
        return ClickTarget.pay_all
    return ClickTarget.other


class Throttle:
    """At most one event a `seconds` per key, remembered for the `size` latest keys."""

    def __init__(self, seconds: float = 60.0, size: int = 50_000) -> None:
        self.window = timedelta(seconds=seconds)
        self.size = size
        self._last: OrderedDict[Hashable, datetime] = OrderedDict()

    def allow(self, key: Hashable, at: datetime, *, force: bool = False) -> bool:
        last = self._last.get(key)
        if not force and last is not None and abs(at - last) < self.window:
            return False
        self._last[key] = at
        self._last.move_to_end(key)
        while len(self._last) > self.size:
            self._last.popitem(last=False)
        return True


# --- the intake --------------------------------------------------------------------------

_R = EmailRecipient.__table__


def _aware(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class Tracking:
    def __init__(self, service: Service, *, window_seconds: float | None = None) -> None:
        self.service = service
        self.window_seconds = (
            window_seconds
            if window_seconds is not None
            else float(
                getattr(service.settings, "tracking_machine_seconds", DEFAULT_MACHINE_SECONDS)
            )
        )
        self.opens = Throttle(60.0)
        self.views = Throttle(60.0)

    async def _copy(
        self, s: AsyncSession, hit: TrackingHit
    ) -> tuple[EmailRecipient, OutgoingEmail]:
        found = (
            await s.execute(
                select(EmailRecipient, OutgoingEmail)
                .join(OutgoingEmail, OutgoingEmail.email_id == EmailRecipient.email_id)
                .where(EmailRecipient.email_id == hit.email_id, EmailRecipient.n == hit.n)
            )
        ).first()
        if found is None:
            raise HTTPException(status_code=404, detail="no such email or recipient")
        return found[0], found[1]

    def _machine(
        self, hit: TrackingHit, at: datetime, rcpt: EmailRecipient, email: OutgoingEmail
    ) -> bool:
        accepted = rcpt.accepted_at or email.sent_at
        return is_machine(hit.user_agent, at, accepted, window_seconds=self.window_seconds)

    async def opened(self, hit: TrackingHit) -> TrackingAnswer:
        at = _aware(hit.at)
        async with self.service.sessionmaker() as s, s.begin():
            rcpt, email = await self._copy(s, hit)
            machine = self._machine(hit, at, rcpt, email)
            where = (_R.c.email_id == hit.email_id, _R.c.n == hit.n)
            if machine:
                await s.execute(
                    update(_R).where(*where).values(machine_opens=_R.c.machine_opens + 1)
                )
                first = False
            else:
                opens = (
                    await s.execute(
                        update(_R)
                        .where(*where)
                        .values(
                            opens=_R.c.opens + 1,
                            first_opened_at=func.coalesce(_R.c.first_opened_at, at),
                        )
                        .returning(_R.c.opens)
                    )
                ).scalar_one()
                first = opens == 1
            publish = self.opens.allow((hit.email_id, hit.n), at, force=first)
            if publish:
                await self.service.publish(
                    s,
                    EmailOpened(
                        **_about(email, rcpt, at),
                        machine=machine,
                        user_agent=(hit.user_agent or None),
                    ),
                )
        return TrackingAnswer(machine=machine, published=publish)

    async def clicked(self, hit: TrackingHit) -> TrackingAnswer:
        path = _own_path(hit)
        at = _aware(hit.at)
        async with self.service.sessionmaker() as s, s.begin():
            rcpt, email = await self._copy(s, hit)
            machine = self._machine(hit, at, rcpt, email)
            if not machine:
                await s.execute(
                    update(_R)
                    .where(_R.c.email_id == hit.email_id, _R.c.n == hit.n)
                    .values(
                        clicks=_R.c.clicks + 1,
                        first_clicked_at=func.coalesce(_R.c.first_clicked_at, at),
                    )
                )
            await self.service.publish(
                s,
                EmailClicked(
                    **_about(email, rcpt, at),
                    target=click_target(path),
                    path=path,
                    machine=machine,
                    user_agent=(hit.user_agent or None),
                ),
            )
        return TrackingAnswer(machine=machine, published=True)

    async def viewed(self, hit: TrackingHit) -> TrackingAnswer:
        path = _own_path(hit)
        at = _aware(hit.at)
        async with self.service.sessionmaker() as s, s.begin():
            rcpt, email = await self._copy(s, hit)
            publish = self.views.allow((hit.email_id, hit.n, urlsplit(path).path), at)
            if publish:
                await self.service.publish(
                    s,
                    EmailViewed(
                        **_about(email, rcpt, at),
                        path=path,
                    ),
                )
        return TrackingAnswer(machine=False, published=publish)


def _about(email: OutgoingEmail, rcpt: EmailRecipient, at: datetime) -> dict[str, Any]:
    """What every tracking event says of whose copy it is and when."""
    return {
        "firm_id": email.firm_id,
        "email_id": email.email_id,
        "envelope_id": email.envelope_id,
        "recipient": rcpt.address,
        "at": at,
    }


def _own_path(hit: TrackingHit) -> str:
    """The page a click or view was of, refused unless it is one of this system's."""
    path = hit.path or ""
    if not own_page(path):
        raise HTTPException(status_code=422, detail="not one of this system's pages")
    return path


def router(service: Service, tracking: Tracking | None = None) -> APIRouter:
    """The intake's routes (internal token required)."""
    tracking = tracking or Tracking(service)
    r = APIRouter(prefix="/internal/tracking", dependencies=[Depends(service.require_internal())])

    @r.post("/open")
    async def open_(hit: TrackingHit) -> TrackingAnswer:
        return await tracking.opened(hit)

    @r.post("/click")
    async def click(hit: TrackingHit) -> TrackingAnswer:
        return await tracking.clicked(hit)

    @r.post("/view")
    async def view(hit: TrackingHit) -> TrackingAnswer:
        return await tracking.viewed(hit)

    r.tracking = tracking  # type: ignore[attr-defined]
    return r
