"""Firms and their users: the profile other services learn through firm.updated."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.auth import hash_password
from services.gateway.models import Firm, User
from shared.events import FirmProfile, FirmUpdated
from shared.runtime import Service


def firm_profile(firm: Firm) -> FirmProfile:
    """The profile firm.updated carries, with the firm's time zone and reminder settings."""
    profile = FirmProfile.model_validate(
        {
            "name": firm.name,
            "email": firm.email,
            "phone": firm.phone,
            "address": firm.address,
            "website": firm.website,
            "combine_envelopes": bool(firm.combine_envelopes),
            "default_delivery": firm.default_delivery or "link",
            "time_zone": firm.time_zone or "UTC",
            "reminders": firm.reminders,
        }
    )
    return profile


def firm_today(firm: Firm | None, now: datetime | None = None) -> date:
    """Today's date where the firm is (its time zone; UTC when unknown or not set)."""
    return (now or datetime.now(UTC)).astimezone(zone_of(firm.time_zone if firm else None)).date()


def zone_of(name: str | None) -> ZoneInfo:
    """The zone for a stored name; UTC for None or a name this system no longer knows."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


async def publish_firm(service: Service, s: AsyncSession, firm: Firm) -> None:
    await service.publish(s, FirmUpdated(firm_id=firm.id, firm=firm_profile(firm)))


async def ensure_firm_user(
    service: Service,
    s: AsyncSession,
    *,
    firm_id: str | None,
    firm_name: str,
    email: str,
    password: str,
    user_name: str,
    firm_fields: dict[str, str | None] | None = None,
) -> tuple[Firm, User, bool]:
    """Create the firm and its user unless they exist; returns (firm, user, created)."""
    email = email.strip().lower()
    user = await s.scalar(select(User).where(User.email == email))
    if user is not None:
        firm = await s.get(Firm, user.firm_id)
        assert firm is not None
        return firm, user, False
    firm = await s.get(Firm, firm_id) if firm_id else None
    created = False
    if firm is None:
        firm = Firm(
            id=firm_id or str(uuid.uuid4()),
            name=firm_name,
            combine_envelopes=False,
            default_delivery="link",
            created_at=datetime.now(UTC),
            **(firm_fields or {}),
        )
        s.add(firm)
        created = True
    user = User(
        id=str(uuid.uuid4()),
        firm_id=firm.id,
        email=email,
        name=user_name,
        password_hash=hash_password(password),
        created_at=datetime.now(UTC),
    )
    s.add(user)
    await s.flush()
    if created:
        await publish_firm(service, s, firm)
    return firm, user, True
