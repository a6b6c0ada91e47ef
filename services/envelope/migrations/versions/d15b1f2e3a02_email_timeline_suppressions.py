"""email timeline, suppressed addresses, each bill's latest email event

Revision ID: d15b1f2e3a02
Revises: eed8257628a9
Create Date: 2026-12-07 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "d15b1f2e3a02"
down_revision: str | None = "eed8257628a9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_event", sa.String(length=20), nullable=True))
        batch_op.add_column(
            sa.Column("email_event_at", shared.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "email_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=False),
        sa.Column("envelope_id", sa.String(length=36), nullable=False),
        sa.Column("email_id", sa.String(length=64), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_email_events_event_id")),
    )
    with op.batch_alter_table("email_events", schema=None) as batch_op:
        batch_op.create_index("ix_email_events_envelope", ["firm_id", "envelope_id", "at"])
    op.create_table(
        "suppressions",
        sa.Column("firm_id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=True),
        sa.Column("email_id", sa.String(length=64), nullable=True),
        sa.Column("envelope_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("firm_id", "address", name=op.f("pk_suppressions")),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    with op.batch_alter_table("email_events", schema=None) as batch_op:
        batch_op.drop_index("ix_email_events_envelope")
    op.drop_table("email_events")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("email_event_at")
        batch_op.drop_column("email_event")
