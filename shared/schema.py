"""What every service's schema has alike: its own metadata holding the outbox and the inbox,
and, for the services that keep one, the projection of the firm's profile from firm.updated.

Envelope and payments both keep the firm's profile (for emails, PDFs and pay pages); the
table and the rule for applying a firm.updated are the same in both, so they live here once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import MetaData, String, Text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import UTCDateTime, new_metadata
from shared.events import FirmProfile, FirmUpdated
from shared.outbox import inbox_table, outbox_table

# Shown until a firm's first firm.updated arrives.
PLACEHOLDER_FIRM = FirmProfile(name="Your law firm")


def service_metadata() -> MetaData:
    """A service's metadata, with the outbox and inbox tables every service has."""
    metadata = new_metadata()
    outbox_table(metadata)
    inbox_table(metadata)
    return metadata


class FirmProjection:
    """Columns of a service's `firms` table: the latest firm.updated profile, as JSON."""

    firm_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


def firm_profile(stored: str | None) -> FirmProfile:
    """A firm's profile as stored, or the placeholder before its first firm.updated."""
    return PLACEHOLDER_FIRM if stored is None else FirmProfile.model_validate_json(stored)


def aware(ts: datetime) -> datetime:
    """A stored timestamp as aware UTC (SQLite keeps no zone)."""
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


async def stored_firm(s: AsyncSession, model: type[FirmProjection], firm_id: str) -> FirmProfile:
    row = await s.get(model, firm_id)
    return firm_profile(row.profile if row is not None else None)


async def apply_firm_updated(
    s: AsyncSession, model: type[FirmProjection], ev: FirmUpdated
) -> tuple[bool, str | None]:
    """Keep the newest profile: (applied, the profile stored before). A profile older than
    the one stored (events may arrive out of order) is not applied."""
    row = await s.get(model, ev.firm_id)
    if row is None:
        row = model()
        row.firm_id = ev.firm_id
        s.add(row)
    elif row.updated_at and aware(row.updated_at) > ev.occurred_at:
        return False, row.profile
    before = row.profile if row.profile else None
    row.profile = ev.firm.model_dump_json()
    row.updated_at = ev.occurred_at
    return True, before
