"""To record in Clio: bills' source id, Clio's paid figure and removal; allocations' record

Revision ID: a7d4c9e2b513
Revises: c2b91d3f86ab
Create Date: 2026-12-08 00:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "a7d4c9e2b513"
down_revision: str | None = "c2b91d3f86ab"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bills", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_id", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("source_paid_minor", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("removed_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_paid_at_payment", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("recorded_at", shared.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("recorded_by", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("recorded_how", sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_column("recorded_how")
        batch_op.drop_column("recorded_by")
        batch_op.drop_column("recorded_at")
        batch_op.drop_column("source_paid_at_payment")
    with op.batch_alter_table("bills", schema=None) as batch_op:
        batch_op.drop_column("removed_reason")
        batch_op.drop_column("source_paid_minor")
        batch_op.drop_column("source_id")
