"""connection region and health; line-item cursor; sync run totals

Revision ID: b1c4e2f7a9d0
Revises: 530a043cf5c0
Create Date: 2026-12-07 23:58:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "b1c4e2f7a9d0"
down_revision: str | None = "530a043cf5c0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clio_connections") as batch:
        batch.add_column(sa.Column("region", sa.String(length=2), nullable=False, server_default="us"))
        batch.add_column(sa.Column("line_items_cursor", shared.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_success_at", shared.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_error_at", shared.db.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("requests", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("requests")
        batch.drop_column("total")
    with op.batch_alter_table("clio_connections") as batch:
        batch.drop_column("last_error_at")
        batch.drop_column("last_success_at")
        batch.drop_column("line_items_cursor")
        batch.drop_column("region")
