"""Firms and their users: the profile other services learn through firm.updated."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.auth import hash_password
from services.gateway.models import Firm, User
from shared.events import FirmProfile, FirmUpdated
from shared.runtime import Service


def firm_profile(firm: Firm) -> FirmProfile:
    return FirmProfile.model_validate(firm, from_attributes=True)


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
