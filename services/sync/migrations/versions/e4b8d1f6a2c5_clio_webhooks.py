"""clio webhooks

Revision ID: e4b8d1f6a2c5
Revises: e5a1c3d9b7f2
Create Date: 2026-12-08 00:15:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "e4b8d1f6a2c5"
down_revision: str | None = "e5a1c3d9b7f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clio_webhooks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=20), nullable=False),
        sa.Column("hook_key", sa.String(length=100), nullable=False),
        sa.Column("webhook_id", sa.String(length=64), nullable=True),
        sa.Column("shared_secret", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("expires_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("checked_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clio_webhooks")),
        sa.UniqueConstraint("firm_id", "model", name=op.f("uq_clio_webhooks_firm_id")),
    )
    op.create_index(op.f("ix_clio_webhooks_firm_id"), "clio_webhooks", ["firm_id"], unique=False)
    op.create_index(op.f("ix_clio_webhooks_hook_key"), "clio_webhooks", ["hook_key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_clio_webhooks_hook_key"), table_name="clio_webhooks")
    op.drop_index(op.f("ix_clio_webhooks_firm_id"), table_name="clio_webhooks")
    op.drop_table("clio_webhooks")
