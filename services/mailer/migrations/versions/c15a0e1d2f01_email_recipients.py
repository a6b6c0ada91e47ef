"""email recipients: each recipient's copy of an email, its relay answer, bounces and tracking

Revision ID: c15a0e1d2f01
Revises: b279cfe88476
Create Date: 2026-12-07 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "c15a0e1d2f01"
down_revision: str | None = "b279cfe88476"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_recipients",
        sa.Column("email_id", sa.String(length=64), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("accepted_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bounced_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bounce_kind", sa.String(length=10), nullable=True),
        sa.Column("bounce_status", sa.String(length=20), nullable=True),
        sa.Column("bounce_reason", sa.Text(), nullable=True),
        sa.Column("first_opened_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opens", sa.Integer(), nullable=False),
        sa.Column("machine_opens", sa.Integer(), nullable=False),
        sa.Column("first_clicked_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("email_id", "n", name=op.f("pk_email_recipients")),
    )
    with op.batch_alter_table("email_recipients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_recipients_firm_id"), ["firm_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("email_recipients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_recipients_firm_id"))
    op.drop_table("email_recipients")
